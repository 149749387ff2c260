"""What Meta's webhook deliveries say, in the terms the WhatsApp source needs (shared/apis.md §4).

- `signature_valid`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`,
  compared in constant time, over the raw bytes (Meta escapes non-ASCII and `/`: re-serialised
  JSON would not match).
- `parse_delivery`: one POST may carry several entries, changes, messages and statuses; only
  `field: "messages"` changes matter. Anything malformed is skipped with a reason, never raised.
- `classify`: a message's content (text, voice note or audio, image, document), a button tap, or
  nothing this product takes.
"""

from __future__ import annotations

import datetime as dtm
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ai_employee.sources.chat_content import Content, MediaRef, extension_for, safe_filename

SIGNATURE_HEADER = "X-Hub-Signature-256"
_PREFIX = "sha256="


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    if not secret or not header or not header.startswith(_PREFIX):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(
        header[len(_PREFIX) :].strip().lower().encode("ascii", "replace"), expected.encode()
    )


def sign(secret: bytes, body: bytes) -> str:
    """The header value Meta would send for `body` (the test fakes sign with it)."""
    return _PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class InboundMessage:
    """One `messages[]` item, with its sender's profile name from `contacts[]`."""

    id: str  # wamid.…: the source_ref, and the key of the duplicate check
    wa_id: str | None  # the sender's number (digits only); None when hidden behind a username
    user_id: str | None  # the business-scoped user id ("US.1349…"), when Meta sends one
    name: str | None
    type: str
    timestamp: dtm.datetime
    data: Mapping[str, Any]
    context_id: str | None = None  # the message this one answers (our buttons message for a tap)

    @property
    def sender_key(self) -> str:
        """Who to answer and whom the allow list names: the number, else the user id."""
        return self.wa_id or self.user_id or ""

    def describe_sender(self) -> str:
        """ "Jane Doe (+4915112345678)": what a human recognises."""
        shown = f"+{self.wa_id}" if self.wa_id else (self.user_id or "unknown")
        return f"{self.name} ({shown})" if self.name else shown


@dataclass(frozen=True)
class StatusUpdate:
    """One `statuses[]` item: a receipt for a message we sent (never an action)."""

    id: str  # our wamid
    status: str  # sent | delivered | read | failed | played
    recipient_id: str | None
    errors: list[Mapping[str, Any]] = field(default_factory=list)

    def error_codes(self) -> list[int]:
        return [code for error in self.errors if isinstance(code := error.get("code"), int)]

    def error_text(self) -> str:
        parts = []
        for error in self.errors:
            title = str(error.get("title") or error.get("message") or "error")
            data = error.get("error_data")
            details = data.get("details") if isinstance(data, Mapping) else None
            code = error.get("code")
            parts.append(f"{title} (code {code})" + (f": {details}" if details else ""))
        return "; ".join(parts) or "failed without a reason"


@dataclass
class Delivery:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why parts were not understood


def _changes(payload: Any, skipped: list[str]) -> Iterator[Mapping[str, Any]]:
    if not isinstance(payload, Mapping):
        skipped.append("the delivery is not a JSON object")
        return
    if payload.get("object") != "whatsapp_business_account":
        skipped.append(f"object {payload.get('object')!r} is not whatsapp_business_account")
        return
    entries = payload.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        changes = entry.get("changes") if isinstance(entry, Mapping) else None
        for change in changes if isinstance(changes, list) else []:
            if not isinstance(change, Mapping):
                continue
            if change.get("field") != "messages":
                skipped.append(f"field {change.get('field')!r} is not subscribed to")
                continue
            value = change.get("value")
            if isinstance(value, Mapping):
                yield value


def _timestamp(value: Any) -> dtm.datetime:
    try:
        return dtm.datetime.fromtimestamp(int(value), tz=dtm.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return dtm.datetime.now(dtm.UTC)


def parse_delivery(payload: Any) -> Delivery:
    delivery = Delivery()
    for value in _changes(payload, delivery.skipped):
        names: dict[str, str] = {}
        contacts = value.get("contacts")
        for contact in contacts if isinstance(contacts, list) else []:
            if not isinstance(contact, Mapping):
                continue
            profile = contact.get("profile")
            name = profile.get("name") if isinstance(profile, Mapping) else None
            if isinstance(name, str) and name.strip():
                for key in (contact.get("wa_id"), contact.get("user_id")):
                    if isinstance(key, str) and key:
                        names[key] = name.strip()
        messages = value.get("messages")
        for item in messages if isinstance(messages, list) else []:
            message = _message(item, names)
            if message is None:
                delivery.skipped.append("a message without an id or a sender")
            else:
                delivery.messages.append(message)
        statuses = value.get("statuses")
        for item in statuses if isinstance(statuses, list) else []:
            if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                errors = item.get("errors")
                delivery.statuses.append(
                    StatusUpdate(
                        id=item["id"],
                        status=str(item.get("status") or ""),
                        recipient_id=item.get("recipient_id")
                        if isinstance(item.get("recipient_id"), str)
                        else None,
                        errors=[error for error in errors if isinstance(error, Mapping)]
                        if isinstance(errors, list)
                        else [],
                    )
                )
        errors = value.get("errors")
        if isinstance(errors, list) and errors:
            delivery.skipped.append(f"errors from Meta: {errors!r}"[:500])
    return delivery


def _message(item: Any, names: Mapping[str, str]) -> InboundMessage | None:
    if not isinstance(item, Mapping):
        return None
    message_id = item.get("id")
    wa_id = item.get("from") if isinstance(item.get("from"), str) and item.get("from") else None
    user_id = item.get("from_user_id") if isinstance(item.get("from_user_id"), str) else None
    if not isinstance(message_id, str) or not message_id or not (wa_id or user_id):
        return None
    context = item.get("context")
    context_id = (
        context.get("id") if isinstance(context, Mapping) and isinstance(context.get("id"), str) else None
    )
    return InboundMessage(
        id=message_id,
        wa_id=wa_id,
        user_id=user_id,
        name=names.get(wa_id or "") or names.get(user_id or ""),
        type=str(item.get("type") or ""),
        timestamp=_timestamp(item.get("timestamp")),
        data=item,
        context_id=context_id,
    )


def _stem(message: InboundMessage) -> str:
    """A short, unique, path-safe stem: the sender and a hash of the (long) message id."""
    digest = hashlib.sha256(message.id.encode("utf-8")).hexdigest()[:10]
    who = "".join(ch for ch in message.sender_key if ch.isalnum())[:20] or "user"
    return f"{who}-{digest}"


def classify(message: InboundMessage) -> Content | None:
    """The content the source takes, or None for what it does not (stickers, locations, ...)."""
    kind = message.type
    part = message.data.get(kind)
    part = part if isinstance(part, Mapping) else {}
    media_id = part.get("id") if isinstance(part.get("id"), str) else None
    mime = part.get("mime_type") if isinstance(part.get("mime_type"), str) else None
    caption = str(part["caption"]) if isinstance(part.get("caption"), str) else ""
    stem = _stem(message)
    if kind == "text":
        body = part.get("body")
        return Content("text", body) if isinstance(body, str) and body.strip() else None
    if kind == "audio" and media_id:
        voice = part.get("voice") is True
        content_type = mime or "audio/ogg"
        prefix = "voice" if voice else "audio"
        filename = f"{prefix}-{stem}{extension_for(content_type, '.ogg')}"
        return Content("voice" if voice else "audio", "", MediaRef(media_id, filename, content_type, None))
    if kind == "image" and media_id:
        content_type = mime or "image/jpeg"
        filename = f"photo-{stem}{extension_for(content_type, '.jpg')}"
        if filename.endswith(".jpe"):
            filename = filename[: -len(".jpe")] + ".jpg"
        return Content("photo", caption, MediaRef(media_id, filename, content_type, None))
    if kind == "document" and media_id:
        fallback = f"document-{stem}{extension_for(mime, '.bin')}"
        name = part.get("filename") if isinstance(part.get("filename"), str) else None
        return Content("document", caption, MediaRef(media_id, safe_filename(name, fallback), mime, None))
    return None


def button_reply_id(message: InboundMessage) -> str | None:
    """The id of the reply button a user tapped (`interactive.button_reply.id`), or a template
    quick reply's payload (`button.payload`); None for anything else."""
    if message.type == "interactive":
        interactive = message.data.get("interactive")
        if isinstance(interactive, Mapping) and interactive.get("type") == "button_reply":
            reply = interactive.get("button_reply")
            if isinstance(reply, Mapping) and isinstance(reply.get("id"), str):
                return str(reply["id"])
    if message.type == "button":
        button = message.data.get("button")
        if isinstance(button, Mapping) and isinstance(button.get("payload"), str):
            return str(button["payload"])
    return None
