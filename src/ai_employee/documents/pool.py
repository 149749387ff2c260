"""The daemon's side of reading documents: a few worker processes, each with a time limit per file.

`DocumentReader.submit` returns a future; one thread per worker sends a document, waits for the
answer up to `documents.timeout_seconds`, and kills the worker's whole process group (it and its
Tesseract) when the time is up or it died, then starts a fresh one for the next document. A slow
document holds one worker; the others go on (decision 0018).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from ai_employee.config import DocumentSettings
from ai_employee.documents.extraction import Extraction, Limits
from ai_employee.helper_process import read_message, write_message

log = structlog.get_logger(__name__)

_HEADER = struct.Struct("<I")
#: The worker stops starting pages at 80 % of the time limit; this is what it gets on top to answer.
_GRACE_SECONDS = 5.0


class _Worker:
    """One reading process. Used by one thread at a time."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_THREAD_LIMIT="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ai_employee.documents.worker", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,  # its own process group: a kill takes Tesseract with it
            env=env,
        )

    def ask(self, request: tuple[Any, ...], seconds: float) -> tuple[Any, ...] | str:
        """The answer, or why there is none (the worker is then dead)."""
        process = self.process
        assert process.stdin is not None and process.stdout is not None
        try:
            write_message(process.stdin, request)
        except (OSError, ValueError) as error:
            self.kill()
            return f"the reader process failed ({error})"
        ready, _, _ = select.select([process.stdout], [], [], seconds)
        if not ready:
            self.kill()
            limit = seconds - _GRACE_SECONDS
            return f"reading took longer than {limit:.0f} s (`documents.timeout_seconds`): stopped"
        try:
            reply = read_message(process.stdout)
        except (OSError, EOFError, ValueError):
            reply = None
        if reply is None or reply[0] != "ok":
            code = process.wait()
            self.kill()
            if code < 0:
                name = signal.Signals(-code).name
                return (
                    f"the reader process was stopped by {name} (out of memory? a reader may use"
                    " `documents.max_memory_mb`)"
                )
            return f"the reader process exited ({code})"
        return tuple(reply[1])

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._close_pipes()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class DocumentReader:
    """Reads documents in worker processes, `settings.workers` at a time."""

    def __init__(self, settings: DocumentSettings) -> None:
        self.limits = Limits.from_settings(settings)
        self._threads = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="aie-documents")
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.read_count = 0

    def submit(
        self, path: Path, name: str, content_type: str | None = None, *, spooled: bool = False
    ) -> Future[Extraction]:
        """Read in a worker; `spooled`: the file is a copy of ours, removed once read."""
        return self._threads.submit(
            self._read_then_remove if spooled else self.read, path, name, content_type
        )

    def _read_then_remove(self, path: Path, name: str, content_type: str | None) -> Extraction:
        try:
            return self.read(path, name, content_type)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    def read(self, path: Path, name: str, content_type: str | None = None) -> Extraction:
        """Read one document on the calling thread (through a worker); never raises for the document."""
        started = time.monotonic()
        try:
            worker = self._take()
        except OSError as error:  # out of processes or memory: this document waits for nothing
            log.error("no reading process could start", file=name, error=str(error))
            return Extraction.failed("other", f"no reading process could start ({error.strerror or error})")
        request = (os.fsencode(path), name, content_type, self.limits.to_wire())
        try:
            answer = worker.ask(request, self.limits.seconds + _GRACE_SECONDS)
        finally:
            with self._lock:
                self._busy.discard(worker)
        if isinstance(answer, str):
            log.warning("a document could not be read", file=name, reason=answer)
            extraction = Extraction.failed("other", answer)
        else:
            self._give_back(worker)
            extraction = Extraction.from_wire(answer)
        self.read_count += 1
        log.debug(
            "document read", file=name, kind=extraction.kind, seconds=round(time.monotonic() - started, 3)
        )
        return extraction

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    self._busy.add(worker)
                    return worker
                worker.kill()
        worker = _Worker()
        with self._lock:
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.close()

    @property
    def reading(self) -> int:
        """Documents being read right now."""
        with self._lock:
            return len(self._busy)

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [worker.process.pid for worker in self._idle]

    def close(self) -> None:
        """Stop: idle workers exit, busy ones are killed (their documents stay where they are and are
        read again at the next start); queued documents are not read."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        self._threads.shutdown(wait=False, cancel_futures=True)
        for worker in idle:
            worker.close()
        for worker in busy:
            with contextlib.suppress(OSError):
                os.killpg(worker.process.pid, signal.SIGKILL)
        self._threads.shutdown(wait=True)
