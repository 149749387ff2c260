"""The in-process bus: the default backend when one daemon does everything.

Delivery runs on the event loop the bus was started on. Watcher threads (watchdog, IMAP)
publish from their own threads; the bus hands those events to the loop with
`call_soon_threadsafe`, so subscribers never need locks of their own.

Publishing is on the hot path (a burst of thousands of inbox files a second), so the
subscriber lists are immutable tuples rebuilt on (rare) subscribe/unsubscribe, and an event
nobody listens to costs one dict lookup, one history append and one counter update.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog

from ai_employee.model.bus import EventBus, EventHandler, Subscription
from ai_employee.model.events import Event, EventType

log = structlog.get_logger(__name__)

DEFAULT_HISTORY_SIZE = 1000
DEFAULT_MAX_QUEUED_BEFORE_START = 10_000
DEFAULT_CLOSE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class _Subscriber:
    subscription: Subscription
    handler: EventHandler
    is_async: bool


# An async delivery waiting for the loop: the subscriber, the event, and the awaitable a
# sync-looking handler already returned (None: call the async handler when it is scheduled).
_Queued = tuple[_Subscriber, Event, Awaitable[None] | None]


def _is_async_handler(handler: EventHandler) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    # A callable object whose __call__ is async.
    return inspect.iscoroutinefunction(type(handler).__call__)


def _handler_name(handler: EventHandler) -> str:
    module = getattr(handler, "__module__", None) or ""
    qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{qualname}" if module else qualname


class InProcessEventBus(EventBus):
    """Publish/subscribe inside one process, bound to one event loop by `start()`.

    Before `start()` (and after `close()`), `publish` runs the sync subscribers in the
    caller's thread and queues async deliveries until the next `start()`, so components
    wired up before the loop runs lose nothing.
    """

    def __init__(
        self,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        max_queued_before_start: int = DEFAULT_MAX_QUEUED_BEFORE_START,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if history_size < 0:
            raise ValueError("history_size must be >= 0")
        self._lock = threading.Lock()
        self._history: deque[Event] = deque(maxlen=history_size)
        self._history_size = history_size
        self._close_timeout = close_timeout
        self._next_id = 0
        self._subscribers: dict[int, _Subscriber] = {}
        # Copy-on-write views read without the lock by publish().
        self._wildcards: tuple[_Subscriber, ...] = ()
        self._targets: dict[EventType, tuple[_Subscriber, ...]] = {}
        self._published: dict[EventType, int] = {}
        self._published_total = 0
        self._handler_errors = 0
        self._errors_by_subscriber: dict[str, int] = {}
        self._dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._queued: deque[_Queued] = deque(maxlen=max_queued_before_start)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(
        self, event_type: EventType | None, handler: EventHandler, *, name: str | None = None
    ) -> Subscription:
        with self._lock:
            self._next_id += 1
            subscription = Subscription(
                id=self._next_id, event_type=event_type, name=name or _handler_name(handler)
            )
            self._subscribers[subscription.id] = _Subscriber(
                subscription, handler, _is_async_handler(handler)
            )
            self._rebuild_targets()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if self._subscribers.pop(subscription.id, None) is not None:
                self._rebuild_targets()

    def _rebuild_targets(self) -> None:
        """Precompute, per event type, who gets it, in subscription order. Caller holds the lock."""
        ordered = sorted(self._subscribers.values(), key=lambda s: s.subscription.id)
        self._wildcards = tuple(s for s in ordered if s.subscription.event_type is None)
        self._targets = {
            event_type: tuple(s for s in ordered if s.subscription.event_type in (None, event_type))
            for event_type in EventType
        }

    # -- publishing ----------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        with self._lock:
            self._history.append(event)
            self._published[event.type] = self._published.get(event.type, 0) + 1
            self._published_total += 1
        targets = self._targets.get(event.type, self._wildcards)
        if not targets:
            return
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._deliver(event, targets)
        else:
            self._call_in_loop(loop, event, self._deliver, event, targets)

    def _call_in_loop(
        self, loop: asyncio.AbstractEventLoop, event: Event, callback: Callable[..., None], *args: Any
    ) -> None:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop was closed without close() on the bus
            with self._lock:
                self._dropped += 1
            log.warning("bus.loop_closed", event_id=event.id, event_type=event.type.value)

    def _deliver(self, event: Event, targets: tuple[_Subscriber, ...]) -> None:
        for subscriber in targets:
            if subscriber.is_async:
                self._schedule(subscriber, event, None)
                continue
            try:
                result = cast(Callable[[Event], object], subscriber.handler)(event)
            except Exception as exc:
                self._handler_failed(subscriber, event, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                self._schedule(subscriber, event, cast(Awaitable[None], result))

    def _schedule(self, subscriber: _Subscriber, event: Event, awaitable: Awaitable[None] | None) -> None:
        if self._loop is not None and threading.get_ident() == self._loop_thread:
            self._spawn(subscriber, event, awaitable)
            return
        dropped = None
        with self._lock:
            loop = self._loop
            if loop is None:
                dropped = self._enqueue((subscriber, event, awaitable))
        if loop is None:
            if dropped is not None:
                _drop(dropped[1], dropped[2], "bus.queue_full_dropped")
            return
        self._call_in_loop(loop, event, self._spawn, subscriber, event, awaitable)

    def _enqueue(self, item: _Queued) -> _Queued | None:
        """Keep an async delivery for the next start(); return the oldest one if it had to go.

        Caller holds the lock.
        """
        dropped = None
        if len(self._queued) == self._queued.maxlen:
            self._dropped += 1
            dropped = self._queued.popleft()
        self._queued.append(item)
        return dropped

    def _spawn(self, subscriber: _Subscriber, event: Event, awaitable: Awaitable[None] | None) -> None:
        """Start one async delivery as a task. Runs on the loop thread only."""
        loop = self._loop
        if loop is None:  # closed between hand-over and now: keep it for the next start
            with self._lock:
                dropped = self._enqueue((subscriber, event, awaitable))
            if dropped is not None:
                _drop(dropped[1], dropped[2], "bus.queue_full_dropped")
            return
        coro = self._run_async(subscriber, event, awaitable)
        try:
            task = loop.create_task(coro, name=f"bus:{subscriber.subscription.name}:{event.type.value}")
        except RuntimeError:  # the loop was closed without close() on the bus
            coro.close()
            with self._lock:
                self._dropped += 1
            _drop(event, awaitable, "bus.loop_closed")
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_async(
        self, subscriber: _Subscriber, event: Event, awaitable: Awaitable[None] | None
    ) -> None:
        try:
            if awaitable is None:
                awaitable = cast(Callable[[Event], Awaitable[None]], subscriber.handler)(event)
            await awaitable
        except Exception as exc:
            self._handler_failed(subscriber, event, exc)

    def _handler_failed(self, subscriber: _Subscriber, event: Event, exc: Exception) -> None:
        name = subscriber.subscription.name
        with self._lock:
            self._handler_errors += 1
            self._errors_by_subscriber[name] = self._errors_by_subscriber.get(name, 0) + 1
        log.error(
            "bus.handler_failed",
            event_id=event.id,
            event_type=event.type.value,
            subscriber=name,
            correlation_id=event.correlation_id,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is loop:
                return
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError("the bus is already bound to another running event loop")
            self._loop_thread = threading.get_ident()
            self._loop = loop
            queued = list(self._queued)
            self._queued.clear()
        for subscriber, event, awaitable in queued:
            self._spawn(subscriber, event, awaitable)
        log.debug("bus.started", queued=len(queued))

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the interface's
        """Wait for the async deliveries in flight, and for those they cause in turn.

        Deliveries queued before start() are not in flight: they wait for start().
        Raises TimeoutError when they have not all finished within `timeout` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            # One trip round the loop runs every hand-over other threads queued before now.
            await asyncio.sleep(0)
            pending = set(self._tasks)
            if not pending:
                return
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"{len(pending)} bus handler(s) still running")
            await asyncio.wait(pending, timeout=remaining)

    async def close(self) -> None:
        """Unbind from the loop, wait for the deliveries in flight, cancel those that overrun.

        The wait is bounded by the constructor's close_timeout. Events published afterwards
        are handled as before start(): sync subscribers run, async ones wait for a new start().
        """
        with self._lock:
            self._loop = None
            self._loop_thread = None
        try:
            await self.drain(self._close_timeout)
        except TimeoutError:
            stuck = list(self._tasks)
            log.warning("bus.close_cancelling", handlers=len(stuck))
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    # -- introspection -------------------------------------------------------------------

    def history(self, limit: int | None = None, correlation_id: str | None = None) -> Sequence[Event]:
        """Oldest first; at most the last `limit` events (matching `correlation_id` if given)."""
        with self._lock:
            if correlation_id is None:
                events = list(self._history)
            else:
                events = [e for e in self._history if e.correlation_id == correlation_id]
        if limit is not None:
            events = events[-limit:] if limit > 0 else []
        return events

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "backend": "inprocess",
                "published": {t.value: n for t, n in self._published.items()},
                "published_total": self._published_total,
                "handler_errors": self._handler_errors,
                "handler_errors_by_subscriber": dict(self._errors_by_subscriber),
                "subscribers": len(self._subscribers),
                "pending_async": len(self._tasks) + len(self._queued),
                "dropped": self._dropped,
                "history_size": len(self._history),
                "history_limit": self._history_size,
                "started": self._loop is not None,
            }


def _drop(event: Event, awaitable: Awaitable[None] | None, reason: str) -> None:
    """Give up one async delivery: say so, and close a coroutine that will never run."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    log.warning(reason, event_id=event.id, event_type=event.type.value)
