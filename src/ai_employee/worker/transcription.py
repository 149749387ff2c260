"""The worker's `transcribe` step: a voice note that came by content, transcribed by this worker's
own engine (`clients.whisper.build_transcriber`: OpenAI with its OPENAI_API_KEY, or
faster-whisper with `telegram.local_whisper_model`), answered as a transcript in wire form.

- the engine refused the audio (too large, unreadable, 4xx): the answer is an error marked
  `refused`, which the daemon takes as final (kept for `bus.result_ttl`, like any answer);
- the engine could not be reached or failed through its retries, or refused this worker's key:
  no answer (`JobInterrupted`); the message stays pending and is taken over after
  `bus.claim_idle` (by a worker with a working key, perhaps), at most `bus.max_deliveries` times.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from ai_employee.bus.redis_streams import WorkMessage
from ai_employee.bus.work_codec import (
    AttachmentRef,
    WireError,
    decode_transcribe,
    encode_transcript,
)
from ai_employee.clients.retry import RetryPolicy, ServiceError, describe
from ai_employee.clients.whisper import Transcriber, TranscriptionError, build_transcriber
from ai_employee.config import Settings
from ai_employee.model.transcription import AudioFile
from ai_employee.worker.outcomes import JobInterrupted, Outcome

log = structlog.get_logger(__name__)

Fetch = Callable[[list[AttachmentRef], Path], Awaitable[list[Path]]]


class TranscribeStep:
    def __init__(self, settings: Settings, fetch: Fetch, scratch: Path) -> None:
        transcriber = build_transcriber(settings, retry=RetryPolicy.for_services(settings.services))
        if transcriber is None:  # the worker checks before it starts (Worker.__init__)
            raise ValueError("transcribe needs OPENAI_API_KEY or telegram.local_whisper_model on this worker")
        self.transcriber: Transcriber = transcriber
        self._fetch = fetch
        self._scratch = scratch

    async def __call__(self, message: WorkMessage, token: int) -> Outcome:
        request = decode_transcribe(message.body)
        folder = self._scratch / message.job_key.replace(":", "_")
        try:
            (path,) = await self._fetch([request.audio], folder)
            data = await asyncio.to_thread(path.read_bytes)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if hashlib.sha256(data).hexdigest() != request.audio.sha256:
            raise WireError(f"the audio {request.audio.name} does not match its SHA-256")
        audio = AudioFile(Path(request.audio.name).name, data, request.content_type, request.duration_seconds)
        try:
            transcript = await self.transcriber.transcribe(audio)
        except TranscriptionError as refused:
            log.warning("transcription refused", job=message.job_key, error=refused.message)
            return "error", {"error": refused.message, "refused": True}
        except ServiceError as error:
            raise JobInterrupted(f"transcription failed: {describe(error)}") from error
        log.info("transcribed", job=message.job_key, engine=transcript.engine)
        return "done", encode_transcript(transcript)

    async def aclose(self) -> None:
        await self.transcriber.aclose()
