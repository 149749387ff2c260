"""Group commits of new Inbox files, done in a small child process.

The daemon's Python work for a burst (reading, planning, rendering notes) and the kernel's work
of writing the notes (creates, renames, two `syncfs` barriers per batch) each take about half a
file's time. In one process they take turns on the GIL: every syscall releases it and waits to
get it back. A child process that only does the file operations runs them on the other core
while the daemon prepares the next batch (docs/performance.md, decision 0007).

The child changes nothing about what is durable when: it runs the same group commit
(`fs.write_durable_batch`) in the same order, and the daemon writes the ledger before and after
it exactly as with the in-process committer. It dies with the daemon (`PR_SET_PDEATHSIG`) and
exits when its pipe closes; if it dies first, the commit raises and the pipeline's recovery
finishes the batch as after any crash.

Wire format: a 4-byte little-endian length and a `marshal` payload each way (the child only ever
reads what its parent wrote).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import marshal
import os
import signal
import struct
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from ai_employee.vault import fs

_HEADER = struct.Struct("<I")
_PR_SET_PDEATHSIG = 1
_CLOSE_SECONDS = 5.0


@dataclass
class ClaimedFile:
    """One Inbox file: its original is linked to `keep_as` (in Attachments/), its notes written,
    then the original unlinked. If the original is gone before the link, or another file
    (`inode` differs) took its name since it was read, nothing of it is written."""

    original: str
    keep_as: str
    inode: int
    writes: list[tuple[str, bytes]]


@dataclass
class CommitResult:
    """Indexes (in the batch) of files of which nothing was written."""

    vanished: list[int] = field(default_factory=list)  # the original was gone
    replaced: list[int] = field(default_factory=list)  # another file was under its name


@dataclass
class GroupCommit:
    barrier: str  # any path on the vault's filesystem
    temp_dir: str
    files: list[ClaimedFile] = field(default_factory=list)


class Committer(Protocol):
    """Applies group commits in the order they are sent; one thread sends and receives.

    `receive` answers the oldest batch sent and not yet received, or raises its error."""

    def send(self, batch: GroupCommit) -> None: ...

    def receive(self) -> CommitResult: ...

    def close(self) -> None: ...


def commit(committer: Committer, batch: GroupCommit) -> CommitResult:
    """Send one batch and wait for it."""
    committer.send(batch)
    return committer.receive()


def apply_group_commit(batch: GroupCommit) -> CommitResult:
    """Links, every temp, one barrier, renames, unlink the originals, one more barrier."""
    result = CommitResult()
    writes: list[tuple[Path, bytes]] = []
    linked: list[str] = []
    for index, claimed in enumerate(batch.files):
        try:
            os.link(claimed.original, claimed.keep_as)
        except FileNotFoundError:
            result.vanished.append(index)
            continue
        if os.lstat(claimed.keep_as).st_ino != claimed.inode:  # checked after the link: no race
            os.unlink(claimed.keep_as)
            result.replaced.append(index)
            continue
        linked.append(claimed.original)
        writes.extend((Path(target), data) for target, data in claimed.writes)

    def unlink_originals() -> None:
        for original in linked:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(original)

    if linked:
        fs.write_durable_batch(
            writes,
            barrier=Path(batch.barrier),
            before_last_barrier=unlink_originals,
            temp_dir=Path(batch.temp_dir),
        )
    return result


class InProcessCommitter:
    """The same commits on the calling thread, at `send` (tests, and where the child cannot start)."""

    def __init__(self) -> None:
        self._results: deque[CommitResult | OSError] = deque()

    def send(self, batch: GroupCommit) -> None:
        try:
            self._results.append(apply_group_commit(batch))
        except OSError as error:
            self._results.append(error)

    def receive(self) -> CommitResult:
        result = self._results.popleft()
        if isinstance(result, OSError):
            raise result
        return result

    def close(self) -> None:
        self._results.clear()


class WriterProcessError(OSError):
    """The writer process went away during a commit: the batch may be half done."""


class ProcessCommitter:
    """Sends each batch to the child; `receive` waits for its answer (the GIL is free meanwhile).

    The child starts at the first batch, from the thread that sends (the parent-death signal is
    tied to the thread that started it), and again after it died; batches sent to a child that
    died are answered with `WriterProcessError`."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._outstanding = 0  # sent to the running child, not yet received
        self._lost = 0  # sent to a child that died, not yet received

    def send(self, batch: GroupCommit) -> None:
        request = (
            os.fsencode(batch.barrier),
            os.fsencode(batch.temp_dir),
            [
                (
                    os.fsencode(claimed.original),
                    os.fsencode(claimed.keep_as),
                    claimed.inode,
                    [(os.fsencode(target), data) for target, data in claimed.writes],
                )
                for claimed in batch.files
            ],
        )
        process = self._running()
        assert process.stdin is not None
        try:
            _send(process.stdin, request)
        except (OSError, ValueError) as error:
            self._discard()  # the caller knows this batch failed; earlier ones are lost too
            raise WriterProcessError(errno.EIO, f"the vault writer process failed: {error}") from error
        self._outstanding += 1

    def receive(self) -> CommitResult:
        if self._lost:
            self._lost -= 1
            raise WriterProcessError(errno.EIO, "the vault writer process exited during a commit")
        process = self._process
        assert process is not None and process.stdout is not None and self._outstanding > 0
        try:
            reply = _receive(process.stdout)
        except (OSError, EOFError, ValueError) as error:
            reply = None
            cause: BaseException | None = error
        else:
            cause = None
        if reply is None:
            self._discard()
            self._lost -= 1  # this one
            raise WriterProcessError(errno.EIO, "the vault writer process exited during a commit") from cause
        self._outstanding -= 1
        if reply[0] == "error":
            _, code, message, filename = reply
            raise OSError(code, message, os.fsdecode(filename) if filename is not None else None)
        return CommitResult(vanished=list(reply[1]), replaced=list(reply[2]))

    def close(self) -> None:
        process, self._process = self._process, None
        self._outstanding = 0
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(timeout=_CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            if self._process is not None:
                self._discard()
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        return self._process

    def _discard(self) -> None:
        """Forget a child that failed; what was sent to it and not received is lost."""
        process, self._process = self._process, None
        self._lost += self._outstanding
        self._outstanding = 0
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def start_committer() -> Committer:
    """The child-process committer where the platform allows it, else in-process."""
    if sys.platform.startswith("linux"):
        return ProcessCommitter()
    return InProcessCommitter()  # pragma: no cover - the daemon runs on Linux


def _send(stream: IO[bytes], message: Any) -> None:
    payload = marshal.dumps(message)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> tuple[Any, ...] | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    message = marshal.loads(payload)  # noqa: S302 - written by our own parent or child
    if not isinstance(message, tuple):
        raise ValueError("malformed message from the writer pipe")
    return message


# --- the child -------------------------------------------------------------------------------------


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _child(parent: int) -> None:
    # Ctrl-C reaches the whole process group: the daemon stops gracefully and closes our pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    while (request := _receive(requests)) is not None:
        barrier, temp_dir, files = request
        batch = GroupCommit(
            barrier=os.fsdecode(barrier),
            temp_dir=os.fsdecode(temp_dir),
            files=[
                ClaimedFile(
                    original=os.fsdecode(original),
                    keep_as=os.fsdecode(keep_as),
                    inode=inode,
                    writes=[(os.fsdecode(target), data) for target, data in writes],
                )
                for original, keep_as, inode, writes in files
            ],
        )
        try:
            result = apply_group_commit(batch)
            reply: tuple[Any, ...] = ("ok", result.vanished, result.replaced)
        except OSError as error:
            filename = None if error.filename is None else os.fsencode(error.filename)
            reply = ("error", error.errno, error.strerror, filename)
        _send(replies, reply)


if __name__ == "__main__":
    _child(int(sys.argv[1]))
