"""Inbox files still being written: created (inotify IN_CREATE) and not yet closed after writing
(IN_CLOSE_WRITE). The watcher marks and unmarks; the intake takes a marked file only once no
process can be seen holding it open for writing (an event may be lost: a queue overflow, a file
made by link()), or once `vault.max_write_wait` has passed, with a warning in its note.
"""

from __future__ import annotations

import os
import threading
import time

#: Marks kept at most; beyond this the oldest are dropped (their files are then taken on settle).
MAX_MARKS = 65_536
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)
#: How often a file held open by its writer is looked at again, at least.
MIN_RECHECK_SECONDS = 0.5


class OpenWrites:
    """Thread-safe: the watcher's thread marks, the intake's thread asks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}

    def opened(self, name: str) -> None:
        with self._lock:
            self._since.setdefault(name, time.monotonic())
            while len(self._since) > MAX_MARKS:
                del self._since[next(iter(self._since))]

    def closed(self, name: str) -> None:
        with self._lock:
            self._since.pop(name, None)

    def open_since(self, name: str) -> float | None:
        """When the file was seen created and not closed since (time.monotonic), else None."""
        with self._lock:
            return self._since.get(name)

    def forget(self, name: str) -> None:
        self.closed(name)

    def is_open(self, name: str) -> bool:
        return self.open_since(name) is not None

    def check(self, path: str, name: str, *, settle: float, max_wait: float) -> tuple[float | None, bool]:
        """For a settled file: (seconds until it is looked at again, or None to take it now; whether
        it is taken although a writer still holds it, `max_wait` being up)."""
        since = self.open_since(name)
        if since is None:
            return None, False
        held = time.monotonic() - since
        holding = writer_holds(path)
        if holding and held < max_wait:
            return min(max(settle, MIN_RECHECK_SECONDS), max_wait - held), False
        self.forget(name)
        return None, holding


def writer_holds(path: str, *, under: bool = False) -> bool:
    """Whether a process this user can see has `path` (`under`: a file inside the folder `path`)
    open for writing (Linux /proc; False where it cannot be seen). O(processes): asked only for
    files marked open and otherwise settled, and for settled folders."""
    target = os.path.realpath(path)
    inside = target.rstrip("/") + "/"
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return False
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
                if not (link.startswith(inside) if under else link == target):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as info:
                    flags = next((line.split()[1] for line in info if line.startswith("flags:")), "0")
            except (OSError, IndexError):
                continue
            if int(flags, 8) & os.O_ACCMODE in _WRITE_MODES:
                return True
    return False
