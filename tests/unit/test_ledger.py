"""The ledger: every table round-trips, state survives a reopen, audit lines commit with their change."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_employee.vault.ledger import ActionRow, AuditRecord, ExecutionRow, Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(tmp_path / "state.db")
    yield opened
    opened.close()


def action(number: int = 1, **changes: object) -> ActionRow:
    row = ActionRow(
        action_id=f"act-20261121-101500-00000{number}",
        source="file",
        source_ref=f"file {number}.txt",
        state="claimed",
        note_rel=f"Needs_Action/20261121-101500 file-{number} 00000{number}.md",
        plan_id=f"plan-20261121-101500-00000{number}",
        plan_rel=f"Plans/20261121-101500 file-{number} 00000{number} plan.md",
        attachments=[f"Attachments/2026-11-21/00000{number}-file {number}.txt"],
        inbox_name=f"file {number}.txt",
        inbox_dev=42,
        inbox_ino=1000 + number,
        title=f"File {number}",
        sender=None,
        extra={"intent": "note", "n": number},
        created_at="2026-11-21T10:15:00+00:00",
    )
    for key, value in changes.items():
        setattr(row, key, value)
    return row


def execution(plan_id: str = "plan-1", state: str = "approved", **changes: object) -> ExecutionRow:
    row = ExecutionRow(
        plan_id=plan_id,
        action_id="act-1",
        state=state,
        content_hash="abc",
        attempts=1,
        action="vault.note",
        dry_run=None,
        result=None,
        error=None,
        note_rel="Approved/p.md",
        final_rel=None,
        updated_at="",
    )
    for key, value in changes.items():
        setattr(row, key, value)
    return row


def record(event_id: str, day: str = "2026-11-21") -> AuditRecord:
    return AuditRecord(event_id=event_id, day=day, line=f'{{"event_id":"{event_id}"}}')


def test_inserted_action_reads_back_field_for_field(ledger: Ledger) -> None:
    row = action(dedup_key="file:1")
    ledger.insert_actions([row])
    found = ledger.action(row.action_id)
    assert found == row


def test_action_is_found_by_plan_id_and_by_dedup_key(ledger: Ledger) -> None:
    row = action(dedup_key="email:1:42")
    ledger.insert_actions([row])
    assert ledger.action_by_plan(row.plan_id) == row
    assert ledger.action_by_dedup("email:1:42") == row
    assert ledger.action("act-unknown") is None
    assert ledger.action_by_dedup("email:1:43") is None


def test_set_action_state_changes_the_state_and_keeps_the_note_path_unless_given(ledger: Ledger) -> None:
    ledger.insert_actions([action(1), action(2)])
    ledger.set_action_state(
        [(action(1).action_id, "planned", None), (action(2).action_id, "done", "Done/moved.md")]
    )
    first, second = ledger.action(action(1).action_id), ledger.action(action(2).action_id)
    assert first is not None and second is not None
    assert (first.state, first.note_rel) == ("planned", action(1).note_rel)
    assert (second.state, second.note_rel) == ("done", "Done/moved.md")


def test_unfinished_actions_and_claimed_inbox_names_list_only_interrupted_intakes(ledger: Ledger) -> None:
    ledger.insert_actions(
        [
            action(1),
            action(2, state="noted"),
            action(3, state="planned"),
            action(4, state="claimed", inbox_name=None, source="email"),
        ]
    )
    unfinished = {row.action_id for row in ledger.unfinished_actions()}
    assert unfinished == {action(1).action_id, action(2).action_id, action(4).action_id}
    assert set(ledger.claimed_inbox_names()) == {"file 1.txt", "file 2.txt"}
    assert ledger.count_actions() == 4


def test_duplicate_dedup_key_is_refused(ledger: Ledger) -> None:
    ledger.insert_actions([action(1, dedup_key="telegram:1:2")])
    with pytest.raises(sqlite3.IntegrityError):
        ledger.insert_actions([action(2, dedup_key="telegram:1:2")])


def test_audit_lines_are_not_kept_when_their_change_fails(ledger: Ledger) -> None:
    ledger.insert_actions([action(1)])
    with pytest.raises(sqlite3.IntegrityError):
        ledger.insert_actions([action(2), action(1)], audit=[record("e-lost")])
    assert ledger.pending_audit(0) == []
    assert ledger.action(action(2).action_id) is None


def test_execution_round_trips_with_result_and_dry_run(ledger: Ledger) -> None:
    row = execution(state="executed", dry_run=True, result={"writes": "x", "n": 2})
    ledger.upsert_execution(row, [record("e1")])
    found = ledger.execution("plan-1")
    assert found is not None
    assert (found.state, found.dry_run, found.error) == ("executed", True, None)
    assert found.result == {"writes": "x", "n": 2}
    assert found.updated_at != ""
    assert [event_id for _, event_id, _, _ in ledger.pending_audit(0)] == ["e1"]


def test_upsert_execution_replaces_the_row(ledger: Ledger) -> None:
    ledger.upsert_execution(execution(state="approved"))
    ledger.upsert_execution(execution(state="failed", error="boom", dry_run=False, attempts=2))
    found = ledger.execution("plan-1")
    assert found is not None
    assert (found.state, found.error, found.dry_run, found.attempts) == ("failed", "boom", False, 2)


def test_open_and_recent_executions_are_split_by_state(ledger: Ledger) -> None:
    states = ("approved", "running", "executed", "failing", "done", "failed", "rejected")
    for number, state in enumerate(states):
        ledger.upsert_execution(execution(f"plan-{number}", state))
    assert {row.state for row in ledger.open_executions()} == {"approved", "running", "executed", "failing"}
    assert {row.state for row in ledger.recent_executions()} == {"done", "failed"}
    assert ledger.execution("plan-none") is None


def test_journal_round_trips_and_overwrites(ledger: Ledger) -> None:
    assert ledger.journal_get("plan-1", "intent") is None
    ledger.journal_put("plan-1", "intent", {"request": {"title": "x"}})
    ledger.journal_put("plan-1", "intent", {"request": {"title": "y"}, "sent": True})
    ledger.journal_put("plan-2", "intent", {"other": 1})
    assert ledger.journal_get("plan-1", "intent") == {"request": {"title": "y"}, "sent": True}


def test_kv_round_trips_and_overwrites_per_namespace(ledger: Ledger) -> None:
    assert ledger.kv_get("telegram", "offset") is None
    ledger.kv_put("telegram", "offset", "10")
    ledger.kv_put("telegram", "offset", "11")
    ledger.kv_put("imap", "offset", "99")
    assert ledger.kv_get("telegram", "offset") == "11"
    assert ledger.kv_get("imap", "offset") == "99"


def test_costs_add_up_per_day_across_planners(ledger: Ledger) -> None:
    ledger.add_cost("2026-11-21", "claude:sonnet", 0.25)
    ledger.add_cost("2026-11-21", "claude:sonnet", 0.5)
    ledger.add_cost("2026-11-21", "openai:mini", 0.125)
    ledger.add_cost("2026-11-22", "claude:sonnet", 9.0)
    assert ledger.cost("2026-11-21") == pytest.approx(0.875)
    assert ledger.cost("2026-11-20") == 0.0


def test_outbox_keeps_order_ignores_a_repeated_event_and_prunes(ledger: Ledger) -> None:
    ledger.add_audit([record("e1"), record("e2")])
    ledger.add_audit([record("e2"), record("e3", day="2026-11-22")])
    pending = ledger.pending_audit(0)
    assert [(event_id, day) for _, event_id, day, _ in pending] == [
        ("e1", "2026-11-21"),
        ("e2", "2026-11-21"),
        ("e3", "2026-11-22"),
    ]
    first_seq = pending[0][0]
    assert [event_id for _, event_id, _, _ in ledger.pending_audit(first_seq)] == ["e2", "e3"]
    ledger.prune_audit(first_seq)
    assert [event_id for _, event_id, _, _ in ledger.pending_audit(0)] == ["e2", "e3"]


def test_everything_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = Ledger(path)
    first.insert_actions([action(1)])
    first.upsert_execution(execution())
    first.kv_put("audit", "flushed_seq", "7")
    first.close()
    second = Ledger(path)
    try:
        assert second.action(action(1).action_id) == action(1)
        assert second.execution("plan-1") is not None
        assert second.kv_get("audit", "flushed_seq") == "7"
    finally:
        second.close()
