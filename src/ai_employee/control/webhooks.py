"""The public webhook listener: the webhook routes only, on an address and port of their own.

Meta (WhatsApp), Slack, Telegram and Manus must reach their webhooks from the internet, through
a reverse proxy or a tunnel. The control port also answers `/status`, `/tasks`, `/metrics` and
`/control/...`, which must stay private. So when `webhooks.port` is set, this second aiohttp
site serves the routes services added with `add_route` (and nothing else) through the control
server's own dispatcher: one route table, two listeners, and a route added or replaced after
start is served on both at once. Everything else answers 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

Dispatcher = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebhookListener:
    """`await start()` binds and serves; `await stop()` closes. The dispatcher decides (and
    answers 404 for anything that is not a webhook route)."""

    def __init__(self, dispatch: Dispatcher, *, host: str, port: int, shutdown_timeout: float = 5.0) -> None:
        self._dispatch = dispatch
        self._host = host
        self._requested_port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (a free one for 0)."""
        if self._runner is not None:
            raise RuntimeError("the webhook listener is already started")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        log.info("webhook listener listening", host=self._host, port=self._bound_port)
        return self._bound_port

    async def stop(self) -> None:
        """Stop listening; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("webhook listener closed", port=self._bound_port)

    @property
    def port(self) -> int:
        return self._bound_port if self._bound_port is not None else self._requested_port

    @property
    def host(self) -> str:
        return self._host
