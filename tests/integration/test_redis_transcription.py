"""Voice notes transcribed on workers: the daemon's transcriber (`clients.whisper_workers` over
`bus.redis_transcription`) and a worker running `transcribe` in process, against the real Redis
on loopback and the loopback OpenAI transcription endpoint (the real openai SDK)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ai_employee.bus.redis_transcription import RedisTranscription
from ai_employee.bus.redis_work import RedisWork
from ai_employee.bus.work_codec import TRANSCRIBE
from ai_employee.clients.retry import ServiceError
from ai_employee.clients.whisper import Transcriber, TranscriptionError, build_transcriber
from ai_employee.config import Settings, load_settings
from ai_employee.model.transcription import AudioFile
from ai_employee.sources.telegram import TelegramService
from tests.conftest import eventually
from tests.fakes.openai_transcription import FakeOpenAITranscription
from tests.integration import test_redis_work as redis_work
from tests.integration.conftest_telegram import (  # noqa: F401 - harness_fixture registers the fixture
    ALLOWED,
    FAST,
    Harness,
    harness_fixture,
)
from tests.integration.test_redis_work import RunningWorker

# the Redis fixtures: a real Redis on loopback, a namespace of each test's own, the daemon's RedisWork
redis_url = redis_work.redis_url
namespace = redis_work.namespace
work = redis_work.work

VOICE = b"OggS\x00\x02" + b"opus-frames-of-a-voice-note" * 40
NOTE = AudioFile("voice-111-7.ogg", VOICE, "audio/ogg", 30)


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAITranscription]:
    fake = FakeOpenAITranscription()
    await fake.start()
    yield fake
    await fake.stop()


def settings(url: str, namespace: str, openai: FakeOpenAITranscription | None) -> Settings:
    """A worker's or the daemon's settings; with `openai`, its OpenAI key and the loopback endpoint."""
    environ = {"OPENAI_API_KEY": openai.api_key, "OPENAI_BASE_URL": openai.base_url} if openai else {}
    overrides: dict[tuple[str, ...], Any] = {
        ("redis", "url"): url,
        ("bus", "namespace"): namespace,
        ("bus", "claim_idle"): 0.6,
        ("bus", "heartbeat_seconds"): 0.1,
        ("services", "initial_backoff"): 0.02,
        ("services", "max_backoff"): 0.05,
    }
    return load_settings(environ=environ, overrides=overrides)


def daemon_transcriber(
    daemon: Settings, work: RedisWork, *, wait_seconds: float | None = None
) -> Transcriber:
    """What the Telegram and WhatsApp sources build with the Redis backend on."""
    transcriber = build_transcriber(daemon, work=RedisTranscription(work, wait_seconds=wait_seconds))
    assert transcriber is not None
    return transcriber


@contextlib.asynccontextmanager
async def worker_and_daemon(
    work: RedisWork, redis_url: str, namespace: str, openai: FakeOpenAITranscription
) -> AsyncIterator[tuple[RunningWorker, Transcriber]]:
    """A worker that transcribes (its engine: `openai`), up, and the daemon's transcriber (no
    key of its own)."""
    transcriber = daemon_transcriber(settings(redis_url, namespace, None), work)
    async with RunningWorker(settings(redis_url, namespace, openai), [TRANSCRIBE]) as running:
        await transcribing_worker_up(work)
        yield running, transcriber


async def transcribing_worker_up(work: RedisWork) -> None:
    """Until the daemon's side knows of a worker that transcribes (its status refresh)."""
    await eventually(lambda: work.workers_up(TRANSCRIBE), message="a transcribing worker")


async def test_a_voice_note_sent_by_the_daemon_is_transcribed_by_a_worker_with_its_cost(
    work: RedisWork, redis_url: str, namespace: str, openai: FakeOpenAITranscription
) -> None:
    openai.set_transcript(VOICE, "Pump 3 on line 2 is leaking oil.", seconds=30)
    async with worker_and_daemon(work, redis_url, namespace, openai) as (running, transcriber):
        transcript = await asyncio.wait_for(transcriber.transcribe(NOTE), 10)
    assert transcript.text == "Pump 3 on line 2 is leaking oil."
    assert transcript.cost_usd == pytest.approx(0.003)
    assert transcript.duration_seconds == 30
    assert transcript.engine == "openai:whisper-1"
    assert running.worker.done == 1
    assert [(r.filename, r.content_type) for r in openai.requests] == [("voice-111-7.ogg", "audio/ogg")]


async def test_a_transcribed_voice_note_leaves_redis(
    work: RedisWork, redis_url: str, namespace: str, openai: FakeOpenAITranscription
) -> None:
    async with worker_and_daemon(work, redis_url, namespace, openai) as (_, transcriber):
        await asyncio.wait_for(transcriber.transcribe(NOTE), 10)
    assert not await work.streams.redis.exists(work.streams.keys.blob(hashlib.sha256(VOICE).hexdigest()))


async def test_the_same_voice_note_asked_twice_is_transcribed_once(
    work: RedisWork, redis_url: str, namespace: str, openai: FakeOpenAITranscription
) -> None:
    async with worker_and_daemon(work, redis_url, namespace, openai) as (_, transcriber):
        together = await asyncio.wait_for(
            asyncio.gather(transcriber.transcribe(NOTE), transcriber.transcribe(NOTE)), 10
        )
    later = await asyncio.wait_for(transcriber.transcribe(NOTE), 10)  # no worker needed any more
    assert {transcript.text for transcript in [*together, later]} == {openai.default_text}
    assert len(openai.requests) == 1


async def test_a_voice_note_the_workers_engine_refuses_comes_back_as_a_permanent_error(
    work: RedisWork, redis_url: str, namespace: str, openai: FakeOpenAITranscription
) -> None:
    openai.fail_next(400)
    async with worker_and_daemon(work, redis_url, namespace, openai) as (_, transcriber):
        with pytest.raises(TranscriptionError, match="refused the audio"):
            await asyncio.wait_for(transcriber.transcribe(NOTE), 10)
    with pytest.raises(TranscriptionError):  # kept: the same audio is not sent again
        await asyncio.wait_for(transcriber.transcribe(NOTE), 10)
    assert openai.requests == []


async def test_a_transcription_that_fails_on_the_way_is_taken_over_and_done(
    work: RedisWork, redis_url: str, namespace: str, openai: FakeOpenAITranscription
) -> None:
    openai.fail_next(503, times=5)  # every attempt of the first delivery: the job is left pending
    async with worker_and_daemon(work, redis_url, namespace, openai) as (_, transcriber):
        transcript = await asyncio.wait_for(transcriber.transcribe(NOTE), 10)
    assert transcript.text == openai.default_text
    assert len(openai.requests) == 1


async def test_without_a_transcribing_worker_the_daemon_transcribes_the_voice_note_itself(
    work: RedisWork, redis_url: str, namespace: str, openai: FakeOpenAITranscription
) -> None:
    transcriber = daemon_transcriber(settings(redis_url, namespace, openai), work)
    transcript = await asyncio.wait_for(transcriber.transcribe(NOTE), 10)
    assert transcript.text == openai.default_text
    assert len(openai.requests) == 1
    assert await work.streams.redis.xlen(work.streams.keys.work(TRANSCRIBE)) == 0


async def test_without_a_transcribing_worker_or_a_key_of_its_own_the_voice_note_waits(
    work: RedisWork, redis_url: str, namespace: str
) -> None:
    transcriber = daemon_transcriber(settings(redis_url, namespace, None), work)
    with pytest.raises(ServiceError, match=r"no worker runs `transcribe`.*the voice note waits"):
        await asyncio.wait_for(transcriber.transcribe(NOTE), 10)


async def test_a_voice_note_no_worker_answers_in_time_waits_and_is_not_transcribed_twice(
    work: RedisWork, redis_url: str, namespace: str, openai: FakeOpenAITranscription
) -> None:
    openai.hold()
    transcriber = daemon_transcriber(settings(redis_url, namespace, openai), work, wait_seconds=0.3)
    async with RunningWorker(settings(redis_url, namespace, openai), [TRANSCRIBE]):
        await transcribing_worker_up(work)
        with pytest.raises(ServiceError, match="no worker answered within"):
            await asyncio.wait_for(transcriber.transcribe(NOTE), 10)
        openai.release()
        transcript = await asyncio.wait_for(transcriber.transcribe(NOTE), 10)
    assert transcript.text == openai.default_text
    assert len(openai.requests) == 1  # the daemon did not run it as well


def test_a_worker_without_a_transcription_engine_refuses_the_transcribe_step(
    redis_url: str, namespace: str
) -> None:
    from ai_employee.worker.service import Worker

    with pytest.raises(ValueError, match="transcribe needs OPENAI_API_KEY"):
        Worker(settings(redis_url, namespace, None), steps=[TRANSCRIBE], concurrency=1)


async def test_a_telegram_voice_notes_transcript_comes_from_a_worker(
    harness: Harness, work: RedisWork, redis_url: str, namespace: str
) -> None:
    harness.openai.set_transcript(VOICE, "Pump 3 on line 2 is leaking oil.", seconds=30)
    context = dataclasses.replace(harness.context(openai_key=False), transcription=RedisTranscription(work))
    async with RunningWorker(settings(redis_url, namespace, harness.openai), [TRANSCRIBE]) as running:
        await transcribing_worker_up(work)
        await harness.start(TelegramService(context, retry=FAST, poll_timeout=5.0))
        harness.telegram.send_voice(ALLOWED, VOICE, duration=30)
        [stored] = await harness.action_count(1)
    assert stored.message.body == "Pump 3 on line 2 is leaking oil."
    assert stored.message.properties["transcription"] == "done"
    assert stored.message.properties["transcript_cost_usd"] == pytest.approx(0.003)
    assert running.worker.done == 1
