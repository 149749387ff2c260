"""A verified delivery becomes actions: each message from an allowed number once, whatever Meta
delivers again.

- The duplicate check is on the message id, in the durable store, across restarts.
- Text goes into the body; a voice note or audio through Whisper (the same step and cost record as
  Telegram), the audio kept under Attachments/; one that cannot be transcribed now is stored
  marked pending and transcribed later (whatsapp_transcription); images and documents become attachments with
  their captions. Media are fetched with the token, within the size limit.
- A tap on Approve / Reject is a decision (whatsapp_decisions), not an action.
- Numbers not on the list: never answered, nothing stored, logged once per number.
- Statuses (receipts) create nothing; a `failed` one is the outbox's business.

A failure that may pass (the Graph API down while fetching a photo, the intake unable to write)
raises: the delivery stays in the spool and is processed again.
"""

from __future__ import annotations

import datetime as dtm
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from ai_employee.clients.retry import ServiceRejected
from ai_employee.clients.whatsapp import WhatsAppGraph
from ai_employee.clients.whisper import Transcriber
from ai_employee.model.events import EventType
from ai_employee.model.messages import IncomingMessage, IntakeSink
from ai_employee.sources.chat_content import Content, MediaRef
from ai_employee.sources.chat_intake import Prepared, fill_in
from ai_employee.sources.chat_replies import unsupported_text
from ai_employee.sources.whatsapp_decisions import Decisions
from ai_employee.sources.whatsapp_outbox import Outbox, Outgoing, Publish
from ai_employee.sources.whatsapp_state import Handled, Sender, WhatsAppState
from ai_employee.sources.whatsapp_transcription import PendingList, PendingVoice
from ai_employee.sources.whatsapp_wire import Delivery, InboundMessage, button_reply_id, classify

log = structlog.get_logger("ai_employee.sources.whatsapp")

#: message types that are not worth an answer (a reaction to a message, a system notice)
SILENT_TYPES = frozenset({"reaction", "system", "ephemeral", "request_welcome"})


class Access:
    """Who is heard and may decide: the numbers (or user ids) in `whatsapp.allowed_numbers`."""

    def __init__(self, allowed: Iterable[str], publish: Publish) -> None:
        self.allowed = frozenset(allowed)
        self.unauthorized_seen: set[str] = set()
        self._publish = publish

    def allows(self, message: InboundMessage) -> bool:
        return bool(
            (message.wa_id and message.wa_id in self.allowed)
            or (message.user_id and message.user_id in self.allowed)
        )

    def note_unauthorized(self, message: InboundMessage) -> None:
        key = message.sender_key
        if key in self.unauthorized_seen:
            return
        self.unauthorized_seen.add(key)
        log.warning(
            "whatsapp.unauthorized",
            sender=key,
            type=message.type,
            hint="add the number to WHATSAPP_ALLOWED_NUMBERS to let it in",
        )
        self._publish(EventType.WHATSAPP_UNAUTHORIZED, None, {"sender": key, "type": message.type})


class DeliveryIntake:
    def __init__(
        self,
        *,
        intake: IntakeSink,
        state: WhatsAppState,
        graph: Callable[[], WhatsAppGraph | None],
        access: Access,
        decisions: Decisions,
        outbox: Outbox,
        transcriber: Callable[[], Transcriber | None],
        publish: Publish,
        temp_dir: Path,
        pending: PendingList,
    ) -> None:
        self._intake = intake
        self._state = state
        self._graph = graph
        self._access = access
        self._decisions = decisions
        self._outbox = outbox
        self._transcriber = transcriber
        self._publish = publish
        self._temp_dir = temp_dir
        self._pending = pending

    async def process(self, delivery: Delivery) -> None:
        for reason in delivery.skipped:
            log.info("whatsapp.delivery_part_skipped", reason=reason)
        for status in delivery.statuses:
            self._outbox.on_status(status)
        for message in delivery.messages:
            await self.on_message(message)

    async def on_message(self, message: InboundMessage) -> None:
        if not self._access.allows(message):
            self._access.note_unauthorized(message)
            return
        handled = self._state.handled(message.id)
        if handled is not None:
            log.info("whatsapp.duplicate_message", message_id=message.id, action_id=handled.action_id)
            return
        to = message.sender_key
        self._state.saw(to, message.timestamp.timestamp())
        self._publish(
            EventType.WHATSAPP_MESSAGE_RECEIVED,
            None,
            {"message_id": message.id, "sender": to, "type": message.type},
        )
        tap = button_reply_id(message)
        if tap is not None:
            self._decisions.on_tap(message, tap)
            self._state.mark_handled(message.id, Handled("tap"))
            return
        content = classify(message)
        if content is None:
            log.info("whatsapp.message_not_taken", message_id=message.id, type=message.type)
            if message.type not in SILENT_TYPES:
                self._outbox.put(Outgoing(to, unsupported_text(), reply_to=message.id))
            self._state.mark_handled(message.id, Handled("ignored"))
            return
        await self._store(message, content)

    async def _store(self, message: InboundMessage, content: Content) -> None:
        to = message.sender_key
        # Who sent it, before the action exists: a plan that comes quickly finds whom to ask.
        self._state.remember_sender(Sender(message.id, to, message.name))
        with self._decisions.storing(message.id):
            prepared = await self._prepare(message, content)
            action_id = await prepared.submit(self._intake)
            if prepared.pending_reason is not None and content.media is not None:
                # Before the message counts as handled: a redelivery then finds it pending already.
                self._pending.put(
                    PendingVoice(
                        action_id=action_id,
                        message_id=message.id,
                        to=to,
                        media_id=content.media.file_id,
                        filename=content.media.filename,
                        content_type=content.media.content_type,
                        last_error=prepared.pending_reason,
                    )
                )
            self._state.remember_sender(Sender(message.id, to, message.name, action_id))
            self._state.mark_handled(message.id, Handled("action", action_id, acknowledged=True))
            self._outbox.put(
                Outgoing(
                    to,
                    prepared.arrival_text(action_id),
                    action_id,
                    reply_to=message.id,
                )
            )
        log.info(
            "whatsapp.action_created",
            action_id=action_id,
            message_id=message.id,
            kind=content.kind,
            transcription="pending" if prepared.pending_reason else None,
        )
        if prepared.pending_reason is not None:
            self._publish(
                EventType.TRANSCRIPTION_PENDING,
                action_id,
                {"action_id": action_id, "source_ref": message.id, "reason": prepared.pending_reason},
            )
        self._publish(
            EventType.WHATSAPP_MESSAGE_PROCESSED,
            action_id,
            {"action_id": action_id, "message_id": message.id, "sender": to, "kind": content.kind},
        )

    async def _prepare(self, message: InboundMessage, content: Content) -> Prepared:
        sender = message.describe_sender()
        prepared = Prepared(
            IncomingMessage(
                source="whatsapp",
                source_ref=message.id,
                title="",
                body="",
                received=message.timestamp.astimezone(dtm.UTC),
                sender=sender,
            ),
            content,
        )
        return await fill_in(
            prepared, sender, download=self._download, transcriber=self._transcriber, label="WhatsApp message"
        )

    async def _download(self, media: MediaRef, prepared: Prepared) -> Path | None:
        """Fetch a media file into the vault's private temp folder (same filesystem as Attachments/).

        A refusal (too big, unknown media id) is recorded on the action; a failure that may pass
        (429, 5xx, no connection, through every retry) raises, and the delivery is processed again.
        """
        graph = self._graph()
        if graph is None:
            raise RuntimeError("the whatsapp service is not running")
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        target = self._temp_dir / media.filename
        prepared.temp_files.append(target)
        try:
            fetched = await graph.download_media(media.file_id, target)
        except ServiceRejected as error:
            prepared.attachment_error = error.message[:300]
            prepared.message.properties["attachment_error"] = prepared.attachment_error
            log.warning("whatsapp.media_refused", message_id=prepared.message.source_ref, error=error.message)
            return None
        return fetched.path
