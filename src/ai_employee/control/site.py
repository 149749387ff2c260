"""One aiohttp site that hands every request to a dispatcher: what the control port and the
public webhook listener both serve through (each with its own address, port and dispatcher)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

Dispatcher = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DispatchSite:
    """`await start()` binds and serves every method and path through `dispatch`; `await stop()`
    closes. `name` says which listener it is in the log lines and errors."""

    def __init__(
        self, dispatch: Dispatcher, *, name: str, host: str, port: int, shutdown_timeout: float
    ) -> None:
        self._dispatch = dispatch
        self._name = name
        self._host = host
        self._requested_port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    async def start(self, port: int | None = None) -> int:
        """Bind and serve; returns the bound port (the configured one, or a free one for 0).
        `port` replaces the configured one (a second try after the first was taken). Nothing is
        left open if binding fails."""
        if self._runner is not None:
            raise RuntimeError(f"the {self._name} is already started")
        if port is not None:
            self._requested_port = port
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # No access log: probes and scrapes every few seconds would drown the useful lines.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        log.info(f"{self._name} listening", host=self._host, port=self._bound_port)
        return self._bound_port

    async def stop(self) -> None:
        """Stop listening; requests in flight get `shutdown_timeout` to finish. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info(f"{self._name} closed", port=self._bound_port)

    @property
    def port(self) -> int:
        """The bound port once started, else the configured one."""
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def host(self) -> str:
        return self._host

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(address, port) of every listening socket; empty when stopped."""
        if self._runner is None:
            return []
        return [(str(address[0]), int(address[1])) for address in self._runner.addresses]
