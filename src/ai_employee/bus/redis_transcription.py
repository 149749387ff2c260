"""The daemon's side of the workers' `transcribe` step (`model.transcription.TranscriptionWork`).

A voice note travels by content, like an execution's attachments: inside Redis up to
`bus.inline_attachment_bytes`, beyond it through `bus.shared_path`. Its job key is its SHA-256,
so the same audio is transcribed once: a transcript already stored (by this daemon's earlier
question, or another daemon's) answers at once, without a worker; a second question while the
first waits joins it (`RedisWork.submit`).

What can go wrong, and what the daemon makes of it (`clients.whisper_workers`):
- no live worker runs `transcribe`, the audio cannot travel, Redis cannot be reached, or the
  workers failed on it (an error, a dead letter): `NoWorkerTranscribes`, and the daemon uses its
  own transcriber if it has one. A failure is not kept as the job's outcome (its stored result
  is dropped), so that the next question runs it again;
- the worker's engine refused the audio: `TranscriptionRefused`, kept (it will not change);
- no answer within `wait_seconds`: `TranscriptionLate`; the job stays queued, and the next
  question about the same audio is answered from what the worker stored.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import structlog

from ai_employee.bus.redis_streams import TRANSIENT, StoredResult
from ai_employee.bus.redis_work import AttachmentTooLarge, RedisWork
from ai_employee.bus.work_codec import (
    TRANSCRIBE,
    AttachmentRef,
    TranscribeRequest,
    WireError,
    decode_transcript,
    encode_transcribe,
    transcribe_job_key,
)
from ai_employee.model.transcription import (
    AudioFile,
    NoWorkerTranscribes,
    Transcript,
    TranscriptionLate,
    TranscriptionRefused,
)

log = structlog.get_logger(__name__)

#: how long a voice note waits for a worker (on top of `bus.claim_idle`, in which the job of a
#: worker that died is taken over): as long as one transcription may take on this machine
TRANSCRIBE_WAIT_SECONDS = 120.0


class RedisTranscription:
    """Voice notes transcribed by the workers that run `--steps transcribe`."""

    def __init__(self, work: RedisWork, *, wait_seconds: float | None = None) -> None:
        self._work = work
        self._streams = work.streams
        self._bus = work.settings
        self.wait_seconds = (
            wait_seconds if wait_seconds is not None else TRANSCRIBE_WAIT_SECONDS + self._bus.claim_idle
        )

    async def transcribe(self, audio: AudioFile) -> Transcript:
        digest = hashlib.sha256(audio.data).hexdigest()
        job_key = transcribe_job_key(digest)
        try:
            stored = await self._streams.stored_result(job_key)
            if stored is not None:
                return await self._answer(job_key, stored.kind, stored.body)
            if not self._work.workers_up(TRANSCRIBE):
                raise NoWorkerTranscribes(
                    "no worker runs `transcribe` (`ai-employee worker --steps transcribe`)"
                )
        except TRANSIENT as error:
            raise NoWorkerTranscribes(_unreachable(error)) from error
        ref = await self._send_audio(audio, digest)
        request = TranscribeRequest(ref, audio.content_type, audio.duration_seconds)
        try:
            kind, body = await asyncio.wait_for(
                self._work.submit(TRANSCRIBE, job_key, encode_transcribe(request)), self.wait_seconds
            )
        except TimeoutError:
            log.warning("transcription on a worker is late", job=job_key, waited=self.wait_seconds)
            raise TranscriptionLate(f"no worker answered within {self.wait_seconds:.0f} s") from None
        await self._drop_audio(ref)
        return await self._answer(job_key, kind, body)

    async def _drop_audio(self, ref: AttachmentRef) -> None:
        """Answered: the voice note leaves Redis (a later question stores it again if it must run)."""
        if ref.where != "blob":
            return
        try:
            await self._streams.redis.delete(self._streams.keys.blob(ref.sha256))
        except TRANSIENT as error:  # it expires with the result TTL
            log.warning("could not drop a voice note from Redis", error=str(error))

    async def _answer(self, job_key: str, kind: str, body: dict[str, Any]) -> Transcript:
        if kind == "done":
            try:
                return decode_transcript(body)
            except WireError as error:
                reason = str(error)
        elif body.get("refused"):
            raise TranscriptionRefused(str(body.get("error") or "the audio was refused"))
        else:
            reason = f"{kind}: {body.get('error') or 'no reason given'}"
        await self._forget(job_key)
        log.warning("transcription on a worker failed", job=job_key, reason=reason)
        raise NoWorkerTranscribes(f"the workers could not transcribe it ({reason})")

    async def _forget(self, job_key: str) -> None:
        """Drop a failed outcome, so that the next question about this audio runs it again."""
        key = self._streams.keys.result(job_key)
        try:
            raw = await self._streams.redis.get(key)
            if raw is not None and StoredResult.parse(raw).kind != "done":
                await self._streams.redis.delete(key)
        except TRANSIENT as error:
            log.warning("could not drop a failed transcription", job=job_key, error=str(error))

    async def _send_audio(self, audio: AudioFile, digest: str) -> AttachmentRef:
        """Into Redis (small) or the shared folder, by content; `NoWorkerTranscribes` when it cannot go."""
        try:
            ref = await asyncio.to_thread(self._work.content_ref, audio.filename, audio.data, digest)
        except AttachmentTooLarge as error:
            raise NoWorkerTranscribes(str(error)) from error
        except OSError as error:
            raise NoWorkerTranscribes(f"the shared folder cannot be written: {error}") from error
        if ref.where == "blob":
            try:
                key = self._streams.keys.blob(digest)
                await self._streams.redis.set(key, audio.data, px=self._work.ttl_ms)
            except TRANSIENT as error:  # the daemon transcribes it itself, or it waits
                raise NoWorkerTranscribes(_unreachable(error)) from error
        return ref


def _unreachable(error: BaseException) -> str:
    return f"Redis cannot be reached ({str(error) or type(error).__name__})"
