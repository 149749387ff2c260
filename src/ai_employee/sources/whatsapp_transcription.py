"""WhatsApp voice notes stored without a transcript (no OpenAI key yet, or Whisper failing),
transcribed later, the way Telegram's are (telegram_transcription): the action exists already,
the transcript follows as a TRANSCRIPTION_COMPLETED event (the pipeline folds it into the note,
with its cost, and plans again), and the sender is told.

The audio comes from the vault (the kept attachment), else from the Graph API again (a webhook's
media id lives 7 days).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from ai_employee.clients.retry import ServiceAuthError, ServiceError, ServiceRejected, describe
from ai_employee.clients.whatsapp import WhatsAppGraph
from ai_employee.clients.whisper import AudioFile, Transcriber, Transcript, TranscriptionError
from ai_employee.model.events import EventType
from ai_employee.model.services import KeyValueStore
from ai_employee.sources.chat_intake import kept_audio, transcript_properties
from ai_employee.sources.chat_replies import transcribed_text, truncate
from ai_employee.sources.whatsapp_outbox import Outbox, Outgoing, Publish
from ai_employee.sources.whatsapp_state import NAMESPACE

log = structlog.get_logger("ai_employee.sources.whatsapp")

_KEY = "pending_transcriptions"

ActionInfo = Callable[[str], Mapping[str, Any] | None]


@dataclass
class PendingVoice:
    action_id: str
    message_id: str
    to: str
    media_id: str
    filename: str
    content_type: str | None = None
    attempts: int = 0
    last_error: str | None = None


class PendingList:
    """The voice notes waiting for a transcript, durable in the state store."""

    def __init__(self, store: KeyValueStore) -> None:
        self._store = store

    def items(self) -> list[PendingVoice]:
        raw = self._store.get(NAMESPACE, _KEY)
        try:
            data = json.loads(raw) if raw else []
        except ValueError:
            return []
        found: list[PendingVoice] = []
        for item in data if isinstance(data, list) else []:
            with contextlib.suppress(TypeError):
                found.append(PendingVoice(**item))
        return found

    def put(self, pending: PendingVoice) -> None:
        items = [item for item in self.items() if item.action_id != pending.action_id]
        self._save([*items, pending])

    def remove(self, action_id: str) -> None:
        self._save([item for item in self.items() if item.action_id != action_id])

    def _save(self, items: list[PendingVoice]) -> None:
        self._store.put(NAMESPACE, _KEY, json.dumps([asdict(item) for item in items], separators=(",", ":")))


class PendingTranscriptions:
    def __init__(
        self,
        *,
        pending: PendingList,
        vault_root: Path,
        temp_dir: Path,
        graph: Callable[[], WhatsAppGraph | None],
        transcriber: Callable[[], Transcriber | None],
        action_info: ActionInfo,
        outbox: Outbox,
        publish: Publish,
        stop_requested: asyncio.Event,
        retry_seconds: float,
    ) -> None:
        self._pending = pending
        self._vault_root = vault_root
        self._temp_dir = temp_dir
        self._graph = graph
        self._transcriber = transcriber
        self._action_info = action_info
        self._outbox = outbox
        self._publish = publish
        self._stop_requested = stop_requested
        self._retry_seconds = retry_seconds

    async def run(self) -> None:
        """At start, then every `retry_seconds` while any wait; without a transcriber (settings are
        read once) it says how many wait and ends."""
        while not self._stop_requested.is_set():
            try:
                await self.transcribe_pending()
            except Exception:
                log.exception("whatsapp.pending_transcriptions_failed")
            if self._transcriber() is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), self._retry_seconds)

    async def transcribe_pending(self) -> int:
        """Transcribe every waiting voice note now; returns how many were done."""
        items = self._pending.items()
        transcriber = self._transcriber()
        if not items:
            return 0
        if transcriber is None:
            log.info(
                "whatsapp.transcriptions_waiting",
                count=len(items),
                hint="set OPENAI_API_KEY to transcribe them",
            )
            return 0
        done = 0
        for item in items:
            if self._stop_requested.is_set():
                break
            try:
                audio = await self._audio(item)
                transcript = await transcriber.transcribe(audio)
            except (TranscriptionError, ServiceRejected) as error:
                if isinstance(error, ServiceAuthError):  # the key, not the audio: try again later
                    self._failed(item, error)
                    break
                log.warning(
                    "whatsapp.pending_transcription_refused", action_id=item.action_id, error=error.message
                )
                self._pending.remove(item.action_id)
                text = truncate(
                    f"Your voice note ({item.action_id}) could not be transcribed: {error.message}"
                )
                self._outbox.put(Outgoing(item.to, text, item.action_id, reply_to=item.message_id))
                continue
            except (ServiceError, OSError) as error:
                self._failed(item, error)
                continue
            self._publish_transcript(item, transcript)
            done += 1
            self._outbox.put(
                Outgoing(item.to, transcribed_text(transcript), item.action_id, reply_to=item.message_id)
            )
        return done

    def _failed(self, item: PendingVoice, error: BaseException) -> None:
        item.attempts += 1
        item.last_error = describe(error)
        self._pending.put(item)
        log.warning("whatsapp.pending_transcription_failed", action_id=item.action_id, error=item.last_error)

    async def _audio(self, item: PendingVoice) -> AudioFile:
        data = await asyncio.to_thread(
            kept_audio, self._vault_root, self._action_info(item.action_id), item.filename
        )
        if data is None:
            graph = self._graph()
            if graph is None:
                raise ServiceError("the whatsapp service is not running")
            target = self._temp_dir / f"pending-{item.filename}"
            try:
                media = await graph.download_media(item.media_id, target)
                data = await asyncio.to_thread(media.path.read_bytes)
            finally:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(target.unlink)
        return AudioFile(item.filename, data, item.content_type, 0)

    def _publish_transcript(self, item: PendingVoice, transcript: Transcript) -> None:
        payload: dict[str, Any] = {
            "action_id": item.action_id,
            "source": "whatsapp",
            "source_ref": item.message_id,
            "transcript": transcript.text,
            **transcript_properties(transcript, 0),
        }
        self._pending.remove(item.action_id)
        self._publish(EventType.TRANSCRIPTION_COMPLETED, item.action_id, payload)
