"""The orchestrator: order of start and stop, supervision with backoff, health, readiness."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.clients.link import OutsideLink
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import HealthReport, LinkStatus, Service, ServiceDisabledError, ServiceState
from ai_employee.orchestrator import Orchestrator, UnknownServiceError
from tests.conftest import eventually


class Recorder:
    """Every event the bus carried, for assertions."""

    def __init__(self, bus: InProcessEventBus) -> None:
        self.events: list[Event] = []
        bus.subscribe(None, self.events.append, name="recorder")

    def of(self, event_type: EventType, service: str | None = None) -> list[dict[str, Any]]:
        return [
            dict(e.payload)
            for e in self.events
            if e.type is event_type and (service is None or e.payload.get("service") == service)
        ]


class Idle(Service):
    """Up until asked to stop; logs its lifecycle into a shared journal."""

    def __init__(self, name: str, journal: list[str] | None = None, *, required: bool = True) -> None:
        super().__init__()
        self.name = name
        self.required = required
        self.journal = journal if journal is not None else []
        self.stopping = asyncio.Event()
        self.healthy = True
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        self.stopping = asyncio.Event()
        self.journal.append(f"start:{self.name}")
        self.ready.set()
        await self.stopping.wait()
        self.journal.append(f"end:{self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop:{self.name}")
        self.stopping.set()

    async def health(self) -> HealthReport:
        return HealthReport(self.healthy, "ok" if self.healthy else "lost connection", {"checked": True})


class Crashing(Service):
    """Comes up, then crashes at once, every time; remembers when each run started and failed."""

    name = "crashy"

    def __init__(self) -> None:
        super().__init__()
        self.started_at: list[float] = []
        self.failed_at: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.started_at.append(loop.time())
        self.ready.set()
        await asyncio.sleep(0)
        self.failed_at.append(loop.time())
        raise RuntimeError("connection reset")


@pytest.fixture
async def bus() -> AsyncIterator[InProcessEventBus]:
    bus = InProcessEventBus()
    await bus.start()
    yield bus
    await bus.close()


@pytest.fixture
async def make(bus: InProcessEventBus) -> AsyncIterator[Callable[..., Orchestrator]]:
    """Orchestrators with test-sized intervals, all stopped at the end."""
    made: list[Orchestrator] = []

    def factory(**overrides: Any) -> Orchestrator:
        options: dict[str, Any] = {
            "health_interval": 3600.0,
            "restart_initial": 0.02,
            "restart_max": 0.2,
            "grace_seconds": 2.0,
            "start_timeout": 2.0,
            "health_timeout": 1.0,
            "rng": random.Random(7),
        }
        options.update(overrides)
        orchestrator = Orchestrator(bus, **options)
        made.append(orchestrator)
        return orchestrator

    yield factory
    for orchestrator in made:
        await orchestrator.stop_all()


async def test_services_start_in_registration_order_and_stop_in_reverse(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    journal: list[str] = []
    orchestrator = make()
    for name in ("store", "watcher", "email"):
        orchestrator.register(Idle(name, journal))
    recorder = Recorder(bus)

    await orchestrator.start_all()
    assert journal == ["start:store", "start:watcher", "start:email"]
    assert [p["service"] for p in recorder.of(EventType.SERVICE_STARTED)] == ["store", "watcher", "email"]

    journal.clear()
    await orchestrator.stop_all()
    assert journal == ["stop:email", "end:email", "stop:watcher", "end:watcher", "stop:store", "end:store"]
    assert [p["service"] for p in recorder.of(EventType.SERVICE_STOPPED)] == ["email", "watcher", "store"]
    assert {s["state"] for s in orchestrator.status().values()} == {"stopped"}


async def test_crashing_service_is_restarted_with_growing_backoff_and_reported_on_the_bus(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    orchestrator = make(restart_initial=0.02, restart_max=0.2)
    service = Crashing()
    orchestrator.register(service)
    recorder = Recorder(bus)

    await orchestrator.start("crashy")
    await eventually(lambda: len(service.started_at) >= 4)
    await orchestrator.stop("crashy")

    failures = recorder.of(EventType.SERVICE_FAILED, "crashy")[:3]
    assert [f["attempt"] for f in failures] == [1, 2, 3]
    assert all(f["error"] == "RuntimeError: connection reset" for f in failures)
    # equal jitter: each delay lies in [ceiling/2, ceiling], ceiling doubling from restart_initial
    for failure, ceiling in zip(failures, (0.02, 0.04, 0.08), strict=True):
        assert ceiling / 2 <= failure["retry_in"] <= ceiling
    for failed_at, next_start, failure in zip(
        service.failed_at, service.started_at[1:], failures, strict=False
    ):
        assert next_start - failed_at >= failure["retry_in"] - 0.005
    restarted = recorder.of(EventType.SERVICE_RESTARTED, "crashy")
    assert [r["reason"] for r in restarted[:3]] == ["crashed"] * 3
    status = orchestrator.status()["crashy"]
    assert status["restarts"] >= 3
    assert status["last_error"] == "RuntimeError: connection reset"


async def test_service_returning_on_its_own_counts_as_a_crash(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    class Quitter(Service):
        name = "quitter"

        async def run(self) -> None:
            self.ready.set()

    orchestrator = make(restart_initial=1.0, restart_max=1.0)
    orchestrator.register(Quitter())
    recorder = Recorder(bus)

    await orchestrator.start("quitter")
    await eventually(lambda: bool(recorder.of(EventType.SERVICE_FAILED)))

    assert orchestrator.status()["quitter"]["state"] == "failed"
    assert "returned without being asked to stop" in recorder.of(EventType.SERVICE_FAILED)[0]["error"]


async def test_service_not_ready_within_start_timeout_fails_and_is_retried(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    class Hung(Service):
        name = "hung"

        def __init__(self) -> None:
            super().__init__()
            self.runs = 0

        async def run(self) -> None:
            self.runs += 1
            await asyncio.Event().wait()

    orchestrator = make(start_timeout=0.05, grace_seconds=0.05)
    service = Hung()
    orchestrator.register(service)
    recorder = Recorder(bus)

    await orchestrator.start("hung")  # returns after the first attempt failed

    assert recorder.of(EventType.SERVICE_FAILED, "hung")[0]["error"] == "not ready within 0.05s"
    await eventually(lambda: service.runs >= 2)


async def test_restart_by_name_relaunches_the_service_and_reports_it(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    orchestrator = make()
    service = Idle("email")
    orchestrator.register(service)
    recorder = Recorder(bus)
    await orchestrator.start_all()

    await orchestrator.restart("email")

    assert service.runs == 2
    assert service.journal == ["start:email", "stop:email", "end:email", "start:email"]
    assert recorder.of(EventType.SERVICE_RESTARTED, "email") == [
        {"service": "email", "reason": "requested", "attempt": 0, "restarts": 1}
    ]
    assert orchestrator.status()["email"]["state"] == "running"
    assert orchestrator.status()["email"]["restarts"] == 1


async def test_unknown_service_name_is_an_error(make: Callable[..., Orchestrator]) -> None:
    with pytest.raises(UnknownServiceError):
        await make().restart("nope")


async def test_restarting_a_disabled_service_is_an_error_that_says_why_it_is_off(
    make: Callable[..., Orchestrator],
) -> None:
    orchestrator = make()
    orchestrator.register_disabled("email", "IMAP_HOST is not set")

    with pytest.raises(ServiceDisabledError, match="email is off: IMAP_HOST is not set"):
        await orchestrator.restart("email")


async def test_disabled_service_is_listed_with_its_reason_and_never_started(
    make: Callable[..., Orchestrator],
) -> None:
    orchestrator = make()
    orchestrator.register(Idle("inbox"))
    orchestrator.register_disabled("telegram", "TELEGRAM_BOT_TOKEN is not set")

    await orchestrator.start_all()
    await orchestrator.start("telegram")

    assert orchestrator.services() == ["inbox", "telegram"]
    status = orchestrator.status()["telegram"]
    assert status["state"] == ServiceState.DISABLED == "disabled"
    assert status["detail"] == "TELEGRAM_BOT_TOKEN is not set"
    assert orchestrator.is_ready()


async def test_health_flip_degrades_the_service_and_publishes_health_changed(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    orchestrator = make(health_interval=0.01)
    service = Idle("email")
    orchestrator.register(service)
    recorder = Recorder(bus)
    await orchestrator.start_all()
    await eventually(lambda: bool(recorder.of(EventType.HEALTH_CHECKED, "email")))
    assert recorder.of(EventType.HEALTH_CHANGED) == []
    assert orchestrator.status()["email"]["data"] == {"checked": True}  # what the service reported

    service.healthy = False
    await eventually(lambda: len(recorder.of(EventType.HEALTH_CHANGED, "email")) == 1)
    assert orchestrator.status()["email"]["state"] == "degraded"
    assert orchestrator.status()["email"]["detail"] == "lost connection"

    service.healthy = True
    await eventually(lambda: len(recorder.of(EventType.HEALTH_CHANGED, "email")) == 2)
    assert [c["healthy"] for c in recorder.of(EventType.HEALTH_CHANGED, "email")] == [False, True]
    assert orchestrator.status()["email"]["state"] == "running"


@pytest.mark.parametrize("failure", ["raises", "times out"])
async def test_health_check_that_raises_or_times_out_counts_as_unhealthy(
    make: Callable[..., Orchestrator], failure: str
) -> None:
    class Sick(Idle):
        async def health(self) -> HealthReport:
            if failure == "raises":
                raise ConnectionError("IMAP NOOP failed")
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    orchestrator = make(health_timeout=0.02)
    orchestrator.register(Sick("email"))
    await orchestrator.start_all()

    reports = await orchestrator.check_health()

    assert reports["email"].healthy is False
    assert orchestrator.status()["email"]["state"] == "degraded"
    assert orchestrator.status()["email"]["healthy"] is False


async def test_graceful_stop_lets_the_in_flight_step_finish(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    class Stepper(Service):
        name = "executor"

        def __init__(self) -> None:
            super().__init__()
            self.stopping = asyncio.Event()
            self.stop_called = asyncio.Event()
            self.in_step = asyncio.Event()
            self.release = asyncio.Event()
            self.steps_done = 0
            self.cancelled = False

        async def run(self) -> None:
            self.ready.set()
            try:
                while not self.stopping.is_set():
                    self.in_step.set()
                    await self.release.wait()  # e.g. an Atlas call in flight
                    self.steps_done += 1
            except asyncio.CancelledError:
                self.cancelled = True
                raise

        async def stop(self) -> None:
            self.stopping.set()
            self.stop_called.set()

    orchestrator = make(grace_seconds=5.0)
    service = Stepper()
    orchestrator.register(service)
    recorder = Recorder(bus)
    await orchestrator.start_all()
    await asyncio.wait_for(service.in_step.wait(), 5)

    stopping = asyncio.create_task(orchestrator.stop("executor"))
    await asyncio.wait_for(service.stop_called.wait(), 5)
    assert not stopping.done()
    service.release.set()
    await asyncio.wait_for(stopping, 5)

    assert service.steps_done == 1
    assert not service.cancelled
    assert recorder.of(EventType.SERVICE_STOPPED) == [{"service": "executor"}]
    assert recorder.of(EventType.SERVICE_FAILED) == []


async def test_stop_cancels_a_service_that_outlives_the_grace(make: Callable[..., Orchestrator]) -> None:
    class Stubborn(Service):
        name = "stubborn"

        def __init__(self) -> None:
            super().__init__()
            self.cancelled = False

        async def run(self) -> None:
            self.ready.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise

    orchestrator = make(grace_seconds=0.02)
    service = Stubborn()
    orchestrator.register(service)
    await orchestrator.start_all()

    await asyncio.wait_for(orchestrator.stop("stubborn"), 5)

    assert service.cancelled
    assert orchestrator.status()["stubborn"]["state"] == "stopped"


async def test_is_ready_only_when_every_required_service_runs_healthy(
    make: Callable[..., Orchestrator],
) -> None:
    orchestrator = make()
    core = Idle("core")
    optional = Idle("slack", required=False)
    orchestrator.register(core)
    orchestrator.register(optional)
    assert not orchestrator.is_ready()

    await orchestrator.start_all()
    assert orchestrator.is_ready()

    optional.healthy = False
    await orchestrator.check_health()
    assert orchestrator.is_ready()

    core.healthy = False
    await orchestrator.check_health()
    assert not orchestrator.is_ready()

    core.healthy = True
    await orchestrator.check_health()
    await orchestrator.stop("core")
    assert not orchestrator.is_ready()


async def test_backoff_starts_over_after_the_service_stayed_up_long_enough(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    class Flaky(Service):
        """Crashes at once on its first run; later runs stay up until told to crash."""

        name = "flaky"

        def __init__(self) -> None:
            super().__init__()
            self.runs = 0
            self.crash = asyncio.Event()

        async def run(self) -> None:
            self.runs += 1
            self.ready.set()
            if self.runs > 1:
                await self.crash.wait()
            raise RuntimeError(f"crash {self.runs}")

    orchestrator = make(stable_after=0.05, restart_initial=0.02)
    service = Flaky()
    orchestrator.register(service)
    recorder = Recorder(bus)
    await orchestrator.start("flaky")
    await eventually(lambda: service.runs == 2 and orchestrator.status()["flaky"]["state"] == "running")
    loop = asyncio.get_running_loop()
    up_since = loop.time()
    await eventually(lambda: loop.time() - up_since > 0.06)

    service.crash.set()
    await eventually(lambda: len(recorder.of(EventType.SERVICE_FAILED)) == 2)

    assert [f["attempt"] for f in recorder.of(EventType.SERVICE_FAILED)] == [1, 1]


async def test_a_service_slow_to_start_holds_up_no_other_and_stop_all_interrupts_it(
    make: Callable[..., Orchestrator],
) -> None:
    class SlowToStart(Service):
        name = "slow"

        def __init__(self) -> None:
            super().__init__()
            self.running = asyncio.Event()

        async def run(self) -> None:
            self.running.set()
            await asyncio.Event().wait()  # never ready

    orchestrator = make(start_timeout=30.0, grace_seconds=0.02)
    slow, later = SlowToStart(), Idle("later")
    orchestrator.register(slow)
    orchestrator.register(later)
    await asyncio.wait_for(orchestrator.launch_all(), 5)
    await asyncio.wait_for(slow.running.wait(), 5)
    await eventually(lambda: orchestrator.status()["later"]["state"] == "running")
    assert orchestrator.status()["slow"]["state"] == "starting"

    await asyncio.wait_for(orchestrator.stop_all(), 5)

    assert later.runs == 1
    assert orchestrator.status()["slow"]["state"] == "stopped"
    assert orchestrator.status()["later"]["state"] == "stopped"


async def test_crash_reported_on_the_bus_has_credentials_scrubbed(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    class Leaky(Service):
        name = "leaky"

        async def run(self) -> None:
            raise ConnectionError("cannot reach https://bot:hunter2secret@mail.example.com/")

    orchestrator = make(restart_initial=1.0, restart_max=1.0)
    orchestrator.register(Leaky())
    recorder = Recorder(bus)

    await orchestrator.start("leaky")

    error = recorder.of(EventType.SERVICE_FAILED, "leaky")[0]["error"]
    assert "hunter2secret" not in error
    assert "hunter2secret" not in (orchestrator.status()["leaky"]["last_error"] or "")
    assert error.startswith("ConnectionError: cannot reach https://bot:")


class Integration(Service):
    """Runs at once and reaches its outside server on its own; its link says how that goes."""

    def __init__(self, name: str, bus: InProcessEventBus) -> None:
        super().__init__()
        self.name = name
        self.required = False
        self.outside = OutsideLink(name, "IMAP 127.0.0.1:993", bus=bus)
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        self.ready.set()
        self.outside.connecting()
        await self.stopping.wait()

    async def stop(self) -> None:
        self.stopping.set()

    def link(self) -> LinkStatus:
        return self.outside.status()


async def test_an_integration_that_cannot_reach_its_server_shows_retrying_with_the_reason(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    orchestrator = make()
    email = Integration("email", bus)
    orchestrator.register(email)
    await orchestrator.start_all()
    assert orchestrator.status()["email"]["state"] == "connecting"

    email.outside.failed(TimeoutError("timed out"), timeout=10)

    shown = orchestrator.status()["email"]
    assert shown["state"] == "retrying"
    assert shown["last_error"] == "IMAP 127.0.0.1:993: connection timed out after 10 s"
    assert shown["attempts"] == 1
    assert shown["next_attempt"] is not None
    await orchestrator.stop_all()


async def test_an_integration_that_is_down_does_not_hold_up_readiness_unless_required(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    free = make()
    free.register(Idle("pipeline"))
    free.register(Integration("email", bus))
    await free.start_all()
    assert free.is_ready()
    await free.stop_all()

    strict = make(required=["email"])
    email = Integration("email", bus)
    strict.register(Idle("pipeline"))
    strict.register(email)
    await strict.start_all()
    assert not strict.is_ready()
    email.outside.connected()
    assert strict.is_ready()
    await strict.stop_all()


async def test_an_integration_going_down_and_back_is_told_on_the_bus(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    recorder = Recorder(bus)
    orchestrator = make()
    email = Integration("email", bus)
    orchestrator.register(email)
    await orchestrator.start_all()
    email.outside.connected()
    email.outside.failed(ConnectionRefusedError(111, "Connection refused"))
    email.outside.connected()
    await bus.drain(5)

    down = recorder.of(EventType.SERVICE_RETRYING, "email")
    back = recorder.of(EventType.SERVICE_CONNECTED, "email")
    assert [d["error"] for d in down] == ["IMAP 127.0.0.1:993: connection refused (nothing is listening)"]
    assert len(back) == 2 and "down_seconds" in back[1]
    await orchestrator.stop_all()


async def test_wait_running_returns_once_the_named_services_run_and_gives_up_at_its_timeout(
    make: Callable[..., Orchestrator],
) -> None:
    class NeverReady(Service):
        name = "never"

        async def run(self) -> None:
            await asyncio.Event().wait()

    orchestrator = make(start_timeout=30.0, grace_seconds=0.02)
    orchestrator.register(Idle("pipeline"))
    orchestrator.register(NeverReady())
    await orchestrator.launch_all()

    assert await orchestrator.wait_running(["pipeline"], timeout=5)
    assert not await orchestrator.wait_running(["pipeline", "never"], timeout=0.05)
    await orchestrator.stop_all()


async def test_an_integration_trying_again_while_its_server_is_down_stays_retrying(
    bus: InProcessEventBus, make: Callable[..., Orchestrator]
) -> None:
    orchestrator = make()
    email = Integration("email", bus)
    orchestrator.register(email)
    await orchestrator.start_all()
    email.outside.failed(ConnectionRefusedError(111, "Connection refused"))

    email.outside.connecting()

    assert orchestrator.status()["email"]["state"] == "retrying"
    assert orchestrator.status()["email"]["attempts"] == 1
    await orchestrator.stop_all()
