"""Owns the long-running services (watchers, sources, servers): start, stop, restart, health.

Each service runs as one task under a supervisor. A crash is never fatal to the daemon: the
supervisor reports it on the bus, waits an exponential backoff with jitter and starts the
service again, so a flaky IMAP server or a dropped Telegram connection heals by itself while
the rest keeps working. The folders are the durable state, so a restarted service picks up
where the crashed one left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import structlog

from ai_employee.model.bus import EventBus
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import HealthReport, LinkStatus, Service, ServiceDisabledError, ServiceState
from ai_employee.observability.logging import redact_text

log = structlog.get_logger(__name__)

EVENT_SOURCE = "orchestrator"

_UP = frozenset({ServiceState.RUNNING, ServiceState.DEGRADED})  # the states a health check applies to


class _RunEnd(NamedTuple):
    error: str | None  # None: it was asked to stop
    exception: BaseException | None
    uptime: float  # seconds it was ready


class UnknownServiceError(KeyError):
    """No service of that name is registered."""


@dataclass(eq=False)
class _Supervised:
    name: str
    service: Service | None  # None: disabled
    required: bool
    state: ServiceState
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    restarts: int = 0
    last_error: str | None = None
    healthy: bool | None = None  # None: not checked since it last started
    detail: str = ""
    health_data: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # bumped on every run, so a stale health result is ignored
    supervisor: asyncio.Task[None] | None = None
    stop_requested: asyncio.Event | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Orchestrator:
    """Starts services all at once, stops them in reverse registration order, and keeps them alive.

    `restart_initial`/`restart_max` bound the backoff between restarts of a crashing service;
    the backoff starts over once a service has stayed up for `stable_after` seconds.
    `grace_seconds` is how long stop() lets a service finish its in-flight work before its
    task is cancelled.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        health_interval: float = 30.0,
        restart_initial: float = 0.5,
        restart_max: float = 60.0,
        grace_seconds: float = 30.0,
        start_timeout: float = 30.0,
        health_timeout: float = 10.0,
        stable_after: float = 60.0,
        required: Collection[str] = (),
        rng: random.Random | None = None,
    ) -> None:
        if restart_initial <= 0 or restart_max < restart_initial:
            raise ValueError("need 0 < restart_initial <= restart_max")
        self._bus = bus
        self._health_interval = health_interval
        self._restart_initial = restart_initial
        self._restart_max = restart_max
        self._grace = grace_seconds
        self._start_timeout = start_timeout
        self._health_timeout = health_timeout
        self._stable_after = stable_after
        self._rng = rng or random.Random()
        self._required = frozenset(required)  # integrations that must be connected for readiness
        self._records: dict[str, _Supervised] = {}
        self._health_task: asyncio.Task[None] | None = None
        self._shutting_down = False
        self._state_changed = asyncio.Event()  # set (and replaced) at every change of state

    # -- registration --------------------------------------------------------------------

    def register(self, service: Service) -> None:
        name = getattr(service, "name", "")
        if not name:
            raise ValueError(f"{type(service).__name__} has no name")
        required = service.required or name in self._required
        self._add(_Supervised(name=name, service=service, required=required, state=ServiceState.STOPPED))

    def register_disabled(self, name: str, reason: str) -> None:
        """Record a service that stays off (e.g. its credentials are absent): shown, never started."""
        self._add(
            _Supervised(name=name, service=None, required=False, state=ServiceState.DISABLED, detail=reason)
        )
        log.info("service.disabled", service=name, reason=reason)

    def _add(self, record: _Supervised) -> None:
        if record.name in self._records:
            raise ValueError(f"a service named {record.name!r} is already registered")
        self._records[record.name] = record

    def services(self) -> list[str]:
        return list(self._records)

    def _get(self, name: str) -> _Supervised:
        try:
            return self._records[name]
        except KeyError:
            raise UnknownServiceError(name) from None

    # -- lifecycle -----------------------------------------------------------------------

    async def launch_all(self) -> None:
        """Launch every enabled service at once, and the periodic health checks. Returns without
        waiting for any of them to be ready: none waits for another, nor for an outside server.

        A service that fails to start does not stop the others: it is retried in the background.
        """
        await self._launch_all()

    async def start_all(self) -> None:
        """`launch_all`, then wait until each service's first try settled (it is ready, or failed
        and will be retried in the background). They start concurrently all the same."""
        settling = await self._launch_all()
        await asyncio.gather(*(settled.wait() for settled in settling))

    async def _launch_all(self) -> list[asyncio.Event]:
        self._shutting_down = False
        settling: list[asyncio.Event] = []
        for record in list(self._records.values()):
            if record.service is not None:
                async with record.lock:
                    settled = self._launch(record, relaunch=None)
                if settled is not None:
                    settling.append(settled)
        self._ensure_health_loop()
        return settling

    async def stop_all(self) -> None:
        """Stop the health checks, then every service in reverse registration order."""
        self._shutting_down = True
        health_task, self._health_task = self._health_task, None
        if health_task is not None:
            health_task.cancel()
            await asyncio.gather(health_task, return_exceptions=True)
        for name in reversed(list(self._records)):
            try:
                await self.stop(name)
            except Exception:
                log.exception("service.stop_error", service=name)

    async def start(self, name: str) -> None:
        """Launch the service; return once it is ready or its first attempt failed."""
        record = self._get(name)
        if record.service is None:
            log.info("service.start_skipped_disabled", service=name, reason=record.detail)
            return
        async with record.lock:
            await self._start_locked(record, relaunch=None)

    async def stop(self, name: str) -> None:
        """Ask the service to stop, let it finish in-flight work (up to the grace), then cancel it."""
        record = self._get(name)
        if record.stop_requested is not None:
            record.stop_requested.set()  # interrupt a start still waiting for the service to be ready
        async with record.lock:
            await self._stop_locked(record)

    async def restart(self, name: str) -> None:
        """Stop and start one service. Raises UnknownServiceError (no such name) or
        ServiceDisabledError (it is off: nothing to restart)."""
        record = self._get(name)
        if record.service is None:
            raise ServiceDisabledError(name, record.detail)
        async with record.lock:
            await self._stop_locked(record)
            await self._start_locked(record, relaunch="requested")

    async def _start_locked(self, record: _Supervised, *, relaunch: str | None) -> None:
        settled = self._launch(record, relaunch=relaunch)
        if settled is not None:
            await settled.wait()

    def _launch(self, record: _Supervised, *, relaunch: str | None) -> asyncio.Event | None:
        """Start the service's supervisor; the event it sets once the first try settled (None: it
        runs already)."""
        if record.supervisor is not None and not record.supervisor.done():
            return None
        stop_requested = asyncio.Event()
        settled = asyncio.Event()
        record.stop_requested = stop_requested
        record.supervisor = asyncio.create_task(
            self._supervise(record, stop_requested, settled, relaunch), name=f"supervise:{record.name}"
        )
        return settled

    async def _stop_locked(self, record: _Supervised) -> None:
        supervisor = record.supervisor
        if supervisor is None or supervisor.done():
            return
        assert record.stop_requested is not None
        record.stop_requested.set()
        await supervisor

    # -- supervision ---------------------------------------------------------------------

    async def _supervise(
        self,
        record: _Supervised,
        stop_requested: asyncio.Event,
        settled: asyncio.Event,
        relaunch: str | None,
    ) -> None:
        """Run the service again and again until asked to stop. `settled` is set after the first try."""
        service = record.service
        assert service is not None
        attempt = 0  # consecutive failures
        try:
            while True:
                if relaunch is not None:
                    record.restarts += 1
                    self._publish(
                        EventType.SERVICE_RESTARTED,
                        {
                            "service": record.name,
                            "reason": relaunch,
                            "attempt": attempt,
                            "restarts": record.restarts,
                        },
                    )
                    log.info("service.restarting", service=record.name, reason=relaunch, attempt=attempt)
                end = await self._run_once(record, service, stop_requested, settled, relaunch)
                if end.error is None:
                    break
                error = end.error
                if end.uptime >= self._stable_after:
                    attempt = 0
                attempt += 1
                delay = self._backoff(attempt)
                record.last_error = error
                self._set_state(record, ServiceState.FAILED)
                log.error(
                    "service.failed",
                    service=record.name,
                    error=error,
                    attempt=attempt,
                    retry_in=delay,
                    exc_info=end.exception,
                )
                self._publish(
                    EventType.SERVICE_FAILED,
                    {
                        "service": record.name,
                        "error": error,
                        "attempt": attempt,
                        "retry_in": delay,
                        "required": record.required,
                    },
                )
                settled.set()
                try:
                    await asyncio.wait_for(stop_requested.wait(), timeout=delay)
                    break  # asked to stop during the backoff
                except TimeoutError:
                    relaunch = "crashed"
        except asyncio.CancelledError:
            self._set_state(record, ServiceState.STOPPED)
            raise
        except Exception as exc:  # a bug here must not take the daemon down silently
            record.last_error = f"supervisor: {_error_text(exc)}"
            self._set_state(record, ServiceState.FAILED)
            log.exception("service.supervisor_error", service=record.name)
            return
        finally:
            settled.set()
        self._set_state(record, ServiceState.STOPPED)
        record.healthy = None
        log.info("service.stopped", service=record.name)
        self._publish(EventType.SERVICE_STOPPED, {"service": record.name})

    async def _run_once(
        self,
        record: _Supervised,
        service: Service,
        stop_requested: asyncio.Event,
        settled: asyncio.Event,
        relaunch: str | None,
    ) -> _RunEnd:
        """One run of the service, from launch to crash or stop."""
        loop = asyncio.get_running_loop()
        record.generation += 1
        record.healthy = None
        record.detail = ""
        record.health_data = {}
        service.ready = asyncio.Event()
        self._set_state(record, ServiceState.STARTING if relaunch is None else ServiceState.RESTARTING)
        run_task = asyncio.create_task(service.run(), name=f"service:{record.name}")
        ready_wait = asyncio.create_task(service.ready.wait())
        stop_wait = asyncio.create_task(stop_requested.wait())
        ready_at: float | None = None
        try:
            await asyncio.wait(
                {run_task, ready_wait, stop_wait},
                timeout=self._start_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if service.ready.is_set() and not stop_requested.is_set():
                ready_at = loop.time()
                self._set_state(record, ServiceState.RUNNING)
                log.info("service.started", service=record.name)
                self._publish(
                    EventType.SERVICE_STARTED, {"service": record.name, "restarts": record.restarts}
                )
                settled.set()
                await asyncio.wait({run_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            uptime = 0.0 if ready_at is None else loop.time() - ready_at
            if stop_requested.is_set():
                await _shut_down(record, service, run_task, self._grace)
                return _RunEnd(None, None, uptime)
            if run_task.done():
                return _describe_end(run_task, uptime)
            await _shut_down(record, service, run_task, self._grace)
            return _RunEnd(f"not ready within {self._start_timeout:g}s", None, uptime)
        finally:
            ready_wait.cancel()
            stop_wait.cancel()
            if not run_task.done():  # we were cancelled ourselves: take the service down with us
                run_task.cancel()

    def _backoff(self, attempt: int) -> float:
        """Equal jitter: at least half the exponential delay, so a crash loop still slows down,
        spread so that services failing together do not restart in lockstep."""
        ceiling = min(self._restart_max, self._restart_initial * 2.0 ** min(attempt - 1, 64))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    # -- health --------------------------------------------------------------------------

    def _ensure_health_loop(self) -> None:
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.create_task(self._health_loop(), name="orchestrator:health")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval)  # a period, not a wait for work
            try:
                await self.check_health()
            except Exception:
                log.exception("health.round_failed")

    async def check_health(self) -> dict[str, HealthReport]:
        """One round of health checks of the running services, now (the loop calls this)."""
        records = [r for r in self._records.values() if r.service is not None and r.state in _UP]
        reports = await asyncio.gather(*(self._check_one(r) for r in records))
        return {r.name: report for r, report in zip(records, reports, strict=True)}

    async def _check_one(self, record: _Supervised) -> HealthReport:
        service = record.service
        assert service is not None
        generation = record.generation
        try:
            report = await asyncio.wait_for(service.health(), timeout=self._health_timeout)
        except TimeoutError:
            report = HealthReport(False, f"health check timed out after {self._health_timeout:g}s")
        except Exception as exc:
            report = HealthReport(False, f"health check raised {_error_text(exc)}")
        if record.generation != generation or record.state not in _UP:
            return report  # it crashed or stopped meanwhile: the result is about a run that is gone
        was_healthy = record.healthy is not False  # a service that just became ready counts as healthy
        record.healthy = report.healthy
        record.detail = report.detail
        record.health_data = dict(report.data)
        self._set_state(record, ServiceState.RUNNING if report.healthy else ServiceState.DEGRADED)
        payload = {"service": record.name, "healthy": report.healthy, "detail": report.detail}
        self._publish(EventType.HEALTH_CHECKED, {**payload, "data": dict(report.data)})
        if was_healthy != report.healthy:
            log.log(logging.INFO if report.healthy else logging.WARNING, "health.changed", **payload)
            self._publish(EventType.HEALTH_CHANGED, {**payload, "previous": was_healthy})
        return report

    # -- introspection -------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, Any]]:
        """Each service as status shows it. While an integration runs, its own view of its link to
        the outside server (connecting, retrying, with the reason) is its state."""
        return {name: _status_of(record) for name, record in self._records.items()}

    def is_ready(self) -> bool:
        """The vault path works: every required service runs and did not fail its last health
        check; a required integration (`services.required`) is connected to its server too."""
        return all(
            record.state is ServiceState.RUNNING and record.healthy is not False and _connected(record)
            for record in self._records.values()
            if record.service is not None and record.required
        )

    # -- helpers -------------------------------------------------------------------------

    def _set_state(self, record: _Supervised, state: ServiceState) -> None:
        if record.state is not state:
            record.state = state
            record.since = datetime.now(UTC)
            changed, self._state_changed = self._state_changed, asyncio.Event()
            changed.set()

    async def wait_running(self, names: Collection[str], timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the named services run (True), or `timeout` seconds (False)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not all(self._get(name).state is ServiceState.RUNNING for name in names):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), timeout=remaining)
        return True

    def _publish(self, event_type: EventType, payload: dict[str, Any]) -> None:
        self._bus.publish(Event(type=event_type, payload=payload, source=EVENT_SOURCE))


def _status_of(record: _Supervised) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "state": record.state.value,
        "required": record.required,
        "restarts": record.restarts,
        "last_error": record.last_error,
        "healthy": record.healthy,
        "detail": record.detail,
        "data": dict(record.health_data),
        "since": record.since.isoformat(),
    }
    link = _link_of(record)
    if link is not None:
        if link.state is not ServiceState.RUNNING or record.state is ServiceState.RUNNING:
            entry["state"] = link.state.value
            entry["since"] = link.since.isoformat()
        entry["last_error"] = link.last_error or record.last_error
        entry.update(
            {
                key: value
                for key, value in link.to_dict().items()
                if key not in ("state", "since", "last_error")
            }
        )
    return entry


def _link_of(record: _Supervised) -> LinkStatus | None:
    """The link of a service that runs (a stopped or crashed one's link says nothing now)."""
    if record.service is None or record.state not in _UP:
        return None
    try:
        return record.service.link()
    except Exception:  # a bug in a report must not break status
        log.exception("service.link_failed", service=record.name)
        return None


def _connected(record: _Supervised) -> bool:
    link = _link_of(record)
    return link is None or link.state is ServiceState.RUNNING


async def _shut_down(
    record: _Supervised, service: Service, run_task: asyncio.Task[None], grace: float
) -> None:
    """stop(), up to the grace for run() to return on its own, then cancel."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    if not run_task.done():
        try:
            await asyncio.wait_for(service.stop(), timeout=grace)
        except TimeoutError:
            log.warning("service.stop_timeout", service=record.name, grace=grace)
        except Exception:
            log.exception("service.stop_raised", service=record.name)
        remaining = deadline - loop.time()
        if not run_task.done() and remaining > 0:
            await asyncio.wait({run_task}, timeout=remaining)
        if not run_task.done():
            log.warning("service.cancelled_after_grace", service=record.name, grace=grace)
            run_task.cancel()
            await asyncio.wait({run_task}, timeout=grace)
            if not run_task.done():
                log.error("service.ignored_cancellation", service=record.name)
                return
    if not run_task.cancelled() and (exc := run_task.exception()) is not None:
        log.warning(
            "service.raised_while_stopping", service=record.name, error=f"{type(exc).__name__}: {exc}"
        )


def _describe_end(run_task: asyncio.Task[None], uptime: float) -> _RunEnd:
    if run_task.cancelled():
        return _RunEnd("run() was cancelled", None, uptime)
    exc = run_task.exception()
    if exc is None:
        return _RunEnd("run() returned without being asked to stop", None, uptime)
    return _RunEnd(_error_text(exc), exc, uptime)


def _error_text(exc: BaseException) -> str:
    """The error as status and the bus show it: secrets (a bot token in a URL) scrubbed."""
    return redact_text(f"{type(exc).__name__}: {exc}")
