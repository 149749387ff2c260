"""The Telegram source's rules without a bot: what a message carries, what the bot says, its buttons."""

from __future__ import annotations

from typing import Any

from telegram import Message

from ai_employee.model.services import DecisionResult
from ai_employee.sources.telegram_content import classify, first_line, make_title, safe_filename
from ai_employee.sources.telegram_replies import (
    MAX_MESSAGE_CHARS,
    callback_answer,
    callback_data,
    decision_keyboard,
    describe_result,
    executed_text,
    failed_text,
    parse_callback,
    plan_text,
)
from ai_employee.sources.telegram_state import PendingTranscription, TelegramState
from tests.fakes.common import MemoryStore


def message(**fields: Any) -> Message:
    data = {
        "message_id": 7,
        "date": 1_790_000_000,
        "chat": {"id": 111, "type": "private"},
        "from": {"id": 111, "is_bot": False, "first_name": "Jane"},
        **fields,
    }
    parsed = Message.de_json(data, None)
    assert parsed is not None
    return parsed


def test_callback_data_round_trips_and_fits_telegrams_64_bytes() -> None:
    data = callback_data("approve", "plan-20261121-101500-a1b2c3")
    assert data is not None and len(data.encode()) <= 64
    assert parse_callback(data) == ("approve", "plan-20261121-101500-a1b2c3")
    assert parse_callback(callback_data("reject", "plan-x")) == ("reject", "plan-x")


def test_foreign_or_malformed_callback_data_is_not_a_decision() -> None:
    for data in (None, "", "approve:plan-x", "aie:delete:plan-x", "aie:approve:", "other:approve:plan-x"):
        assert parse_callback(data) is None


def test_a_plan_id_too_long_for_callback_data_gets_no_buttons() -> None:
    assert decision_keyboard("plan-" + "x" * 60) is None
    assert decision_keyboard("plan-short") is not None


def test_the_largest_photo_size_is_taken() -> None:
    content = classify(
        message(
            photo=[
                {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90},
                {"file_id": "large", "file_unique_id": "l", "width": 1280, "height": 960},
                {"file_id": "medium", "file_unique_id": "m", "width": 320, "height": 240},
            ],
            caption="Leak",
        )
    )
    assert content is not None and content.media is not None
    assert (content.kind, content.media.file_id, content.text) == ("photo", "large", "Leak")


def test_a_voice_note_keeps_its_duration_and_gets_an_ogg_name() -> None:
    content = classify(
        message(voice={"file_id": "v", "file_unique_id": "vu", "duration": 42, "mime_type": "audio/ogg"})
    )
    assert content is not None and content.media is not None
    assert (content.kind, content.media.filename, content.media.duration_seconds) == (
        "voice",
        "voice-111-7.ogg",
        42,
    )
    assert content.is_speech


def test_stickers_and_locations_are_not_taken() -> None:
    assert classify(message(location={"latitude": 1.0, "longitude": 2.0})) is None


def test_file_names_from_the_sender_cannot_leave_the_folder() -> None:
    assert safe_filename("../../etc/passwd", "fallback") == "passwd"
    assert safe_filename("..\\..\\boot.ini", "fallback") == "boot.ini"
    assert safe_filename("  ..  ", "fallback") == "fallback"
    assert safe_filename(None, "fallback") == "fallback"


def test_the_title_is_the_first_line_else_what_arrived() -> None:
    voice = classify(message(voice={"file_id": "v", "file_unique_id": "vu", "duration": 3}))
    assert voice is not None
    assert make_title(voice, "\n  Pump 3   leaking \nmore", "Jane Doe (@jane)") == "Pump 3 leaking"
    assert make_title(voice, "", "Jane Doe (@jane)") == "Voice note from Jane Doe"
    assert len(first_line("word " * 100)) == 80


def test_the_outcome_names_the_work_order() -> None:
    assert describe_result({"work_order_id": 5, "custom_id": "WO000123"}) == "work order WO000123 created"
    assert describe_result({"work_order": {"customId": "WO000124"}}) == "work order WO000124 created"
    assert executed_text("plan-a", {"result": {"custom_id": "WO000123"}, "dry_run": False}) == (
        "Done: work order WO000123 created."
    )


def test_a_dry_run_outcome_says_nothing_was_sent_and_what_would_have_been() -> None:
    rendering = {"service": "Atlas CMMS", "requests": [{"method": "POST"}, {"method": "POST"}]}
    text = executed_text("plan-a", {"result": rendering, "dry_run": True})
    assert text == (
        "Plan plan-a ran in dry-run mode: nothing was sent. (it would have sent 2 request(s) to Atlas CMMS)"
    )


def test_a_written_note_is_named_by_its_path() -> None:
    result = {"note": "[[Notes/2026-11-21 filters]]", "path": "Notes/2026-11-21 filters.md"}
    assert describe_result(result) == "note Notes/2026-11-21 filters.md written"


def test_a_failure_carries_the_error() -> None:
    assert failed_text("plan-a", {"error": "Atlas answered 500"}) == "Plan plan-a failed: Atlas answered 500"
    assert failed_text("plan-a", {}) == "Plan plan-a failed: no reason was given"


def test_texts_never_exceed_telegrams_message_limit() -> None:
    text = plan_text(
        "plan-a", {"title": "t", "summary": "s" * 10_000, "params": {"description": "d" * 10_000}}
    )
    assert len(text) <= MAX_MESSAGE_CHARS


def test_the_answer_to_a_late_press_says_what_was_decided_before() -> None:
    answer = callback_answer(DecisionResult("already_decided", "plan-a", "approved at 10:15"))
    assert answer == "Already decided: approved at 10:15"
    assert callback_answer(DecisionResult("not_found", "plan-a")) == "Plan plan-a was not found."


def test_the_offset_only_moves_forward() -> None:
    state = TelegramState(MemoryStore(), bot_id="123")
    state.set_offset(10)
    state.set_offset(7)
    assert state.offset() == 10


def test_pending_transcriptions_survive_records_from_a_newer_version() -> None:
    store = MemoryStore()
    state = TelegramState(store, bot_id="123")
    state.add_pending(PendingTranscription("act-1", "111:7", 111, 7, "file-1", "voice.ogg"))
    store.data[("telegram", "pending_transcriptions")] = store.data[
        ("telegram", "pending_transcriptions")
    ].replace('"action_id"', '"added_later":1,"action_id"')
    [pending] = state.pending_transcriptions()
    assert pending.action_id == "act-1"
    state.remove_pending("act-1")
    assert state.pending_transcriptions() == []
