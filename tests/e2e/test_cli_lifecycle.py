"""The lifecycle commands: init, start --detach, restart, and the watcher's supervision."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, audit_lines, drop, notes, wait_for


def test_init_creates_the_vault_skeleton_and_a_config(tmp_path: Path, daemon_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ai_employee", "init", "MyVault"],
        cwd=tmp_path,
        env=daemon_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for folder in (
        "Inbox",
        "Needs_Action",
        "Plans",
        "Approved",
        "Rejected",
        "Done",
        "Failed",
        "Quarantine",
        "Attachments",
        "Logs",
    ):
        assert (tmp_path / "MyVault" / folder).is_dir()
    assert (tmp_path / "MyVault" / "Company_Handbook.md").read_text().startswith("# Company Handbook")
    assert "dry_run: true" in (tmp_path / "MyVault" / "config.yaml").read_text()


def test_start_detach_returns_once_running_and_stop_ends_it(vault: Path, daemon: DaemonProcess) -> None:
    started = daemon.cli("start", "--vault", str(vault), "--port", "0", "--detach")
    assert started.returncode == 0, started.stderr
    info = daemon.info()
    assert info is not None and info["port"] > 0
    assert daemon.cli("status", "--vault", str(vault)).returncode == 0
    drop(vault, "detached.txt", "a note for the detached daemon")
    wait_for(lambda: notes(vault / "Plans"), message="a plan from the detached daemon")
    stopped = daemon.cli("stop", "--vault", str(vault))
    assert stopped.returncode == 0, stopped.stderr
    assert daemon.cli("status", "--vault", str(vault)).returncode == 3


def test_sigusr1_writes_the_daemons_stacks_and_it_goes_on(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    assert daemon.process is not None

    daemon.process.send_signal(signal.SIGUSR1)

    wait_for(lambda: "asyncio tasks ---" in daemon.log_path.read_text(errors="replace"), message="a dump")
    output = daemon.log_path.read_text(errors="replace")
    assert "--- stack dump (SIGUSR1): threads ---" in output and "task service:pipeline:" in output
    drop(vault, "after-dump.txt", "the daemon still plans after a stack dump")
    wait_for(lambda: notes(vault / "Plans"), message="a plan after the dump")


def test_restart_of_one_service_keeps_the_daemon_and_its_work(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    pid = daemon.info()["pid"]  # type: ignore[index]
    restarted = daemon.cli("restart", "--vault", str(vault), "--services", "watcher")
    assert restarted.returncode == 0, restarted.stderr
    drop(vault, "after-watcher-restart.txt", "dropped after the watcher restarted")
    wait_for(lambda: notes(vault / "Plans"), message="a plan after the watcher restart")
    status = json.loads(daemon.cli("status", "--vault", str(vault), "--json").stdout)
    assert status["pid"] == pid
    assert status["services"]["watcher"]["state"] == "running"
    assert status["services"]["watcher"]["restarts"] >= 1


def test_restart_of_an_unknown_service_is_a_clear_error(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    result = daemon.cli("restart", "--vault", str(vault), "--services", "nonesuch")
    assert result.returncode == 1
    assert "no service named nonesuch" in result.stderr


def test_full_restart_brings_up_a_new_daemon_without_duplicates(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    drop(vault, "before.txt", "before the restart")
    wait_for(lambda: len(notes(vault / "Plans")) == 1, message="one plan")
    old_pid = daemon.info()["pid"]  # type: ignore[index]
    result = daemon.cli("restart", "--vault", str(vault))
    assert result.returncode == 0, result.stderr
    new = daemon.info()
    assert new is not None and new["pid"] != old_pid
    drop(vault, "after.txt", "after the restart")
    wait_for(lambda: len(notes(vault / "Plans")) == 2, message="two plans")
    assert len(notes(vault / "Needs_Action")) == 2
    daemon.cli("stop", "--vault", str(vault))


def test_a_deleted_inbox_is_recreated_and_watched_again(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    shutil.rmtree(vault / "Inbox")
    wait_for(lambda: (vault / "Inbox").is_dir(), timeout=30, message="Inbox/ recreated by the watcher")
    wait_for(
        lambda: (
            json.loads(daemon.cli("status", "--vault", str(vault), "--json").stdout)["services"]["watcher"][
                "state"
            ]
            == "running"
        ),
        timeout=30,
        message="the watcher running again",
    )
    drop(vault, "back.txt", "the inbox is back")
    wait_for(lambda: notes(vault / "Plans"), message="a plan from the recreated Inbox/")


MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


@pytest.fixture
def tiny_inotify_queue() -> object:
    try:
        original = MAX_QUEUED.read_text()
        MAX_QUEUED.write_text("64\n")
    except OSError:
        pytest.skip("cannot shrink the inotify queue here (needs root and a writable /proc/sys)")
    yield
    MAX_QUEUED.write_text(original)


def test_an_inotify_overflow_is_answered_with_a_rescan(
    vault: Path, daemon: DaemonProcess, tiny_inotify_queue: object
) -> None:
    daemon.start()
    staging = vault / ".staging"
    staging.mkdir()
    for number in range(600):
        (staging / f"burst-{number}.txt").write_text(f"burst note {number}")
    for number in range(600):
        (staging / f"burst-{number}.txt").rename(vault / "Inbox" / f"burst-{number}.txt")
    wait_for(
        lambda: len(notes(vault / "Plans")) == 600, timeout=120, message="600 plans despite the overflow"
    )
    assert "inotify queue overflowed" in daemon.output()
    wait_for(
        lambda: sum(line["event"] == "action.created" for line in audit_lines(vault)) == 600,
        message="600 action.created lines",
    )
