"""The control port: health probes, metrics, status, control commands and webhooks.

One small aiohttp server, on 127.0.0.1 by default, is how everything outside the
process talks to the daemon: systemd or Kubernetes probes (`/livez`, `/readyz`),
Prometheus (`/metrics`), the CLI (`/status`, `/control/...`), and the webhooks of
Slack and Telegram, which other services add with `add_route`.

Routing goes through a dispatcher of our own behind one catch-all aiohttp route,
because aiohttp freezes its router when the server starts while services that own
webhooks start (and restart) later. Every answer this module makes is JSON, errors
included: a traceback never leaves the process.

The commands that change something (`POST /control/...`) require the header
`X-AIE-Token` to equal the daemon's token, which the daemon writes to
`<vault>/.ai-employee/daemon.json` (mode 0600): anyone who can read the vault's
private state may command the daemon, and no other local user or browser page can.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import structlog
from aiohttp import web

from ai_employee.control.site import DispatchSite
from ai_employee.model.services import ServiceDisabledError
from ai_employee.observability.metrics import Metrics

__all__ = [
    "PATH_PARAMS",
    "TOKEN_HEADER",
    "ControlHooks",
    "ControlServer",
    "Handler",
    "new_token",
    "path_params",
]

log = structlog.get_logger(__name__)

TOKEN_HEADER = "X-AIE-Token"  # noqa: S105 (a header name, not a secret)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The `{name}` parts of a route's path, as matched for this request.
PATH_PARAMS: web.RequestKey[dict[str, str]] = web.RequestKey("aie_path_params", dict)

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_dumps = partial(json.dumps, default=str)


class ControlHooks(Protocol):
    """What the control port needs from the daemon (the orchestrator implements it)."""

    def status(self) -> dict[str, Any]:
        """The JSON of `ai-employee status --json`."""
        ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether every required service is up, and the detail that says which are not."""
        ...

    def request_stop(self) -> None:
        """Begin a graceful stop; must return at once (the answer is sent before stopping)."""
        ...

    async def restart_service(self, name: str) -> None:
        """Restart one service; raises KeyError when no service has that name, ServiceDisabledError
        when it is off."""
        ...


def new_token() -> str:
    """A fresh control token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def path_params(request: web.Request) -> Mapping[str, str]:
    """The `{name}` values of the route that matched `request`."""
    params: dict[str, str] = request.get(PATH_PARAMS, {})
    return params


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    path: str
    pattern: re.Pattern[str]
    handler: Handler
    builtin: bool

    @property
    def is_static(self) -> bool:
        return self.pattern.groups == 0


def _compile(path: str) -> re.Pattern[str]:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")
    parts: list[str] = []
    position = 0
    for match in _PARAM.finditer(path):
        parts.append(re.escape(path[position : match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^/]+)")
        position = match.end()
    parts.append(re.escape(path[position:]))
    return re.compile("".join(parts))


class ControlServer:
    """The daemon's HTTP server. Build it, `await start()`, `await stop()` at shutdown."""

    def __init__(
        self,
        hooks: ControlHooks,
        metrics: Metrics,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if not token:
            raise ValueError("the control token must not be empty")
        self._hooks = hooks
        self._metrics = metrics
        self._token = token.encode("utf-8")
        self._routes: dict[tuple[str, str], _Route] = {}
        self._site = DispatchSite(
            self._dispatch, name="control port", host=host, port=port, shutdown_timeout=shutdown_timeout
        )

        self._add("GET", "/livez", self._livez, builtin=True)
        self._add("GET", "/health", self._livez, builtin=True)
        self._add("GET", "/readyz", self._readyz, builtin=True)
        self._add("GET", "/metrics", self._metrics_route, builtin=True)
        self._add("GET", "/status", self._status, builtin=True)
        self._add("POST", "/control/stop", self._stop, builtin=True)
        self._add("POST", "/control/services/{name}/restart", self._restart, builtin=True)

    # -- routes -----------------------------------------------------------------------

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve `handler` at `method path`, before or after `start()`.

        `{name}` in the path matches one path segment; read it with `path_params`.
        Adding a path again replaces the earlier handler (a restarted service registers
        its webhook anew); the built-in routes cannot be replaced. The handler must verify
        the caller (signature or secret token) itself: the control token does not apply.
        """
        self._add(method, path, handler, builtin=False)

    def remove_route(self, method: str, path: str) -> bool:
        """Stop serving a route added with `add_route`; False if there was none."""
        key = (method.upper(), path)
        route = self._routes.get(key)
        if route is None or route.builtin:
            return False
        del self._routes[key]
        return True

    def _add(self, method: str, path: str, handler: Handler, *, builtin: bool) -> None:
        method = method.upper()
        key = (method, path)
        existing = self._routes.get(key)
        if existing is not None and existing.builtin:
            raise ValueError(f"{method} {path} is a built-in route of the control port")
        self._routes[key] = _Route(method, path, _compile(path), handler, builtin)

    def _resolve(
        self, method: str, path: str, *, webhooks_only: bool = False
    ) -> tuple[_Route, dict[str, str]]:
        wanted = "GET" if method == "HEAD" else method
        allowed: set[str] = set()
        found: tuple[_Route, dict[str, str]] | None = None
        for route in self._routes.values():
            if webhooks_only and route.builtin:
                continue
            match = route.pattern.fullmatch(path)
            if match is None:
                continue
            allowed.add(route.method)
            if route.method == wanted and (found is None or (route.is_static and not found[0].is_static)):
                found = (route, match.groupdict())
        if found is not None:
            return found
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            raise web.HTTPMethodNotAllowed(method, sorted(allowed))
        raise web.HTTPNotFound()

    async def dispatch_webhook(self, request: web.Request) -> web.StreamResponse:
        """Serve `request` from the routes added with `add_route` only (the webhooks), never the
        built-in ones: what the public webhook listener (control/webhooks.py) answers with."""
        return await self._dispatch(request, webhooks_only=True)

    async def _dispatch(self, request: web.Request, *, webhooks_only: bool = False) -> web.StreamResponse:
        try:
            route, params = self._resolve(request.method, request.path, webhooks_only=webhooks_only)
            request[PATH_PARAMS] = params
            return await route.handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                return error
            headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            return _json({"error": error.reason}, status=error.status, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("control request failed", method=request.method, path=request.path)
            return _json({"error": "internal error"}, status=500)

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get(TOKEN_HEADER)
        if given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self._token)

    def _require_token(self, request: web.Request) -> None:
        if not self._authorized(request):
            log.warning("control request refused: bad or missing token", path=request.path)
            raise web.HTTPForbidden(reason="missing or wrong " + TOKEN_HEADER)

    # -- built-in handlers ----------------------------------------------------------------

    async def _livez(self, _request: web.Request) -> web.StreamResponse:
        return _json({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.StreamResponse:
        ready, detail = self._hooks.readiness()
        body = {"status": "ready" if ready else "not_ready", "detail": detail}
        return _json(body, status=200 if ready else 503)

    async def _metrics_route(self, request: web.Request) -> web.StreamResponse:
        body, content_type = self._metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _status(self, _request: web.Request) -> web.StreamResponse:
        return _json(self._hooks.status())

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        self._require_token(request)
        log.info("stop requested through the control port")
        self._hooks.request_stop()
        return _json({"status": "stopping"}, status=202)

    async def _restart(self, request: web.Request) -> web.StreamResponse:
        self._require_token(request)
        name = path_params(request)["name"]
        log.info("service restart requested through the control port", service=name)
        try:
            await self._hooks.restart_service(name)
        except KeyError:
            body = {"error": "unknown service", "service": name, "services": self._restartable()}
            return _json(body, status=404)
        except ServiceDisabledError as off:
            body = {"error": "service is off", "service": name, "reason": off.reason}
            return _json({**body, "services": self._restartable()}, status=409)
        return _json({"status": "restarted", "service": name})

    def _restartable(self) -> list[str]:
        """The names `restart --services` accepts: every service that is not off."""
        services = self._hooks.status().get("services", {})
        return sorted(name for name, entry in services.items() if entry.get("state") != "disabled")

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, port: int | None = None) -> int:
        """Bind and serve; returns the bound port (the configured one, or a free one for 0).
        `port` replaces the configured one (a second try after the first was taken)."""
        return await self._site.start(port)

    async def stop(self) -> None:
        """Stop listening; requests in flight get `shutdown_timeout` to finish. Idempotent."""
        await self._site.stop()

    @property
    def port(self) -> int:
        """The bound port once started, else the configured one."""
        return self._site.port

    @property
    def host(self) -> str:
        return self._site.host

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(address, port) of every listening socket; empty when stopped."""
        return self._site.addresses
