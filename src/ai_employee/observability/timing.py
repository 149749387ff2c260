"""The performance tracker: one `timer()` context manager and one `timed_operation` decorator
for every step and every outside call.

    with timer("execute") as timing:
        ...
    duration_ms = timing.ms                     # into the checkpoint

    @timed_operation("atlas.request")
    async def request(...): ...

Each timing is observed in the histogram `aie_operation_duration_seconds{operation}` once the
daemon has bound its metrics (`bind`); before that, and in tools and tests that bind nothing, a
timer only measures. Decorators are applied when a module is imported, long before the daemon
builds its `Metrics`, which is why the sink is bound here once rather than passed to each call.
Operation names are few and fixed (step and call names), never ids.

The cost is two `perf_counter` calls, a dict lookup and one histogram observation: about a
microsecond (bench/bench_store.py measures it; the target is 5 µs).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from prometheus_client import Histogram

P = ParamSpec("P")
T = TypeVar("T")

_observers: dict[str, Callable[[float], None]] = {}
_histogram: Histogram | None = None


def bind(histogram: Histogram | None) -> None:
    """Send every timing to `histogram` (labelled by operation); None: measure only."""
    global _histogram
    _histogram = histogram
    _observers.clear()


def _observer(operation: str) -> Callable[[float], None] | None:
    observe = _observers.get(operation)
    if observe is None and _histogram is not None:
        observe = _observers[operation] = _histogram.labels(operation=operation).observe
    return observe


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
        self.seconds = perf_counter() - self.started
        observe = _observers.get(self.operation) or _observer(self.operation)
        if observe is not None:
            observe(self.seconds)

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
