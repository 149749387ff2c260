"""Starting and restarting from the command line: a taken port, and
`restart --services` with names the daemon cannot restart."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import FOLDERS, DaemonProcess, drop, notes, wait_for


@pytest.fixture
def listener() -> Iterator[int]:
    """A port this test process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_configured_port_is_one_line_naming_the_holder_and_exit_1(
    vault: Path, daemon: DaemonProcess, listener: int
) -> None:
    result = daemon.cli("start", "--vault", str(vault), "--port", str(listener))

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: the control port 127.0.0.1:{listener} is taken by pid {_pid()} (python{_suffix()}); "
        "choose another with --port N, HEALTH_SERVER_PORT=N or health.port in config.yaml (0 = any free port)"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def _pid() -> int:
    return os.getpid()


def _suffix() -> str:
    return psutil.Process().name().removeprefix("python")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the restart tests (each restarts only what it checks)."""
    root = tmp_path_factory.mktemp("restart") / "vault"
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True)
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("AIE_", "IMAP", "TELEGRAM"))
    }
    process = DaemonProcess(root, {**env, "PYTHONUNBUFFERED": "1"}).start()
    daemon_file = root / ".ai-employee" / "daemon.json"
    wait_for(lambda: _plugins_registered(json.loads(daemon_file.read_text())["port"]), message="the plug-ins")
    yield process
    process.terminate()


def _plugins_registered(port: int) -> bool:
    services = httpx.get(f"http://127.0.0.1:{port}/status", timeout=5).json()["services"]
    return "email" in services


def test_restart_of_a_disabled_service_exits_1_listing_the_names_that_can_be(running: DaemonProcess) -> None:
    daemon, vault = running, running.vault

    result = daemon.cli("restart", "--vault", str(vault), "--services", "email")

    assert result.returncode == 1
    assert result.stderr.startswith(
        "Error: email is off (IMAP_HOST, IMAP_USER and IMAP_PASSWORD are not set)"
    )
    named = result.stderr.split("services you can restart: ", 1)[1].strip().split(", ")
    assert {"dashboard", "pipeline", "watcher"} <= set(named) and "email" not in named
    assert "restarted" not in result.stdout


def test_restart_takes_the_service_names_after_one_services_flag(running: DaemonProcess) -> None:
    daemon, vault = running, running.vault

    result = daemon.cli("restart", "--vault", str(vault), "--services", "watcher", "dashboard")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["restarted watcher", "restarted dashboard"]
    status = json.loads(daemon.cli("status", "--vault", str(vault), "--json").stdout)
    assert status["services"]["watcher"]["restarts"] >= 1
    assert status["services"]["dashboard"]["restarts"] >= 1


def test_status_counts_the_plans_waiting_and_claims_no_live_action_in_dry_run(running: DaemonProcess) -> None:
    for index in range(3):
        drop(running.vault, f"status-{index}.txt", f"pump {index} on line 2 is leaking")
    wait_for(lambda: len(notes(running.vault / "Plans")) == 3, message="three plans")

    text = running.cli("status", "--vault", str(running.vault)).stdout
    data = json.loads(running.cli("status", "--vault", str(running.vault), "--json").stdout)

    assert "3 plans wait for a decision in Plans/" in text
    assert "Plans 3" in text
    assert "dry-run (nothing leaves the machine)" in text
    assert "LIVE" not in text and " live" not in text
    assert data["vault"]["Plans"] == 3
    assert data["dry_run"] is True
    assert data["live_actions"] == []
    assert not any(executor["live"] for executor in data["executors"].values())


def test_the_foreground_log_shows_each_step_as_a_json_line_when_not_a_terminal(
    running: DaemonProcess,
) -> None:
    drop(running.vault, "log-line.txt", "conveyor 7 is jammed on line 1")

    def lines() -> list[dict[str, Any]]:
        found = []
        for raw in running.output().splitlines():
            if raw.startswith("{"):
                line = json.loads(raw)
                if line.get("logger") == "ai_employee.work":
                    found.append(line)
        return found

    def mine(event: str) -> dict[str, Any] | None:
        return next((line for line in lines() if line["event"] == event and _about_conveyor_7(line)), None)

    received = wait_for(lambda: mine("received"), message="the received line")
    planned = wait_for(lambda: mine("planned"), message="the planned line")
    assert received["source"] == "file"
    assert received["action_id"].startswith("act-")
    assert planned["plan_id"] == received["action_id"].replace("act-", "plan-", 1)


def _about_conveyor_7(line: dict[str, Any]) -> bool:
    return "conveyor 7" in str(line.get("title", "")).lower() or "conveyor-7" in str(line.get("note", ""))
