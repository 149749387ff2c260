"""Where the time goes: py-spy's collapsed stacks of the program under a burst, summed up.

py-spy samples every thread of the daemon from outside (the vault worker, the asyncio loop,
watchdog's threads) without changing its timing much, which an in-process profiler cannot.
It records idle samples too (`--idle`), so a thread's shares are shares of wall time: for the
vault worker that is what matters, since much of its time is spent waiting for the disk
(fsync, syncfs), not on the CPU. Per thread, the summary names the functions the thread was in
(own time) and the calls under which the time was spent (inclusive time).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_THREAD = re.compile(r"^thread \((?:0x)?[0-9A-Fa-f]+\):\s*(.*)$")
_PROCESS = re.compile(r"^process \d+:")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


# Leaf frames of a thread that waits for work (not for the disk): left out of "busy".
_WAITING = {
    "select (selectors.py)",
    "wait (threading.py)",
    "_worker (concurrent/futures/thread.py)",
    "_check_inotify_fd (watchdog/observers/inotify_c.py)",
    "get (queue.py)",
    "_read (bench/inotify.py)",
}


@dataclass
class ThreadProfile:
    samples: int = 0
    waiting: int = 0
    own: Counter[str] = field(default_factory=Counter)
    own_lines: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    @property
    def busy(self) -> int:
        """Samples not spent waiting for work (on the CPU, or blocked in I/O such as fsync)."""
        return self.samples - self.waiting


@dataclass
class ProfileSummary:
    samples: int = 0
    threads: dict[str, ThreadProfile] = field(default_factory=lambda: defaultdict(ThreadProfile))

    def busiest(self) -> list[tuple[str, ThreadProfile]]:
        return sorted(self.threads.items(), key=lambda item: -item[1].busy)

    def as_dict(self, top: int = 25) -> dict[str, object]:
        result: dict[str, object] = {}
        for name, thread in self.busiest():
            total = thread.samples or 1
            result[name] = {
                "samples": thread.samples,
                "busy_percent": round(100 * thread.busy / total, 1),
                "own_lines_percent": [
                    [f, round(100 * n / total, 1)] for f, n in thread.own_lines.most_common(top)
                ],
                "own_percent": [[f, round(100 * n / total, 1)] for f, n in thread.own.most_common(top)],
                "inclusive_percent": [
                    [f, round(100 * n / total, 1)] for f, n in thread.inclusive.most_common(top)
                ],
            }
        return {"samples": self.samples, "threads": result}


def _function(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (pkg/module.py)`: a function, not one line of it."""
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    path = found.group("file")
    short = path.split("site-packages/")[-1].split("src/")[-1]
    if short.startswith("/"):
        short = "/".join(short.split("/")[-2:])
    return f"{found.group('func')} ({short})"


def _line(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (pkg/module.py:123)`."""
    found = _FRAME.match(frame.strip())
    if not found or not found.group("line"):
        return _function(frame)
    return f"{_function(frame)[:-1]}:{found.group('line')})"


def thread_group(name: str) -> str:
    """Pool threads numbered by Python (aie-vault_0, asyncio_3) are one group."""
    return re.sub(r"_\d+$", "", name.strip()) or "?"


def summarize(path: Path) -> ProfileSummary:
    summary = ProfileSummary()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        while frames and _PROCESS.match(frames[0]):
            frames = frames[1:]
        name = "?"
        if frames:
            found = _THREAD.match(frames[0])
            if found:
                name = thread_group(found.group(1))
                frames = frames[1:]
        if not frames:
            continue
        thread = summary.threads[name]
        summary.samples += count
        thread.samples += count
        functions = [_function(frame) for frame in frames]
        thread.own[functions[-1]] += count
        thread.own_lines[_line(frames[-1])] += count
        if functions[-1] in _WAITING:
            thread.waiting += count
        for function in dict.fromkeys(functions):
            thread.inclusive[function] += count
    return summary


def render(summary: ProfileSummary, top: int = 12, threads: int = 3) -> str:
    lines = [f"py-spy: {summary.samples} samples (idle included: shares are of each thread's wall time)"]
    for name, thread in summary.busiest()[:threads]:
        total = thread.samples or 1
        lines.append(
            f"  thread {name}: {thread.samples} samples, busy {100 * thread.busy / total:.0f}%"
            " (not waiting for work)"
        )
        lines.append("    own (by line):")
        lines += [f"      {100 * n / total:5.1f}%  {f}" for f, n in thread.own_lines.most_common(top)]
        lines.append("    inclusive (below the thread's own plumbing):")
        below = [(f, n) for f, n in thread.inclusive.most_common() if n < 0.95 * total]
        lines += [f"      {100 * n / total:5.1f}%  {f}" for f, n in below[:top]]
    return "\n".join(lines)
