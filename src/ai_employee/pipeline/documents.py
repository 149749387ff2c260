"""Documents on their way in: Inbox files and message attachments read in worker processes, off the
intake's path (decision 0018).

An Inbox document is not taken in the batch that first sees it: a worker reads it while it stays
in `Inbox/`, and when the text is ready the name comes back as a hint; the next batch takes it with
its text, if the file is still the one that was read (same inode, size and mtime). So a 50-page PDF
holds one worker, never the batch of the files dropped with it, and a crash while reading leaves
the file in `Inbox/` to be read again. Message attachments are read before the message is taken.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import NamedTuple

import structlog

from ai_employee.config import DocumentSettings
from ai_employee.documents.extraction import Extraction
from ai_employee.documents.pool import DocumentReader
from ai_employee.documents.remote import Reader, WorkerReader
from ai_employee.documents.text import describe_or_sniff
from ai_employee.model.ids import display_name
from ai_employee.model.messages import IncomingAttachment
from ai_employee.model.work import DocumentWork
from ai_employee.vault import fs

log = structlog.get_logger(__name__)

#: Read documents waiting to be taken; beyond this the oldest are forgotten (read again if needed).
MAX_KEPT = 4096
#: Attachments of these types are not documents (voice notes have their own transcription).
NOT_DOCUMENTS = ("audio/", "video/")

FileKey = tuple[int, int, int]  # inode, size, mtime (ns)
#: Ledger-only action property (not shown in the note): the newest mtime (ns) of the action's files
#: when they were read; a newer one at approval means the plan is made again (pipeline/reread.py).
CONTENT_FINGERPRINT = "_content_mtime_ns"


class Described(NamedTuple):
    title: str
    text: str
    document: Extraction | None  # read by a worker: the note shows it (text is then "")
    empty: bool = False  # nothing in it: a note says so, and there is nothing to approve


class InboxDocuments:
    def __init__(self, max_body_bytes: int, settings: DocumentSettings) -> None:
        self._max_body_bytes = max_body_bytes
        self._settings = settings
        self._reader: Reader | None = None
        self._work: DocumentWork | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a read document is recorded
        self._read: dict[str, tuple[FileKey, Extraction]] = {}
        self._reading: dict[str, FileKey] = {}
        self._futures: set[Future[Extraction]] = set()
        #: called (on a worker's thread) with an Inbox name whose document has been read
        self.on_read: Callable[[str], None] | None = None

    def read_on_workers(self, work: DocumentWork) -> None:
        """With `REDIS_URL`: documents are read by workers, here when no worker could (decision
        0025). Called before the first document is read."""
        with self._lock:
            assert self._reader is None, "documents were read already"
            self._work = work

    @property
    def reader(self) -> Reader:
        with self._lock:
            if self._reader is None:
                local = DocumentReader(self._settings)
                self._reader = local if self._work is None else WorkerReader(self._work, local)
            return self._reader

    def describe(
        self, path: Path, name: str, info: os.stat_result, *, hint_as: str | None = None
    ) -> Described | None:
        """A text file's title and text at once; a document's text if a worker has read this very
        file, else None (a worker is on it now, and `on_read` gets `hint_as` or `name` when done)."""
        shown = display_name(name.rpartition("/")[2])
        title, text, kind = describe_or_sniff(path, shown, info.st_size, limit=self._max_body_bytes)
        if kind is None:
            return Described(title, text, None)
        if kind == "empty":
            return Described(title, text, None, empty=True)
        key = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            done = self._read.get(name)
            if done is not None and done[0] == key:
                del self._read[name]
                return Described(shown, "", done[1])
            if self._reading.get(name) == key:
                return None
            self._reading[name] = key
        future = self.reader.submit(path, shown)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(lambda done: self._done(name, key, done, hint_as or name))
        return None

    def _done(self, name: str, key: FileKey, future: Future[Extraction], hint: str) -> None:
        try:
            extraction = future.result()
        except BaseException as error:
            extraction = Extraction.failed("other", f"the reader failed ({error!r})")
        with self._lock:
            self._futures.discard(future)
            if self._reading.get(name) == key:
                del self._reading[name]
            self._read[name] = (key, extraction)
            while len(self._read) > MAX_KEPT:
                del self._read[next(iter(self._read))]
            self._idle.notify_all()
        on_read = self.on_read
        if on_read is not None:
            on_read(hint)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every document handed to a worker is read and recorded (tests, benchmarks);
        False if the time ran out."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._futures, timeout)

    def read_attachments(
        self, attachments: Sequence[IncomingAttachment], temp_dir: Path
    ) -> list[Future[Extraction] | None]:
        """Start reading a message's documents; None for what is not one (the e-mail itself, audio)."""
        futures: list[Future[Extraction] | None] = []
        for attachment in attachments:
            content_type = (attachment.content_type or "").lower()
            if not attachment.extract or content_type.startswith(NOT_DOCUMENTS):
                futures.append(None)
                continue
            if attachment.path is not None:
                reading = self.reader.submit(attachment.path, attachment.filename, attachment.content_type)
                futures.append(reading)
                continue
            spool = fs.temp_path_for(temp_dir / "document")
            spool.write_bytes(attachment.data or b"")
            futures.append(
                self.reader.submit(spool, attachment.filename, attachment.content_type, spooled=True)
            )
        return futures

    def close(self) -> None:
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
