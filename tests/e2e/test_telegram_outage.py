"""Nothing outside holds up the start, for Telegram: the real daemon with the real
python-telegram-bot, the loopback Bot API behind an `OutageProxy` on one fixed port, down in each
way (refused, hanging, slow).

In every case the daemon is visible and ready within 2 s; a dropped file is planned; `status
--json` shows telegram retrying with the reason; when the Bot API is back on the same port, the
message that waited there becomes exactly one action within the backoff cap; `stop` ends the
daemon within the grace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, drop, frontmatter, notes, wait_for
from tests.fakes.outage import Mode, OutageProxy
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.threaded import ThreadedFake

CHAT = 424242
STARTUP_SECONDS = 2.0
CONNECT_TIMEOUT = 1.0
MAX_BACKOFF = 2.0
GRACE_SECONDS = 10.0
#: from "the server is back" to the action note: an attempt still hanging (its deadline), the
#: longest backoff, and the daemon's own work (intake, note)
BACK_WITHIN = CONNECT_TIMEOUT + MAX_BACKOFF + 3.0
REASONS = {
    "refused": "connection refused (nothing is listening)",
    "hanging": f"no answer after {CONNECT_TIMEOUT:g} s",
    "slow": f"no answer after {CONNECT_TIMEOUT:g} s",
}


@pytest.fixture
def telegram() -> Iterator[ThreadedFake[FakeTelegram]]:
    running = ThreadedFake(FakeTelegram())
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def bot_api_outage(telegram: ThreadedFake[FakeTelegram], mode: Mode) -> Iterator[OutageProxy]:
    """The fake Bot API behind a proxy that is down in the way `mode` says (slow: 60 s, far past
    every deadline)."""
    proxy = OutageProxy(telegram.fake.port, mode=mode, slow_seconds=60).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def bot_daemon(
    vault: Path, daemon_env: dict[str, str], telegram: ThreadedFake[FakeTelegram], bot_api_outage: OutageProxy
) -> Iterator[DaemonProcess]:
    env = dict(daemon_env)
    env.update(
        {
            "TELEGRAM_BOT_TOKEN": telegram.fake.token,
            "TELEGRAM_ALLOWED_CHAT_IDS": str(CHAT),
            "TELEGRAM_API_BASE_URL": bot_api_outage.url,
            "AIE_SERVICES__CONNECT_TIMEOUT": f"{CONNECT_TIMEOUT:g}",
            "AIE_SERVICES__INITIAL_BACKOFF": "0.5",
            "AIE_SERVICES__MAX_BACKOFF": f"{MAX_BACKOFF:g}",
            "AIE_SERVICES__GRACE_SECONDS": f"{GRACE_SECONDS:g}",
        }
    )
    process = DaemonProcess(vault, env)
    yield process
    process.kill()


def _telegram_status(daemon: DaemonProcess) -> dict[str, Any]:
    result = daemon.cli("status", "--vault", str(daemon.vault), "--json", check=True, timeout=10)
    # {} until the plug-in is registered: the daemon imports plug-ins once the vault path runs
    entry: dict[str, Any] = json.loads(result.stdout)["services"].get("telegram", {})
    return entry


def _retrying(daemon: DaemonProcess) -> dict[str, Any] | None:
    entry = _telegram_status(daemon)
    return entry if entry.get("state") == "retrying" and entry.get("last_error") else None


def _telegram_actions(vault: Path) -> list[str]:
    """The source_ref of every Telegram action note, one entry per note."""
    return [
        str(properties["source_ref"])
        for note in notes(vault / "Needs_Action") + notes(vault / "Done")
        if (properties := frontmatter(note)).get("type") == "action"
        and properties.get("source") == "telegram"
    ]


def test_the_daemon_is_visible_and_ready_within_2_s_while_the_bot_api_is_down(
    bot_daemon: DaemonProcess,
) -> None:
    began = time.monotonic()
    bot_daemon.start(wait=False)
    wait_for(lambda: bot_daemon.info() is not None, timeout=30, message="daemon.json")
    visible = time.monotonic() - began
    wait_for(bot_daemon.ready, timeout=30, message="/readyz 200")
    ready = time.monotonic() - began

    assert visible < STARTUP_SECONDS, f"daemon.json after {visible:.2f} s"
    assert ready < STARTUP_SECONDS, f"/readyz 200 after {ready:.2f} s"


def test_a_dropped_file_is_planned_while_the_bot_api_is_down(bot_daemon: DaemonProcess, vault: Path) -> None:
    bot_daemon.start()

    drop(vault, "pump.txt", "Pump 3 on line 2 is leaking oil\n")

    wait_for(lambda: len(notes(vault / "Plans")) == 1, timeout=30, message="the plan of the dropped file")


def test_status_shows_telegram_retrying_with_the_reason_while_the_bot_api_is_down(
    bot_daemon: DaemonProcess, bot_api_outage: OutageProxy, mode: Mode, telegram: ThreadedFake[FakeTelegram]
) -> None:
    bot_daemon.start()

    entry = wait_for(lambda: _retrying(bot_daemon), timeout=15, message="telegram retrying with a reason")

    target = f"Telegram 127.0.0.1:{bot_api_outage.port}"
    assert entry["target"] == target
    assert entry["last_error"] == f"{target}: {REASONS[mode]}"
    assert entry["attempts"] >= 1 and entry["next_attempt"]
    text = bot_daemon.cli("status", "--vault", str(bot_daemon.vault), check=True, timeout=10).stdout
    assert REASONS[mode] in text
    secret = telegram.fake.token.split(":", 1)[1]
    assert secret not in json.dumps(_telegram_status(bot_daemon)) + text


def test_when_the_bot_api_is_back_the_message_that_waited_becomes_exactly_one_action(
    bot_daemon: DaemonProcess, bot_api_outage: OutageProxy, telegram: ThreadedFake[FakeTelegram], vault: Path
) -> None:
    waited = telegram.call(telegram.fake.send_text, CHAT, "Sent while the Bot API was away")
    bot_daemon.start()
    wait_for(lambda: _retrying(bot_daemon), timeout=15, message="telegram retrying")

    bot_api_outage.set_mode("up")
    began = time.monotonic()
    wait_for(lambda: _telegram_actions(vault), timeout=30, message="the action of the message that waited")
    back_after = time.monotonic() - began
    later = telegram.call(telegram.fake.send_text, CHAT, "Sent once it was back")
    wait_for(lambda: len(_telegram_actions(vault)) == 2, timeout=30, message="the next message's action")

    assert back_after < BACK_WITHIN, f"taken {back_after:.2f} s after the Bot API came back"
    assert sorted(_telegram_actions(vault)) == sorted(
        f"{CHAT}:{message['message_id']}" for message in (waited, later)
    ), "each message exactly once"
    entry = _telegram_status(bot_daemon)
    assert (entry["state"], entry["attempts"]) == ("running", 0)


def test_stop_ends_the_daemon_within_the_grace_while_the_bot_api_is_down(
    bot_daemon: DaemonProcess, vault: Path
) -> None:
    bot_daemon.start()
    wait_for(
        lambda: _telegram_status(bot_daemon).get("attempts", 0) >= 1, timeout=15, message="a failed attempt"
    )

    began = time.monotonic()
    result = bot_daemon.cli("stop", "--vault", str(vault), timeout=30)
    assert bot_daemon.process is not None
    code = bot_daemon.process.wait(timeout=GRACE_SECONDS + 5)
    took = time.monotonic() - began

    assert result.returncode == 0, result.stderr
    assert code == 0
    assert took < GRACE_SECONDS, f"stopped after {took:.2f} s"
