"""The audit log: Logs/YYYY-MM-DD.jsonl, one JSON object per line, appended, never rewritten.

A line is first recorded in the ledger's outbox, in the same transaction as the state change
it reports; `flush` then appends it. After a crash, lines recorded but not yet marked flushed
are checked against the log's tail, so every line is written exactly once.
"""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ai_employee.model.events import new_event_id
from ai_employee.vault.fs import fsync_dir
from ai_employee.vault.ledger import AuditRecord, Ledger

_WATERMARK = ("audit", "flushed_seq")
_TAIL_BYTES = 4 * 1024 * 1024


#: one encoder for every line (json.dumps with options builds one per call)
_encode_line = json.JSONEncoder(ensure_ascii=False, default=str, separators=(",", ":")).encode


def audit_record(event: str, subject_id: str, **fields: Any) -> AuditRecord:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    event_id = new_event_id()
    line: dict[str, Any] = {"ts": stamp, "event": event, "id": subject_id}
    for key, value in fields.items():
        if value is not None:
            line[key] = value
    line["event_id"] = event_id
    return AuditRecord(event_id=event_id, day=stamp[:10], line=_encode_line(line))


class AuditLog:
    def __init__(self, ledger: Ledger, logs_dir: Path) -> None:
        self._ledger = ledger
        self._logs = logs_dir
        self._lock = threading.Lock()
        self._recovered = False

    def flush(self) -> int:
        """Append what the outbox holds beyond the watermark; returns the number of lines written."""
        with self._lock:
            raw = self._ledger.kv_get(*_WATERMARK)
            watermark = int(raw) if raw else 0
            pending = self._ledger.pending_audit(watermark)
            if not pending:
                return 0
            high = pending[-1][0]
            if not self._recovered:
                pending = self._drop_already_written(pending)
                self._recovered = True
            by_day: dict[str, list[str]] = defaultdict(list)
            for _, _, day, line in pending:
                by_day[day].append(line)
            for day, lines in by_day.items():
                self._append(self._logs / f"{day}.jsonl", lines)
            self._ledger.kv_put(*_WATERMARK, str(high))
            if high // 4096 != watermark // 4096:
                self._ledger.prune_audit(high - 4096)
            return len(pending)

    def _append(self, path: Path, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8")
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a line torn by a crash stays as it is, on a line of its own
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if size == 0:
            fsync_dir(path.parent)  # a new day's file: make its name durable before the watermark moves

    def _drop_already_written(
        self, pending: list[tuple[int, str, str, str]]
    ) -> list[tuple[int, str, str, str]]:
        present: set[str] = set()
        for day in {day for _, _, day, _ in pending}:
            present |= _event_ids_in_tail(self._logs / f"{day}.jsonl")
        return [row for row in pending if row[1] not in present]


def _event_ids_in_tail(path: Path) -> set[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except FileNotFoundError:
        return set()
    found: set[str] = set()
    for raw_line in tail.splitlines():
        try:
            found.add(str(json.loads(raw_line)["event_id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return found
