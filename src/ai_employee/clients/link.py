"""An integration's link to its outside server: its state, its trouble in plain words, and when it
tries again (docs/services.md).

Every integration (email, Telegram, Atlas, Manus, the model APIs) keeps one `OutsideLink`. The
integration calls `connecting()` before it reaches out, `connected()` once the server answered,
and `failed(error)` when it did not; `failed` says how long to wait before the next attempt
(jittered exponential backoff, capped by `services.max_backoff`). `status` shows the link instead
of the orchestrator's view, and every change of state is an event on the bus, so that supervision
can alert on "down for N minutes" and on "back". The orchestrator never restarts a service for
this: a restart would reset its backoff and make it hammer the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import structlog

from ai_employee.config import ServicesSettings
from ai_employee.model.bus import EventBus
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import LinkStatus, ServiceState
from ai_employee.observability.logging import redact_text

log = structlog.get_logger(__name__)

_MAX_ERROR_CHARS = 300

#: Answers from a gateway in front of the server (a reverse proxy, a load balancer) that say the
#: server behind it is down or overloaded: for the link, as unreachable as a refused connection.
UNREACHABLE_STATUSES = frozenset({502, 503, 504, 529})
_STATUS_PHRASES = {502: "bad gateway", 503: "service unavailable", 504: "gateway timeout", 529: "overloaded"}


class Deadlines(Protocol):
    """The per-phase timeouts of an HTTP client (`httpx.Timeout`, or the SDKs' `httpx2.Timeout`)."""

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None


def describe_target(label: str, url: str) -> str:
    """What a link reaches, without secrets: "Atlas cmms.example.com:443" (host and port only;
    a user or password in the URL, its path and its query stay out)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return label
    host = parsed.host
    if not host:
        return label
    port = parsed.port or {"https": 443, "http": 80}.get(parsed.scheme)
    shown = f"[{host}]" if ":" in host else host
    return f"{label} {shown}:{port}" if port else f"{label} {shown}"


class OutsideLink:
    def __init__(
        self,
        name: str,
        target: str,
        *,
        settings: ServicesSettings | None = None,
        bus: EventBus | None = None,
        rng: random.Random | None = None,
    ) -> None:
        settings = settings or ServicesSettings()
        self.name = name
        self.target = target
        self.initial_backoff = settings.initial_backoff
        self.max_backoff = settings.max_backoff
        self.bus = bus
        self._rng = rng or random.Random()
        self._state = ServiceState.CONNECTING
        self._since = _now()
        self._attempts = 0
        self._last_error: str | None = None
        self._next_attempt: datetime | None = None
        self._down_since: datetime | None = None
        self._announced: ServiceState | None = None

    @property
    def state(self) -> ServiceState:
        return self._state

    @property
    def is_up(self) -> bool:
        return self._state is ServiceState.RUNNING

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def status(self) -> LinkStatus:
        return LinkStatus(
            state=self._state,
            target=self.target,
            since=self._since,
            attempts=self._attempts,
            last_error=self._last_error,
            next_attempt=self._next_attempt,
            down_since=self._down_since,
        )

    def connecting(self) -> None:
        """About to reach the server: the first time, or again after it was lost. Another attempt
        while it is down stays `retrying` (with the last reason), so that status does not flicker
        between two states for as long as the server is away."""
        if self._state is ServiceState.RETRYING:
            return
        if self._state is ServiceState.RUNNING:
            self._down_since = _now()
        self._set(ServiceState.CONNECTING)
        self._next_attempt = None
        self._announce(EventType.SERVICE_CONNECTING, {})

    def connected(self) -> None:
        """The server answered: the backoff starts over."""
        if self._state is ServiceState.RUNNING:
            return
        down_since = self._down_since
        self._set(ServiceState.RUNNING)
        self._attempts = 0
        self._next_attempt = None
        self._down_since = None
        payload: dict[str, Any] = {}
        if down_since is not None:
            payload["down_seconds"] = round((_now() - down_since).total_seconds(), 1)
            payload["last_error"] = self._last_error
            log.info("link.back", service=self.name, target=self.target, **payload)
        self._announce(EventType.SERVICE_CONNECTED, payload)

    def failed(
        self, error: BaseException | str, *, timeout: float | Deadlines | None = None, retry: bool = True
    ) -> float:
        """The server could not be reached (or failed mid-way). Returns the seconds to wait before
        the next attempt. `retry=False` (an executor, a planner: they try again at their next
        use) leaves the link `degraded` with no next attempt."""
        self._attempts += 1
        if self._down_since is None:
            self._down_since = _now()
        words = error if isinstance(error, str) else describe_failure(error, timeout=timeout)
        self._last_error = redact_text(f"{self.target}: {words}")[:_MAX_ERROR_CHARS]
        delay = self.backoff(self._attempts) if retry else 0.0
        self._next_attempt = _now() + timedelta(seconds=delay) if retry else None
        self._set(ServiceState.RETRYING if retry else ServiceState.DEGRADED)
        log.warning(
            "link.failed",
            service=self.name,
            error=self._last_error,
            attempts=self._attempts,
            retry_in=round(delay, 2) if retry else None,
        )
        self._announce(
            EventType.SERVICE_RETRYING,
            {
                "error": self._last_error,
                "attempts": self._attempts,
                "retry_in": round(delay, 2) if retry else None,
                "down_since": self._down_since.isoformat(timespec="seconds"),
            },
            always=True,
        )
        return delay

    def answered(self, status: int) -> None:
        """An HTTP answer came back: the server is reached, unless a gateway in front of it said
        it is down (`UNREACHABLE_STATUSES`); for executors and planners (no next attempt)."""
        if status in UNREACHABLE_STATUSES:
            phrase = _STATUS_PHRASES.get(status) or "unavailable"
            self.failed(f"answered HTTP {status} ({phrase})", retry=False)
        else:
            self.connected()

    def backoff(self, attempt: int) -> float:
        """Equal jitter: at least half the exponential delay, never more than `max_backoff`."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** min(attempt - 1, 32))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def wait(self, delay: float, stop: asyncio.Event) -> bool:
        """Wait `delay` seconds for the next attempt; True when `stop` came first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        return stop.is_set()

    def _set(self, state: ServiceState) -> None:
        if self._state is not state:
            self._state = state
            self._since = _now()

    def _announce(self, event_type: EventType, payload: dict[str, Any], *, always: bool = False) -> None:
        if self.bus is None or (not always and self._announced is self._state):
            return
        self._announced = self._state
        self.bus.publish(
            Event(
                type=event_type,
                payload={"service": self.name, "target": self.target, "state": self._state.value, **payload},
                source=self.name,
            )
        )


def describe_failure(error: BaseException, *, timeout: float | Deadlines | None = None) -> str:
    """What went wrong reaching a server, in plain words: "connection refused", "connection timed
    out after 10 s", "TLS handshake failed: ...". Looks through the chain of causes (httpx and the
    SDKs wrap the socket's error). `timeout` is the one timeout that applied, or the client's
    per-phase timeouts: then a connect timeout is told with the connect deadline, a read timeout
    with the read deadline."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        words = _words_for(current, timeout)
        if words is not None:
            return words
        current = current.__cause__ or current.__context__
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:_MAX_ERROR_CHARS]


#: httpx's timeout classes by name, so that the SDKs' copy of httpx (httpx2) is read alike
_HTTP_MODULES = ("httpx", "httpx2", "httpcore", "httpcore2")
_PHASE_TIMEOUTS = {
    "ConnectTimeout": "connect",
    "ReadTimeout": "read",
    "WriteTimeout": "write",
    "PoolTimeout": "pool",
}


def _timeout_phase(error: BaseException) -> str | None:
    for cls in type(error).__mro__:
        if cls.__name__ in _PHASE_TIMEOUTS and cls.__module__.partition(".")[0] in _HTTP_MODULES:
            return _PHASE_TIMEOUTS[cls.__name__]
    return None


def _after(timeout: float | Deadlines | None, phase: str) -> str:
    seconds = (
        timeout if isinstance(timeout, int | float) or timeout is None else getattr(timeout, phase, None)
    )
    return f" after {seconds:g} s" if seconds is not None else ""


def _words_for(error: BaseException, timeout: float | Deadlines | None) -> str | None:
    phase = _timeout_phase(error)
    if phase == "connect":
        return f"connection timed out{_after(timeout, 'connect')}"
    if phase == "write":
        return f"could not send the request{_after(timeout, 'write')}"
    if phase == "pool":
        return f"no free connection{_after(timeout, 'pool')}"
    if phase == "read":
        return f"no answer{_after(timeout, 'read')}"
    if isinstance(error, TimeoutError | socket.timeout):
        return f"connection timed out{_after(timeout, 'connect')}"
    if isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == errno.ECONNREFUSED:
        return "connection refused (nothing is listening)"
    if isinstance(error, socket.gaierror):
        return "host name not found"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed: {getattr(error, 'reason', None) or error}"
    if isinstance(error, ConnectionResetError | BrokenPipeError | EOFError):
        return "the server closed the connection"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    if _is_remote_protocol_error(error):
        return "the server closed the connection without an answer"
    return None


def _is_remote_protocol_error(error: BaseException) -> bool:
    return any(
        cls.__name__ == "RemoteProtocolError" and cls.__module__.partition(".")[0] in _HTTP_MODULES
        for cls in type(error).__mro__
    )


def _now() -> datetime:
    return datetime.now(UTC)
