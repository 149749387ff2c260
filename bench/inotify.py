"""Arrival times of output files, from inotify in the bench process itself.

The bench must see each output the moment it gets its final name, for every kind of program it
times: ours writes a dot-named temp file and renames it (IN_MOVED_TO), links plans into Done/
(IN_CREATE), and another program may write in place (IN_CLOSE_WRITE). A raw inotify watch with
exactly those events is cheaper than watchdog (no event objects, no pairing of moves), so the
bench itself stays far from overflowing its own queue; if it does overflow, it says so and
counts from the folder instead, so a count is never short because of the bench.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_CLOEXEC = 0o2000000

OUTPUT_EVENTS = IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE
_HEADER = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def now_ns() -> int:
    """The bench's one clock: drops and arrivals are stamped with it in the same process."""
    return time.monotonic_ns()


class Arrivals:
    """First-seen time of every file whose name matches `pattern` in `folder`.

    Dot-names (temp files of ours and of most tools) never count. A name counts once, the first
    time it appears under that name.
    """

    def __init__(self, folder: Path, pattern: str = "*", mask: int = OUTPUT_EVENTS) -> None:
        self.folder = folder
        self.pattern = pattern
        self.overflowed = False
        self._times: dict[str, int] = {}
        self._order: list[str] = []
        self._cond = threading.Condition()
        self._stop_r, self._stop_w = os.pipe()
        self._fd = _libc.inotify_init1(IN_CLOEXEC)
        if self._fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), "inotify_init1")
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(folder), mask | IN_ONLYDIR)
        if wd < 0:
            errno = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(errno, os.strerror(errno), str(folder))
        self._thread = threading.Thread(target=self._read, name=f"arrivals-{folder.name}", daemon=True)
        self._thread.start()
        self._last_scan = 0.0

    def _wanted(self, name: str) -> bool:
        return bool(name) and not name.startswith(".") and fnmatch.fnmatchcase(name, self.pattern)

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 1 << 20)
            except OSError:
                return
            stamp = now_ns()
            offset = 0
            fresh: list[str] = []
            overflow = False
            while offset + _HEADER.size <= len(data):
                _, mask, _, length = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                offset = start + length
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                    continue
                if mask & (IN_IGNORED | IN_ISDIR):
                    continue
                name = data[start : start + length].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if self._wanted(name):
                    fresh.append(name)
            with self._cond:
                for name in fresh:
                    if name not in self._times:
                        self._times[name] = stamp
                        self._order.append(name)
                if overflow:
                    self.overflowed = True
                self._cond.notify_all()

    def _rescan(self) -> None:
        """After our own queue overflowed: take the folder's listing as the truth (stamped now)."""
        stamp = now_ns()
        with os.scandir(self.folder) as entries:
            names = [entry.name for entry in entries if self._wanted(entry.name)]
        with self._cond:
            for name in names:
                if name not in self._times:
                    self._times[name] = stamp
                    self._order.append(name)

    def mark(self) -> int:
        """How many have arrived so far: pass it to `since` to see only what comes later."""
        with self._cond:
            return len(self._order)

    def count(self) -> int:
        if self.overflowed and time.monotonic() - self._last_scan > 0.2:
            self._last_scan = time.monotonic()
            self._rescan()
        with self._cond:
            return len(self._order)

    def since(self, mark: int) -> list[tuple[str, int]]:
        with self._cond:
            return [(name, self._times[name]) for name in self._order[mark:]]

    def time_of(self, name: str) -> int | None:
        with self._cond:
            return self._times.get(name)

    def wait(
        self, condition: Callable[[], bool], timeout: float, *, alive: Callable[[], bool] | None = None
    ) -> bool:
        """Wait until `condition()` holds (re-checked on every arrival), the deadline, or the target dies."""
        deadline = time.monotonic() + timeout
        while True:
            if self.overflowed:
                self.count()
            if condition():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (alive is not None and not alive()):
                return condition()
            with self._cond:
                self._cond.wait(min(remaining, 0.05))

    def wait_count(self, target: int, timeout: float, *, alive: Callable[[], bool] | None = None) -> bool:
        return self.wait(lambda: self.count() >= target, timeout, alive=alive)

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5.0)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)

    def __enter__(self) -> Arrivals:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
