"""A helper process killed in the middle of a burst: the daemon goes on, nothing is lost or doubled."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, audit_lines, drop, frontmatter, notes, wait_for

pytestmark = pytest.mark.slow

FILES = 400
HELPERS = {"writer": b"ai_employee.vault.writer", "renderer": b"ai_employee.pipeline.renderer"}


def helper_pids(daemon_pid: int) -> dict[str, int]:
    """The daemon's helper processes, found from its threads' children."""
    found: dict[str, int] = {}
    for task in os.listdir(f"/proc/{daemon_pid}/task"):
        try:
            children = Path(f"/proc/{daemon_pid}/task/{task}/children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            for name, module in HELPERS.items():
                if module in command:
                    found[name] = int(child)
    return found


def test_helpers_killed_mid_burst_lose_nothing_and_double_nothing(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    assert daemon.process is not None
    daemon_pid = daemon.process.pid
    before = wait_for(
        lambda: (pids := helper_pids(daemon_pid)).keys() == HELPERS.keys() and pids,
        message="the daemon's writer and renderer processes",
    )

    dropper = threading.Thread(
        target=lambda: [
            drop(vault, f"helper-{number:03d}.txt", f"Helper crash note {number}: please file this")
            for number in range(FILES)
        ]
    )
    dropper.start()
    wait_for(lambda: len(notes(vault / "Plans")) >= 50, timeout=60, message="the burst under way")
    os.kill(before["writer"], signal.SIGKILL)
    wait_for(lambda: len(notes(vault / "Plans")) >= 150, timeout=60, message="the burst going on")
    os.kill(before["renderer"], signal.SIGKILL)
    dropper.join()

    wait_for(
        lambda: len(notes(vault / "Plans")) == FILES and len(notes(vault / "Needs_Action")) == FILES,
        timeout=120,
        message=f"{FILES} actions and {FILES} plans",
    )
    wait_for(lambda: not os.listdir(vault / "Inbox"), timeout=30, message="an empty Inbox")

    assert daemon.process.poll() is None  # the daemon itself never went down
    action_ids = [frontmatter(path)["id"] for path in notes(vault / "Needs_Action")]
    assert len(set(action_ids)) == FILES
    assert len({frontmatter(path)["id"] for path in notes(vault / "Plans")}) == FILES
    bodies = {
        path.read_text().split("Helper crash note ", 1)[1].split(":", 1)[0]
        for path in notes(vault / "Needs_Action")
    }
    assert bodies == {str(number) for number in range(FILES)}
    wait_for(
        lambda: (
            sorted(line["id"] for line in audit_lines(vault) if line["event"] == "action.created")
            == sorted(action_ids)
        ),
        message="one action.created audit line per action",
    )
    for folder in ("Inbox", "Needs_Action", "Plans", "Attachments"):
        assert not [path for path in (vault / folder).rglob(".aie-tmp-*")], folder
    # A helper killed after its last batch starts again at the next one (the burst may be over
    # by the time the kill lands): one more file makes sure both are needed again.
    drop(vault, "helper-after.txt", "Helper crash note after: please file this")
    wait_for(lambda: len(notes(vault / "Plans")) == FILES + 1, message="the plan of one more file")
    after = wait_for(
        lambda: (pids := helper_pids(daemon_pid)).keys() == HELPERS.keys() and pids,
        message="new helpers",
    )
    assert set(after.values()).isdisjoint(before.values())
