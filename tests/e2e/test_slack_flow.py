"""A file dropped into Inbox/, watched and decided in Slack, end to end: the real daemon with
slack-sdk against the loopback Slack, the click coming in signed on the control port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import DaemonProcess, drop, frontmatter, notes, wait_for
from tests.fakes.slack import CHANNEL_ID, CHANNEL_NAME, SIGNING_SECRET, FakeSlack, sign
from tests.fakes.threaded import ThreadedFake
from tests.integration.conftest_slack import buttons_of, text_of

DECIDER = "U0ALLOWED1"


@pytest.fixture
def slack() -> Iterator[ThreadedFake[FakeSlack]]:
    running = ThreadedFake(FakeSlack())
    running.start()
    yield running
    running.stop()


@pytest.fixture
def slack_daemon(
    vault: Path, daemon_env: dict[str, str], slack: ThreadedFake[FakeSlack]
) -> Iterator[DaemonProcess]:
    env = dict(daemon_env)
    env.update(
        {
            "SLACK_BOT_TOKEN": slack.fake.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_CHANNEL": CHANNEL_NAME,
            "SLACK_API_BASE_URL": slack.fake.base_url,
            "SLACK_ALLOWED_USER_IDS": DECIDER,
            "AIE_SLACK__MIN_INTERVAL": "0.2",
        }
    )
    process = DaemonProcess(vault, env)
    yield process
    process.kill()


def _posts(slack: ThreadedFake[FakeSlack]) -> list[dict[str, Any]]:
    return slack.call(lambda: json.loads(json.dumps(slack.fake.posts)))


def test_a_dropped_file_is_a_slack_thread_decided_by_a_button(
    vault: Path, slack: ThreadedFake[FakeSlack], slack_daemon: DaemonProcess
) -> None:
    slack_daemon.start()
    drop(vault, "pump3-leak.txt", "Pump 3 on line 2 is leaking oil\nPlease fix it today.\n")

    waiting = wait_for(
        lambda: next((p for p in _posts(slack) if p.get("thread_ts") and buttons_of(p)), None),
        timeout=30,
        message="the plan with its buttons in Slack",
    )
    top = next(p for p in _posts(slack) if p["ts"] == waiting["thread_ts"])
    assert "obsidian://open?vault=vault" in text_of(top)
    (plan,) = notes(vault / "Plans")

    click = slack.call(slack.fake.block_actions, DECIDER, waiting, "aie_approve", username="jane")
    body = urlencode({"payload": json.dumps(click)}).encode()
    port = (slack_daemon.info() or {})["port"]
    answer = httpx.post(
        f"http://127.0.0.1:{port}/slack/interactions", content=body, headers=sign(body), timeout=10
    )
    assert answer.status_code == 200
    forged = httpx.post(f"http://127.0.0.1:{port}/slack/interactions", content=body, timeout=10)
    assert forged.status_code == 401

    done = wait_for(
        lambda: notes(vault / "Done") and [n for n in notes(vault / "Done") if n.name == plan.name],
        timeout=30,
    )
    assert frontmatter(done[0])["decided_via"] == "slack"
    wait_for(
        lambda: any("Done (dry run" in text_of(p) for p in _posts(slack) if p.get("thread_ts") == top["ts"]),
        timeout=30,
        message="the outcome in the thread",
    )
    thread = [text_of(p) for p in _posts(slack) if p.get("thread_ts") == top["ts"]]
    assert any("Approved by jane via Slack" in text for text in thread)
    assert len([p for p in _posts(slack) if p["channel"] == CHANNEL_ID and not p.get("thread_ts")]) == 1
    status = slack_daemon.cli("status", "--json", "--vault", str(vault), check=True)
    services = json.loads(status.stdout)["services"]
    assert services["slack"]["state"] == "running"
    assert services["supervisor"]["state"] == "running"
    assert slack.fake.bot_token not in status.stdout + slack_daemon.output()


def test_a_slack_message_becomes_an_action_whose_plan_comes_back_in_its_thread(
    vault: Path, slack: ThreadedFake[FakeSlack], slack_daemon: DaemonProcess
) -> None:
    slack_daemon.start()
    # the routes are there once the Slack service is built (it then reaches Slack: auth.test)
    wait_for(lambda: slack.call(lambda: bool(slack.fake.calls)), timeout=30, message="the Slack service")
    event = slack.call(
        slack.fake.message_event, DECIDER, "Compressor 2 trips every hour\nPlease check the relay."
    )
    body = json.dumps(event).encode()
    port = (slack_daemon.info() or {})["port"]
    for attempt in range(2):  # Slack retries; the second delivery makes nothing new
        headers = {**sign(body), "X-Slack-Retry-Num": str(attempt)} if attempt else sign(body)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/slack/events", content=body, headers=headers, timeout=10
        )
        assert answer.status_code == 200

    (note,) = wait_for(lambda: notes(vault / "Needs_Action"), timeout=30, message="the action note")
    properties = frontmatter(note)
    ts = event["event"]["ts"]
    assert (properties["source"], properties["sender"], properties["source_ref"]) == (
        "slack",
        DECIDER,
        f"{CHANNEL_ID}:{ts}",
    )
    wait_for(
        lambda: any(p.get("thread_ts") == ts and buttons_of(p) for p in _posts(slack)),
        timeout=30,
        message="the plan in the message's own thread",
    )
    assert not [p for p in _posts(slack) if p["channel"] == CHANNEL_ID and not p.get("thread_ts")]
