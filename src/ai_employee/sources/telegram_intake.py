"""Messages from allowed chats become actions: fetch the file, transcribe speech, submit, answer.

The intake is idempotent per source_ref ("chat:message"), and a message already linked to an
action is recognised before anything is fetched, so a redelivered update creates nothing new.
A voice note that cannot be transcribed now is still stored, marked pending (see
telegram_transcription).
"""

from __future__ import annotations

import datetime as dtm
from collections.abc import Callable
from pathlib import Path

import structlog
from telegram import Message, Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from ai_employee.clients.whisper import Transcriber
from ai_employee.model.events import EventType
from ai_employee.model.messages import IncomingMessage, IntakeSink
from ai_employee.sources.chat_intake import Prepared, fill_in
from ai_employee.sources.telegram_bot import LOGGER_NAME, Access, BotClient, Publish
from ai_employee.sources.telegram_content import (
    Content,
    MediaRef,
    classify,
    describe_sender,
)
from ai_employee.sources.telegram_decisions import Decisions
from ai_employee.sources.telegram_replies import unsupported_text
from ai_employee.sources.telegram_state import ActionLink, PendingTranscription, TelegramState

log = structlog.get_logger(LOGGER_NAME)


class MessageIntake:
    """The message handler: one Telegram message, one action note, one "received" answer."""

    def __init__(
        self,
        *,
        intake: IntakeSink,
        state: TelegramState,
        bot: BotClient,
        access: Access,
        decisions: Decisions,
        transcriber: Callable[[], Transcriber | None],
        publish: Publish,
        temp_dir: Path,
    ) -> None:
        self._intake = intake
        self._state = state
        self._bot = bot
        self._access = access
        self._decisions = decisions
        self._transcriber = transcriber
        self._publish = publish
        self._temp_dir = temp_dir

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None:
            return
        chat_id = message.chat_id
        user = message.from_user
        if chat_id not in self._access.allowed:
            self._access.note_unauthorized(chat_id, user, "message")
            return
        source_ref = f"{chat_id}:{message.message_id}"
        known = self._state.action_for_ref(source_ref)
        if known is not None:
            # Handled before (a crash before the offset moved, or a webhook retry): no second action.
            log.info("telegram.duplicate_message", source_ref=source_ref, action_id=known.action_id)
            if not known.acknowledged:
                await self._bot.send(
                    chat_id, f"Received. Saved as action {known.action_id}.", reply_to=message
                )
                self._state.mark_acknowledged(known)
            return
        content = classify(message)
        if content is None:
            await self._bot.send(chat_id, unsupported_text(), reply_to=message)
            return
        with self._decisions.storing():
            prepared = await self._prepare(message, content, source_ref)
            action_id = await prepared.submit(self._intake)
            if prepared.pending_reason is not None and content.media is not None:
                # Before the link: once the link exists a redelivery is skipped, so the
                # pending record must already be there.
                self._state.add_pending(
                    PendingTranscription(
                        action_id=action_id,
                        source_ref=source_ref,
                        chat_id=chat_id,
                        message_id=message.message_id,
                        file_id=content.media.file_id,
                        filename=content.media.filename,
                        content_type=content.media.content_type,
                        duration_seconds=content.media.duration_seconds,
                        last_error=prepared.pending_reason,
                    )
                )
            link = ActionLink(action_id=action_id, chat_id=chat_id, message_id=message.message_id)
            self._state.remember_link(link, source_ref)
        log.info(
            "telegram.action_created",
            action_id=action_id,
            source_ref=source_ref,
            kind=content.kind,
            transcription="pending" if prepared.pending_reason else None,
        )
        self._publish(
            EventType.TELEGRAM_MESSAGE,
            action_id,
            {"action_id": action_id, "source_ref": source_ref, "chat_id": chat_id, "kind": content.kind},
        )
        if prepared.pending_reason is not None:
            self._publish(
                EventType.TRANSCRIPTION_PENDING,
                action_id,
                {"action_id": action_id, "source_ref": source_ref, "reason": prepared.pending_reason},
            )
        await self._bot.send(
            chat_id,
            prepared.arrival_text(action_id),
            reply_to=message,
        )
        self._state.mark_acknowledged(link)
        await self._decisions.release_held(action_id)

    async def _prepare(self, message: Message, content: Content, source_ref: str) -> Prepared:
        sender = describe_sender(message.from_user, message.chat.title)
        received = message.date if message.date.tzinfo else message.date.replace(tzinfo=dtm.UTC)
        prepared = Prepared(
            IncomingMessage(
                source="telegram",
                source_ref=source_ref,
                title="",
                body="",
                received=received,
                sender=sender,
            ),
            content,
        )
        return await fill_in(
            prepared, sender, download=self._download, transcriber=self._transcriber, label="Telegram message"
        )

    async def _download(self, media: MediaRef, prepared: Prepared) -> Path | None:
        """Fetch a file into the vault's private temp folder (same filesystem as Attachments/).

        Transient failures are retried and then raised (the update is fetched again later);
        a refusal (too big, unknown file) is recorded on the action instead: nothing is lost,
        the human sees why the file is missing.
        """
        app = self._bot.require_app()
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        target = self._temp_dir / f"{prepared.message.source_ref.replace(':', '_')}-{media.filename}"
        prepared.temp_files.append(target)

        async def fetch() -> Path:
            telegram_file = await app.bot.get_file(media.file_id)
            saved: Path = await telegram_file.download_to_drive(custom_path=target)
            return saved

        try:
            return await self._bot.call(fetch, what="telegram file download")
        except BadRequest as error:  # "file is too big", "wrong file_id": asking again will not help
            prepared.attachment_error = error.message[:300]
            prepared.message.properties["attachment_error"] = prepared.attachment_error
            log.warning("telegram.file_refused", source_ref=prepared.message.source_ref, error=error.message)
            return None
