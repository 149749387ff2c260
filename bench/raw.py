"""The raw limit: what this disk allows for the daemon's durable work, with no daemon at all.

Per item, the least any correct implementation must do: move the original out of the inbox
(one rename) and write two notes durably (temp file, rename). Batched the way the daemon
batches (64 items, write every temp, one sync barrier, rename all, one more barrier: the group
commit of `ai_employee.vault.fs.write_durable_batch`), but written here on its own, so that a
change in the daemon never moves the yardstick it is measured against.

The files written here stay until the bench ends, like everything the bench writes (its
workdir is removed as a whole at the end). On ext4 without a journal (the disk of the machine
this bench was built on), the inode allocator skips free inodes deleted in the last 60 s (360 s
while their inode-table block is still dirty: `recently_deleted()` in fs/ext4/ialloc.c),
scanning past each of them on every create: for a minute after a tree of files is removed, a
create costs 100-600 µs instead of ~20 µs. Deleting between timed phases would put each phase
in a random state of that window.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

# Sizes of what the daemon writes for a short text file (measured: action note ~0.5 KB, plan ~1.2 KB).
ACTION_NOTE_BYTES = 500
PLAN_NOTE_BYTES = 1250
ORIGINAL_BYTES = 120

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def syncfs(any_path: Path) -> None:
    """One barrier for the whole filesystem holding `any_path`."""
    fd = os.open(any_path, os.O_RDONLY)
    try:
        if _libc.syncfs(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(any_path))
    finally:
        os.close(fd)


@dataclass
class RawResult:
    files: int
    seconds: float
    batch: int

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0


def _write_temp(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def measure_raw_limit(root: Path, files: int, *, batch: int = 64) -> RawResult:
    """Time `files` items of durable work under `root` (created; on the vault's filesystem)."""
    inbox = root / "Inbox"
    attachments = root / "Attachments" / "day"
    actions = root / "Needs_Action"
    plans = root / "Plans"
    for folder in (inbox, attachments, actions, plans):
        folder.mkdir(parents=True, exist_ok=True)
    original = b"x" * (ORIGINAL_BYTES - 1) + b"\n"
    for number in range(files):
        _write_temp(inbox / f"in-{number:06d}.txt", original)
    action_data = b"a" * (ACTION_NOTE_BYTES - 1) + b"\n"
    plan_data = b"p" * (PLAN_NOTE_BYTES - 1) + b"\n"
    syncfs(root)  # the staged originals are on disk before the clock starts

    started = time.perf_counter()
    for first in range(0, files, batch):
        numbers = range(first, min(first + batch, files))
        for number in numbers:
            os.rename(inbox / f"in-{number:06d}.txt", attachments / f"{number:06d}-in.txt")
        renames: list[tuple[Path, Path]] = []
        for number in numbers:
            for folder, data, suffix in ((actions, action_data, ".md"), (plans, plan_data, " plan.md")):
                target = folder / f"note-{number:06d}{suffix}"
                temp = folder / f".tmp-{number:06d}{suffix}"
                _write_temp(temp, data)
                renames.append((temp, target))
        syncfs(root)
        for temp, target in renames:
            os.replace(temp, target)
        syncfs(root)
    seconds = time.perf_counter() - started
    return RawResult(files=files, seconds=seconds, batch=batch)


def measure_barriers(root: Path, rounds: int = 40, creates: int = 200) -> dict[str, float]:
    """Median cost in ms of each durability barrier on this filesystem, right now.

    Every latency figure is mostly a count of these: a single file that costs nine barriers
    cannot be planned in less than nine times the first figure here. And the median cost in µs
    of creating a small file with no barrier at all: ~20 µs on this disk, 100-600 µs in the
    minute after a mass delete (see the module docstring).
    """
    import sqlite3
    import statistics

    root.mkdir(parents=True, exist_ok=True)
    fresh = root / "create"
    fresh.mkdir()
    data = b"c" * 599 + b"\n"
    create_us: list[float] = []
    for number in range(creates):
        started = time.perf_counter()
        _write_temp(fresh / f"create-{number}", data)
        create_us.append((time.perf_counter() - started) * 1e6)
    timings: dict[str, list[float]] = {
        "fsync_file_ms": [],
        "fsync_dir_ms": [],
        "syncfs_ms": [],
        "sqlite_commit_ms": [],
    }
    db = sqlite3.connect(root / "probe.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    try:
        for number in range(rounds):
            started = time.perf_counter()
            fd = os.open(root / f"probe-{number}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, b"x" * 1000)
            os.fsync(fd)
            os.close(fd)
            timings["fsync_file_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(fd)
            os.close(fd)
            timings["fsync_dir_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            syncfs(root)
            timings["syncfs_ms"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (number,))
            db.execute("COMMIT")
            timings["sqlite_commit_ms"].append((time.perf_counter() - started) * 1000)
    finally:
        db.close()
    figures = {name: round(statistics.median(values), 3) for name, values in timings.items()}
    figures["create_file_us"] = round(statistics.median(create_us), 1)
    return figures
