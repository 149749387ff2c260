"""Run a loopback fake on its own event loop in a thread, for tests that are not async
(the end-to-end tests drive the daemon as a subprocess and wait with `wait_for`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class _Fake(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> None: ...


F = TypeVar("F", bound=_Fake)


class ThreadedFake(Generic[F]):
    def __init__(self, fake: F) -> None:
        self.fake = fake
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="loopback-fake", daemon=True)

    def start(self) -> Any:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.fake.start(), self._loop).result(timeout=30)

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `function` on the fake's loop (its state is only touched there) and return its value."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(function(*args, **kwargs))
            except BaseException as error:  # handed back to the caller
                done.set_exception(error)

        self._loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    def call_async(self, function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run a coroutine function on the fake's loop (`go_away`, `come_back`) and return its value."""
        return asyncio.run_coroutine_threadsafe(function(*args, **kwargs), self._loop).result(timeout=30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
