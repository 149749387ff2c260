"""What every loopback fake service shares: a request log, injectable faults, start and stop.

A fault matches the next requests by method and path (a regular expression, full match)
and makes them misbehave the way real services do: answer with a status (429, 500...),
answer late, or drop the connection - before the work is done, or after it was committed
(the answer is lost, the effect is not: the case that exactly-once code must survive).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Listener:
    """One aiohttp application on a loopback port, as a fake service's server: `listen` (port 0:
    the kernel picks one), `close` (the listener goes, and every connection with it, as when a
    real server goes down), `listen(app, listener.port)` again to come back on the same port."""

    def __init__(self, **runner_options: Any) -> None:
        self._options = {"access_log": None, **runner_options}
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def listen(self, app: web.Application, port: int = 0, *, host: str = "127.0.0.1") -> int:
        runner = web.AppRunner(app, **self._options)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: str | None = None  # "before": nothing happens; "after": committed, answer lost
    times: int = 1


class LoopbackServer:
    """Subclasses add routes in `routes(app)` and may shape error bodies in `fault_body`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.base_url = ""
        self._listener = Listener()
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.routes(self.app)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def fault_body(self, status: int) -> Any:
        return {"message": f"injected {status}"}

    async def on_error(self, request: web.Request, error: Exception) -> web.StreamResponse | None:
        """Turn a service-specific exception into a response; None re-raises it."""
        return None

    # --- control -------------------------------------------------------------------------

    def inject(
        self,
        method: str,
        path: str,
        *,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        drop: str | None = None,
        times: int = 1,
    ) -> Fault:
        """Make the next `times` requests matching `method` and `path` misbehave."""
        if drop not in (None, "before", "after"):
            raise ValueError("drop is 'before' or 'after'")
        fault = Fault(method.upper(), re.compile(path), status, body, headers or {}, delay, drop, times)
        self.faults.append(fault)
        return fault

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        pattern = re.compile(path)
        return [r for r in self.requests if r.method == method.upper() and pattern.fullmatch(r.path)]

    # --- serving -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        bound = await self._listener.listen(self.app, port, host=host)
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def stop(self) -> None:
        await self._listener.close()

    async def serve_until_signalled(self, host: str, port: int, announce: Callable[[str], None]) -> None:
        """For `python -m tests.fakes.<name>`: serve until SIGINT or SIGTERM."""
        announce(await self.start(host, port))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.stop()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), dict(request.headers), parsed)
        )
        fault = self._take_fault(request)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop == "before":
                return _drop(request)
            if fault.status is not None:
                body = fault.body if fault.body is not None else self.fault_body(fault.status)
                return web.json_response(body, status=fault.status, headers=fault.headers)
        try:
            response = await handler(request)
        except web.HTTPException:
            raise
        except Exception as error:
            shaped = await self.on_error(request, error)
            if shaped is None:
                raise
            response = shaped
        if fault is not None and fault.drop == "after":
            return _drop(request)
        return response

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and fault.path.fullmatch(request.path):
                fault.times -= 1
                return fault
        return None


def _drop(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=200)


async def wait_on(changed: asyncio.Condition, predicate: Callable[[], Any], timeout: float) -> Any:
    """Wait until `predicate()` is truthy, looked at again each time `changed` is notified; its value."""

    async def check() -> Any:
        async with changed:
            while not (result := predicate()):
                await changed.wait()
            return result

    return await asyncio.wait_for(check(), timeout)
