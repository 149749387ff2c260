"""A helper process fed over a pipe: one module's `serve` loop in a child Python.

The daemon's Python threads share one GIL; work that is mostly CPU (rendering notes) or mostly
syscalls (writing them) runs in a helper of its own, on the other core, with no hand-offs of the
GIL (decision 0007). Requests are answered in the order they are sent, so a caller may send the
next before it reads the last answer.

A helper dies with the daemon (`PR_SET_PDEATHSIG`, checked against a parent that died first),
ignores SIGINT/SIGTERM (the daemon's graceful stop closes its pipe) and exits at EOF. If it dies
first, every request sent to it and not yet answered raises `HelperProcessError`, and the next
request starts a new one.

Wire format: a 4-byte little-endian length and a `marshal` payload each way (the child only ever
reads what its parent wrote). Errors cross as (errno, message, filename) and are raised as
`OSError` on the parent's side; any other exception ends the child.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import marshal
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any

_HEADER = struct.Struct("<I")
_PR_SET_PDEATHSIG = 1
_CLOSE_SECONDS = 5.0
PIPE_BYTES = 1024 * 1024


class HelperProcessError(OSError):
    """The helper went away with requests unanswered: what they asked for may be half done."""


class HelperProcess:
    """The parent's side. One thread sends and receives (the parent-death signal is tied to the
    thread that started the child, so it starts at the first request, from that thread)."""

    def __init__(self, module: str, description: str) -> None:
        self._module = module
        self._description = description
        self._process: subprocess.Popen[bytes] | None = None
        self._outstanding = 0  # sent to the running child, not yet received
        self._lost = 0  # sent to a child that died, not yet received

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def send(self, request: Any) -> None:
        process = self._running()
        assert process.stdin is not None
        try:
            write_message(process.stdin, request)
        except (OSError, ValueError) as error:
            self._discard()  # the caller knows this request failed; earlier ones are lost too
            raise HelperProcessError(errno.EIO, f"the {self._description} failed: {error}") from error
        self._outstanding += 1

    def receive(self) -> Any:
        """The answer to the oldest request not yet received."""
        if self._lost:
            self._lost -= 1
            raise HelperProcessError(errno.EIO, f"the {self._description} exited before it answered")
        process = self._process
        assert process is not None and process.stdout is not None and self._outstanding > 0
        cause: BaseException | None = None
        try:
            reply = read_message(process.stdout)
        except (OSError, EOFError, ValueError) as error:
            reply, cause = None, error
        if reply is None:
            self._discard()
            self._lost -= 1  # this one
            raise HelperProcessError(
                errno.EIO, f"the {self._description} exited before it answered"
            ) from cause
        self._outstanding -= 1
        if reply[0] == "error":
            _, code, message, filename = reply
            raise OSError(code, message, os.fsdecode(filename) if filename is not None else None)
        return reply[1]

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
                [sys.executable, "-m", self._module, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            for stream in (self._process.stdin, self._process.stdout):
                _widen_pipe(stream)
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


def _widen_pipe(stream: IO[bytes] | None) -> None:
    """Room for a few batches in each pipe (64 KiB by default, less than one batch of notes), so
    that neither side waits for the other to read before it can go on with the next batch."""
    if stream is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # capped by /proc/sys/fs/pipe-max-size
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def write_message(stream: IO[bytes], message: Any) -> None:
    payload = marshal.dumps(message)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_message(stream: IO[bytes]) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    message = marshal.loads(payload)  # noqa: S302 - written by our own parent or child
    if not isinstance(message, tuple):
        raise ValueError("malformed message on a helper pipe")
    return message


def serve(handle: Callable[[Any], Any]) -> None:
    """The child's side: answer each request with `handle(request)` until the pipe closes.
    Requests are tuples; `sys.argv[1]` is the parent's pid."""
    # Ctrl-C reaches the whole process group: the daemon stops gracefully and closes our pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(int(sys.argv[1]))
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    while (request := read_message(requests)) is not None:
        try:
            reply: tuple[Any, ...] = ("ok", handle(request))
        except OSError as error:
            filename = None if error.filename is None else os.fsencode(error.filename)
            reply = ("error", error.errno, error.strerror, filename)
        write_message(replies, reply)


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
