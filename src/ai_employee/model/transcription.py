"""Speech to text as the domain sees it: the audio, its transcript, and the seam through which
the chat sources have voice notes transcribed on workers (`TranscriptionWork`, implemented over
Redis Streams by `bus.redis_transcription`; docs/distributed.md). The engines themselves
(OpenAI, faster-whisper) are in `clients.whisper`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AudioFile:
    """Audio to transcribe. `duration_seconds` is what the sender reported (Telegram does)."""

    filename: str
    data: bytes
    content_type: str | None = None
    duration_seconds: float | None = None


@dataclass(frozen=True)
class Transcript:
    text: str
    duration_seconds: float
    cost_usd: float
    engine: str  # "openai:whisper-1", "local:small"


class RemoteTranscriptionFailed(Exception):
    """A voice note that workers did not transcribe; `str()` says why, fit for a human."""


class TranscriptionRefused(RemoteTranscriptionFailed):
    """A worker's engine refused the audio for good (too large, unreadable): asking again will not help."""


class NoWorkerTranscribes(RemoteTranscriptionFailed):
    """No worker could: none runs `transcribe`, the audio cannot travel, or the workers failed on it.
    The daemon may transcribe it itself."""


class TranscriptionLate(RemoteTranscriptionFailed):
    """Asked, and not answered in time: the job stays queued, and asking again later (the same
    audio) gets its transcript once a worker has made it. The daemon does not run it too."""


class TranscriptionWork(Protocol):
    """Voice notes transcribed on workers, each audio (by content) once."""

    async def transcribe(self, audio: AudioFile) -> Transcript:
        """The transcript a worker made; raises a `RemoteTranscriptionFailed`."""
        ...
