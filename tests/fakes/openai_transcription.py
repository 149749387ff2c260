"""A loopback OpenAI transcription endpoint for the real openai SDK (shared/apis.md section 3).

- `POST /v1/audio/transcriptions`, multipart: `file` (with filename and content type),
  `model`, optional `language`, `prompt`, `response_format` (json by default, text, srt,
  vtt, verbose_json), `temperature`, `timestamp_granularities[]`.
- `Authorization: Bearer <key>`; a wrong or missing key → 401 with OpenAI's error body
  `{"error":{"message","type","param","code"}}`.
- `{"text": ...}` for json, plus `usage: {"type":"duration","seconds":N}` for whisper-1 when the
  test told it the audio's length; verbose_json adds `language`, `duration`, `segments`.
- Validation: no file or no model → 400 (`invalid_request_error`, `param`), an unknown model
  → 404 `model_not_found`, more than 25 MB → 413, an unsupported format for a gpt-4o model → 400.
- Faults injected per test (`fail_next`: 429 with Retry-After, 500, 503...) and a request log.

The transcript for a piece of audio is what the test registered for those exact bytes
(`set_transcript`), else `default_text`.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from tests.fakes.loopback import Listener

MAX_BYTES = 25 * 1024 * 1024
MODELS = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe"}
_JSON_ONLY_MODELS = {"gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe"}


@dataclass
class TranscriptionRequest:
    model: str
    filename: str
    content_type: str
    size: int
    response_format: str
    language: str | None


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: str | None


@dataclass
class FakeOpenAITranscription:
    api_key: str = "sk-test-transcription-key"
    default_text: str = "This is a test transcript."
    requests: list[TranscriptionRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._transcripts: dict[str, tuple[str, float | None]] = {}
        self._faults: list[_Fault] = []
        self._gate: asyncio.Event | None = None
        self.waiting = 0
        self._listener = Listener()
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        self.port = await self._listener.listen(app)

    async def stop(self) -> None:
        await self._listener.close()

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL is set to: it includes /v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def set_transcript(self, audio: bytes, text: str, *, seconds: float | None = None) -> None:
        self._transcripts[hashlib.sha256(audio).hexdigest()] = (text, seconds)

    def fail_next(self, status: int = 500, *, times: int = 1, retry_after: str | None = None) -> None:
        self._faults.append(_Fault(status, times, retry_after))

    def hold(self) -> None:
        """Keep every request waiting (after it is recorded) until `release()`: a slow transcription."""
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            shown = request.headers.get("Authorization", "").removeprefix("Bearer ")[:3]
            return _error(
                401,
                f"Incorrect API key provided: {shown}***.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        if self._gate is not None and not self._gate.is_set():
            self.waiting += 1
            await self._gate.wait()
        if self._faults:
            fault = self._faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self._faults.pop(0)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            kind = "requests" if fault.status == 429 else "server_error"
            return _error(fault.status, "Injected failure.", kind, headers=headers)
        if request.content_type != "multipart/form-data":
            return _error(400, "Expected multipart/form-data.", "invalid_request_error")
        fields: dict[str, str] = {}
        audio: bytes | None = None
        filename = ""
        content_type = ""
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            name = part.name or ""
            if name == "file":
                filename = part.filename or ""
                content_type = part.headers.get("Content-Type", "")
                audio = bytes(await part.read(decode=False))
            else:
                fields[name] = await part.text()
        if audio is None:
            return _error(400, "you must provide a file", "invalid_request_error", param="file")
        model = fields.get("model")
        if not model:
            return _error(400, "you must provide a model parameter", "invalid_request_error", param="model")
        if model not in MODELS:
            return _error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                code="model_not_found",
            )
        if len(audio) > MAX_BYTES:
            return _error(413, "Maximum content size limit (26214400) exceeded.", "invalid_request_error")
        response_format = fields.get("response_format", "json")
        if response_format not in ("json", "text", "srt", "vtt", "verbose_json"):
            return _error(
                400,
                f"Invalid response_format: {response_format}",
                "invalid_request_error",
                param="response_format",
            )
        if model in _JSON_ONLY_MODELS and response_format not in ("json", "text"):
            return _error(
                400,
                f"response_format '{response_format}' is not compatible with model '{model}'.",
                "invalid_request_error",
                param="response_format",
            )
        self.requests.append(
            TranscriptionRequest(
                model, filename, content_type, len(audio), response_format, fields.get("language")
            )
        )
        text, seconds = self._transcripts.get(hashlib.sha256(audio).hexdigest(), (self.default_text, None))
        return _render(text, seconds, model, response_format)


def _render(text: str, seconds: float | None, model: str, response_format: str) -> web.StreamResponse:
    if response_format == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    length = seconds or 0.0
    if response_format in ("srt", "vtt"):
        stamp = f"00:00:00{',' if response_format == 'srt' else '.'}000 --> 00:00:{int(length):02d}"
        head = "WEBVTT\n\n" if response_format == "vtt" else "1\n"
        return web.Response(text=f"{head}{stamp}\n{text}\n", content_type="text/plain")
    body: dict[str, Any] = {"text": text}
    if response_format == "verbose_json":
        body.update(
            task="transcribe",
            language="english",
            duration=length,
            segments=[{"id": 0, "seek": 0, "start": 0.0, "end": length, "text": text}],
        )
    if seconds is not None and model == "whisper-1":
        body["usage"] = {"type": "duration", "seconds": round(seconds)}
    return web.json_response(body)


def _error(
    status: int,
    message: str,
    kind: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    response = web.json_response(body, status=status)
    if headers:
        for key, value in headers.items():
            response.headers[key] = value
    response.headers["x-request-id"] = f"req_fake_{status}"
    return response
