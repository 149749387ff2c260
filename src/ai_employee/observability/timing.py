"""The performance tracker: one `timer()` context manager and one `timed_operation` decorator
for every step and every outside call.

    with timer("execute") as timing:
        ...
    duration_ms = timing.ms                     # into the checkpoint

    @timed_operation("atlas.request")
    async def request(...): ...

Each timing goes to the histogram `aie_operation_duration_seconds{operation}` once the daemon
has bound its metrics (`bind`); before that, and in tools and tests that bind nothing, a timer
only measures. Decorators are applied when a module is imported, long before the daemon builds
its `Metrics`, which is why the sink is bound here once rather than passed to each call.
Operation names are few and fixed (step and call names), never ids.

A timing is appended to a queue (one atomic `deque.append`) and observed in the histogram in
bulk: when `/metrics` is rendered (`flush`), or every `FLUSH_EVERY` timings. A histogram
observation takes a lock and walks the buckets (~3 µs here), which would be most of the cost of
a call; `OperationDurations` keeps the histogram in plain lists and takes a whole queue under one
lock, so a timed call costs about a microsecond (bench/store.py measures it; target 5 µs).
"""

from __future__ import annotations

import functools
import inspect
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

P = ParamSpec("P")
T = TypeVar("T")

FLUSH_EVERY = 4096
NAME = "aie_operation_duration_seconds"


class OperationDurations(Collector):
    """`aie_operation_duration_seconds{operation}`, a Prometheus histogram kept in plain lists:
    an observation is a bisect and two additions under one lock for a whole queue of them,
    where prometheus_client's Histogram takes a lock and walks its buckets per observation."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = list(buckets)
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, timings: Iterable[tuple[str, float]]) -> None:
        bounds = self.bounds
        with self._lock:
            for operation, seconds in timings:
                counts = self._counts.get(operation)
                if counts is None:
                    counts = self._counts[operation] = [0] * (len(bounds) + 1)
                    self._sums[operation] = 0.0
                counts[bisect_left(bounds, seconds)] += 1
                self._sums[operation] += seconds

    def collect(self) -> Iterator[Metric]:
        flush()
        family = HistogramMetricFamily(
            NAME, "Time one step or outside call took (observability.timing).", labels=["operation"]
        )
        with self._lock:
            series = [
                (operation, list(counts), self._sums[operation]) for operation, counts in self._counts.items()
            ]
        for operation, counts, total in sorted(series):
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip([*map(floatToGoString, self.bounds), "+Inf"], counts, strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric([operation], buckets, total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(NAME, "Time one step or outside call took.", labels=["operation"])

    def count(self, operation: str) -> int:
        flush()
        with self._lock:
            return sum(self._counts.get(operation, ()))


_sink: OperationDurations | None = None
_queued: deque[tuple[str, float]] = deque()


def bind(sink: OperationDurations | None) -> None:
    """Send every timing to `sink` (the daemon's metrics); None: measure only."""
    global _sink
    flush()
    _sink = sink


def flush() -> None:
    """Hand the queued timings to the sink (done before every render of the metrics)."""
    sink = _sink
    taken: list[tuple[str, float]] = []
    while True:
        try:
            taken.append(_queued.popleft())
        except IndexError:
            break
    if sink is not None and taken:
        sink.add(taken)


class timer:  # lower case: used like a function, `with timer("plan"):`
    """Time the block; `seconds` and `ms` hold the duration once it is left (also on an error)."""

    __slots__ = ("operation", "seconds", "started")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> timer:
        self.started = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.seconds = seconds = perf_counter() - self.started
        if _sink is not None:
            _queued.append((self.operation, seconds))
            if len(_queued) >= FLUSH_EVERY:
                flush()

    @property
    def ms(self) -> float:
        return round(self.seconds * 1000.0, 3)


def timed_operation(operation: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a function or coroutine function: each call is timed as `operation`."""

    def decorate(function: Callable[P, T]) -> Callable[P, T]:
        if inspect.iscoroutinefunction(function):
            coroutine = cast(Callable[P, Awaitable[Any]], function)

            @functools.wraps(function)
            async def timed_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with timer(operation):
                    return await coroutine(*args, **kwargs)

            return cast(Callable[P, T], timed_async)

        @functools.wraps(function)
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            with timer(operation):
                return function(*args, **kwargs)

        return timed

    return decorate
