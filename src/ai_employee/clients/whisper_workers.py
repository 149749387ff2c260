"""Voice notes transcribed on workers: a `Transcriber` for the chat sources when the daemon runs
with the Redis backend (docs/distributed.md).

The audio goes to the workers' `transcribe` step through `model.transcription.TranscriptionWork`
(each audio, by its SHA-256, is transcribed once). What the workers answer maps onto the errors a
source already knows: a refusal is a `TranscriptionError` (the note says it never will be
transcribed); no worker able to do it falls back to this daemon's own transcriber when it has
one, else a `ServiceError` (the note is marked pending, and the source asks again later); a
question not answered in time is a `ServiceError` as well, without the fallback (the job stays
queued: asking again later gets the workers' transcript, and the audio is not paid for twice).
"""

from __future__ import annotations

import structlog

from ai_employee.clients.retry import ServiceError
from ai_employee.clients.whisper import Transcriber, TranscriptionError
from ai_employee.model.transcription import (
    AudioFile,
    NoWorkerTranscribes,
    Transcript,
    TranscriptionLate,
    TranscriptionRefused,
    TranscriptionWork,
)

log = structlog.get_logger(__name__)


class WorkerTranscriber:
    """`Transcriber` that asks the workers, with this daemon's own transcriber (if any) as fallback."""

    def __init__(self, work: TranscriptionWork, *, fallback: Transcriber | None) -> None:
        self._work = work
        self._fallback = fallback

    @property
    def engine(self) -> str:
        return "workers" if self._fallback is None else f"workers, else {self._fallback.engine}"

    async def transcribe(self, audio: AudioFile) -> Transcript:
        try:
            return await self._work.transcribe(audio)
        except TranscriptionRefused as refused:
            raise TranscriptionError(str(refused)) from refused
        except TranscriptionLate as late:
            raise ServiceError(f"{late}; the voice note waits") from late
        except NoWorkerTranscribes as none:
            if self._fallback is None:
                raise ServiceError(
                    f"{none}, and this daemon has no transcriber of its own: the voice note waits"
                ) from none
            log.info("whisper.on_the_daemon", reason=str(none), engine=self._fallback.engine)
            return await self._fallback.transcribe(audio)

    async def aclose(self) -> None:
        if self._fallback is not None:
            await self._fallback.aclose()
