"""WhatsApp end to end: the real daemon, its public webhook listener (`webhooks.port`), signed
deliveries from a loopback Graph API (tests/fakes/whatsapp.py), the real openai SDK against a
loopback transcription endpoint. A SIGKILL right after the 200 still makes exactly one action."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DaemonProcess, frontmatter, notes, wait_for
from tests.fakes.openai_transcription import FakeOpenAITranscription
from tests.fakes.threaded import ThreadedFake
from tests.fakes.whatsapp import FakeWhatsApp

NUMBER = "4915112345678"
AUDIO = b"OggS\x00fake-opus-voice-note" * 64
TRANSCRIPT = "Pump 3 on line 2 is leaking oil, needs fixing today"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _entry_point_shim(folder: Path) -> Path | None:
    """The installed metadata may predate the whatsapp entry point (the package is installed
    editable from another checkout): a dist-info that declares it, for the daemon's path only."""
    if list(entry_points(group="ai_employee.services", name="whatsapp")):
        return None
    info = folder / "aie_whatsapp_entry-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aie-whatsapp-entry\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[ai_employee.services]\nwhatsapp = ai_employee.sources.whatsapp:create\n"
    )
    return folder


@pytest.fixture
def graph() -> Iterator[ThreadedFake[FakeWhatsApp]]:
    fake = ThreadedFake(FakeWhatsApp())
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def openai() -> Iterator[ThreadedFake[FakeOpenAITranscription]]:
    fake = ThreadedFake(FakeOpenAITranscription())
    fake.start()
    fake.call(fake.fake.set_transcript, AUDIO, TRANSCRIPT, seconds=33.0)
    yield fake
    fake.stop()


@pytest.fixture
def wa_daemon(
    tmp_path: Path,
    vault: Path,
    daemon_env: dict[str, str],
    graph: ThreadedFake[FakeWhatsApp],
    openai: ThreadedFake[FakeOpenAITranscription],
) -> Iterator[DaemonProcess]:
    env = {key: value for key, value in daemon_env.items() if not key.startswith("WHATSAPP")}
    port = _free_port()
    fake = graph.fake
    env.update(
        {
            "WHATSAPP_ACCESS_TOKEN": fake.token,
            "WHATSAPP_PHONE_NUMBER_ID": fake.phone_number_id,
            "WHATSAPP_APP_SECRET": fake.app_secret,
            "WHATSAPP_VERIFY_TOKEN": fake.verify_token,
            "WHATSAPP_ALLOWED_NUMBERS": NUMBER,
            "WHATSAPP_API_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": openai.fake.api_key,
            "OPENAI_BASE_URL": openai.fake.base_url,
            "AIE_WEBHOOKS__PORT": str(port),
        }
    )
    shim = _entry_point_shim(tmp_path / "entry-points")
    if shim is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH", "")]))
    graph.call(setattr, fake, "webhook_url", f"http://127.0.0.1:{port}/whatsapp/webhook")
    process = DaemonProcess(vault, env)
    yield process
    process.kill()


def _post(graph: ThreadedFake[FakeWhatsApp], payload: dict[str, Any]) -> httpx.Response:
    """One signed delivery, from the test's thread (as Meta would POST it)."""
    fake = graph.fake
    body = fake.encode(payload)
    assert fake.webhook_url is not None
    return httpx.post(
        fake.webhook_url,
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": fake.signature(body)},
        timeout=10,
    )


def _deliver(graph: ThreadedFake[FakeWhatsApp], payload: dict[str, Any]) -> httpx.Response:
    """Like Meta: again until it is answered 200 (the listener may still be starting)."""
    return wait_for(lambda: _try_post(graph, payload), timeout=30, message="a 200 for the delivery")


def _try_post(graph: ThreadedFake[FakeWhatsApp], payload: dict[str, Any]) -> httpx.Response | None:
    try:
        answer = _post(graph, payload)
    except httpx.HTTPError:
        return None
    return answer if answer.status_code == 200 else None


def _whatsapp_actions(vault: Path) -> list[Path]:
    found = []
    for folder in ("Needs_Action", "Done"):
        for note in notes(vault / folder):
            properties = frontmatter(note)
            if properties.get("type") == "action" and properties.get("source") == "whatsapp":
                found.append(note)
    return found


def _sent(graph: ThreadedFake[FakeWhatsApp], kind: str, containing: str = "") -> dict[str, Any] | None:
    for message in graph.call(lambda: list(graph.fake.sent)):
        if message.get("to") != NUMBER or message.get("type") != kind:
            continue
        text = message["text"]["body"] if kind == "text" else message["interactive"]["body"]["text"]
        if containing in text:
            return message
    return None


def test_a_sigkill_right_after_the_200_still_makes_exactly_one_action(
    vault: Path, wa_daemon: DaemonProcess, graph: ThreadedFake[FakeWhatsApp]
) -> None:
    graph.call(graph.fake.hold_media)  # processing cannot finish: the kill comes between 200 and action
    wa_daemon.start()
    payload = graph.call(graph.fake.voice, NUMBER, AUDIO)
    answer = _deliver(graph, payload)
    assert answer.status_code == 200
    wait_for(
        lambda: any(
            entry.startswith("download:") for entry in graph.call(lambda: list(graph.fake.media_requests))
        ),
        message="the media download under way",
    )
    wa_daemon.kill()
    assert not _whatsapp_actions(vault)

    graph.call(graph.fake.release_media)
    wa_daemon.start()
    [action] = wait_for(lambda: _whatsapp_actions(vault), message="the action after the restart")
    _deliver(graph, payload)  # Meta delivers it again: still one
    wait_for(lambda: _sent(graph, "text", "Saved as action"), message="the received answer")
    wait_for(lambda: notes(vault / "Plans"), message="its plan")
    wa_daemon.terminate()

    assert len(_whatsapp_actions(vault)) == 1
    properties = frontmatter(action)
    assert properties["source_ref"] == graph.fake.message_id(payload)
    assert properties["sender"] == f"Jane Doe (+{NUMBER})"
    assert properties["transcript_cost_usd"] == pytest.approx(0.0033, abs=1e-6)
    assert any("voice-" in link for link in properties["attachments"])
    assert TRANSCRIPT in action.read_text()
    assert not list((vault / ".ai-employee" / "whatsapp" / "spool").glob("*.json"))


def test_a_message_is_planned_approved_with_the_button_and_answered(
    vault: Path, wa_daemon: DaemonProcess, graph: ThreadedFake[FakeWhatsApp]
) -> None:
    wa_daemon.start()
    _deliver(graph, graph.call(graph.fake.text, NUMBER, "Pump 3 on line 2 is leaking oil, fix it today"))
    buttons = wait_for(lambda: _sent(graph, "interactive", "waits for your approval"), message="the buttons")
    approve = buttons["interactive"]["action"]["buttons"][0]["reply"]
    assert approve["title"] == "Approve"

    _deliver(graph, graph.call(graph.fake.tap, NUMBER, buttons["id"], approve["id"], "Approve"))
    done = wait_for(
        lambda: [p for p in notes(vault / "Done") if frontmatter(p).get("type") == "plan"],
        message="the plan in Done/",
    )
    plan = frontmatter(done[0])
    assert (plan["decided_by"], plan["decided_via"]) == (f"Jane Doe (+{NUMBER})", "whatsapp")
    wait_for(lambda: _sent(graph, "text", "dry-run"), message="the outcome in WhatsApp")

    status = httpx.get(f"http://127.0.0.1:{wa_daemon.info()['port']}/status", timeout=5).json()  # type: ignore[index]
    assert status["services"]["whatsapp"]["state"] == "running"
    public = httpx.get(graph.fake.webhook_url.replace("/whatsapp/webhook", "/status"), timeout=5)  # type: ignore[union-attr]
    assert public.status_code == 404
