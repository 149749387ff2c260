"""Durable file operations: the one place that writes or moves state in the vault.

Writes: temp file (dot-prefixed, same folder) -> fsync -> rename -> fsync the folder.
Moves: rename(2) only, never copy-and-delete. A move out of a folder the watcher watches is
done as link(2) + unlink(2) instead (see docs/decisions/0003-moves-out-of-watched-folders.md):
watchdog holds an unpaired "moved from" event for 0.5 s and everything behind it waits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ai_employee.model.tokens import random_hex

TEMP_PREFIX = ".aie-tmp-"

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)  # the C library is loaded already: no search for it
except OSError:  # pragma: no cover - not Linux
    _libc = None


class CrossDeviceError(OSError):
    """State folders span filesystems: renames between them would not be atomic."""


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(any_path: Path) -> None:
    """Flush every dirty page and inode of the filesystem holding `any_path` (one barrier per batch)."""
    fd = os.open(any_path, os.O_RDONLY)
    try:
        if _libc is not None and hasattr(_libc, "syncfs"):
            if _libc.syncfs(fd) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, os.strerror(errno), str(any_path))
        else:  # pragma: no cover
            os.sync()
    finally:
        os.close(fd)


def temp_path_for(target: Path, temp_dir: Path | None = None) -> Path:
    return Path(_temp_name(os.fspath(target), None if temp_dir is None else os.fspath(temp_dir)))


def _temp_name(target: str, temp_dir: str | None) -> str:
    """Plain strings: this runs for every note of a burst, where pathlib's objects cost more than the I/O."""
    directory, _, name = target.rpartition("/")
    return f"{temp_dir or directory}/{f'{TEMP_PREFIX}{random_hex(6)}-{name}'[:255]}"


def _write_temp(target: str | Path, data: bytes, *, sync: bool, temp_dir: Path | None = None) -> str:
    temp = _temp_name(os.fspath(target), None if temp_dir is None else os.fspath(temp_dir))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    os.close(fd)
    return temp


def write_durable(target: Path, data: bytes, *, temp_dir: Path | None = None) -> None:
    """Replace `target` with `data` so that a crash leaves the old content or the new, never half.

    `temp_dir` (same filesystem): where the temp file is written. For a target in a watched folder,
    a temp outside it means the watcher sees one arrival instead of a move it would hold 0.5 s."""
    temp = _write_temp(target, data, sync=True, temp_dir=temp_dir)
    try:
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(target.parent)


def write_durable_batch(
    items: Sequence[tuple[str | Path, bytes]],
    *,
    barrier: Path,
    before_last_barrier: Callable[[], None] | None = None,
    temp_dir: Path | None = None,
) -> None:
    """Group commit: write every temp, one `syncfs` barrier, rename all, one more barrier.

    Two barriers for the whole batch, whatever its size (a `syncfs` here costs about a fifth of a
    file `fsync`); the first one also makes durable whatever the caller did before (ledger rows,
    links). `before_last_barrier` runs after the renames, so its effects (e.g. unlinking the
    originals) become durable with them.
    """
    temps: list[tuple[str, str | Path]] = []
    try:
        for target, data in items:
            temps.append((_write_temp(target, data, sync=False, temp_dir=temp_dir), target))
        syncfs(barrier)
        for temp, target in temps:
            os.replace(temp, target)
    except BaseException:
        for temp, _ in temps:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        raise
    if before_last_barrier is not None:
        before_last_barrier()
    syncfs(barrier)


def move(source: Path, target: Path, *, source_watched: bool = False, sync: bool = True) -> None:
    """Move atomically within one filesystem; never overwrite an existing target.

    `source_watched`: link + unlink instead of rename, so that the watcher sees a delete and
    a create rather than a move it would hold for half a second. A crash between the two
    leaves the same inode under both names; `finish_move` repairs that.
    """
    if source_watched:
        os.link(source, target)
        if sync:
            fsync_dir(target.parent)
        os.unlink(source)
    else:
        if os.path.lexists(target):  # a dangling symlink is a name too
            raise FileExistsError(target)
        os.rename(source, target)
        if sync:
            fsync_dir(target.parent)
    if sync:
        fsync_dir(source.parent)


def finish_move(source: Path, target: Path) -> bool:
    """Complete a link+unlink move interrupted by a crash. True if `source` was a leftover."""
    try:
        if os.path.samefile(source, target):
            os.unlink(source)
            return True
    except FileNotFoundError:
        return False
    return False


def unique_path(folder: Path, stem: str, suffix: str, *, taken: Iterable[str] = ()) -> Path:
    """`folder/stem suffix`, or `stem (2) suffix`... when that name exists."""
    taken_set = set(taken)
    candidate = folder / f"{stem}{suffix}"
    number = 2
    while candidate.name in taken_set or os.path.lexists(candidate):
        candidate = folder / f"{stem} ({number}){suffix}"
        number += 1
    return candidate


def ensure_same_filesystem(folders: Iterable[Path]) -> None:
    devices: dict[int, Path] = {}
    for folder in folders:
        device = folder.stat().st_dev
        devices.setdefault(device, folder)
    if len(devices) > 1:
        names = ", ".join(str(path) for path in devices.values())
        raise CrossDeviceError(
            18, f"the vault's state folders span filesystems ({names}); moves would not be atomic"
        )


def remove_stale_temps(folder: Path) -> int:
    """Delete our own temp files left by a crash (only names with our prefix)."""
    removed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
