"""Nothing outside holds up the start: with every outside server down at once (no listener, or a
listener that accepts and never speaks), the daemon is visible and ready within 2 s, plans what
is dropped, shows each integration's trouble, and stops within the grace."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, drop, notes, wait_for
from tests.fakes.outage import Mode, OutageProxy

TOKEN = "123456:outage-test-token"


def _closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture(params=["refused", "hanging"])
def outage(request: pytest.FixtureRequest) -> Iterator[dict[str, OutageProxy]]:
    mode: Mode = request.param
    proxies = {
        name: OutageProxy(_closed_port(), mode=mode).start()
        for name in ("imap", "telegram", "atlas", "model")
    }
    yield proxies
    for proxy in proxies.values():
        proxy.stop()


@pytest.fixture
def outage_daemon(
    vault: Path, daemon_env: dict[str, str], outage: dict[str, OutageProxy]
) -> Iterator[DaemonProcess]:
    env = dict(daemon_env)
    env.update(
        {
            "IMAP_HOST": "127.0.0.1",
            "IMAP_PORT": str(outage["imap"].port),
            "IMAP_USER": "ops@example.com",
            "IMAP_PASSWORD": "imap-secret-password",
            "IMAP_SSL": "false",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_ALLOWED_CHAT_IDS": "4242",
            "TELEGRAM_API_BASE_URL": outage["telegram"].url,
            "ATLAS_BASE_URL": outage["atlas"].url + "/api",
            "ATLAS_EMAIL": "ops@example.com",
            "ATLAS_PASSWORD": "atlas-secret-password",
            "ANTHROPIC_API_KEY": "sk-ant-outage-test-key",
            "ANTHROPIC_BASE_URL": outage["model"].url,
            "AIE_PLANNER__MAX_RETRIES": "0",
            "AIE_PLANNER__TIMEOUT_SECONDS": "2",
            "AIE_SERVICES__CONNECT_TIMEOUT": "2",
            "AIE_SERVICES__MAX_BACKOFF": "2",
            "AIE_SERVICES__GRACE_SECONDS": "10",
        }
    )
    process = DaemonProcess(vault, env)
    yield process
    process.kill()


def _status(process: DaemonProcess) -> dict[str, object]:
    result = process.cli("status", "--vault", str(process.vault), "--json", check=True, timeout=10)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_the_daemon_is_visible_and_ready_within_2_s_with_every_outside_server_down(
    outage_daemon: DaemonProcess,
) -> None:
    began = time.monotonic()
    outage_daemon.start(wait=False)
    wait_for(lambda: outage_daemon.ready(), timeout=30, message="/readyz 200")
    took = time.monotonic() - began

    assert took < 2.0, f"ready after {took:.2f} s"
    status = _status(outage_daemon)
    assert status["running"] is True


def test_each_integration_shows_its_trouble_while_its_server_is_down(outage_daemon: DaemonProcess) -> None:
    outage_daemon.start()

    def troubled() -> dict[str, object] | None:
        services = _status(outage_daemon)["services"]
        assert isinstance(services, dict)
        shown = {name: services.get(name, {}) for name in ("email", "telegram")}
        if all(entry.get("state") == "retrying" and entry.get("last_error") for entry in shown.values()):
            return shown
        return None

    shown = wait_for(troubled, timeout=30, message="email and telegram retrying with a reason")
    for entry in shown.values():
        assert entry["attempts"] >= 1
        assert entry["next_attempt"]
    text = json.dumps(_status(outage_daemon))
    for secret in ("imap-secret-password", "atlas-secret-password", "sk-ant-outage-test-key", TOKEN):
        assert secret not in text


def test_a_dropped_file_is_planned_while_every_outside_server_is_down(
    outage_daemon: DaemonProcess, vault: Path
) -> None:
    outage_daemon.start()

    drop(vault, "pump.txt", "Pump 3 on line 2 is leaking oil\n")

    wait_for(lambda: len(notes(vault / "Plans")) == 1, timeout=30, message="the plan of the dropped file")


def test_stop_ends_everything_within_the_grace_while_connections_hang(outage_daemon: DaemonProcess) -> None:
    outage_daemon.start()
    drop(outage_daemon.vault, "pump.txt", "Pump 3 on line 2 is leaking oil\n")

    began = time.monotonic()
    result = outage_daemon.cli("stop", "--vault", str(outage_daemon.vault), timeout=30)
    assert outage_daemon.process is not None
    outage_daemon.process.wait(timeout=15)

    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 10.0
