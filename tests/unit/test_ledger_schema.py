"""The ledger's schema version: migrations run in order at open, from any older ledger, and once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ai_employee.vault.ledger import (
    SCHEMA,
    SCHEMA_VERSION,
    Ledger,
    LedgerTooNew,
    migrate,
    schema_version,
)


def _v0_ledger(path: Path) -> None:
    """A ledger as 0.1.0 wrote it before schema versions: the tables, user_version 0, one action."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO actions (action_id, source, state, note_rel, plan_id, plan_rel, created_at, updated_at)"
        " VALUES ('act-1', 'file', 'planned', 'Needs_Action/a.md', 'plan-1', 'Plans/p.md', 't', 't')"
    )
    db.execute("INSERT INTO kv (namespace, key, value) VALUES ('telegram', 'offset', '41')")
    db.commit()
    db.close()


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return schema_version(db)
    finally:
        db.close()


def test_a_new_ledger_is_created_at_the_current_schema_version(tmp_path: Path) -> None:
    Ledger(tmp_path / "state.db").close()
    assert _version(tmp_path / "state.db") == SCHEMA_VERSION >= 1


def test_a_v0_ledger_is_migrated_at_open_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _v0_ledger(path)
    assert _version(path) == 0
    ledger = Ledger(path)
    try:
        row = ledger.action("act-1")
        assert row is not None and row.state == "planned"
        assert ledger.kv_get("telegram", "offset") == "41"
    finally:
        ledger.close()
    assert _version(path) == SCHEMA_VERSION


def test_migrations_run_in_order_each_once(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    ran: list[str] = []

    def first(conn: sqlite3.Connection) -> None:
        ran.append("first")
        conn.execute("CREATE TABLE t (a INTEGER)")

    def second(conn: sqlite3.Connection) -> None:
        ran.append("second")
        conn.execute("ALTER TABLE t ADD COLUMN b TEXT NOT NULL DEFAULT 'x'")

    assert migrate(db, (first,)) == [1]
    assert migrate(db, (first, second)) == [2]
    assert migrate(db, (first, second)) == []
    assert ran == ["first", "second"]
    assert [row[1] for row in db.execute("PRAGMA table_info(t)")] == ["a", "b"]
    db.close()


def test_a_failed_migration_leaves_the_version_it_had(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)

    def good(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE t (a INTEGER)")

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE u (a INTEGER)")
        raise RuntimeError("half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        migrate(db, (good, bad))
    assert schema_version(db) == 1
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'u'").fetchone() is None
    db.close()


def test_a_ledger_from_a_newer_version_is_refused_not_downgraded(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(LedgerTooNew, match="newer than this ai-employee knows"):
        Ledger(path)
    assert _version(path) == SCHEMA_VERSION + 1
