"""Documents read by workers (with `REDIS_URL`), and in the daemon when no worker could.

`WorkerReader` has `DocumentReader`'s interface (`submit` gives a future, `read` waits for it), so
the intake does not know where a document is read. Each document is handed to the daemon's
`DocumentWork` (`bus.redis_work.RedisWork`, on its event loop); what comes back None (no worker
runs `extract`, the file cannot travel, the worker failed, no answer in time) or cannot be read
is read here by the daemon's own `DocumentReader`, as without Redis (decision 0025).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import structlog

from ai_employee.documents.extraction import Extraction
from ai_employee.documents.pool import DocumentReader
from ai_employee.model.work import DocumentWork

log = structlog.get_logger(__name__)


class Reader(Protocol):
    """What the intake reads documents with: `DocumentReader` or `WorkerReader`."""

    def submit(
        self, path: Path, name: str, content_type: str | None = None, *, spooled: bool = False
    ) -> Future[Extraction]: ...

    def read(self, path: Path, name: str, content_type: str | None = None) -> Extraction: ...

    def close(self) -> None: ...


class WorkerReader:
    """Reads on workers first, in the daemon (`local`) when no worker could."""

    def __init__(self, work: DocumentWork, local: DocumentReader) -> None:
        self.work = work
        self.local = local
        self._lock = threading.Lock()
        self._pending: set[Future[Extraction]] = set()
        self._closed = False
        self.remote_count = 0  # documents a worker read

    def submit(
        self, path: Path, name: str, content_type: str | None = None, *, spooled: bool = False
    ) -> Future[Extraction]:
        """`spooled`: the file is a copy of ours, removed once read (here or by a worker)."""
        outcome: Future[Extraction] = Future()
        with self._lock:
            if self._closed:
                outcome.cancel()
                return outcome
            self._pending.add(outcome)
        outcome.add_done_callback(self._forget)
        asked = self.work.read_document(path, name, content_type, reading_seconds=self.local.limits.seconds)
        asked.add_done_callback(lambda done: self._answered(done, outcome, path, name, content_type, spooled))
        return outcome

    def read(self, path: Path, name: str, content_type: str | None = None) -> Extraction:
        """Read one document, waiting for it (a thread, never the event loop)."""
        return self.submit(path, name, content_type).result()

    def _answered(
        self,
        asked: Future[Sequence[Any] | None],
        outcome: Future[Extraction],
        path: Path,
        name: str,
        content_type: str | None,
        spooled: bool,
    ) -> None:
        extraction = self._from_worker(asked, name)
        if extraction is not None:
            with self._lock:
                self.remote_count += 1
            if spooled:
                with contextlib.suppress(OSError):
                    path.unlink()
            _settle(outcome, extraction)
            return
        try:
            local = self.local.submit(path, name, content_type, spooled=spooled)
        except RuntimeError as error:  # the local reader was closed meanwhile (the daemon stops)
            log.info("not read: the daemon stops", file=name, reason=str(error))
            outcome.cancel()
            return
        local.add_done_callback(lambda done: _chain(done, outcome))

    @staticmethod
    def _from_worker(asked: Future[Sequence[Any] | None], name: str) -> Extraction | None:
        try:
            wire = asked.result()
        except Exception as error:  # cancelled (the daemon stops), or a bug: read it here
            log.warning("asking a worker to read failed; the daemon reads it", file=name, error=repr(error))
            return None
        if wire is None:
            return None
        try:
            return Extraction.from_wire(tuple(wire))
        except (TypeError, ValueError) as error:
            log.warning("a worker's reading is unreadable; the daemon reads it", file=name, error=str(error))
            return None

    def _forget(self, outcome: Future[Extraction]) -> None:
        with self._lock:
            self._pending.discard(outcome)

    def close(self) -> None:
        """Stop: documents still being read are given up (they stay where they are and are read
        again at the next start), as `DocumentReader.close` does."""
        with self._lock:
            self._closed = True
            pending, self._pending = list(self._pending), set()
        for outcome in pending:
            outcome.cancel()
        self.local.close()


def _chain(source: Future[Extraction], target: Future[Extraction]) -> None:
    if source.cancelled():
        target.cancel()
        return
    error = source.exception()
    if error is not None:
        with contextlib.suppress(Exception):
            target.set_exception(error)
        return
    _settle(target, source.result())


def _settle(target: Future[Extraction], extraction: Extraction) -> None:
    with contextlib.suppress(Exception):  # cancelled meanwhile (close): nobody waits for it
        target.set_result(extraction)
