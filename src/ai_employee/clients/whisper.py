"""Speech to text for voice notes.

Two engines behind one small interface, so that a source never cares which one ran:
- OpenAI's transcription endpoint through the official SDK (`AsyncOpenAI`, base URL from
  config, so tests point it at a loopback fake). Billed per minute of audio; the cost is
  reported with every transcript so that it lands in the action note.
- faster-whisper on this machine, when `telegram.local_whisper_model` names a model and the
  package is installed. It keeps the audio local and costs nothing. It is not a dependency:
  it pulls in CTranslate2 and model downloads that most installs do not want.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import io
import threading
from typing import Any, Protocol

import openai
import structlog
from openai import AsyncOpenAI

from ai_employee.clients.link import OutsideLink, describe_target
from ai_employee.clients.retry import (
    RetryPolicy,
    ServiceAuthError,
    ServiceError,
    TransientStatus,
    parse_retry_after,
)
from ai_employee.config import Settings
from ai_employee.model.services import LinkStatus
from ai_employee.model.transcription import AudioFile, Transcript, TranscriptionWork
from ai_employee.observability.timing import timed_operation

log = structlog.get_logger(__name__)

#: OpenAI's list price for whisper-1 (and gpt-4o-transcribe), prorated per second of audio.
PRICE_PER_MINUTE_USD = 0.006

#: The endpoint refuses larger uploads (413); such audio stays pending for a human.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024

#: The endpoint answers once the audio is transcribed: a long voice note takes a while.
TRANSCRIPTION_READ_SECONDS = 120.0


def transcription_cost_usd(seconds: float, price_per_minute: float = PRICE_PER_MINUTE_USD) -> float:
    """Dollars for `seconds` of audio, rounded to a millionth (what a note can show sensibly)."""
    return round(max(0.0, seconds) / 60.0 * price_per_minute, 6)


class TranscriptionError(ServiceError):
    """The audio cannot be transcribed as sent (too large, empty, refused): retrying will not help."""


class Transcriber(Protocol):
    """Turns audio into text. Raises ServiceError subclasses; never logs the audio or the text."""

    @property
    def engine(self) -> str: ...

    async def transcribe(self, audio: AudioFile) -> Transcript: ...

    async def aclose(self) -> None: ...


def _is_transient(error: BaseException) -> bool:
    """A 429/5xx answer (raised as TransientStatus) or a connection that failed or timed out."""
    return isinstance(error, TransientStatus | openai.APIConnectionError)


class OpenAITranscriber:
    """`POST {base_url}/audio/transcriptions` through the openai SDK, retried by the one policy.

    The SDK's own retries are off (`max_retries=0`) so that there is one retry policy, with
    jitter and `Retry-After` honoured, and one place that decides what is worth repeating.
    Each attempt has deadlines: `connect_timeout` to reach the API, `timeout_seconds` for its
    answer. `link()` says whether the API was reached by the last attempt, and why not.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "whisper-1",
        timeout_seconds: float = TRANSCRIPTION_READ_SECONDS,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        price_per_minute: float = PRICE_PER_MINUTE_USD,
    ) -> None:
        self._timeout = openai.Timeout(timeout_seconds, connect=connect_timeout, pool=connect_timeout)
        self._client = AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=self._timeout,
            max_retries=0,
        )
        self._model = model
        self._retry = retry or RetryPolicy(attempts=4, initial_seconds=1.0, max_seconds=20.0)
        self._price_per_minute = price_per_minute
        self._link = OutsideLink("whisper", describe_target("Whisper", str(self._client.base_url)))
        self._used = False

    def link(self) -> LinkStatus | None:
        """How the API stands as of the last attempt; None before the first."""
        return self._link.status() if self._used else None

    @property
    def engine(self) -> str:
        return f"openai:{self._model}"

    @timed_operation("whisper.transcribe")
    async def transcribe(self, audio: AudioFile) -> Transcript:
        if not audio.data:
            raise TranscriptionError("the audio file is empty")
        if len(audio.data) > MAX_UPLOAD_BYTES:
            raise TranscriptionError(
                f"the audio is {len(audio.data) // (1024 * 1024)} MiB; "
                "the transcription API takes at most 25 MiB"
            )

        self._used = True

        async def attempt() -> Any:
            try:
                result = await self._client.audio.transcriptions.create(
                    model=self._model,
                    file=(audio.filename, audio.data, audio.content_type or "application/octet-stream"),
                )
            except openai.APIConnectionError as error:
                self._link.failed(error, timeout=self._timeout, retry=False)
                raise
            except openai.APIStatusError as error:
                self._link.answered(error.status_code)
                if not isinstance(error, openai.RateLimitError | openai.InternalServerError):
                    raise
                raise TransientStatus(
                    f"transcription answered {error.status_code}: {_api_message(error)}",
                    status=error.status_code,
                    retry_after=parse_retry_after(error.response.headers.get("retry-after")),
                ) from error
            self._link.connected()
            return result

        try:
            result = await self._retry.call(attempt, what="transcription", retry_on=_is_transient)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            raise ServiceAuthError(
                f"transcription refused the API key ({error.status_code}): {_api_message(error)}",
                status=error.status_code,
            ) from error
        except openai.APIStatusError as error:
            raise TranscriptionError(
                f"transcription refused the audio ({error.status_code}): {_api_message(error)}",
                status=error.status_code,
            ) from error
        seconds = _billed_seconds(result, audio)
        return Transcript(
            text=str(result.text).strip(),
            duration_seconds=seconds,
            cost_usd=transcription_cost_usd(seconds, self._price_per_minute),
            engine=self.engine,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _billed_seconds(result: Any, audio: AudioFile) -> float:
    """The duration OpenAI billed when it says (`usage.seconds`), else what the sender reported."""
    usage = getattr(result, "usage", None)
    if usage is not None and getattr(usage, "type", None) == "duration":
        seconds = getattr(usage, "seconds", None)
        if isinstance(seconds, int | float) and seconds > 0:
            return float(seconds)
    return float(audio.duration_seconds or 0.0)


def _api_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message[:300]
    return error.message[:300]


class LocalWhisperTranscriber:
    """faster-whisper in a worker thread. The model loads on first use (it can take seconds)."""

    def __init__(self, model_name: str, *, device: str = "auto", compute_type: str = "default") -> None:
        self._module: Any = importlib.import_module("faster_whisper")
        self._model_name = model_name
        self._device = device
        self._compute_type = compute_type
        self._model: Any = None
        self._lock = threading.Lock()  # one model, one transcription at a time

    @property
    def engine(self) -> str:
        return f"local:{self._model_name}"

    @timed_operation("whisper.local")
    async def transcribe(self, audio: AudioFile) -> Transcript:
        if not audio.data:
            raise TranscriptionError("the audio file is empty")
        return await asyncio.to_thread(self._transcribe_blocking, audio)

    def _transcribe_blocking(self, audio: AudioFile) -> Transcript:
        with self._lock:
            try:
                if self._model is None:
                    self._model = self._module.WhisperModel(
                        self._model_name, device=self._device, compute_type=self._compute_type
                    )
                segments, info = self._model.transcribe(io.BytesIO(audio.data))
                text = " ".join(str(segment.text).strip() for segment in segments).strip()
            except Exception as error:  # faster-whisper raises plain exceptions (decode, model files)
                raise TranscriptionError(
                    f"local transcription failed: {type(error).__name__}: {error}"[:300]
                ) from error
        seconds = float(getattr(info, "duration", 0.0) or audio.duration_seconds or 0.0)
        return Transcript(text=text, duration_seconds=seconds, cost_usd=0.0, engine=self.engine)

    async def aclose(self) -> None:
        self._model = None


def local_whisper_available() -> bool:
    return importlib.util.find_spec("faster_whisper") is not None


def build_transcriber(
    settings: Settings, *, retry: RetryPolicy | None = None, work: TranscriptionWork | None = None
) -> Transcriber | None:
    """The transcriber the settings ask for, or None: then voice notes wait, marked pending.

    A configured local model wins over OpenAI (the owner chose to keep audio on the machine);
    if faster-whisper is not installed, say so and fall back to OpenAI when a key is set.
    With `work` (the Redis backend) voice notes go to the workers first, and this transcriber
    is the fallback when no worker can (`clients.whisper_workers`).
    """
    own = _build_own_transcriber(settings, retry)
    if work is None:
        return own
    from ai_employee.clients.whisper_workers import WorkerTranscriber

    return WorkerTranscriber(work, fallback=own)


def transcription_configured(settings: Settings) -> bool:
    """Whether `build_transcriber` makes a transcriber of this machine's own (a worker's check)."""
    api_key = settings.openai.api_key
    local_model = settings.telegram.local_whisper_model
    return bool(local_model and local_whisper_available()) or bool(api_key and api_key.get_secret_value())


def _build_own_transcriber(settings: Settings, retry: RetryPolicy | None) -> Transcriber | None:
    local_model = settings.telegram.local_whisper_model
    if local_model:
        if local_whisper_available():
            return LocalWhisperTranscriber(local_model)
        log.warning(
            "whisper.local_unavailable",
            model=local_model,
            reason="faster-whisper is not installed (pip install faster-whisper)",
        )
    api_key = settings.openai.api_key
    if api_key is None or not api_key.get_secret_value():
        return None
    return OpenAITranscriber(
        api_key=api_key.get_secret_value(),
        base_url=settings.openai.base_url,
        model=settings.openai.transcription_model,
        timeout_seconds=max(TRANSCRIPTION_READ_SECONDS, settings.services.read_timeout),
        connect_timeout=settings.services.connect_timeout,
        retry=retry,
        price_per_minute=settings.costs.whisper_usd_per_minute,
    )


__all__ = [
    "MAX_UPLOAD_BYTES",
    "PRICE_PER_MINUTE_USD",
    "AudioFile",
    "LocalWhisperTranscriber",
    "OpenAITranscriber",
    "Transcriber",
    "Transcript",
    "TranscriptionError",
    "build_transcriber",
    "local_whisper_available",
    "transcription_configured",
    "transcription_cost_usd",
]
