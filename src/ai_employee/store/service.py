"""The store as a daemon service: listens to the bus, hands records to the writer, catches up at
start, and reports how it stands with its database (status, /readyz detail)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Engine

from ai_employee.model.bus import EventBus, Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import HealthReport, LinkStatus, Service, ServiceState
from ai_employee.observability.metrics import Metrics
from ai_employee.store.catchup import catch_up
from ai_employee.store.database import database_url, describe
from ai_employee.store.recorder import STORED_EVENTS, records_for
from ai_employee.store.records import Record
from ai_employee.store.writer import SPOOL_FILE, StoreWriter
from ai_employee.vault.layout import VaultLayout
from ai_employee.vault.ledger import Ledger

log = structlog.get_logger(__name__)

CatchUp = Callable[[], Sequence[Record]]


class StoreService(Service):
    name = "store"
    required = False

    def __init__(
        self,
        writer: StoreWriter,
        bus: EventBus,
        metrics: Metrics,
        *,
        catch_up: CatchUp | None = None,
        recovered: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self.writer = writer
        writer.translate = self.translate
        self.bus = bus
        self.metrics = metrics
        self._catch_up = catch_up
        self._pipeline_recovered = recovered  # the pipeline recovered before the store listened
        self._stop = asyncio.Event()
        self._since = datetime.now(UTC)
        self._recovered = asyncio.Event()
        self._subscriptions: list[Subscription] = []

    def on_event(self, event: Event) -> None:
        """The bus's handler: queue the event (one put); the writer's thread does the rest."""
        self.writer.submit_raw(event)

    def translate(self, event: Event) -> list[Record]:
        """On the writer's thread: the event's records; its costs counted in /metrics."""
        found = records_for(event)
        for record in found:
            if record.table == "costs":
                self.metrics.cost_usd.labels(service=record.values["service"]).inc(record.values["usd"])
        return found

    async def run(self) -> None:
        self._stop.clear()
        self._recovered.clear()
        self.writer.start()
        self._listen()
        if self._pipeline_recovered is not None and self._pipeline_recovered():
            self._recovered.set()
        try:
            self.ready.set()
            if self._catch_up is not None:
                await _first(self._recovered.wait(), self._stop.wait())
                if self._recovered.is_set():
                    found = await asyncio.to_thread(self._catch_up)
                    self.writer.submit(list(found))
            await self._stop.wait()
        finally:
            await asyncio.to_thread(self.writer.drain)

    def _listen(self) -> None:
        """Subscribe once, and stay subscribed after a stop: the pipeline, stopping at the same time,
        still announces the steps it finishes; `close` (after every service stopped) lets go."""
        if self._subscriptions:
            return
        self._subscriptions = [
            self.bus.subscribe(event_type, self.on_event, name="store") for event_type in STORED_EVENTS
        ]
        # The catch-up waits for the pipeline's rescan after its recovery: an intake that a crash
        # interrupted is finished by the recovery without an announcement.
        self._subscriptions.append(
            self.bus.subscribe(EventType.RECONCILE_COMPLETED, self._on_rescan, name="store-catch-up")
        )

    def close(self) -> None:
        """Stop listening and write (or spool) what is queued. Blocking: call it from a thread."""
        for subscription in self._subscriptions:
            self.bus.unsubscribe(subscription)
        self._subscriptions = []
        self.writer.close()

    def _on_rescan(self, event: Event) -> None:
        if event.payload.get("after_recovery"):
            self._recovered.set()

    async def stop(self) -> None:
        self._stop.set()

    async def health(self) -> HealthReport:
        state = self.writer.state()
        if state.state == "spooling":
            detail = f"database away: {state.spooled} records kept in the local spool"
            return HealthReport(healthy=True, detail=detail, data=state.to_dict())
        return HealthReport(healthy=True, detail=f"{state.written} records written", data=state.to_dict())

    def link(self) -> LinkStatus | None:
        state = self.writer.state()
        if state.state != "spooling":
            return LinkStatus(ServiceState.RUNNING, self.writer.target, self._since)
        down = datetime.fromtimestamp(state.down_since, UTC) if state.down_since else None
        return LinkStatus(
            ServiceState.RETRYING,
            self.writer.target,
            down or self._since,
            last_error=(state.last_error or "the database is away")
            + f"; {state.spooled} records kept in the local spool",
            down_since=down,
        )


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def build_store_service(
    engine: Engine,
    *,
    url: str | None,
    layout: VaultLayout,
    ledger: Ledger,
    bus: EventBus,
    metrics: Metrics,
    recovered: Callable[[], bool] | None = None,
) -> StoreService:
    """The store's service for one vault: its writer (spool in the vault's state folder) and its
    catch-up from the ledger."""
    writer = StoreWriter(
        engine,
        layout.state_dir / SPOOL_FILE,
        target="database " + describe(database_url(url, layout.state_dir)),
    )
    return StoreService(
        writer, bus, metrics, catch_up=lambda: catch_up(engine, ledger, layout), recovered=recovered
    )
