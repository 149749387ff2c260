"""Slack never in the way: posting is queued off the pipeline's path, a 429 is honoured, a Slack
that is down loses no checkpoint, a restart keeps each item's thread; without a bot token the
checkpoints go to the log. Secrets appear nowhere."""

from __future__ import annotations

import asyncio
import json
import time

from structlog.testing import capture_logs

from ai_employee.model.events import EventType
from tests.conftest import eventually
from tests.fakes.slack import SIGNING_SECRET
from tests.integration.conftest_slack import DEADLINE, Harness, connected, harness_fixture, text_of

__all__ = ["harness_fixture"]


async def test_a_rate_limited_post_waits_retry_after_and_goes_through(harness: Harness) -> None:
    await harness.start()
    harness.slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    started = time.monotonic()
    action_id, _ = harness.new_item(1)

    await harness.wait_thread(action_id)
    assert harness.slack.rate_limited == ["chat.postMessage"]
    assert time.monotonic() - started >= 1.0


async def test_slack_down_holds_up_nothing_and_loses_no_checkpoint(harness: Harness) -> None:
    _, slack = await harness.start()
    assert slack is not None
    await harness.slack.go_away()

    started = time.monotonic()
    items = [harness.new_item(number) for number in range(1, 41)]
    for action_id, plan_id in items:
        harness.publish(EventType.APPROVAL_GRANTED, action_id, plan_id=plan_id, by="jane", door="cli")
        harness.publish(
            EventType.PLAN_EXECUTED,
            action_id,
            plan_id=plan_id,
            dry_run=True,
            result={"work_order": f"WO-{action_id[-3:]}"},
        )
    assert time.monotonic() - started < 0.5  # publishing never waited for Slack
    await eventually(lambda: not connected(slack), DEADLINE, "the link retrying")
    health = await slack.health()
    assert not health.healthy and health.data["backlog"] >= 1

    await harness.slack.come_back()
    for action_id, _ in items:
        top = await harness.wait_thread(action_id)
        await harness.wait_reply(top["ts"], f"WO-{action_id[-3:]}")
    assert len(harness.slack.top_messages()) == 40
    await eventually(lambda: connected(slack), DEADLINE)


async def test_a_post_slack_refuses_for_good_is_dropped_and_the_queue_goes_on(harness: Harness) -> None:
    _, slack = await harness.start()
    assert slack is not None
    harness.slack.fail_next("chat.postMessage", "invalid_blocks")
    harness.new_item(1)
    second, _ = harness.new_item(2)

    await harness.wait_thread(second)
    assert slack.outbox.dropped == 1


async def test_after_a_restart_updates_go_into_the_same_thread(harness: Harness) -> None:
    await harness.start()
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    await harness.wait_reply(top["ts"], "Waiting for approval")
    await harness.stop_all()

    await harness.start()
    harness.publish(EventType.PLAN_FAILED, action_id, plan_id=plan_id, error="Atlas is down")

    await harness.wait_reply(top["ts"], "Atlas is down")
    assert len(harness.slack.top_messages()) == 1
    assert "Failed" in text_of(harness.slack.current(top["channel"], top["ts"]))


async def test_without_a_bot_token_slack_is_disabled_and_checkpoints_go_to_the_log(harness: Harness) -> None:
    supervisor, slack, off = harness.build(token=False)
    assert slack is None
    assert "SLACK_BOT_TOKEN is not set" in off["slack"]
    await harness.start(token=False)

    with capture_logs() as logs:
        action_id, plan_id = harness.new_item(1)
        await eventually(lambda: any(line["event"] == "slack.checkpoint" for line in logs), DEADLINE)
    (line,) = [line for line in logs if line["event"] == "slack.checkpoint"]  # the steps that came together
    assert (line["action_id"], line["plan_id"], line["status"]) == (action_id, plan_id, "waiting")
    assert line["steps"] == ["starting", "waiting"]
    assert "Received from file" in line["text"] and "Planned: atlas.work_order" in line["text"]
    assert harness.slack.calls == []
    del supervisor


async def test_secrets_appear_in_no_message_no_log_line_and_no_status(harness: Harness) -> None:
    with capture_logs() as logs:
        _, slack = await harness.start()
        assert slack is not None
        action_id, _ = harness.new_item(1)
        await harness.wait_thread(action_id)
        harness.slack.fail_next("chat.postMessage", "invalid_auth", times=1)
        harness.new_item(2)
        await harness.wait_thread("act-20261207-101500-000002")
        health = await slack.health()
    secrets = (harness.slack.bot_token, harness.slack.app_token, SIGNING_SECRET)
    shown = json.dumps(
        [harness.slack.posts, harness.slack.updates, logs, health.data, slack.link().to_dict()], default=str
    )  # type: ignore[union-attr]
    for secret in secrets:
        assert secret not in shown


async def test_what_happened_before_supervision_started_is_posted_from_the_bus_history(
    harness: Harness,
) -> None:
    action_id, _ = harness.new_item(1)  # the vault path runs before the plug-ins start
    supervisor, _ = await harness.start()

    top = await harness.wait_thread(action_id)
    await harness.wait_reply(top["ts"], "Waiting for approval")
    await supervisor.stop()  # the orchestrator restarts the same service: nothing is replayed twice
    task = next(task for service, task in harness.running if service is supervisor)
    await asyncio.wait_for(task, DEADLINE)
    harness.running.append((supervisor, asyncio.create_task(supervisor.run())))
    await asyncio.wait_for(supervisor.ready.wait(), DEADLINE)
    second, _ = harness.new_item(2)
    await harness.wait_thread(second)
    assert len(harness.slack.replies(top["ts"])) == 1


async def test_slack_unreachable_at_start_is_retrying_with_the_reason_and_catches_up(
    harness: Harness,
) -> None:
    await harness.slack.go_away()
    supervisor, slack, _ = harness.build()
    assert slack is not None
    tasks = [asyncio.create_task(service.run()) for service in (supervisor, slack)]
    harness.running.extend(zip((supervisor, slack), tasks, strict=True))
    await asyncio.wait_for(slack.ready.wait(), DEADLINE)  # ready at once: nothing outside holds up the start
    action_id, _ = harness.new_item(1)

    await eventually(lambda: slack.link().state.value == "retrying", DEADLINE)  # type: ignore[union-attr]
    assert "connection refused" in (slack.link().last_error or "")  # type: ignore[union-attr]
    await harness.slack.come_back()
    await harness.wait_thread(action_id)
