"""The public webhook listener: the webhook routes only, on an address and port of their own.

Meta (WhatsApp), Slack, Telegram and Manus must reach their webhooks from the internet, through
a reverse proxy or a tunnel. The control port also answers `/status`, `/tasks`, `/metrics` and
`/control/...`, which must stay private. So when `webhooks.port` is set, this second aiohttp
site serves the routes services added with `add_route` (and nothing else) through the control
server's own dispatcher: one route table, two listeners, and a route added or replaced after
start is served on both at once. Everything else answers 404.
"""

from __future__ import annotations

from ai_employee.control.site import Dispatcher, DispatchSite


class WebhookListener(DispatchSite):
    """`await start()` binds and serves; `await stop()` closes. The dispatcher decides (and
    answers 404 for anything that is not a webhook route)."""

    def __init__(self, dispatch: Dispatcher, *, host: str, port: int, shutdown_timeout: float = 5.0) -> None:
        super().__init__(
            dispatch, name="webhook listener", host=host, port=port, shutdown_timeout=shutdown_timeout
        )
