"""The store's writer keeps out of a burst's way: it writes once the events pause, and no later
than `max_lag` after the first of them while they keep coming (SQLite, the default store)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from ai_employee.store import records as r
from ai_employee.store import schema
from ai_employee.store.database import open_store
from ai_employee.store.writer import StoreWriter


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    opened = open_store(None, tmp_path)
    yield opened
    opened.dispose()


class Burst:
    """Checkpoints submitted every `every` seconds on a thread of their own, as a pipeline would;
    the writer's batches are noted with the number of submissions made before each was written."""

    def __init__(self, count: int, every: float) -> None:
        self.writer: StoreWriter | None = None
        self.count = count
        self.every = every
        self.submitted = 0
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        assert self.writer is not None
        for n in range(self.count):
            at = r.now_iso()
            self.writer.submit([r.checkpoint(f"act-{n}:received", f"act-{n}", "received", at)])
            self.submitted += 1
            time.sleep(self.every)  # the pace of the burst, not a wait for work


def rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(schema.checkpoints)).scalar_one())


def write_burst(engine: Engine, spool: Path, *, count: int, max_lag: float) -> list[int]:
    """`count` checkpoints, one every 0.05 s, through a writer lingering 0.3 s: for each write,
    how many had been submitted when it was done."""
    writes: list[int] = []
    burst = Burst(count, every=0.05)
    writer = StoreWriter(
        engine, spool, linger=0.3, max_lag=max_lag, on_written=lambda _: writes.append(burst.submitted)
    )
    burst.writer = writer
    writer.start()
    burst.thread.start()
    burst.thread.join()
    assert writer.drain(10)
    writer.close()
    assert rows(engine) == count
    return writes


def test_events_that_keep_coming_are_written_once_they_pause(engine: Engine, tmp_path: Path) -> None:
    writes = write_burst(engine, tmp_path / "spool.jsonl", count=20, max_lag=30)

    assert writes == [20]


def test_a_burst_longer_than_max_lag_is_written_every_max_lag(engine: Engine, tmp_path: Path) -> None:
    writes = write_burst(engine, tmp_path / "spool.jsonl", count=30, max_lag=0.4)

    assert len(writes) >= 2 and writes[0] < 30
