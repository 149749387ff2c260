"""Supervision in Slack: one thread per action, checkpoints as replies, Approve / Reject buttons that
make the same move as Obsidian, only for allowed users, exactly once."""

from __future__ import annotations

import time

from ai_employee.model.events import EventType
from ai_employee.vault.notes import parse_note
from tests.conftest import eventually
from tests.fakes.slack import CHANNEL_ID
from tests.integration.conftest_slack import (
    ALLOWED,
    DEADLINE,
    STRANGER,
    Harness,
    buttons_of,
    harness_fixture,
    text_of,
)

__all__ = ["harness_fixture"]


async def test_each_action_gets_one_thread_whose_top_message_shows_the_item(harness: Harness) -> None:
    await harness.start()
    first, _ = harness.new_item(1, title="Pump 3 leaking on line 2")
    second, _ = harness.new_item(2, title="Conveyor belt torn")

    top = await harness.wait_thread(first)
    await harness.wait_thread(second)
    await harness.wait_reply(top["ts"], "Waiting for approval")

    assert len(harness.slack.top_messages()) == 2
    shown = text_of(harness.slack.current(CHANNEL_ID, top["ts"]))
    for fact in (
        "Pump 3 leaking on line 2",
        "atlas.work_order",
        "medium",
        "Waiting for approval",
        "obsidian://open?vault=vault",
    ):
        assert fact in shown
    assert "Plans/2026-12-07 pump-1 plan" in shown


async def test_checkpoints_are_replies_in_the_items_thread(harness: Harness) -> None:
    await harness.start()
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    await harness.wait_reply(top["ts"], "Waiting for approval")

    harness.publish(EventType.APPROVAL_GRANTED, action_id, plan_id=plan_id, by="jane", door="cli")
    harness.publish(
        EventType.PLAN_EXECUTING, action_id, plan_id=plan_id, action="atlas.work_order", live=False
    )
    harness.publish(
        EventType.PLAN_EXECUTED,
        action_id,
        plan_id=plan_id,
        dry_run=True,
        result={"work_order": "WO-1042"},
        note="Done/x.md",
    )

    done = await harness.wait_reply(top["ts"], "WO-1042")
    assert "dry run" in text_of(done)
    replies = " ".join(text_of(post) for post in harness.slack.replies(top["ts"]))
    assert "Received from file" in replies
    assert "Approved by jane via the CLI" in replies
    assert "Running atlas.work_order" in replies
    assert len(harness.slack.top_messages()) == 1
    await eventually(lambda: "Complete" in text_of(harness.slack.current(CHANNEL_ID, top["ts"])), DEADLINE)


async def test_failed_checkpoint_says_the_error_and_how_to_retry(harness: Harness) -> None:
    await harness.start()
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    harness.publish(
        EventType.PLAN_FAILED, action_id, plan_id=plan_id, error="Atlas POST /workorders: connection refused"
    )

    failed = await harness.wait_reply(top["ts"], "connection refused")
    assert "move the plan from Failed/ back to Approved/" in text_of(failed)
    assert f"ai-employee approve {plan_id}" in text_of(failed)


async def test_waiting_plan_carries_approve_and_reject_buttons(harness: Harness) -> None:
    await harness.start()
    action_id, _ = harness.new_item(1)
    top = await harness.wait_thread(action_id)

    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")
    assert buttons_of(waiting) == ["aie_approve", "aie_reject"]


async def test_no_buttons_without_allowed_users(harness: Harness) -> None:
    await harness.start(allowed=None)
    action_id, _ = harness.new_item(1)
    top = await harness.wait_thread(action_id)

    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")
    assert buttons_of(waiting) == []


async def test_click_by_an_allowed_user_moves_the_plan_to_approved(harness: Harness) -> None:
    await harness.start()
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")

    click = harness.slack.block_actions(ALLOWED, waiting, "aie_approve", username="jane")
    envelope = await harness.slack.send_envelope("interactive", click)

    await eventually(lambda: harness.plan_folder(plan_id) == "Approved", DEADLINE, "the plan in Approved/")
    assert harness.slack.ack_of(envelope) is not None
    approved = next((harness.vault / "Approved").glob("*.md"))
    properties, _ = parse_note(approved.read_text(encoding="utf-8"))
    assert (properties["decided_by"], properties["decided_via"]) == ("jane", "slack")
    await harness.slack.wait_for(
        lambda: any("Approved" in e["text"] for e in harness.slack.ephemerals), DEADLINE
    )


async def test_click_is_acknowledged_before_the_plan_is_moved(harness: Harness) -> None:
    await harness.start()
    action_id, _ = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")

    started = time.monotonic()
    envelope = await harness.slack.send_envelope(
        "interactive", harness.slack.block_actions(ALLOWED, waiting, "aie_reject")
    )
    await harness.slack.wait_for(lambda: harness.slack.ack_of(envelope), DEADLINE)
    assert time.monotonic() - started < 3.0


async def test_click_by_a_stranger_is_refused_and_moves_nothing(harness: Harness) -> None:
    _, slack = await harness.start()
    assert slack is not None
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")

    await harness.slack.send_envelope(
        "interactive", harness.slack.block_actions(STRANGER, waiting, "aie_approve")
    )

    refusal = await harness.slack.wait_for(
        lambda: next((e for e in harness.slack.ephemerals if e["user"] == STRANGER), None), DEADLINE
    )
    assert "not allowed" in refusal["text"]
    assert harness.plan_folder(plan_id) == "Plans"
    assert slack.doors.refused_clicks == 1


async def test_a_second_click_changes_nothing(harness: Harness) -> None:
    await harness.start()
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")

    await harness.slack.send_envelope(
        "interactive", harness.slack.block_actions(ALLOWED, waiting, "aie_approve")
    )
    await eventually(lambda: harness.plan_folder(plan_id) == "Approved", DEADLINE)
    await harness.slack.send_envelope(
        "interactive", harness.slack.block_actions(ALLOWED, waiting, "aie_reject")
    )

    await harness.slack.wait_for(
        lambda: any("nothing changed" in e["text"] for e in harness.slack.ephemerals), DEADLINE
    )
    assert harness.plan_folder(plan_id) == "Approved"
    assert len(list((harness.vault / "Approved").glob("*.md"))) == 1
    assert not list((harness.vault / "Rejected").glob("*.md"))


async def test_a_decision_takes_the_buttons_away_and_says_who_decided(harness: Harness) -> None:
    await harness.start()
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")

    harness.publish(EventType.APPROVAL_DENIED, action_id, plan_id=plan_id, by="U0ALLOWED1", door="telegram")

    await harness.slack.wait_for(
        lambda: any(update["ts"] == waiting["ts"] for update in harness.slack.updates), DEADLINE
    )
    decided = harness.slack.current(CHANNEL_ID, waiting["ts"])
    assert buttons_of(decided) == []
    assert "Rejected by U0ALLOWED1 via Telegram" in text_of(decided)


async def test_checkpoints_that_come_together_coalesce_into_one_reply_without_stale_buttons(
    harness: Harness,
) -> None:
    await harness.start()
    action_id, plan_id = harness.new_item(1)  # received, planned: no await in between, one flush
    harness.publish(EventType.APPROVAL_GRANTED, action_id, plan_id=plan_id, by="vault", door="vault")

    top = await harness.wait_thread(action_id)
    reply = await harness.wait_reply(top["ts"], "Approved in Obsidian")
    assert len(harness.slack.replies(top["ts"])) == 1
    assert "Received from file" in text_of(reply)
    assert "Planned: atlas.work_order" in text_of(reply)
    assert buttons_of(reply) == []
    assert "Approved" in text_of(harness.slack.current(CHANNEL_ID, top["ts"]))


async def test_at_most_one_post_per_thread_per_min_interval_and_the_last_state_is_posted(
    harness: Harness,
) -> None:
    await harness.start(slack__min_interval=0.5)
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    await harness.wait_reply(top["ts"], "Waiting for approval")
    first_reply_at = time.monotonic()

    harness.publish(EventType.APPROVAL_GRANTED, action_id, plan_id=plan_id, by="jane", door="cli")
    harness.publish(
        EventType.PLAN_EXECUTING, action_id, plan_id=plan_id, action="atlas.work_order", live=False
    )
    harness.publish(
        EventType.PLAN_EXECUTED, action_id, plan_id=plan_id, dry_run=True, result={"work_order": "WO-7"}
    )

    last = await harness.wait_reply(top["ts"], "WO-7")
    assert time.monotonic() - first_reply_at >= 0.45
    assert len(harness.slack.replies(top["ts"])) == 2
    assert "Approved by jane" in text_of(last) and "Running" in text_of(last)
