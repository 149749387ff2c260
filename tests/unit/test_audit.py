"""The audit log: each line is appended exactly once, also when a crash came between append and mark."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_employee.vault.audit import AuditLog, audit_record
from ai_employee.vault.ledger import Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(tmp_path / "state.db")
    yield opened
    opened.close()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "Logs"
    folder.mkdir()
    return folder


def read_lines(logs: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(logs.glob("*.jsonl")):
        found += [json.loads(raw) for raw in path.read_text(encoding="utf-8").splitlines() if raw.strip()]
    return found


def test_record_has_ts_event_and_id_and_drops_empty_fields() -> None:
    record = audit_record("plan.executed", "plan-1", action_id="act-1", dry_run=True, error=None)
    line = json.loads(record.line)
    assert line["event"] == "plan.executed"
    assert line["id"] == "plan-1"
    assert line["dry_run"] is True
    assert "error" not in line
    assert line["ts"].endswith("+00:00")
    assert line["ts"].startswith(record.day)
    assert line["event_id"] == record.event_id
    assert "\n" not in record.line


def test_flush_appends_each_line_once(ledger: Ledger, logs: Path) -> None:
    audit = AuditLog(ledger, logs)
    records = [audit_record("action.created", f"act-{n}") for n in range(3)]
    ledger.add_audit(records)
    assert audit.flush() == 3
    assert audit.flush() == 0
    assert [line["event_id"] for line in read_lines(logs)] == [record.event_id for record in records]


def test_log_file_is_named_after_the_utc_day(ledger: Ledger, logs: Path) -> None:
    record = audit_record("action.created", "act-1")
    ledger.add_audit([record])
    AuditLog(ledger, logs).flush()
    assert [path.name for path in logs.iterdir()] == [f"{record.day}.jsonl"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\.jsonl", f"{record.day}.jsonl")


def test_lines_are_appended_to_what_the_file_already_holds(ledger: Ledger, logs: Path) -> None:
    record = audit_record("action.created", "act-1")
    existing = logs / f"{record.day}.jsonl"
    earlier = '{"ts":"2026-01-01T00:00:00+00:00","event":"action.created","id":"act-0","event_id":"old"}\n'
    existing.write_text(earlier, encoding="utf-8")
    ledger.add_audit([record])
    AuditLog(ledger, logs).flush()
    text = existing.read_text(encoding="utf-8")
    assert text.startswith(earlier)
    assert [line["id"] for line in read_lines(logs)] == ["act-0", "act-1"]


def test_later_flushes_append_only_the_new_lines(ledger: Ledger, logs: Path) -> None:
    audit = AuditLog(ledger, logs)
    ledger.add_audit([audit_record("action.created", "act-1")])
    audit.flush()
    ledger.add_audit([audit_record("plan.created", "plan-1")])
    assert audit.flush() == 1
    assert [line["event"] for line in read_lines(logs)] == ["action.created", "plan.created"]


def test_lines_written_before_a_crash_are_not_written_twice(ledger: Ledger, logs: Path) -> None:
    """A crash after the append and before the watermark moved: the outbox still holds those lines."""
    records = [audit_record("action.created", f"act-{n}") for n in range(4)]
    ledger.add_audit(records)
    already = records[:2]
    with (logs / f"{records[0].day}.jsonl").open("a", encoding="utf-8") as handle:
        handle.writelines(record.line + "\n" for record in already)

    restarted = AuditLog(ledger, logs)  # a new process: the watermark is still 0
    assert restarted.flush() == 2
    written = [line["event_id"] for line in read_lines(logs)]
    assert written == [record.event_id for record in records]


def test_flush_after_recovery_writes_new_lines_normally(ledger: Ledger, logs: Path) -> None:
    first = audit_record("action.created", "act-1")
    ledger.add_audit([first])
    (logs / f"{first.day}.jsonl").write_text(first.line + "\n", encoding="utf-8")
    audit = AuditLog(ledger, logs)
    assert audit.flush() == 0
    second = audit_record("plan.created", "plan-1")
    ledger.add_audit([second])
    assert audit.flush() == 1
    assert [line["event_id"] for line in read_lines(logs)] == [first.event_id, second.event_id]


def test_line_torn_by_a_crash_is_kept_and_the_next_line_starts_on_its_own(ledger: Ledger, logs: Path) -> None:
    torn = '{"ts":"2026-11-21T10:15:00'
    record = audit_record("action.created", "act-1")
    path = logs / f"{record.day}.jsonl"
    path.write_text(torn, encoding="utf-8")
    ledger.add_audit([record])
    AuditLog(ledger, logs).flush()
    assert path.read_text(encoding="utf-8").splitlines() == [torn, record.line]
