"""The WhatsApp source against a loopback Graph API that behaves per shared/apis.md §4: signed
webhooks in, Graph API calls out (the harness and the doubles: conftest_whatsapp). The daemon end
to end, SIGKILL included, is in tests/e2e/test_whatsapp_flow.py."""

from __future__ import annotations

import time

import httpx
import pytest

from ai_employee.control.webhooks import WebhookListener
from ai_employee.model.events import Event, EventType
from ai_employee.model.plugins import PluginDisabled, load_factories
from ai_employee.model.services import Decider
from ai_employee.sources.whatsapp import WEBHOOK_PATH, create
from tests.conftest import eventually
from tests.integration.conftest_whatsapp import (  # noqa: F401 - harness_fixture registers the fixture
    ALLOWED,
    DEADLINE,
    STRANGER,
    Harness,
    harness_fixture,
)

AUDIO = b"OggS\x00fake-opus-voice-note" * 64
PHOTO = b"\xff\xd8\xff\xe0fake-jpeg" * 50


# -- the webhook --------------------------------------------------------------------------


async def test_the_subscription_check_echoes_the_challenge_only_for_the_verify_token(
    harness: Harness,
) -> None:
    await harness.start()
    url = harness.graph.webhook_url
    assert url is not None
    async with httpx.AsyncClient() as client:
        good = await client.get(
            url,
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": harness.graph.verify_token,
                "hub.challenge": "1158201444",
            },
        )
        wrong = await client.get(
            url, params={"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"}
        )
        missing = await client.get(url)
    assert (good.status_code, good.text, good.headers["content-type"].split(";")[0]) == (
        200,
        "1158201444",
        "text/plain",
    )
    assert (wrong.status_code, missing.status_code) == (403, 403)
    assert "1158201444" not in wrong.text


async def test_forged_and_unsigned_deliveries_get_401_and_nothing_is_read(harness: Harness) -> None:
    await harness.start()
    body = harness.graph.encode(harness.graph.text(ALLOWED, "forged order"))
    forged = await harness.graph.post(
        body, signature=harness.graph.signature(body, secret="not-the-app-secret")
    )
    unsigned = await harness.graph.post(body, signature=None)
    tampered = await harness.graph.post(
        body.replace(b"forged", b"Forged"), signature=harness.graph.signature(body)
    )
    assert [forged.status, unsigned.status, tampered.status] == [401, 401, 401]
    assert not list((harness.vault / ".ai-employee" / "whatsapp" / "spool").glob("*.json"))
    assert harness.intake.calls == 0
    assert not harness.of_type(EventType.WHATSAPP_MESSAGE_RECEIVED)


async def test_a_text_message_becomes_one_action_with_its_sender_and_message_id(harness: Harness) -> None:
    await harness.start()
    said = "Pump 3 on line 2 is leaking \u2013 fix today/please"  # Meta escapes both in the raw body
    payload = harness.graph.text(ALLOWED, said, name="Jane Doe")
    answer = await harness.graph.deliver(payload)
    assert answer.status == 200

    [stored] = await harness.action_count(1)
    message = stored.message
    assert (message.source, message.source_ref) == ("whatsapp", harness.graph.message_id(payload))
    assert message.body == said
    assert message.sender == f"Jane Doe (+{ALLOWED})"
    assert message.title.startswith("Pump 3 on line 2")
    reply = await harness.sent_to(ALLOWED, f"Saved as action {stored.action_id}")
    assert reply["context"] == {"message_id": message.source_ref}
    await eventually(lambda: harness.of_type(EventType.WHATSAPP_MESSAGE_PROCESSED), timeout=DEADLINE)
    [received] = harness.of_type(EventType.WHATSAPP_MESSAGE_RECEIVED)
    [processed] = harness.of_type(EventType.WHATSAPP_MESSAGE_PROCESSED)
    assert received.payload["message_id"] == message.source_ref
    assert processed.correlation_id == stored.action_id


async def test_the_answer_comes_at_once_while_the_pipeline_is_stuck(harness: Harness) -> None:
    await harness.start()
    harness.intake.gate.clear()  # the intake cannot write
    answers = [await harness.graph.deliver(harness.graph.text(ALLOWED, f"burst {n}")) for n in range(5)]
    assert all(answer.status == 200 for answer in answers)
    assert max(answer.seconds for answer in answers) < 1.0
    harness.intake.gate.set()
    assert len(await harness.action_count(5)) == 5
    assert [action.message.body for action in harness.intake.actions] == [f"burst {n}" for n in range(5)]


async def test_a_delivery_repeated_by_meta_makes_one_action_across_a_restart(harness: Harness) -> None:
    service = await harness.start()
    payload = harness.graph.text(ALLOWED, "Conveyor belt 4 is slipping")
    await harness.graph.deliver(payload)
    await harness.graph.deliver(payload)
    await harness.action_count(1)
    await harness.stop(service)

    await harness.start()  # a new run, the same durable store
    await harness.graph.deliver(payload)
    await eventually(lambda: not list((harness.vault / ".ai-employee" / "whatsapp" / "spool").glob("*.json")))
    assert harness.intake.calls == 1
    assert len(harness.intake.actions) == 1
    assert len([m for m in harness.graph.messages_to(ALLOWED) if "Saved as action" in str(m)]) == 1


async def test_a_write_cut_short_before_the_200_is_dropped_and_a_signed_body_that_is_not_json_set_aside(
    harness: Harness,
) -> None:
    spool = harness.vault / ".ai-employee" / "whatsapp" / "spool"
    spool.mkdir(parents=True)
    (spool / ".aie-tmp-abc123-00000000000000000001-1-000000.json").write_bytes(b'{"object":')
    await harness.start()
    answer = await harness.graph.post(b"{not json")
    assert answer.status == 200  # signed by Meta: stored first, judged after
    failed = harness.vault / ".ai-employee" / "whatsapp" / "failed"
    await eventually(lambda: list(failed.glob("*.json")), timeout=DEADLINE, message="the delivery set aside")
    assert [path.read_bytes() for path in failed.glob("*.json")] == [b"{not json"]
    assert not list(spool.iterdir())
    assert harness.intake.calls == 0


async def test_one_delivery_may_carry_several_messages(harness: Harness) -> None:
    await harness.start()
    first = harness.graph.text(ALLOWED, "first")
    second = harness.graph.text(ALLOWED, "second")
    first["entry"][0]["changes"][0]["value"]["messages"] += second["entry"][0]["changes"][0]["value"][
        "messages"
    ]
    await harness.graph.deliver(first)
    actions = await harness.action_count(2)
    assert [action.message.body for action in actions] == ["first", "second"]


# -- who is heard -------------------------------------------------------------------------


async def test_numbers_not_on_the_list_are_never_answered_stored_nor_logged_twice(harness: Harness) -> None:
    await harness.start()
    await harness.graph.deliver(harness.graph.text(STRANGER, "let me in"))
    await harness.graph.deliver(harness.graph.text(STRANGER, "let me in, please"))
    await harness.graph.deliver(harness.graph.text(ALLOWED, "a real one"))
    await harness.action_count(1)
    assert [action.message.body for action in harness.intake.actions] == ["a real one"]
    assert not harness.graph.messages_to(STRANGER)
    [refused] = harness.of_type(EventType.WHATSAPP_UNAUTHORIZED)
    assert refused.payload["sender"] == STRANGER


async def test_delivery_receipts_are_accepted_and_create_nothing(harness: Harness) -> None:
    await harness.start()
    answer = await harness.graph.deliver(harness.graph.status("wamid.HBgLunknown", ALLOWED, "delivered"))
    assert answer.status == 200
    await eventually(lambda: not list((harness.vault / ".ai-employee" / "whatsapp" / "spool").glob("*.json")))
    assert harness.intake.calls == 0
    assert not harness.graph.sent


# -- media ----------------------------------------------------------------------------------


async def test_a_voice_note_is_fetched_with_the_token_transcribed_and_kept(harness: Harness) -> None:
    harness.openai.set_transcript(AUDIO, "Pump 3 is leaking oil, needs fixing today", seconds=33.0)
    await harness.start()
    await harness.graph.deliver(harness.graph.voice(ALLOWED, AUDIO))
    [stored] = await harness.action_count(1)
    message = stored.message
    assert message.body == "Pump 3 is leaking oil, needs fixing today"
    assert message.properties["transcription"] == "done"
    assert message.properties["transcript_cost_usd"] == pytest.approx(0.0033, abs=1e-6)
    [(name, data)] = stored.files.items()
    assert name.startswith("voice-") and name.endswith(".ogg") and data == AUDIO
    assert harness.graph.unauthorized == 0
    await harness.sent_to(ALLOWED, "Transcript (0:33)")


async def test_a_voice_note_whisper_cannot_take_now_is_stored_pending_and_transcribed_later(
    harness: Harness,
) -> None:
    harness.openai.set_transcript(AUDIO, "Forklift 2 brakes are soft", seconds=12.0)
    harness.openai.fail_next(500, times=3)  # every try of the first attempt
    service = await harness.start()
    await harness.graph.deliver(harness.graph.voice(ALLOWED, AUDIO))
    [stored] = await harness.action_count(1)
    assert stored.message.properties["transcription"] == "pending"
    assert "without a transcript" in stored.message.body
    await harness.sent_to(ALLOWED, "Transcription pending")

    assert await service.transcribe_pending() == 1  # the audio fetched again from the Graph API
    [completed] = harness.of_type(EventType.TRANSCRIPTION_COMPLETED)
    assert completed.payload["transcript"] == "Forklift 2 brakes are soft"
    assert completed.payload["source"] == "whatsapp"
    assert completed.payload["transcript_cost_usd"] == pytest.approx(0.0012, abs=1e-6)
    await harness.sent_to(ALLOWED, "Transcribed your voice note")
    assert await service.transcribe_pending() == 0


async def test_a_photo_with_a_caption_becomes_an_attachment_and_an_expired_url_is_asked_again(
    harness: Harness,
) -> None:
    harness.graph.expire_next_url()
    await harness.start()
    await harness.graph.deliver(harness.graph.image(ALLOWED, PHOTO, caption="Crack in the housing"))
    [stored] = await harness.action_count(1)
    assert stored.message.body == "Crack in the housing"
    [(name, data)] = stored.files.items()
    assert name.startswith("photo-") and name.endswith(".jpg") and data == PHOTO
    lookups = [entry for entry in harness.graph.media_requests if entry.startswith("lookup:")]
    assert len(lookups) == 2  # the first URL had expired


async def test_a_document_keeps_its_name_and_a_file_over_the_limit_is_refused_on_the_note(
    harness: Harness,
) -> None:
    await harness.start(max_media_bytes=4096)
    await harness.graph.deliver(
        harness.graph.document(ALLOWED, b"%PDF-1.7 manual", "Pump manual.pdf", "application/pdf")
    )
    await harness.graph.deliver(harness.graph.image(ALLOWED, b"x" * 5000))
    first, second = await harness.action_count(2)
    assert list(first.files) == ["Pump manual.pdf"]
    assert first.message.body == "The document Pump manual.pdf, sent without a caption."
    assert not second.files
    assert "limit" in second.message.properties["attachment_error"]
    await harness.sent_to(ALLOWED, "The file could not be fetched")


# -- the door ---------------------------------------------------------------------------------


async def test_a_plan_is_sent_with_approve_and_reject_buttons_and_a_tap_decides_it_once(
    harness: Harness,
) -> None:
    await harness.start()
    payload = harness.graph.text(ALLOWED, "Pump 3 leaking")
    await harness.graph.deliver(payload)
    [stored] = await harness.action_count(1)
    plan_id = "plan-20261121-101500-a1b2c3"
    harness.approvals.plans[plan_id] = "pending_approval"
    harness.bus.publish(harness.plan_event(stored.action_id, plan_id, harness.graph.message_id(payload)))

    buttons = await harness.sent_to(ALLOWED, f"Plan {plan_id} waits for your approval", kind="interactive")
    interactive = buttons["interactive"]
    assert "Title: Fix pump 3" in interactive["body"]["text"]
    assert "Will send:" in interactive["body"]["text"]
    titles = [button["reply"]["title"] for button in interactive["action"]["buttons"]]
    ids = [button["reply"]["id"] for button in interactive["action"]["buttons"]]
    assert titles == ["Approve", "Reject"]

    await harness.graph.deliver(harness.graph.tap(ALLOWED, buttons["id"], ids[0], "Approve"))
    await harness.sent_to(ALLOWED, f"Approved {plan_id}.")
    assert harness.approvals.plans[plan_id] == "approved"
    assert harness.approvals.deciders == [Decider(f"Jane Doe (+{ALLOWED})", "whatsapp")]

    await harness.graph.deliver(harness.graph.tap(ALLOWED, buttons["id"], ids[1], "Reject"))
    await harness.sent_to(ALLOWED, "Already decided")
    assert harness.approvals.plans[plan_id] == "approved"

    harness.bus.publish(
        harness.plan_event(stored.action_id, plan_id, harness.graph.message_id(payload))
    )  # the same plan again: no second question
    harness.bus.publish(_executed(stored.action_id, plan_id))
    await harness.sent_to(ALLOWED, "dry-run")
    assert len([m for m in harness.graph.messages_to(ALLOWED) if m["type"] == "interactive"]) == 1


async def test_a_tap_from_a_number_not_on_the_list_decides_nothing(harness: Harness) -> None:
    await harness.start()
    plan_id = "plan-20261121-101500-ffffff"
    harness.approvals.plans[plan_id] = "pending_approval"
    await harness.graph.deliver(
        harness.graph.tap(STRANGER, "wamid.HBgLours", f"aie:approve:{plan_id}", "Approve")
    )
    await eventually(lambda: harness.of_type(EventType.WHATSAPP_UNAUTHORIZED), timeout=DEADLINE)
    assert harness.approvals.plans[plan_id] == "pending_approval"
    assert not harness.graph.messages_to(STRANGER)


# -- Meta's limits ----------------------------------------------------------------------------


async def test_outside_the_window_a_failed_status_131047_is_recorded_on_the_note(harness: Harness) -> None:
    note = harness.vault / "Needs_Action" / "act.md"
    note.parent.mkdir()
    note.write_text("---\nid: act-1\ntype: action\nsource: whatsapp\n---\nPump 3 leaking\n")
    await harness.start()
    payload = harness.graph.text(ALLOWED, "Pump 3 leaking")
    await harness.graph.deliver(payload)
    [stored] = await harness.action_count(1)
    harness.actions.rows[stored.action_id] = {"source": "whatsapp", "note": "Needs_Action/act.md"}
    await harness.sent_to(ALLOWED, "Saved as action")
    harness.graph.close_window(ALLOWED)  # Meta's clock says 24 h passed; ours does not know yet

    harness.bus.publish(_executed(stored.action_id, "plan-20261121-101500-a1b2c3"))
    await eventually(lambda: "131047" in note.read_text(), timeout=DEADLINE, message="the note's record")
    text = note.read_text()
    assert "whatsapp_reply: failed" in text
    assert "WhatsApp: A WhatsApp reply could not be sent" in text
    [failed] = harness.of_type(EventType.WHATSAPP_REPLY_FAILED)
    assert failed.payload["code"] == 131047
    assert not [m for m in harness.graph.sent if m["type"] == "template"]


async def test_outside_the_window_the_reply_template_is_used_when_set(harness: Harness) -> None:
    harness.graph.window_failure = "sync"  # a relay that answers 400 at once
    await harness.start(reply_template="plant_update", reply_template_language="en_US")
    payload = harness.graph.text(ALLOWED, "Pump 3 leaking")
    await harness.graph.deliver(payload)
    [stored] = await harness.action_count(1)
    await harness.sent_to(ALLOWED, "Saved as action")
    harness.graph.close_window(ALLOWED)

    harness.bus.publish(_executed(stored.action_id, "plan-20261121-101500-a1b2c3"))
    template = await harness.sent_to(ALLOWED, "dry-run", kind="template")
    assert template["template"]["name"] == "plant_update"
    assert template["template"]["language"] == {"code": "en_US"}
    assert harness.graph.refused and harness.graph.refused[-1]["type"] == "text"

    # Should the template fail too, that is recorded, and nothing is sent again: no loop.
    errors = [{"code": 131047, "title": "Re-engagement message"}]
    await harness.graph.deliver(harness.graph.status(template["id"], ALLOWED, "failed", errors))
    await eventually(lambda: harness.of_type(EventType.WHATSAPP_REPLY_FAILED), timeout=DEADLINE)
    assert len([m for m in harness.graph.sent if m["type"] == "template"]) == 1


async def test_our_own_record_of_the_window_sends_nothing_free_form_after_24_hours(harness: Harness) -> None:
    await harness.start()
    old = time.time() - 25 * 3600
    payload = harness.graph.text(ALLOWED, "an old message, delivered late", timestamp=old)
    await harness.graph.deliver(payload)
    await harness.action_count(1)
    await eventually(lambda: harness.of_type(EventType.WHATSAPP_REPLY_FAILED), timeout=DEADLINE)
    assert not harness.graph.sent and not harness.graph.refused


async def test_a_rate_limited_send_is_retried_and_never_holds_up_intake(harness: Harness) -> None:
    await harness.start()
    harness.graph.fail_next(429, times=2)
    await harness.graph.deliver(harness.graph.text(ALLOWED, "first"))
    await harness.graph.deliver(harness.graph.text(ALLOWED, "second"))
    await harness.action_count(2)
    await harness.sent_to(ALLOWED, harness.intake.actions[0].action_id)
    await harness.sent_to(ALLOWED, harness.intake.actions[1].action_id)


# -- the listener, the seam, health -----------------------------------------------------------


async def test_the_webhook_listener_serves_only_the_webhook_routes(harness: Harness) -> None:
    await harness.start()
    listener = WebhookListener(harness.control.dispatch_webhook, host="127.0.0.1", port=0)
    port = await listener.start()
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            status = await client.get(base + "/status")
            metrics = await client.get(base + "/metrics")
            stop = await client.post(base + "/control/stop")
            check = await client.get(
                base + WEBHOOK_PATH,
                params={
                    "hub.mode": "subscribe",
                    "hub.verify_token": harness.graph.verify_token,
                    "hub.challenge": "42",
                },
            )
        harness.graph.webhook_url = base + WEBHOOK_PATH
        answer = await harness.graph.deliver(harness.graph.text(ALLOWED, "through the public listener"))
        await harness.action_count(1)
    finally:
        await listener.stop()
    assert [status.status_code, metrics.status_code, stop.status_code] == [404, 404, 404]
    assert "only on the control port" not in status.text
    assert (check.status_code, check.text) == (200, "42")
    assert answer.status == 200


async def test_without_its_variables_the_service_stays_off_and_says_which(harness: Harness) -> None:
    context = harness.context()
    context.settings.whatsapp.app_secret = None
    context.settings.whatsapp.verify_token = None
    with pytest.raises(PluginDisabled, match="WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN are not set"):
        create(context)


async def test_health_never_shows_the_token_or_the_secret(harness: Harness) -> None:
    service = await harness.start()
    report = await service.health()
    shown = repr(report) + repr(service.link())
    assert report.healthy
    for secret in (harness.graph.token, harness.graph.app_secret, harness.graph.verify_token):
        assert secret not in shown


def test_the_service_is_registered_under_the_services_entry_point() -> None:
    factories, broken = load_factories("ai_employee.services")
    if "whatsapp" not in factories:
        pytest.skip("the installed metadata predates the whatsapp entry point (pip install -e . to refresh)")
    assert factories["whatsapp"] is create
    assert "whatsapp" not in broken


def _executed(action_id: str, plan_id: str) -> Event:
    return Event(
        EventType.PLAN_EXECUTED,
        {"plan_id": plan_id, "action": "atlas.work_order", "status": "done", "dry_run": True, "result": None},
        correlation_id=action_id,
        source="pipeline",
    )
