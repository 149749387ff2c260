"""A voice note from the plant floor, end to end: the real daemon with the real python-telegram-bot
against a loopback Bot API, and the real openai SDK against a loopback transcription endpoint."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import DaemonProcess, frontmatter, notes, wait_for
from tests.fakes.openai_transcription import FakeOpenAITranscription
from tests.fakes.telegram_server import FakeTelegram

T = TypeVar("T")
CHAT = 424242
STRANGER = 999001
AUDIO = b"OggS\x00fake-opus-voice-note" * 64
TRANSCRIPT = "Pump 3 on line 2 is leaking oil, needs fixing today"


class Fakes:
    """The two fakes on their own event loop in a thread; `call` runs a function on that loop."""

    def __init__(self) -> None:
        self.telegram = FakeTelegram()
        self.openai = FakeOpenAITranscription()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()
        for fake in (self.telegram, self.openai):
            asyncio.run_coroutine_threadsafe(fake.start(), self.loop).result(timeout=30)

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(function(*args, **kwargs))
            except BaseException as error:
                done.set_exception(error)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    def stop(self) -> None:
        for fake in (self.telegram, self.openai):
            asyncio.run_coroutine_threadsafe(fake.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    running = Fakes()
    running.start()
    running.call(running.openai.set_transcript, AUDIO, TRANSCRIPT, seconds=33.0)
    yield running
    running.stop()


@pytest.fixture
def bot_daemon(vault: Path, daemon_env: dict[str, str], fakes: Fakes) -> Iterator[DaemonProcess]:
    env = dict(daemon_env)
    env.update(
        {
            "TELEGRAM_BOT_TOKEN": fakes.telegram.token,
            "TELEGRAM_ALLOWED_CHAT_IDS": str(CHAT),
            "TELEGRAM_API_BASE_URL": fakes.telegram.root_url,
            "OPENAI_API_KEY": fakes.openai.api_key,
            "OPENAI_BASE_URL": fakes.openai.base_url,
        }
    )
    process = DaemonProcess(vault, env)
    yield process
    process.kill()


def _telegram_actions(vault: Path) -> list[Path]:
    found = []
    for folder in ("Needs_Action", "Done"):
        for note in notes(vault / folder):
            properties = frontmatter(note)
            if properties.get("type") == "action" and properties.get("source") == "telegram":
                found.append(note)
    return found


def _message_with_buttons(fakes: Fakes) -> dict[str, Any] | None:
    for message in fakes.call(fakes.telegram.messages_to, CHAT):
        if message.get("reply_markup", {}).get("inline_keyboard"):
            return message
    return None


def test_a_voice_note_is_transcribed_planned_approved_with_the_button_and_answered(
    vault: Path, bot_daemon: DaemonProcess, fakes: Fakes
) -> None:
    bot_daemon.start()
    voice = fakes.call(fakes.telegram.send_voice, CHAT, AUDIO, duration=33)
    action = wait_for(lambda: _telegram_actions(vault), message="the voice note's action note")[0]
    properties = frontmatter(action)
    assert TRANSCRIPT in action.read_text()
    assert properties["source_ref"] == f"{CHAT}:{voice['message_id']}"
    assert properties["transcript_cost_usd"] == pytest.approx(0.0033, abs=1e-6)
    assert any("voice" in link for link in properties["attachments"])
    plan = wait_for(lambda: notes(vault / "Plans"), message="the plan")[0]
    assert frontmatter(plan)["action"] == "atlas.work_order"

    message = wait_for(lambda: _message_with_buttons(fakes), message="the plan posted with buttons")
    approve = message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    user = fakes.call(fakes.telegram.user, CHAT)
    fakes.call(fakes.telegram.press_button, message, approve, user=user)
    done = wait_for(
        lambda: [p for p in notes(vault / "Done") if frontmatter(p).get("type") == "plan"],
        message="the plan in Done/",
    )
    assert frontmatter(done[0])["status"] == "done"
    plan_id = frontmatter(done[0])["id"]
    wait_for(
        lambda: any(
            plan_id in m.get("text", "") and "dry-run" in m.get("text", "")
            for m in fakes.call(fakes.telegram.messages_to, CHAT)
        ),
        message="the outcome message in the chat",
    )

    # a second press says it is already decided
    second = fakes.call(fakes.telegram.press_button, message, approve, user=user)
    answer = wait_for(lambda: fakes.call(lambda: fakes.telegram.answers.get(second)), message="an answer")
    assert "already" in answer.get("text", "").lower()

    # a voice note from a chat that is not allowed creates nothing
    fakes.call(fakes.telegram.send_voice, STRANGER, AUDIO, duration=33)
    wait_for(lambda: not fakes.call(lambda: fakes.telegram.pending_update_ids), message="the update consumed")
    assert len(_telegram_actions(vault)) == 1
    assert not fakes.call(fakes.telegram.messages_to, STRANGER)


def test_a_sigkill_after_the_update_was_fetched_and_before_the_note_leaves_exactly_one_action(
    vault: Path, bot_daemon: DaemonProcess, fakes: Fakes
) -> None:
    fakes.call(fakes.openai.hold)  # the transcription hangs: the update is fetched, no note written yet
    bot_daemon.start()
    fakes.call(fakes.telegram.send_voice, CHAT, AUDIO, duration=33)
    wait_for(lambda: fakes.call(lambda: fakes.openai.waiting) >= 1, message="the transcription under way")
    assert not _telegram_actions(vault)
    bot_daemon.kill()
    fakes.call(fakes.openai.release)
    bot_daemon.start()
    wait_for(lambda: _telegram_actions(vault), message="the action after the restart")
    wait_for(lambda: notes(vault / "Plans"), message="its plan")
    bot_daemon.terminate()
    assert len(_telegram_actions(vault)) == 1
    assert len(notes(vault / "Plans")) == 1
