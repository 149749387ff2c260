"""The ledger: SQLite (WAL) in .ai-employee/, making each step exactly-once.

Commits that must survive a power loss on their own (execution states, executors' journal
intents, sources' offsets) are `durable` (synchronous=FULL: the WAL is fsynced). Intake's
commits are not: the batch's own filesystem barrier (`syncfs`, which also flushes the WAL)
makes them durable in the same stroke as the files, so a burst pays two barriers a batch.

The folders are the state a human sees; the ledger records each step's progress keyed by a
stable id, so that a step a crash interrupted is finished (or redone) on restart without a
duplicate, and nothing is ever O(vault) per event.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    action_id   TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    source_ref  TEXT,
    dedup_key   TEXT UNIQUE,
    state       TEXT NOT NULL,
    inbox_name  TEXT,
    inbox_dev   INTEGER,
    inbox_ino   INTEGER,
    attachments TEXT NOT NULL DEFAULT '[]',
    note_rel    TEXT NOT NULL,
    plan_id     TEXT NOT NULL,
    plan_rel    TEXT NOT NULL,
    title       TEXT NOT NULL DEFAULT '',
    sender      TEXT,
    extra       TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_unfinished ON actions(state) WHERE state IN ('claimed', 'noted');
CREATE INDEX IF NOT EXISTS actions_plan ON actions(plan_id);
CREATE TABLE IF NOT EXISTS executions (
    plan_id      TEXT PRIMARY KEY,
    action_id    TEXT,
    state        TEXT NOT NULL,
    content_hash TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    action       TEXT,
    dry_run      INTEGER,
    result       TEXT,
    error        TEXT,
    note_rel     TEXT,
    final_rel    TEXT,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_open ON executions(state)
    WHERE state IN ('approved', 'running', 'executed', 'failing');
CREATE TABLE IF NOT EXISTS journal (
    plan_id TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (plan_id, key)
);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    day      TEXT NOT NULL,
    line     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS costs (
    day     TEXT NOT NULL,
    planner TEXT NOT NULL,
    usd     REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, planner)
);
"""


class LedgerTooNew(RuntimeError):
    """The ledger was written by a newer ai-employee: this one cannot know its schema."""


Migration = Callable[[sqlite3.Connection], None]


def _create_tables(db: sqlite3.Connection) -> None:
    """0 -> 1: the tables of 0.1.0. A ledger from before schema versions has them already."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


#: MIGRATIONS[n] takes a ledger from schema version n to n + 1 (`PRAGMA user_version`). Append only:
#: a released migration is never changed, and each runs in the transaction that records its number.
MIGRATIONS: tuple[Migration, ...] = (_create_tables,)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the ledger up to `len(migrations)`, one version per transaction; the versions reached.

    A crash between two migrations leaves a ledger at a version it had, which the next start
    carries on from. A ledger newer than this code is refused, never downgraded."""
    reached: list[int] = []
    current = schema_version(db)
    if current > len(migrations):
        raise LedgerTooNew(
            f"the ledger {_path_of(db)} has schema version {current}, newer than this ai-employee knows"
            f" ({len(migrations)}): upgrade ai-employee, or restore a backup made by this version"
        )
    for version in range(current, len(migrations)):
        db.execute("BEGIN IMMEDIATE")
        try:
            migrations[version](db)
            db.execute(f"PRAGMA user_version = {version + 1:d}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        reached.append(version + 1)
    return reached


def _path_of(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row is not None else "(memory)"


#: json.dumps(value, default=str) with one encoder, not one built per call (intake writes thousands of rows)
_encode_default_str = json.JSONEncoder(default=str).encode


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class ActionRow:
    action_id: str
    source: str
    source_ref: str | None
    state: str
    note_rel: str
    plan_id: str
    plan_rel: str
    attachments: list[str] = field(default_factory=list)
    inbox_name: str | None = None
    inbox_dev: int | None = None
    inbox_ino: int | None = None
    title: str = ""
    sender: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    dedup_key: str | None = None
    created_at: str = ""


@dataclass
class ExecutionRow:
    plan_id: str
    action_id: str | None
    state: str
    content_hash: str | None = None
    attempts: int = 0
    action: str | None = None
    dry_run: bool | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    note_rel: str | None = None
    final_rel: str | None = None
    updated_at: str = ""


class Ledger:
    """Thread-safe: one connection behind a lock (SQLite work here is tiny and fsync-bound)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        try:
            migrate(self._db)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    # --- actions -----------------------------------------------------------------------

    def insert_actions(self, rows: Sequence[ActionRow], audit: Sequence[AuditRecord] = ()) -> None:
        stamp = now_iso()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO actions (action_id, source, source_ref, dedup_key, state, inbox_name, inbox_dev,"
                " inbox_ino, attachments, note_rel, plan_id, plan_rel, title, sender, extra, created_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        row.action_id,
                        row.source,
                        row.source_ref,
                        row.dedup_key,
                        row.state,
                        row.inbox_name,
                        row.inbox_dev,
                        row.inbox_ino,
                        json.dumps(row.attachments),
                        row.note_rel,
                        row.plan_id,
                        row.plan_rel,
                        row.title,
                        row.sender,
                        _encode_default_str(row.extra),
                        row.created_at or stamp,
                        stamp,
                    )
                    for row in rows
                ],
            )
            self._add_audit(db, audit)

    def set_action_state(
        self,
        updates: Sequence[tuple[str, str, str | None]],
        audit: Sequence[AuditRecord] = (),
    ) -> None:
        """(action_id, state, note_rel or None to keep it)."""
        stamp = now_iso()
        with self.transaction() as db:
            db.executemany(
                "UPDATE actions SET state = ?, note_rel = COALESCE(?, note_rel), updated_at = ?"
                " WHERE action_id = ?",
                [(state, note_rel, stamp, action_id) for action_id, state, note_rel in updates],
            )
            self._add_audit(db, audit)

    def drop_claims(self, action_ids: Sequence[str]) -> None:
        """Forget claims that never took effect (nothing was linked or written for them)."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM actions WHERE action_id = ? AND state = 'claimed'",
                [(action_id,) for action_id in action_ids],
            )

    def update_action_extra(self, action_id: str, extra: Mapping[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE actions SET extra = ?, updated_at = ? WHERE action_id = ?",
                (json.dumps(dict(extra), default=str), now_iso(), action_id),
            )

    def action(self, action_id: str) -> ActionRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM actions WHERE action_id = ?", (action_id,)).fetchone()
        return _action_row(row) if row else None

    def taken_action_ids(self, action_ids: Sequence[str]) -> set[str]:
        """Which of these ids the ledger already holds (ids carry a short random part)."""
        if not action_ids:
            return set()
        marks = ",".join("?" * len(action_ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT action_id FROM actions WHERE action_id IN ({marks})",  # noqa: S608 - placeholders only
                list(action_ids),
            ).fetchall()
        return {str(row[0]) for row in rows}

    def action_by_plan(self, plan_id: str) -> ActionRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM actions WHERE plan_id = ?", (plan_id,)).fetchone()
        return _action_row(row) if row else None

    def action_by_dedup(self, dedup_key: str) -> ActionRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM actions WHERE dedup_key = ?", (dedup_key,)).fetchone()
        return _action_row(row) if row else None

    def claimed_inbox_names(self) -> dict[str, int | None]:
        """Inode of each unfinished inbox claim, by inbox name (few: what a crash interrupted and the
        batches being written; two columns only, as a burst asks once per batch)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT inbox_name, inbox_ino FROM actions"
                " WHERE state IN ('claimed', 'noted') AND inbox_name IS NOT NULL"
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def unfinished_actions(self) -> list[ActionRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM actions WHERE state IN ('claimed', 'noted')").fetchall()
        return [_action_row(row) for row in rows]

    def count_actions(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM actions").fetchone()[0])

    # --- executions --------------------------------------------------------------------

    def execution(self, plan_id: str) -> ExecutionRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM executions WHERE plan_id = ?", (plan_id,)).fetchone()
        return _execution_row(row) if row else None

    def upsert_execution(
        self, row: ExecutionRow, audit: Sequence[AuditRecord] = (), *, durable: bool = True
    ) -> None:
        with self.transaction(durable=durable) as db:
            db.execute(
                "INSERT INTO executions (plan_id, action_id, state, content_hash, attempts, action, dry_run,"
                " result, error, note_rel, final_rel, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(plan_id) DO UPDATE SET action_id=excluded.action_id, state=excluded.state,"
                " content_hash=excluded.content_hash, attempts=excluded.attempts, action=excluded.action,"
                " dry_run=excluded.dry_run, result=excluded.result, error=excluded.error,"
                " note_rel=excluded.note_rel, final_rel=excluded.final_rel, updated_at=excluded.updated_at",
                (
                    row.plan_id,
                    row.action_id,
                    row.state,
                    row.content_hash,
                    row.attempts,
                    row.action,
                    None if row.dry_run is None else int(row.dry_run),
                    None if row.result is None else json.dumps(row.result, default=str),
                    row.error,
                    row.note_rel,
                    row.final_rel,
                    now_iso(),
                ),
            )
            self._add_audit(db, audit)

    def open_executions(self) -> list[ExecutionRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM executions WHERE state IN ('approved', 'running', 'executed', 'failing')"
            ).fetchall()
        return [_execution_row(row) for row in rows]

    def actions_behind_executions(self) -> list[tuple[str, str]]:
        """(action id, state) where a decided plan's action note was not yet brought along (crash)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.action_id, e.state FROM executions e JOIN actions a ON a.plan_id = e.plan_id"
                " WHERE e.state IN ('done', 'failed', 'rejected') AND a.state != e.state"
            ).fetchall()
        return [(str(row[0]), str(row[1])) for row in rows]

    def recent_executions(self, limit: int = 15) -> list[ExecutionRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM executions WHERE state IN ('done', 'failed') ORDER BY updated_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_execution_row(row) for row in rows]

    # --- journal, kv, costs --------------------------------------------------------------

    def journal_get(self, plan_id: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM journal WHERE plan_id = ? AND key = ?", (plan_id, key)
            ).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = json.loads(row[0])
        return value

    def journal_put(self, plan_id: str, key: str, value: Mapping[str, Any]) -> None:
        with self.transaction(durable=True) as db:
            db.execute(
                "INSERT INTO journal (plan_id, key, value) VALUES (?,?,?)"
                " ON CONFLICT(plan_id, key) DO UPDATE SET value = excluded.value",
                (plan_id, key, json.dumps(dict(value), default=str)),
            )

    def kv_get(self, namespace: str, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        return None if row is None else str(row[0])

    def kv_put(self, namespace: str, key: str, value: str) -> None:
        with self.transaction(durable=True) as db:
            db.execute(
                "INSERT INTO kv (namespace, key, value) VALUES (?,?,?)"
                " ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value",
                (namespace, key, value),
            )

    def add_cost(self, day: str, planner: str, usd: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO costs (day, planner, usd) VALUES (?,?,?)"
                " ON CONFLICT(day, planner) DO UPDATE SET usd = usd + excluded.usd",
                (day, planner, usd),
            )

    def cost(self, day: str) -> float:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(usd), 0) FROM costs WHERE day = ?", (day,)).fetchone()
        return float(row[0])

    # --- audit outbox ------------------------------------------------------------------

    def _add_audit(self, db: sqlite3.Connection, records: Sequence[AuditRecord]) -> None:
        if records:
            db.executemany(
                "INSERT OR IGNORE INTO outbox (event_id, day, line) VALUES (?,?,?)",
                [(record.event_id, record.day, record.line) for record in records],
            )

    def add_audit(self, records: Sequence[AuditRecord]) -> None:
        with self.transaction() as db:
            self._add_audit(db, records)

    def pending_audit(self, after_seq: int, limit: int = 5000) -> list[tuple[int, str, str, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, day, line FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [(int(row[0]), str(row[1]), str(row[2]), str(row[3])) for row in rows]

    def prune_audit(self, up_to_seq: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,))

    # --- what changed since (the audit store's catch-up at start) --------------------------

    def actions_since(self, stamp: str) -> list[ActionRow]:
        """Actions written or changed at or after `stamp` (ISO, UTC); "" for all, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM actions WHERE updated_at >= ? AND state NOT IN ('claimed', 'abandoned')"
                " ORDER BY created_at",
                (stamp,),
            ).fetchall()
        return [_action_row(row) for row in rows]

    def executions_since(self, stamp: str) -> list[ExecutionRow]:
        """Executions changed at or after `stamp` (ISO, UTC); "" for all."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM executions WHERE updated_at >= ? ORDER BY updated_at", (stamp,)
            ).fetchall()
        return [_execution_row(row) for row in rows]


@dataclass(frozen=True)
class AuditRecord:
    event_id: str
    day: str  # YYYY-MM-DD (UTC): the log file it belongs to
    line: str  # the JSON object, one line


def _action_row(row: sqlite3.Row) -> ActionRow:
    return ActionRow(
        action_id=row["action_id"],
        source=row["source"],
        source_ref=row["source_ref"],
        state=row["state"],
        note_rel=row["note_rel"],
        plan_id=row["plan_id"],
        plan_rel=row["plan_rel"],
        attachments=json.loads(row["attachments"]),
        inbox_name=row["inbox_name"],
        inbox_dev=row["inbox_dev"],
        inbox_ino=row["inbox_ino"],
        title=row["title"],
        sender=row["sender"],
        extra=json.loads(row["extra"]),
        dedup_key=row["dedup_key"],
        created_at=row["created_at"],
    )


def _execution_row(row: sqlite3.Row) -> ExecutionRow:
    return ExecutionRow(
        plan_id=row["plan_id"],
        action_id=row["action_id"],
        state=row["state"],
        content_hash=row["content_hash"],
        attempts=int(row["attempts"]),
        action=row["action"],
        dry_run=None if row["dry_run"] is None else bool(row["dry_run"]),
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        note_rel=row["note_rel"],
        final_rel=row["final_rel"],
        updated_at=row["updated_at"],
    )
