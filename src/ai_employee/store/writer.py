"""The store's writer: facts are queued by the loop (one `put`, nothing more: even turning an event
into records happens here) and written by one thread in batches, one transaction per batch, off
the hot path. A batch is written once the events have paused for `linger` seconds: alone, an
event is written a second after it came; in a burst, the writer waits for the burst to end (up to
`max_lag` seconds, or `BATCH_MAX` events, then it writes what it has and goes on), so that its CPU,
and with it the GIL, are not taken from the vault path while the vault path is busy
(docs/performance.md: written during a burst, the same work slowed it by 10-30%).

When the database cannot be reached, the batch goes to a local spool (`store-spool.jsonl` in the
vault's state folder, appended and fsynced) and so does everything after it, in order; the writer
tries the database again with a growing wait and, once it answers, writes the spool in order,
then empties it. A spool left by an earlier run is written first at the next start. Writes are
idempotent (keys), so a batch written and then spooled again by a crash is harmless.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, Table, and_, bindparam, case, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from ai_employee.store import schema
from ai_employee.store.database import reason
from ai_employee.store.records import Record

log = structlog.get_logger(__name__)

SPOOL_FILE = "store-spool.jsonl"
BATCH_MAX = 50_000  # events (a 10,000-file burst announces 20,000); a few kB each in memory
REPLAY_CHUNK = 2000
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
LINGER_SECONDS = 1.0  # a pause in the events this long ends a batch: a burst has none that long
MAX_LAG_SECONDS = 10.0  # the longest the store lags behind the vault while events keep coming
WRITER_NICE = 10

_TABLES: dict[str, Table] = {
    "tasks": schema.tasks,
    "checkpoints": schema.checkpoints,
    "interventions": schema.interventions,
    "artifacts": schema.artifacts,
    "costs": schema.costs,
}
_STOP = object()


class _Inbox:
    """What the writer has to do: a deque the loop appends to, which wakes the writer only when
    it waits for a first item, never once per item (a queue's wake-up per event, each a hand-over
    of the GIL between the loop and the writer, cost a burst more than the writing itself)."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._arrived = threading.Event()
        self._hurry = threading.Event()  # a stop: end a lingering window now
        self._waiting = False

    def put(self, item: Any) -> None:
        self._items.append(item)
        if self._waiting:
            self._arrived.set()

    def put_urgent(self, item: Any) -> None:
        self._items.append(item)
        self._hurry.set()
        self._arrived.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until there is something (True) or `timeout` passed (False)."""
        self._waiting = True
        try:
            if not self._items:
                self._arrived.wait(timeout)
        finally:
            self._waiting = False
            self._arrived.clear()
        return bool(self._items)

    def take(self, limit: int) -> list[Any]:
        """Up to `limit` items, without waiting."""
        taken: list[Any] = []
        items = self._items
        while items and len(taken) < limit:
            taken.append(items.popleft())
        return taken

    def pause(self, seconds: float) -> None:
        """A lingering window: wait `seconds`, or less if a stop comes."""
        if seconds > 0:
            self._hurry.wait(seconds)


@dataclass(frozen=True)
class WriterState:
    state: str  # "writing" (the database answers) | "spooling" (records wait in the local spool)
    spooled: int  # records in the spool
    written: int  # records written to the database since start
    last_error: str | None
    down_since: float | None  # time.time() of the first failure, while spooling

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "spooled": self.spooled,
            "written": self.written,
            "last_error": self.last_error,
            "down_since": self.down_since,
        }


class StoreWriter:
    def __init__(
        self,
        engine: Engine,
        spool_path: Path,
        *,
        target: str = "",
        on_written: Callable[[int], None] | None = None,
        retry_initial: float = RETRY_INITIAL_SECONDS,
        retry_max: float = RETRY_MAX_SECONDS,
        translate: Callable[[Any], Sequence[Record]] | None = None,
        linger: float = LINGER_SECONDS,
        max_lag: float = MAX_LAG_SECONDS,
    ) -> None:
        self.engine = engine
        self.spool_path = spool_path
        self.target = target
        self._on_written = on_written
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self.translate = translate
        self._linger = linger
        self._max_lag = max_lag
        self._inbox = _Inbox()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # chunks submitted, not yet written or spooled
        self._spooled = self._count_spool()
        self._written = 0
        self._last_error: str | None = None
        self._down_since: float | None = None
        self._postgres = engine.dialect.name == "postgresql"
        self._statements: dict[str, Any] = {}
        self._compiled: dict[int, tuple[str, list[str], bool]] = {}

    # --- the loop's side --------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="aie-store", daemon=True)
            self._thread.start()

    def submit(self, records: Sequence[Record]) -> None:
        """Queue records for writing; never blocks, never touches the database."""
        if records:
            self.submit_raw(records)

    def submit_raw(self, item: Any) -> None:
        """Queue a list of records, or anything `translate` turns into records (a bus event)."""
        with self._lock:
            self._pending += 1
        self._inbox.put(item)

    def state(self) -> WriterState:
        with self._lock:
            spooling = self._spooled > 0 or self._down_since is not None
            return WriterState(
                state="spooling" if spooling else "writing",
                spooled=self._spooled,
                written=self._written,
                last_error=self._last_error,
                down_since=self._down_since,
            )

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written or spooled (tests, stop)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (or spool it), then stop the thread."""
        if self._thread is None:
            return
        self._inbox.put_urgent(_STOP)
        self._thread.join(timeout)
        self._thread = None

    # --- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        # The store's CPU must not come out of the vault path's: on Linux a thread has a nice value
        # of its own, and a lower one lets the scheduler (and so the GIL) favour the other threads.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
        wait = self._retry_initial
        stopping = False
        if self._spooled:
            self._replay_spool()
        while True:
            if self._spooled and not stopping:
                # the database was away: try it again after the wait, or earlier if records arrive
                arrived = self._inbox.wait(wait)
                batch = self._collect(linger=False) if arrived else []
                if not any(chunk is _STOP for chunk in batch):
                    wait = self._retry_initial if self._replay_spool() else min(wait * 2, self._retry_max)
                    if not arrived:
                        continue
            else:
                self._inbox.wait()
                batch = self._collect(linger=True)
            if any(chunk is _STOP for chunk in batch):
                stopping = True
            chunks = [chunk for chunk in batch if chunk is not _STOP]
            records = self._records(chunks)
            if records:
                if self._spooled:
                    self._spool(records)
                else:
                    try:
                        self._write(records)
                        self._written_ok(len(records))
                    except SQLAlchemyError as error:
                        self._went_away(error)
                        self._spool(records)
            if chunks:
                self._done(len(chunks))
            if stopping:
                if self._spooled and self._down_since is None:
                    self._replay_spool()
                return

    def _collect(self, *, linger: bool) -> list[Any]:
        """What is there, and with `linger` what goes on arriving: until the chunks pause for a
        whole linger window, `max_lag` after the first at the latest (a window that also ends on
        a full batch or a stop)."""
        batch = self._inbox.take(BATCH_MAX)
        if not linger:
            return batch
        latest = time.monotonic() + self._max_lag
        more = batch
        while not any(chunk is _STOP for chunk in more) and len(batch) < BATCH_MAX:
            left = latest - time.monotonic()
            if left <= 0:
                break
            self._inbox.pause(min(self._linger, left))
            more = self._inbox.take(BATCH_MAX - len(batch))
            if not more:
                break
            batch.extend(more)
        return batch

    def _records(self, chunks: list[Any]) -> list[Record]:
        records: list[Record] = []
        for chunk in chunks:
            if isinstance(chunk, (list, tuple)):
                records.extend(chunk)
            elif self.translate is not None:
                try:
                    records.extend(self.translate(chunk))
                except Exception:  # a bug in one translation must not stop the store
                    log.exception("audit store: an event could not be turned into records")
        return records

    def _done(self, count: int) -> None:
        with self._idle:
            self._pending -= count
            if self._pending <= 0:
                self._pending = 0
                self._idle.notify_all()

    def _written_ok(self, count: int) -> None:
        with self._lock:
            self._written += count
            if self._down_since is not None:
                log.info(
                    "audit store reachable again",
                    target=self.target,
                    down_seconds=round(time.time() - self._down_since, 1),
                )
            self._down_since = None
            self._last_error = None
        if self._on_written is not None:
            self._on_written(count)

    def _went_away(self, error: SQLAlchemyError) -> None:
        why = reason(error)
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.time()
            self._last_error = f"{self.target} {why}".strip()
        if first:
            log.warning(
                "audit store unreachable: keeping records in the local spool",
                target=self.target,
                error=why,
                spool=str(self.spool_path),
            )

    # --- the spool -------------------------------------------------------------------------------

    def _count_spool(self) -> int:
        try:
            with self.spool_path.open("rb") as handle:
                return sum(1 for line in handle if line.strip())
        except FileNotFoundError:
            return 0

    def _spool(self, records: Iterable[Record]) -> None:
        lines = [record.to_line() for record in records]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        fd = os.open(self.spool_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if size == 0:
            dir_fd = os.open(self.spool_path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        with self._lock:
            self._spooled += len(lines)

    def _replay_spool(self) -> bool:
        """Write the spool to the database in order; True once it is written and emptied."""
        try:
            raw = self.spool_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            with self._lock:
                self._spooled = 0
            return True
        records: list[Record] = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                records.append(Record.from_line(line))
            except (ValueError, KeyError, TypeError):
                log.warning("audit store spool: a torn line was skipped")  # a crash mid-append
        try:
            for start in range(0, len(records), REPLAY_CHUNK):
                self._write(records[start : start + REPLAY_CHUNK])
        except SQLAlchemyError as error:
            self._went_away(error)
            return False
        os.unlink(self.spool_path)
        with self._lock:
            self._spooled = 0
        self._written_ok(len(records))
        log.info("audit store spool written", records=len(records), target=self.target)
        return True

    # --- one transaction per batch -------------------------------------------------------------

    def _write(self, records: Sequence[Record]) -> None:
        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            by_table[record.table].append(record.values)
        with self.engine.begin() as connection:
            if "tasks" in by_table:
                self._merge_tasks(connection, by_table.pop("tasks"))
            for name, rows in by_table.items():
                self._insert_new(connection, _TABLES[name], rows)
            costs = by_table.get("costs")
            if costs:
                self._sum_costs(connection, {row["action_id"] for row in costs if row.get("action_id")})

    def _insert(self, table: Table, names: list[str]) -> Any:
        """`INSERT INTO table (names)` taking many rows in one statement execution. SQLite: a
        VALUES row, run by the driver's executemany. PostgreSQL: one array per column, unnested
        on the server (`INSERT ... SELECT unnest(:a), unnest(:b) ...`): one statement for the
        whole batch instead of a Bind/Execute per row, which costs the server, on the same cores
        as the daemon, most of what the store costs a burst (decision 0015)."""
        if not self._postgres:
            return sqlite.insert(table).values({name: bindparam(name) for name in names})
        arrays = select(
            *(func.unnest(bindparam(name, type_=postgresql.ARRAY(table.c[name].type))) for name in names)
        )
        return postgresql.insert(table).from_select(names, arrays)

    def _execute_many(self, connection: Connection, statement: Any, rows: list[dict[str, Any]]) -> None:
        """Run one statement for many rows through the driver's executemany: compiled once per
        table and dialect, the rows as plain tuples, without SQLAlchemy's per-row parameter
        processing (most of the store's CPU in a burst; the columns are text and numbers, which
        need no conversion)."""
        key = id(statement)
        compiled = self._compiled.get(key)
        if compiled is None:
            built = statement.compile(dialect=connection.dialect)
            names = list(built.positiontup or built.params)
            compiled = self._compiled[key] = (str(built), names, bool(built.positional))
        sql, names, positional = compiled
        if self._postgres:  # one execution, a list per column (`_insert`)
            connection.exec_driver_sql(sql, {name: [row.get(name) for row in rows] for name in names})
        elif positional:
            connection.exec_driver_sql(sql, [tuple(row.get(name) for name in names) for row in rows])
        else:
            connection.exec_driver_sql(sql, [{name: row.get(name) for name in names} for row in rows])

    def _insert_new(self, connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
        statement = self._statements.get(table.name)
        if statement is None:
            names = [column.name for column in table.columns if column.name != "id"]
            statement = self._statements[table.name] = self._insert(table, names).on_conflict_do_nothing(
                index_elements=["key"]
            )
        self._execute_many(connection, statement, rows)

    def _merge_tasks(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        """Fold the facts of one batch per item, then upsert: later facts win, gaps keep what was."""
        merged: dict[str, dict[str, Any]] = {}
        for row in rows:
            current = merged.get(row["action_id"])
            if current is None:
                merged[row["action_id"]] = dict(row)
                continue
            created = min(current.get("created_at", row["created_at"]), row["created_at"])
            if row["updated_at"] >= current["updated_at"]:
                current.update(row)
            else:
                current.update({key: value for key, value in row.items() if key not in current})
            current["created_at"] = created
        for row in merged.values():
            row.setdefault("cost_usd", 0.0)
            row.setdefault("status", "")  # not said by these facts (a `task.linked`): the row's stands
        self._execute_many(connection, self._task_upsert(), list(merged.values()))

    def _task_upsert(self) -> Any:
        statement = self._statements.get("tasks")
        if statement is not None:
            return statement
        table = schema.tasks
        columns = [column.name for column in table.columns]
        insert = self._insert(table, columns)
        excluded = insert.excluded
        newer = excluded.updated_at >= table.c.updated_at
        keep_first = {"created_at", "action_id", "cost_usd"}
        update_set: dict[str, Any] = {
            name: func.coalesce(excluded[name], table.c[name])
            for name in columns
            if name not in keep_first | {"status", "updated_at"}
        }
        update_set["status"] = case(
            (and_(newer, excluded.status != literal_column("''")), excluded.status), else_=table.c.status
        )
        update_set["updated_at"] = case((newer, excluded.updated_at), else_=table.c.updated_at)
        update_set["created_at"] = case(
            (excluded.created_at < table.c.created_at, excluded.created_at), else_=table.c.created_at
        )
        statement = self._statements["tasks"] = insert.on_conflict_do_update(
            index_elements=["action_id"], set_=update_set
        )
        return statement

    def _sum_costs(self, connection: Connection, action_ids: set[str]) -> None:
        for action_id in sorted(action_ids):
            total = (
                select(func.coalesce(func.sum(schema.costs.c.usd), 0.0))
                .where(schema.costs.c.action_id == action_id)
                .scalar_subquery()
            )
            connection.execute(
                update(schema.tasks).where(schema.tasks.c.action_id == action_id).values(cost_usd=total)
            )
