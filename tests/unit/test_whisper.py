"""Whisper transcription through the real openai SDK against a loopback fake of /v1/audio/transcriptions."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from ai_employee.clients.retry import RetryPolicy, ServiceAuthError, ServiceUnavailable
from ai_employee.clients.whisper import (
    AudioFile,
    OpenAITranscriber,
    TranscriptionError,
    build_transcriber,
    local_whisper_available,
    transcription_cost_usd,
)
from ai_employee.config import load_settings
from tests.fakes.openai_transcription import FakeOpenAITranscription

FAST = RetryPolicy(attempts=3, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
VOICE = b"OggS\x00\x02fake-opus-voice-note" * 20


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAITranscription]:
    server = FakeOpenAITranscription()
    await server.start()
    yield server
    await server.stop()


def transcriber(
    fake: FakeOpenAITranscription, *, model: str = "whisper-1", key: str | None = None
) -> OpenAITranscriber:
    return OpenAITranscriber(api_key=key or fake.api_key, base_url=fake.base_url, model=model, retry=FAST)


def voice(seconds: int = 42) -> AudioFile:
    return AudioFile("voice-1-2.ogg", VOICE, "audio/ogg", seconds)


async def test_transcript_text_comes_back_with_the_billed_duration_and_cost(
    openai_fake: FakeOpenAITranscription,
) -> None:
    openai_fake.set_transcript(VOICE, " Pump 3 on line 2 is leaking. ", seconds=90)
    client = transcriber(openai_fake)
    try:
        result = await client.transcribe(voice(seconds=89))
    finally:
        await client.aclose()
    assert result.text == "Pump 3 on line 2 is leaking."
    assert result.duration_seconds == 90  # what OpenAI billed wins over what the sender said
    assert result.cost_usd == pytest.approx(0.009)
    assert result.engine == "openai:whisper-1"


async def test_the_audio_is_sent_as_a_named_file_with_its_content_type_and_the_configured_model(
    openai_fake: FakeOpenAITranscription,
) -> None:
    client = transcriber(openai_fake, model="gpt-4o-transcribe")
    try:
        await client.transcribe(voice())
    finally:
        await client.aclose()
    [request] = openai_fake.requests
    assert (request.model, request.filename, request.content_type, request.size) == (
        "gpt-4o-transcribe",
        "voice-1-2.ogg",
        "audio/ogg",
        len(VOICE),
    )


async def test_without_usage_in_the_answer_the_senders_duration_prices_it(
    openai_fake: FakeOpenAITranscription,
) -> None:
    client = transcriber(openai_fake, model="gpt-4o-transcribe")
    try:
        result = await client.transcribe(voice(seconds=30))
    finally:
        await client.aclose()
    assert result.duration_seconds == 30
    assert result.cost_usd == pytest.approx(0.003)


def test_cost_is_six_tenths_of_a_cent_per_minute_prorated_by_the_second() -> None:
    assert transcription_cost_usd(60) == pytest.approx(0.006)
    assert transcription_cost_usd(10) == pytest.approx(0.001)
    assert transcription_cost_usd(0) == 0.0
    assert transcription_cost_usd(-5) == 0.0


async def test_server_errors_are_retried_until_the_transcript_arrives(
    openai_fake: FakeOpenAITranscription,
) -> None:
    openai_fake.fail_next(500, times=2)
    client = transcriber(openai_fake)
    try:
        result = await client.transcribe(voice())
    finally:
        await client.aclose()
    assert result.text == openai_fake.default_text
    assert len(openai_fake.requests) == 1


async def test_rate_limits_are_retried(openai_fake: FakeOpenAITranscription) -> None:
    openai_fake.fail_next(429, retry_after="0")
    client = transcriber(openai_fake)
    try:
        result = await client.transcribe(voice())
    finally:
        await client.aclose()
    assert result.text == openai_fake.default_text


async def test_a_service_that_stays_broken_ends_in_service_unavailable(
    openai_fake: FakeOpenAITranscription,
) -> None:
    openai_fake.fail_next(503, times=10)
    client = transcriber(openai_fake)
    try:
        with pytest.raises(ServiceUnavailable, match="transcription failed after 3 attempts"):
            await client.transcribe(voice())
    finally:
        await client.aclose()


async def test_a_wrong_key_is_an_auth_error_and_is_not_retried(openai_fake: FakeOpenAITranscription) -> None:
    client = transcriber(openai_fake, key="sk-wrong-key-0000")
    try:
        with pytest.raises(ServiceAuthError) as caught:
            await client.transcribe(voice())
    finally:
        await client.aclose()
    assert caught.value.status == 401
    assert "sk-wrong-key-0000" not in str(caught.value)


async def test_an_unknown_model_is_a_transcription_error(openai_fake: FakeOpenAITranscription) -> None:
    client = transcriber(openai_fake, model="whisper-9")
    try:
        with pytest.raises(TranscriptionError) as caught:
            await client.transcribe(voice())
    finally:
        await client.aclose()
    assert caught.value.status == 404
    assert openai_fake.requests == []


async def test_empty_audio_is_refused_before_anything_is_sent(openai_fake: FakeOpenAITranscription) -> None:
    client = transcriber(openai_fake)
    try:
        with pytest.raises(TranscriptionError, match="empty"):
            await client.transcribe(AudioFile("voice.ogg", b"", "audio/ogg", 3))
    finally:
        await client.aclose()
    assert openai_fake.requests == []


async def test_an_unreachable_endpoint_is_retried_then_service_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = OpenAITranscriber(api_key="sk-x", base_url=f"http://127.0.0.1:{port}/v1", retry=FAST)
    try:
        with pytest.raises(ServiceUnavailable):
            await client.transcribe(voice())
    finally:
        await client.aclose()


def test_without_an_openai_key_there_is_no_transcriber() -> None:
    settings = load_settings(environ={})
    assert build_transcriber(settings) is None


async def test_with_an_openai_key_the_transcriber_uses_the_configured_endpoint_and_model(
    openai_fake: FakeOpenAITranscription,
) -> None:
    settings = load_settings(
        environ={"OPENAI_API_KEY": openai_fake.api_key, "OPENAI_BASE_URL": openai_fake.base_url},
        overrides={("openai", "transcription_model"): "gpt-4o-mini-transcribe"},
    )
    built = build_transcriber(settings, retry=FAST)
    assert built is not None
    try:
        assert built.engine == "openai:gpt-4o-mini-transcribe"
        result = await built.transcribe(voice())
    finally:
        await built.aclose()
    assert result.text == openai_fake.default_text
    assert openai_fake.requests[0].model == "gpt-4o-mini-transcribe"


@pytest.mark.skipif(local_whisper_available(), reason="faster-whisper is installed here")
def test_a_local_model_without_faster_whisper_falls_back_to_openai() -> None:
    settings = load_settings(
        environ={"OPENAI_API_KEY": "sk-test"},
        overrides={("telegram", "local_whisper_model"): "small"},
    )
    built = build_transcriber(settings)
    assert built is not None
    assert built.engine == "openai:whisper-1"
