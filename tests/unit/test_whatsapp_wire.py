"""What Meta's deliveries say and how replies are built (shared/apis.md §4), without a network."""

from __future__ import annotations

import json

from ai_employee.config import load_settings
from ai_employee.sources.whatsapp_outbox import buttons_message, template_message
from ai_employee.sources.whatsapp_wire import (
    button_reply_id,
    classify,
    parse_delivery,
    sign,
    signature_valid,
)

SECRET = b"app-secret"


def _delivery(
    *messages: dict[str, object], contacts: list[dict[str, object]] | None = None
) -> dict[str, object]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550100", "phone_number_id": "1065"},
        "contacts": contacts or [{"profile": {"name": "Jane Doe"}, "wa_id": "4915112345678"}],
        "messages": list(messages),
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }


def test_the_signature_is_checked_over_the_raw_bytes_as_meta_escaped_them() -> None:
    raw = b'{"text":"caf\\u00e9 \\/ line 2"}'  # what Meta sends; json.dumps of the parsed body differs
    header = sign(SECRET, raw)
    assert signature_valid(SECRET, raw, header)
    assert not signature_valid(SECRET, json.dumps(json.loads(raw)).encode(), header)
    assert not signature_valid(SECRET, raw, header.replace("sha256=", "sha1="))
    assert not signature_valid(SECRET, raw, None)
    assert not signature_valid(b"", raw, header)


def test_a_delivery_yields_each_message_with_its_senders_name_and_skips_other_fields() -> None:
    payload = _delivery(
        {
            "from": "4915112345678",
            "id": "wamid.A",
            "timestamp": "1764000000",
            "type": "text",
            "text": {"body": "hi"},
        },
        {
            "from": "4915112345678",
            "id": "wamid.B",
            "timestamp": "1764000001",
            "type": "sticker",
            "sticker": {},
        },
    )
    payload["entry"][0]["changes"].append({"field": "account_update", "value": {}})  # type: ignore[index]
    delivery = parse_delivery(payload)
    assert [message.id for message in delivery.messages] == ["wamid.A", "wamid.B"]
    first = delivery.messages[0]
    assert (first.describe_sender(), first.timestamp.year) == ("Jane Doe (+4915112345678)", 2025)
    assert classify(delivery.messages[1]) is None
    assert any("account_update" in reason for reason in delivery.skipped)


def test_a_user_who_hides_the_number_is_known_by_the_user_id() -> None:
    message = {
        "from_user_id": "US.1349",
        "id": "wamid.C",
        "timestamp": "1",
        "type": "text",
        "text": {"body": "x"},
    }
    [parsed] = parse_delivery(
        _delivery(message, contacts=[{"profile": {"name": "Sam"}, "user_id": "US.1349"}])
    ).messages
    assert (parsed.sender_key, parsed.describe_sender()) == ("US.1349", "Sam (US.1349)")


def test_media_kinds_and_taps_are_told_apart() -> None:
    base = {"from": "49151", "timestamp": "1"}
    voice, image, document, tap = parse_delivery(
        _delivery(
            {
                **base,
                "id": "wamid.V",
                "type": "audio",
                "audio": {"id": "m1", "mime_type": "audio/ogg; codecs=opus", "voice": True},
            },
            {
                **base,
                "id": "wamid.I",
                "type": "image",
                "image": {"id": "m2", "mime_type": "image/jpeg", "caption": "crack"},
            },
            {
                **base,
                "id": "wamid.D",
                "type": "document",
                "document": {"id": "m3", "filename": "../x/manual.pdf", "mime_type": "application/pdf"},
            },
            {
                **base,
                "id": "wamid.T",
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": "aie:approve:plan-1", "title": "Approve"},
                },
            },
        )
    ).messages
    voice_content, image_content, document_content = classify(voice), classify(image), classify(document)
    assert voice_content is not None and voice_content.kind == "voice" and voice_content.media is not None
    assert voice_content.media.filename.endswith(".ogg")
    assert image_content is not None and (image_content.kind, image_content.text) == ("photo", "crack")
    assert document_content is not None and document_content.media is not None
    assert document_content.media.filename == "manual.pdf"
    assert button_reply_id(tap) == "aie:approve:plan-1"


def test_replies_keep_to_metas_limits() -> None:
    message = buttons_message("x" * 2000, (("aie:approve:p", "Approve"), ("aie:reject:p", "Reject")))
    assert len(message["interactive"]["body"]["text"]) == 1024
    template = template_message("plant_update", "en", "Plan p\n\nDone:     work order WO1")
    assert template["template"]["components"][0]["parameters"][0]["text"] == "Plan p Done: work order WO1"


def test_allowed_numbers_are_read_as_digits() -> None:
    settings = load_settings(environ={"WHATSAPP_ALLOWED_NUMBERS": "+49 151-123, (4915), US.1349"})
    assert settings.whatsapp.allowed_numbers == ["49151123", "4915", "US.1349"]
