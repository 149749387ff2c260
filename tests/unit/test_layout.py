"""The contract's naming rules (CONTRACT.md section 1): ignored names, conflict copies, unsafe entries."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from ai_employee.vault.layout import (
    STATE_DIR,
    Folder,
    VaultLayout,
    is_conflict_copy,
    is_ignored_name,
    unsafe_reason,
)


@pytest.mark.parametrize(
    "name",
    [
        ".obsidian",
        ".trash",
        ".DS_Store",
        "report.tmp",
        "video.mp4.part",
        "setup.exe.crdownload",
        "notes.md~",
        "~$budget.xlsx",
        ".~lock.budget.ods#",
        ".report.pdf.icloud",
        "report.pdf.icloud",
        ".syncthing.report.pdf.tmp",
    ],
)
def test_temporary_and_hidden_names_are_ignored(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "report.md",
        "Pump 3 leaking.txt",
        "tmp.md",
        "a.tmp.md",
        "part.pdf",
        "~notes.md",
        "lock.~x",
        "naïve résumé.pdf",
    ],
)
def test_ordinary_names_are_not_ignored(name: str) -> None:
    assert not is_ignored_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "plan.sync-conflict-20261121-101500-ABCDEFG.md",
        "x (Conflicted copy 2026)",
        "report (conflicted copy 2026-11-21).md",
        "x conflicted copy y",
        "report (Jane's conflicted copy 2026-11-21).md",
    ],
)
def test_sync_conflict_copies_are_recognised(name: str) -> None:
    assert is_conflict_copy(name)


@pytest.mark.parametrize("name", ["conflict resolution.md", "copy of plan.md", "sync notes.md"])
def test_names_merely_mentioning_conflicts_are_not_conflict_copies(name: str) -> None:
    assert not is_conflict_copy(name)


def test_regular_file_is_safe(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("x")
    assert unsafe_reason(path.name, os.lstat(path).st_mode) is None


def test_symlink_is_unsafe_even_when_it_points_to_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "secret.txt"
    target.write_text("x")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    reason = unsafe_reason(link.name, os.lstat(link).st_mode)
    assert reason is not None
    assert reason.startswith("symlink")


def test_fifo_is_unsafe(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reason = unsafe_reason(fifo.name, os.lstat(fifo).st_mode)
    assert reason is not None
    assert "not a regular file" in reason


def test_folder_is_unsafe(tmp_path: Path) -> None:
    folder = tmp_path / "dropped folder"
    folder.mkdir()
    reason = unsafe_reason(folder.name, os.lstat(folder).st_mode)
    assert reason is not None
    assert reason.startswith("folder")


def test_regular_sync_conflict_copy_is_unsafe() -> None:
    reason = unsafe_reason("plan.sync-conflict-20261121-101500-ABCDEFG.md", stat.S_IFREG | 0o644)
    assert reason is not None
    assert reason.startswith("sync-conflict copy")


def test_create_makes_every_folder_and_a_private_state_folder(tmp_path: Path) -> None:
    layout = VaultLayout(tmp_path / "vault")
    layout.create()
    for folder in Folder:
        assert layout.folder(folder).is_dir()
    assert stat.S_IMODE(os.stat(layout.root / STATE_DIR).st_mode) == 0o700


def test_create_keeps_what_is_already_there(tmp_path: Path) -> None:
    layout = VaultLayout(tmp_path / "vault")
    layout.create()
    kept = layout.folder(Folder.INBOX) / "waiting.txt"
    kept.write_text("x")
    layout.create()
    assert kept.read_text() == "x"


def test_counts_skip_ignored_names(tmp_path: Path) -> None:
    layout = VaultLayout(tmp_path / "vault")
    layout.create()
    for name in ("a.md", "b.md", ".hidden", "c.tmp"):
        (layout.folder(Folder.PLANS) / name).write_text("x")
    counts = layout.counts()
    assert counts["Plans"] == 2
    assert counts["Inbox"] == 0
    assert "Attachments" not in counts


def test_counts_follow_every_change_on_a_filesystem_with_whole_second_times(tmp_path: Path) -> None:
    """ext3, FAT and many network mounts keep whole seconds: a second change within the same second
    leaves the folder's time as it was, and a count cached on that time would stay behind."""
    layout = VaultLayout(tmp_path / "vault")
    layout.create()
    plans = layout.folder(Folder.PLANS)
    whole_second = (time.time_ns() - 500_000_000) // 1_000_000_000 * 1_000_000_000  # 0.5-1.5 s ago
    (plans / "first plan.md").write_text("x")
    os.utime(plans, ns=(whole_second, whole_second))
    assert layout.counts()["Plans"] == 1

    for index in range(9):
        (plans / f"plan {index}.md").write_text("x")
    os.utime(plans, ns=(whole_second, whole_second))  # what such a filesystem would show

    assert layout.counts()["Plans"] == 10


def test_counts_are_served_from_the_cache_once_a_folder_is_still(tmp_path: Path) -> None:
    layout = VaultLayout(tmp_path / "vault")
    layout.create()
    plans = layout.folder(Folder.PLANS)
    (plans / "a plan.md").write_text("x")
    long_ago = time.time_ns() - 10_000_000_000 + 123  # not a whole second: a fine-grained filesystem
    os.utime(plans, ns=(long_ago, long_ago))
    assert layout.counts()["Plans"] == 1

    (plans / "unseen.md").write_text("x")
    os.utime(plans, ns=(long_ago, long_ago))  # no change of time: the cached count stands

    assert layout.counts()["Plans"] == 1
