"""Files written in place into a running daemon's Inbox/ are taken complete: once their writer
closed them (inotify close-write), or after `vault.max_write_wait` with a warning."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, frontmatter, notes, wait_for

TIMEOUT = 60.0


def actions_for(vault: Path, inbox_name: str) -> list[Path]:
    return [
        path for path in notes(vault / "Needs_Action") if frontmatter(path).get("source_ref") == inbox_name
    ]


def wait_action(vault: Path, inbox_name: str) -> Path:
    found: list[Path] = wait_for(
        lambda: actions_for(vault, inbox_name), TIMEOUT, message=f"the action note of {inbox_name!r}"
    )
    [note] = found
    return note


def plan_of(vault: Path, note: Path) -> Path:
    action_id = frontmatter(note)["id"]
    found: list[Path] = wait_for(
        lambda: [path for path in notes(vault / "Plans") if frontmatter(path).get("action_id") == action_id],
        TIMEOUT,
        message=f"the plan of {action_id}",
    )
    return found[0]


@pytest.fixture
def running(daemon: DaemonProcess) -> DaemonProcess:
    return daemon.start()


def test_a_file_written_in_place_with_a_long_pause_is_taken_only_when_complete(
    running: DaemonProcess, vault: Path
) -> None:
    path = vault / "Inbox" / "handover.txt"
    with path.open("w") as writer:  # settle time 0.3 s; the writer pauses 4 s with the file open
        writer.write("Night shift handover\n\nFirst half: boiler 2 pressure dropped at 02:10.\n")
        writer.flush()
        time.sleep(4)
        assert actions_for(vault, "handover.txt") == []  # still open: not taken
        writer.write("Second half: reset the boiler and call the vendor about valve V-7.\n")
    note = wait_action(vault, "handover.txt")
    text = note.read_text()
    assert "First half" in text and "Second half: reset the boiler" in text
    assert "valve V-7" in plan_of(vault, note).read_text()


def test_a_writer_holding_the_file_past_max_write_wait_is_taken_with_a_warning(
    daemon: DaemonProcess, vault: Path
) -> None:
    daemon.env["AIE_VAULT__MAX_WRITE_WAIT"] = "1.5"
    daemon.start()
    path = vault / "Inbox" / "log.txt"
    with path.open("w") as writer:
        writer.write("Compressor log, still being written\n")
        writer.flush()
        note = wait_action(vault, "log.txt")
    properties = frontmatter(note)
    assert "still open for writing after 1.5 s" in properties["write_warning"]
    assert "[!warning] This file was still open for writing" in note.read_text()
