"""The Telegram source: the real python-telegram-bot Application against a loopback Bot API,
Whisper through the real openai SDK against a loopback transcription endpoint (the harness and
the doubles: conftest_telegram); the lead's end-to-end tests run the same service through the
real pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from ai_employee.model.events import Event, EventType
from ai_employee.model.messages import IncomingMessage
from ai_employee.model.plugins import PluginDisabled, load_factories
from ai_employee.sources.telegram import WEBHOOK_PATH, UpdateFailed, create
from tests.conftest import eventually
from tests.integration.conftest_telegram import (  # noqa: F401 - harness_fixture registers the fixture
    ALLOWED,
    DEADLINE,
    GROUP,
    STRANGER,
    Harness,
    RouteTable,
    harness_fixture,
)

VOICE = b"OggS\x00\x02" + b"opus-frames-of-a-voice-note" * 40


def plan_created(action_id: str, plan_id: str, **payload: Any) -> Event:
    return Event(
        EventType.PLAN_CREATED,
        {"plan_id": plan_id, "action_id": action_id, **payload},
        correlation_id=action_id,
        source="planner",
    )


async def voice_action(harness: Harness) -> tuple[str, dict[str, Any]]:
    """A voice note from the allowed chat, stored: (action id, the user's message)."""
    message = harness.telegram.send_voice(ALLOWED, VOICE, duration=20)
    [stored] = await harness.action_count(1)
    await harness.reply_to(ALLOWED, stored.action_id)
    return stored.action_id, message


async def plan_waiting(harness: Harness, plan_id: str = "plan-20261121-101502-a1b2c3") -> dict[str, Any]:
    """A stored voice note whose plan was announced with buttons: the bot's plan message."""
    action_id, _ = await voice_action(harness)
    harness.approvals.plans[plan_id] = "pending_approval"
    harness.bus.publish(plan_created(action_id, plan_id, action="atlas.work_order", title="Fix pump 3"))
    return await harness.reply_to(ALLOWED, f"Plan {plan_id} waits for your approval")


# -- voice notes and other content ---------------------------------------------------------


async def test_voice_note_from_an_allowed_chat_becomes_an_action_with_its_transcript_and_cost(
    harness: Harness,
) -> None:
    harness.openai.set_transcript(VOICE, "Pump 3 on line 2 is leaking oil.")
    await harness.start()

    message = harness.telegram.send_voice(ALLOWED, VOICE, duration=30)

    [stored] = await harness.action_count(1)
    incoming = stored.message
    assert incoming.source == "telegram"
    assert incoming.source_ref == f"{ALLOWED}:{message['message_id']}"
    assert incoming.body == "Pump 3 on line 2 is leaking oil."
    assert incoming.title == "Pump 3 on line 2 is leaking oil."
    assert incoming.sender == "Jane Doe (@jane)"
    assert incoming.properties["duration_seconds"] == 30
    assert incoming.properties["transcript_cost_usd"] == pytest.approx(0.003)
    assert incoming.properties["transcription"] == "done"
    assert stored.files == {f"voice-{ALLOWED}-{message['message_id']}.ogg": VOICE}
    assert [request.model for request in harness.openai.requests] == ["whisper-1"]


async def test_the_chat_is_told_the_message_arrived_with_its_action_id_and_transcript(
    harness: Harness,
) -> None:
    harness.openai.set_transcript(VOICE, "Pump 3 is leaking.")
    await harness.start()

    message = harness.telegram.send_voice(ALLOWED, VOICE, duration=12)

    [stored] = await harness.action_count(1)
    reply = await harness.reply_to(ALLOWED, stored.action_id)
    assert "Pump 3 is leaking." in reply["text"]
    assert reply["reply_to_message"]["message_id"] == message["message_id"]


async def test_a_voice_note_from_a_chat_not_allowed_creates_nothing_and_gets_no_answer(
    harness: Harness,
) -> None:
    await harness.start()

    harness.telegram.send_voice(STRANGER, VOICE, duration=5)
    harness.telegram.send_text(ALLOWED, "barrier: this one is heard")

    [stored] = await harness.action_count(1)
    assert stored.message.body == "barrier: this one is heard"
    await harness.reply_to(ALLOWED, stored.action_id)
    assert harness.intake.calls == 1
    assert harness.telegram.messages_to(STRANGER) == []
    assert harness.openai.requests == []


async def test_a_chat_not_allowed_is_reported_once_however_often_it_writes(harness: Harness) -> None:
    await harness.start()

    for text in ("hello", "hello?", "anyone?"):
        harness.telegram.send_text(STRANGER, text)
    harness.telegram.send_text(ALLOWED, "barrier")
    await harness.action_count(1)
    await harness.bus.drain(DEADLINE)

    reports = harness.of_type(EventType.TELEGRAM_UNAUTHORIZED)
    assert [event.payload["chat_id"] for event in reports] == [STRANGER]


async def test_a_text_message_becomes_an_action_with_the_text_as_body(harness: Harness) -> None:
    await harness.start()

    harness.telegram.send_text(ALLOWED, "Order 20 filters for line 4\nBefore Friday please")

    [stored] = await harness.action_count(1)
    assert stored.message.title == "Order 20 filters for line 4"
    assert stored.message.body == "Order 20 filters for line 4\nBefore Friday please"
    assert stored.message.attachments == []


async def test_a_message_in_an_allowed_group_is_heard(harness: Harness) -> None:
    await harness.start()

    harness.telegram.send_text(
        GROUP, "Compressor B trips every hour", user=harness.telegram.user(5555, "Sam", None, None)
    )

    [stored] = await harness.action_count(1)
    assert stored.message.source_ref.startswith(f"{GROUP}:")
    assert stored.message.sender == "Sam"


async def test_a_photo_with_a_caption_keeps_the_largest_size_and_the_caption_as_body(
    harness: Harness,
) -> None:
    image = b"\xff\xd8\xff\xe0JFIF" + bytes(range(256)) * 8
    await harness.start()

    message = harness.telegram.send_photo(ALLOWED, image, caption="Crack in the housing of pump 3")

    [stored] = await harness.action_count(1)
    assert stored.message.body == "Crack in the housing of pump 3"
    assert stored.files == {f"photo-{ALLOWED}-{message['message_id']}.jpg": image}
    assert stored.message.attachments[0].content_type == "image/jpeg"


async def test_a_document_is_kept_under_its_own_name(harness: Harness) -> None:
    await harness.start()

    harness.telegram.send_document(
        ALLOWED, b"%PDF-1.7 manual", file_name="../../pump manual.pdf", mime_type="application/pdf"
    )

    [stored] = await harness.action_count(1)
    assert stored.files == {"pump manual.pdf": b"%PDF-1.7 manual"}
    assert stored.message.title == "Document pump manual.pdf from Jane Doe"


async def test_an_audio_file_is_transcribed_like_a_voice_note(harness: Harness) -> None:
    harness.openai.set_transcript(VOICE, "Weekly report: all lines running.", seconds=120)
    await harness.start()

    harness.telegram.send_audio(ALLOWED, VOICE, duration=119, file_name="report.mp3")

    [stored] = await harness.action_count(1)
    assert stored.message.body == "Weekly report: all lines running."
    assert stored.message.properties["duration_seconds"] == 120
    assert stored.message.properties["transcript_cost_usd"] == pytest.approx(0.012)
    assert list(stored.files) == ["report.mp3"]


async def test_a_file_telegram_refuses_to_serve_still_becomes_an_action_saying_why(harness: Harness) -> None:
    await harness.start()

    harness.telegram.send_document(
        ALLOWED, b"\0" * (20 * 1024 * 1024 + 1), file_name="scan.tiff", mime_type="image/tiff", caption="Scan"
    )

    [stored] = await harness.action_count(1)
    assert stored.files == {}
    assert stored.message.properties["attachment_error"] == "File is too big"
    await harness.reply_to(ALLOWED, "could not be fetched")


async def test_an_unsupported_message_is_answered_and_creates_nothing(harness: Harness) -> None:
    await harness.start()

    harness.telegram.send_sticker(ALLOWED)
    harness.telegram.send_text(ALLOWED, "barrier")

    [stored] = await harness.action_count(1)
    assert stored.message.body == "barrier"
    await harness.reply_to(ALLOWED, "this message was not saved")


# -- without a key -------------------------------------------------------------------------


async def test_a_voice_note_without_an_openai_key_becomes_an_action_marked_pending(harness: Harness) -> None:
    await harness.start(openai_key=False)

    harness.telegram.send_voice(ALLOWED, VOICE, duration=42)

    [stored] = await harness.action_count(1)
    assert stored.message.properties == {"transcription": "pending", "duration_seconds": 42}
    assert stored.files  # the audio is kept all the same
    assert harness.openai.requests == []
    await harness.reply_to(ALLOWED, "Transcription pending")
    await harness.bus.drain(DEADLINE)
    [pending] = harness.of_type(EventType.TRANSCRIPTION_PENDING)
    assert pending.correlation_id == stored.action_id


async def test_pending_voice_notes_are_transcribed_at_start_once_a_key_is_configured(
    harness: Harness,
) -> None:
    harness.openai.set_transcript(VOICE, "Replace the belt on conveyor 7.", seconds=42)
    first = await harness.start(openai_key=False)
    harness.telegram.send_voice(ALLOWED, VOICE, duration=42)
    [stored] = await harness.action_count(1)
    await harness.reply_to(ALLOWED, "Transcription pending")
    await harness.stop(first)

    await harness.start(openai_key=True)

    completed = await eventually(lambda: harness.of_type(EventType.TRANSCRIPTION_COMPLETED), timeout=DEADLINE)
    assert completed[0].correlation_id == stored.action_id
    assert completed[0].payload["transcript"] == "Replace the belt on conveyor 7."
    assert completed[0].payload["transcript_cost_usd"] == pytest.approx(0.0042)
    assert completed[0].payload["duration_seconds"] == 42
    await harness.reply_to(ALLOWED, "Transcribed your voice note")
    assert harness.intake.calls == 1  # the action is not submitted again; the pipeline updates it
    assert harness.store.data[("telegram", "pending_transcriptions")] == "[]"
    kept = harness.store.data[("telegram", f"transcript:{stored.action_id}")]
    assert "Replace the belt on conveyor 7." in kept  # durable, should the event be missed


async def test_a_pending_voice_note_is_read_from_the_vault_copy_its_action_note_links(
    harness: Harness,
) -> None:
    harness.openai.set_transcript(VOICE, "From the vault copy.")
    first = await harness.start(openai_key=False)
    harness.telegram.send_voice(ALLOWED, VOICE, duration=9)
    [stored] = await harness.action_count(1)
    await harness.reply_to(ALLOWED, "Transcription pending")
    await harness.stop(first)
    (harness.vault / "Attachments" / "2026-11-21").mkdir(parents=True)
    (harness.vault / "Attachments" / "2026-11-21" / "a1b2c3-1-voice.ogg").write_bytes(VOICE)
    (harness.vault / "Needs_Action").mkdir()
    (harness.vault / "Needs_Action" / "voice.md").write_text(
        "---\nid: x\ntype: action\n"
        "attachments: ['[[Attachments/2026-11-21/a1b2c3-1-voice.ogg]]']\n---\nbody\n",
        encoding="utf-8",
    )
    harness.actions.rows[stored.action_id] = {"source": "telegram", "note": "Needs_Action/voice.md"}
    file_downloads_before = sum(1 for method, _ in harness.telegram.calls if method == "getFile")

    await harness.start(openai_key=True)

    completed = await eventually(lambda: harness.of_type(EventType.TRANSCRIPTION_COMPLETED), timeout=DEADLINE)
    assert completed[0].payload["transcript"] == "From the vault copy."
    assert sum(1 for method, _ in harness.telegram.calls if method == "getFile") == file_downloads_before


async def test_a_failing_transcription_leaves_the_action_pending_instead_of_losing_it(
    harness: Harness,
) -> None:
    harness.openai.fail_next(503, times=10)
    await harness.start()

    harness.telegram.send_voice(ALLOWED, VOICE, duration=8)

    [stored] = await harness.action_count(1)
    assert stored.message.properties["transcription"] == "pending"
    await harness.reply_to(ALLOWED, "Transcription pending: transcription failed")


async def test_audio_the_service_refuses_is_marked_failed_not_pending(harness: Harness) -> None:
    await harness.start(openai_key=True, local_whisper_model=None)
    harness.telegram.send_voice(ALLOWED, b"", duration=1)  # nothing to transcribe

    [stored] = await harness.action_count(1)

    assert stored.message.properties["transcription"] == "failed"
    assert "empty" in stored.message.properties["transcription_error"]
    await harness.reply_to(ALLOWED, "It could not be transcribed")
    assert harness.store.data.get(("telegram", "pending_transcriptions")) is None


# -- plans, buttons, outcomes --------------------------------------------------------------


async def test_a_plan_for_the_action_is_announced_with_approve_and_reject_buttons(harness: Harness) -> None:
    await harness.start()

    announced = await plan_waiting(harness, "plan-20261121-101502-a1b2c3")

    buttons = announced["reply_markup"]["inline_keyboard"][0]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [
        ("Approve", "aie:approve:plan-20261121-101502-a1b2c3"),
        ("Reject", "aie:reject:plan-20261121-101502-a1b2c3"),
    ]
    assert "Fix pump 3" in announced["text"]
    assert "atlas.work_order" in announced["text"]


async def test_a_plan_created_before_the_intake_returned_is_still_announced(harness: Harness) -> None:
    """A fast pipeline can plan while submit() is still finishing: the event must not be lost."""
    intake = harness.intake
    submit = intake.submit

    async def submit_and_plan(message: IncomingMessage) -> str:
        action_id = await submit(message)
        harness.bus.publish(plan_created(action_id, "plan-fast"))
        await harness.bus.drain(DEADLINE)  # the plan event is handled before submit returns
        return action_id

    intake.submit = submit_and_plan  # type: ignore[method-assign]
    await harness.start()

    harness.telegram.send_text(ALLOWED, "Belt slipping on conveyor 2")

    announced = await harness.reply_to(ALLOWED, "Plan plan-fast waits for your approval")
    assert announced["reply_markup"]["inline_keyboard"]


async def test_a_plan_naming_a_telegram_source_ref_reaches_that_chat(harness: Harness) -> None:
    """After the service's own records were lost, the pipeline's payload still says where to answer."""
    await harness.start()
    message = harness.telegram.send_text(ALLOWED, "stored by an earlier install")
    await harness.action_count(1)

    harness.bus.publish(
        plan_created(
            "act-unknown-here",
            "plan-hinted",
            source="telegram",
            source_ref=f"{ALLOWED}:{message['message_id']}",
        )
    )

    announced = await harness.reply_to(ALLOWED, "Plan plan-hinted waits for your approval")
    assert announced["reply_to_message"]["message_id"] == message["message_id"]


async def test_plans_of_actions_from_other_sources_are_not_announced(harness: Harness) -> None:
    await harness.start()
    action_id, _ = await voice_action(harness)
    sent_before = len(harness.telegram.sent)

    harness.bus.publish(plan_created("act-from-the-inbox", "plan-other"))
    harness.bus.publish(plan_created(action_id, "plan-mine"))

    await harness.reply_to(ALLOWED, "plan-mine")
    assert len(harness.telegram.sent) == sent_before + 1


async def test_the_approve_button_approves_the_plan_through_the_gateway(harness: Harness) -> None:
    await harness.start()
    announced = await plan_waiting(harness, "plan-a")

    query_id = harness.telegram.press_button(
        announced, "aie:approve:plan-a", user=harness.telegram.user(ALLOWED)
    )

    answer = await harness.telegram.wait_for(lambda: harness.telegram.answers.get(query_id), DEADLINE)
    assert harness.approvals.calls == [("approve", "plan-a", None)]
    assert answer["text"] == "Approved plan-a."
    edit = await harness.telegram.wait_for(lambda: harness.telegram.edits, DEADLINE)
    assert edit[0]["reply_markup"] is None  # the buttons are gone
    assert "Approved by Jane Doe (@jane)" in edit[0]["text"]


async def test_a_second_press_is_told_the_plan_is_already_decided(harness: Harness) -> None:
    await harness.start()
    announced = await plan_waiting(harness, "plan-b")
    approver = harness.telegram.user(ALLOWED)
    first = harness.telegram.press_button(announced, "aie:approve:plan-b", user=approver)
    await harness.telegram.wait_for(lambda: harness.telegram.answers.get(first), DEADLINE)

    second = harness.telegram.press_button(announced, "aie:reject:plan-b", user=approver)

    answer = await harness.telegram.wait_for(lambda: harness.telegram.answers.get(second), DEADLINE)
    assert answer["text"].startswith("Already decided")
    assert harness.approvals.plans["plan-b"] == "approved"


async def test_the_reject_button_rejects_the_plan_saying_who_rejected_it(harness: Harness) -> None:
    await harness.start()
    announced = await plan_waiting(harness, "plan-c")

    query_id = harness.telegram.press_button(
        announced, "aie:reject:plan-c", user=harness.telegram.user(ALLOWED)
    )

    answer = await harness.telegram.wait_for(lambda: harness.telegram.answers.get(query_id), DEADLINE)
    assert answer["text"] == "Rejected plan-c."
    assert harness.approvals.calls == [("reject", "plan-c", "rejected in Telegram by Jane Doe (@jane)")]


async def test_a_button_pressed_by_someone_not_allowed_decides_nothing(harness: Harness) -> None:
    await harness.start()
    announced = await plan_waiting(harness, "plan-d")

    query_id = harness.telegram.press_button(
        announced, "aie:approve:plan-d", user=harness.telegram.user(STRANGER, "Mallory", None, None)
    )

    answer = await harness.telegram.wait_for(lambda: harness.telegram.answers.get(query_id), DEADLINE)
    assert answer["text"] == "You are not allowed to approve or reject plans."
    assert harness.approvals.calls == []
    assert harness.approvals.plans["plan-d"] == "pending_approval"


async def test_a_plan_decided_outside_telegram_loses_its_buttons(harness: Harness) -> None:
    await harness.start()
    announced = await plan_waiting(harness, "plan-obsidian")

    harness.bus.publish(Event(EventType.APPROVAL_GRANTED, {"plan_id": "plan-obsidian"}))

    [edit] = await harness.telegram.wait_for(lambda: harness.telegram.edits, DEADLINE)
    assert edit["message_id"] == announced["message_id"]
    assert edit["reply_markup"] is None
    assert edit["text"].endswith("Approved outside Telegram.")


async def test_a_plan_decided_while_its_message_is_on_its_way_loses_its_buttons(harness: Harness) -> None:
    await harness.start()
    action_id, _ = await voice_action(harness)
    harness.approvals.plans["plan-late"] = "pending_approval"
    harness.telegram.hang("sendMessage")
    harness.bus.publish(plan_created(action_id, "plan-late", action="atlas.work_order", title="Fix pump 3"))
    await harness.telegram.wait_for(
        lambda: any("plan-late" in str(params.get("text")) for method, params in harness.telegram.calls),
        DEADLINE,
    )
    handled = asyncio.Event()

    async def after_telegram(_event: Event) -> None:  # its delivery runs after Telegram's
        handled.set()

    harness.bus.subscribe(EventType.APPROVAL_GRANTED, after_telegram, name="test.approved")
    harness.bus.publish(Event(EventType.APPROVAL_GRANTED, {"plan_id": "plan-late"}))
    await asyncio.wait_for(handled.wait(), DEADLINE)

    harness.telegram.release("sendMessage")

    [edit] = await harness.telegram.wait_for(lambda: harness.telegram.edits, DEADLINE)
    assert edit["reply_markup"] is None
    assert edit["text"].endswith("Approved outside Telegram.")


async def test_the_outcome_is_sent_when_the_plan_is_executed(harness: Harness) -> None:
    await harness.start()
    action_id, message = await voice_action(harness)

    harness.bus.publish(
        Event(
            EventType.PLAN_EXECUTED,
            {
                "plan_id": "plan-e",
                "dry_run": False,
                "result": {"work_order_id": 123, "custom_id": "WO000123"},
            },
            correlation_id=action_id,
        )
    )

    outcome = await harness.reply_to(ALLOWED, "work order WO000123 created")
    assert outcome["reply_to_message"]["message_id"] == message["message_id"]


async def test_the_error_is_sent_when_the_plan_fails(harness: Harness) -> None:
    await harness.start()
    action_id, _ = await voice_action(harness)

    harness.bus.publish(
        Event(
            EventType.PLAN_FAILED,
            {"plan_id": "plan-f", "error": "Atlas answered 403: You need a license"},
            correlation_id=action_id,
        )
    )

    await harness.reply_to(ALLOWED, "Plan plan-f failed: Atlas answered 403: You need a license")


async def test_an_outcome_for_an_action_known_only_to_the_ledger_reaches_its_chat(harness: Harness) -> None:
    await harness.start()
    message = harness.telegram.send_text(ALLOWED, "seen before a restart")
    await harness.action_count(1)
    harness.actions.rows["act-older"] = {
        "source": "telegram",
        "source_ref": f"{ALLOWED}:{message['message_id']}",
    }

    harness.bus.publish(
        Event(
            EventType.PLAN_EXECUTED,
            {"plan_id": "plan-g", "dry_run": True, "result": {}},
            correlation_id="act-older",
        )
    )

    await harness.reply_to(ALLOWED, "dry-run mode: nothing was sent")


# -- nothing lost, nothing twice -----------------------------------------------------------


async def test_a_restart_does_not_submit_handled_updates_again(harness: Harness) -> None:
    first = await harness.start()
    harness.telegram.send_text(ALLOWED, "one")
    harness.telegram.send_text(ALLOWED, "two")
    stored = await harness.action_count(2)
    await harness.reply_to(ALLOWED, stored[1].action_id)
    await harness.stop(first)

    await harness.start()
    harness.telegram.send_text(ALLOWED, "three")

    await harness.action_count(3)
    assert harness.intake.calls == 3
    assert [action.message.body for action in harness.intake.actions] == ["one", "two", "three"]


async def test_the_offset_is_only_acknowledged_once_the_note_is_durable(harness: Harness) -> None:
    harness.intake.fail_next = 1
    service = harness.service()
    crashed = asyncio.create_task(service.run())
    message = harness.telegram.send_text(ALLOWED, "written after the crash")

    with pytest.raises(UpdateFailed, match="No space left on device"):
        await asyncio.wait_for(crashed, DEADLINE)  # a crash: the orchestrator runs it again
    assert len(harness.telegram.pending_update_ids) == 1  # Telegram still holds the update

    await harness.start(service)

    [stored] = await harness.action_count(1)
    assert stored.message.source_ref == f"{ALLOWED}:{message['message_id']}"
    await harness.reply_to(ALLOWED, stored.action_id)
    assert len(harness.intake.actions) == 1
    await harness.telegram.wait_for(lambda: not harness.telegram.pending_update_ids, DEADLINE)


async def test_a_message_redelivered_after_its_note_was_written_is_not_submitted_twice(
    harness: Harness,
) -> None:
    first = await harness.start()
    message = harness.telegram.send_text(ALLOWED, "once only")
    [stored] = await harness.action_count(1)
    await harness.reply_to(ALLOWED, stored.action_id)
    await harness.stop(first)
    # As if the crash came after the note but before the offset was stored.
    harness.store.data.pop(("telegram", f"offset:{harness.telegram.bot_id}"))
    harness.telegram.enqueue({"message": message})
    replies_before = len(harness.telegram.messages_to(ALLOWED))

    await harness.start()
    harness.telegram.send_text(ALLOWED, "barrier")

    await harness.action_count(2)
    await harness.reply_to(ALLOWED, harness.intake.actions[1].action_id)
    assert harness.intake.calls == 2
    assert len(harness.telegram.messages_to(ALLOWED)) == replies_before + 1


# -- webhook -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def control_port(routes: RouteTable) -> AsyncIterator[str]:
    """A stand-in for the daemon's control server, serving whatever routes are registered."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        for method, path, handler in routes.routes:
            if (method, path) == (request.method, request.path):
                response: web.StreamResponse = await handler(request)
                return response
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_webhook_calls_without_the_secret_token_are_refused_with_403(harness: Harness) -> None:
    service = harness.service(mode="webhook", webhook_secret="s3cret-webhook-token")
    async with control_port(harness.routes) as base:
        await harness.start(service)
        async with httpx.AsyncClient() as client:
            missing = await client.post(base + WEBHOOK_PATH, content=b"{not json")
            wrong = await client.post(
                base + WEBHOOK_PATH,
                content=b"{not json",
                headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-webhook-tokeN"},
            )
    assert (missing.status_code, wrong.status_code) == (403, 403)
    assert harness.intake.calls == 0


async def test_webhook_updates_with_the_secret_token_become_actions(harness: Harness) -> None:
    async with control_port(harness.routes) as base:
        url = base + WEBHOOK_PATH
        await harness.start(mode="webhook", webhook_secret="s3cret-webhook-token", webhook_url=url)
        assert harness.telegram.webhook == {
            "url": url,
            "secret_token": "s3cret-webhook-token",
            "allowed_updates": ["message", "callback_query"],
        }

        harness.telegram.send_text(ALLOWED, "via the webhook")

        [stored] = await harness.action_count(1)
        assert stored.message.body == "via the webhook"
        await harness.reply_to(ALLOWED, stored.action_id)
        await harness.telegram.wait_for(lambda: not harness.telegram.pending_update_ids, DEADLINE)


async def test_webhook_mode_without_a_secret_stays_off(harness: Harness) -> None:
    with pytest.raises(PluginDisabled, match="webhook_secret"):
        harness.service(mode="webhook")


# -- plug-in seam and health ---------------------------------------------------------------


async def test_without_a_bot_token_the_service_stays_off(harness: Harness) -> None:
    context = harness.context()
    context.settings.telegram.bot_token = None
    with pytest.raises(PluginDisabled, match="TELEGRAM_BOT_TOKEN is not set"):
        create(context)


def test_the_service_is_registered_under_the_services_entry_point() -> None:
    factories, broken = load_factories("ai_employee.services")
    assert "telegram" not in broken
    assert factories["telegram"] is create


async def test_health_names_the_bot_and_the_mode(harness: Harness) -> None:
    service = await harness.start()

    report = await service.health()

    assert report.healthy
    assert report.detail == "@aie_test_bot (polling)"
    assert report.data["transcriber"] == "openai:whisper-1"
