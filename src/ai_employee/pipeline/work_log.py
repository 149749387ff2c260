"""The work as it happens, one log line per step of an item: received, planned, approved, rejected,
done, failed, quarantined. This is what a person watching `ai-employee start` reads (readable with
`--log-format console`, JSON lines otherwise); the audit log in `Logs/` is the durable record.

A burst (thousands of files a second) is not logged line by line: beyond `max_per_second` lines,
the items are counted and one summary line per second says how many of each there were. The
steps themselves never wait for this log.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from ai_employee.model.bus import EventBus, Subscription
from ai_employee.model.events import Event, EventType

log = structlog.get_logger("ai_employee.work")

#: event type -> (what the line says, the payload keys it shows, in order)
_LINES: dict[EventType, tuple[str, tuple[str, ...]]] = {
    EventType.ACTION_CREATED: ("received", ("action_id", "source", "title", "sender", "note")),
    EventType.PLAN_CREATED: ("planned", ("plan_id", "action", "risk", "planner", "summary", "note")),
    EventType.APPROVAL_GRANTED: ("approved", ("plan_id", "by", "door")),
    EventType.APPROVAL_DENIED: ("rejected", ("plan_id", "by", "door", "reason")),
    EventType.PLAN_EXECUTED: ("done", ("plan_id", "action", "dry_run", "note")),
    EventType.PLAN_FAILED: ("failed", ("plan_id", "action", "error", "note")),
    EventType.INPUT_QUARANTINED: ("quarantined", ("file", "reason")),
}

MAX_PER_SECOND = 20
_MAX_TEXT = 120


class WorkLog:
    """Subscribes to the pipeline's events and writes the lines; `close()` writes what a burst
    still holds."""

    def __init__(
        self,
        bus: EventBus,
        *,
        max_per_second: int = MAX_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._max = max_per_second
        self._clock = clock
        self._window_start = clock()
        self._written = 0
        self._held: Counter[str] = Counter()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._subscriptions: list[Subscription] = [
            bus.subscribe(event_type, self.on_event, name="work-log") for event_type in _LINES
        ]

    def on_event(self, event: Event) -> None:
        what, keys = _LINES[event.type]
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._flush()
            self._window_start = now
            self._written = 0
        if self._written < self._max:
            self._written += 1
            log.info(what, **_fields(event.payload, keys))
            return
        self._held[what] += 1
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # before the bus has a loop: the next event or close() writes it
            return
        delay = max(0.0, 1.0 - (self._clock() - self._window_start))
        self._flush_handle = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._held:
            return
        counts = ", ".join(f"{count} {what}" for what, count in self._held.items())
        log.info(f"burst: {counts} more than the lines above", **dict(self._held))
        self._held.clear()

    def close(self) -> None:
        for subscription in self._subscriptions:
            self._bus.unsubscribe(subscription)
        self._subscriptions.clear()
        self._flush()


def _fields(payload: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in keys:
        value = payload.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, str) and len(value) > _MAX_TEXT:
            value = value[: _MAX_TEXT - 1] + "…"
        fields[key] = value
    return fields
