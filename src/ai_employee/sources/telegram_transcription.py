"""Voice notes stored without a transcript (no key, or the engine failed), transcribed later.

The action exists already; the transcript follows as a TRANSCRIPTION_COMPLETED event, and the
chat is told. The audio comes from the vault when the ledger or the note says where it is,
else from Telegram again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from telegram.error import BadRequest, TelegramError

from ai_employee.clients.retry import ServiceAuthError, ServiceError, describe
from ai_employee.clients.whisper import AudioFile, Transcriber, Transcript, TranscriptionError
from ai_employee.model.events import EventType
from ai_employee.sources.chat_intake import kept_audio, transcript_properties
from ai_employee.sources.telegram_bot import LOGGER_NAME, ActionInfo, BotClient, Publish, sleep_unless_stopped
from ai_employee.sources.telegram_replies import transcribed_text, truncate
from ai_employee.sources.telegram_state import PendingTranscription, TelegramState

log = structlog.get_logger(LOGGER_NAME)


class PendingTranscriptions:
    """Transcribes the voice notes on the pending list: on demand, and in a loop while the service runs."""

    def __init__(
        self,
        *,
        state: TelegramState,
        bot: BotClient,
        vault_root: Path,
        transcriber: Callable[[], Transcriber | None],
        action_info: ActionInfo,
        publish: Publish,
        stop_requested: asyncio.Event,
        retry_seconds: float,
    ) -> None:
        self._state = state
        self._bot = bot
        self._vault_root = vault_root
        self._transcriber = transcriber
        self._action_info = action_info
        self._publish = publish
        self._stop_requested = stop_requested
        self._retry_seconds = retry_seconds

    async def run(self) -> None:
        """Transcribe what waited: at start, then every `retry_seconds` while any remain.

        Without a transcriber there is nothing to retry until the daemon is restarted with a
        key (settings are read once), so the loop says how many wait and ends.
        """
        while not self._stop_requested.is_set():
            try:
                await self.transcribe_pending()
            except Exception:
                log.exception("telegram.pending_transcriptions_failed")
            if self._transcriber() is None:
                return
            await sleep_unless_stopped(self._stop_requested, self._retry_seconds)

    async def transcribe_pending(self) -> int:
        """Transcribe every pending voice note now; returns how many were done."""
        pending = self._state.pending_transcriptions()
        transcriber = self._transcriber()
        if not pending:
            return 0
        if transcriber is None:
            log.info(
                "telegram.transcriptions_waiting",
                count=len(pending),
                hint="set OPENAI_API_KEY (or telegram.local_whisper_model) to transcribe them",
            )
            return 0
        done = 0
        for item in pending:
            if self._stop_requested.is_set():
                break
            try:
                audio = await self._pending_audio(item)
                transcript = await transcriber.transcribe(audio)
            except (TranscriptionError, BadRequest) as error:  # refused for good: say so, stop trying
                log.warning(
                    "telegram.pending_transcription_refused", action_id=item.action_id, error=error.message
                )
                self._state.remove_pending(item.action_id)
                await self._bot.send(
                    item.chat_id,
                    truncate(f"Your voice note ({item.action_id}) could not be transcribed: {error.message}"),
                    reply_to=item.message_id,
                )
                continue
            except (ServiceError, TelegramError, OSError) as error:
                item.attempts += 1
                item.last_error = describe(error)
                self._state.update_pending(item)
                log.warning(
                    "telegram.pending_transcription_failed", action_id=item.action_id, error=item.last_error
                )
                if isinstance(error, ServiceAuthError):
                    break
                continue
            self._publish_transcript(item, transcript)
            done += 1
            await self._bot.send(item.chat_id, transcribed_text(transcript), reply_to=item.message_id)
        return done

    async def _pending_audio(self, item: PendingTranscription) -> AudioFile:
        """The original from the vault when the ledger says where it is, else from Telegram again."""
        data = self._audio_from_vault(item)
        if data is None:
            app = self._bot.require_app()

            async def fetch() -> bytes:
                telegram_file = await app.bot.get_file(item.file_id)
                return bytes(await telegram_file.download_as_bytearray())

            data = await self._bot.call(fetch, what="telegram file download")
        return AudioFile(item.filename, data, item.content_type, item.duration_seconds)

    def _audio_from_vault(self, item: PendingTranscription) -> bytes | None:
        """The kept original: the ledger's attachment paths, else the action note's `attachments`."""
        return kept_audio(self._vault_root, self._action_info(item.action_id), item.filename)

    def _publish_transcript(self, item: PendingTranscription, transcript: Transcript) -> None:
        """TRANSCRIPTION_COMPLETED: an action stored as pending now has its transcript.

        Only for late transcripts: a note written with its transcript needs no event. The
        pipeline updates the note (body, cost, duration) and plans again. Events are hints,
        so the payload is first kept in the state store (`telegram` / `transcript:<action id>`),
        then the item leaves the pending list, then the event goes out.
        """
        payload: dict[str, Any] = {
            "action_id": item.action_id,
            "source": "telegram",
            "source_ref": item.source_ref,
            "transcript": transcript.text,
            **transcript_properties(transcript, item.duration_seconds),
        }
        self._state.save_transcript(item.action_id, payload)
        self._state.remove_pending(item.action_id)
        self._publish(EventType.TRANSCRIPTION_COMPLETED, item.action_id, payload)
