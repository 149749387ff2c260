"""The daemon: builds every part from the settings, runs them under the orchestrator, and stops
gracefully on SIGTERM/SIGINT (or `ai-employee stop`), letting in-flight steps finish."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ai_employee import __version__
from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.config import Settings
from ai_employee.control.dashboard import DashboardService
from ai_employee.control.port import LOCK_NAME, open_port
from ai_employee.control.server import ControlServer, new_token
from ai_employee.control.webhooks import WebhookListener
from ai_employee.daemon_parts import (
    distributed_work,
    load_supervision,
    open_store,
    register_plugins,
    register_supervision,
    report_to_service_manager,
    start_webhooks,
    transcription_on_workers,
)
from ai_employee.model.events import Event, EventType
from ai_employee.model.plugins import (
    SERVICES_GROUP,
    load_factories,
)
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.model.services import ServiceContext
from ai_employee.observability import timing
from ai_employee.observability.logging import configure_logging, register_settings_secrets
from ai_employee.observability.metrics import Metrics
from ai_employee.observability.stacks import install_stack_dump
from ai_employee.orchestrator import Orchestrator
from ai_employee.pipeline.execution import runs_live
from ai_employee.pipeline.renderer import start_intake_renderer
from ai_employee.pipeline.service import PipelineService
from ai_employee.pipeline.steps import VaultSteps
from ai_employee.pipeline.work_log import WorkLog
from ai_employee.planners.approval import may_auto_approve
from ai_employee.planners.base import Planner
from ai_employee.planners.choice import build_planner
from ai_employee.vault.audit import AuditLog
from ai_employee.vault.decisions import Decisions
from ai_employee.vault.fs import write_durable
from ai_employee.vault.layout import VaultLayout
from ai_employee.vault.ledger import Ledger
from ai_employee.vault.watcher import WatcherService
from ai_employee.vault.writer import start_committer

if TYPE_CHECKING:  # imported when REDIS_URL is set: redis takes a tenth of a second to import
    from ai_employee.bus.redis_work import RedisWork

log = structlog.get_logger(__name__)

DAEMON_FILE = "daemon.json"
LOCK_FILE = LOCK_NAME
STATE_DB = "state.db"
GIL_SWITCH_INTERVAL_SECONDS = 0.0005
VAULT_FIRST_SECONDS = 3.0


class AlreadyRunning(RuntimeError):
    """Another daemon holds this vault."""


@dataclass
class DaemonInfo:
    pid: int
    port: int
    token: str
    host: str
    vault: str
    started: str
    argv: list[str]

    @classmethod
    def read(cls, layout: VaultLayout) -> DaemonInfo | None:
        try:
            data = json.loads((layout.state_dir / DAEMON_FILE).read_text(encoding="utf-8"))
            return cls(
                pid=int(data["pid"]),
                port=int(data["port"]),
                token=str(data.get("token", "")),
                host=str(data.get("host", "127.0.0.1")),
                vault=str(data.get("vault", "")),
                started=str(data.get("started", "")),
                argv=list(data.get("argv", [])),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, layout: VaultLayout) -> None:
        path = layout.state_dir / DAEMON_FILE
        payload = json.dumps(self.__dict__, indent=2).encode("utf-8")
        write_durable(path, payload)
        os.chmod(path, 0o600)


class _RouteProxy:
    def __init__(self, control: ControlServer) -> None:
        self._control = control

    def add_route(self, method: str, path: str, handler: Any) -> None:
        self._control.add_route(method, path, handler)


class _StateStore:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def get(self, namespace: str, key: str) -> str | None:
        return self._ledger.kv_get(namespace, key)

    def put(self, namespace: str, key: str, value: str) -> None:
        self._ledger.kv_put(namespace, key, value)


class _ActionLookup:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def action_info(self, action_id: str) -> dict[str, Any] | None:
        row = self._ledger.action(action_id)
        if row is None:
            return None
        return {
            "action_id": row.action_id,
            "source": row.source,
            "source_ref": row.source_ref,
            "state": row.state,
            "note": row.note_rel,
            "plan_id": row.plan_id,
            "plan": row.plan_rel,
            "title": row.title,
            "sender": row.sender,
            "attachments": list(row.attachments),
            "extra": row.extra,
        }


class Daemon:
    """One daemon per vault. Implements the control port's hooks."""

    def __init__(self, settings: Settings, *, argv: list[str] | None = None) -> None:
        self.settings = settings
        self.layout = VaultLayout(settings.vault.path.resolve())
        self.argv = argv or []
        self._stop_requested = asyncio.Event()
        self._lock_fd: int | None = None
        self.orchestrator: Orchestrator | None = None
        self.registry: ExecutorRegistry | None = None
        self.planner_name = "template"
        self.planner: Planner | None = None
        self.work: RedisWork | None = None
        self.started = datetime.now(UTC)
        self.webhooks: WebhookListener | None = None
        self._integrations_registered = False  # readiness waits for them when services.required names any
        self.port: int | None = None
        self.store_engine: Any = None  # the audit store's SQLAlchemy Engine (None: off)
        self.store: Any = None  # its StoreService
        self._store_error: Exception | None = None  # the store's database could not be reached

    # --- ControlHooks ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        services = self.orchestrator.status() if self.orchestrator else {}
        executors = self.registry.status() if self.registry else {}
        for name, executor in executors.items():
            executor["live"] = bool(executor.get("available")) and self._leaves_machine(name)
        return {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "dry_run": self.settings.execution.dry_run,
            # the actions whose effect leaves the machine: none in dry-run
            "live_actions": sorted(name for name, executor in executors.items() if executor["live"]),
            "planner": self.planner_name,
            "planner_link": self._planner_link(),
            "started": self.started.isoformat(timespec="seconds"),
            "vault_path": str(self.layout.root),
            "control_port": self.port,
            "services": services,
            "executors": executors,
            "vault": self.layout.counts(),
            "webhooks": {"host": self.webhooks.host, "port": self.webhooks.port} if self.webhooks else None,
            **({"distributed": self.work.status()} if self.work is not None else {}),
            "store": self.store.writer.state().to_dict() if self.store else {"state": "off"},
        }

    def health_view(self) -> dict[str, Any]:
        """What supervision watches: the services, the executors and the planner's link (the
        part of `status` that costs no look at the vault)."""
        return {
            "services": self.orchestrator.status() if self.orchestrator else {},
            "executors": self.registry.status() if self.registry else {},
            "planner_link": self._planner_link(),
        }

    def _leaves_machine(self, action: str) -> bool:
        """Whether the action, run now, would send for real (pipeline.execution.runs_live)."""
        executor = self.registry.get(action) if self.registry else None
        return executor is not None and executor.external and runs_live(self.settings, executor)

    def _planner_link(self) -> dict[str, Any] | None:
        link = self.planner.link() if self.planner is not None else None
        return link.to_dict() if link is not None else None

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        if self.orchestrator is None:
            return False, {"reason": "starting"}
        if self.settings.services.required and not self._integrations_registered:
            return False, {"reason": "loading the integrations named in services.required"}
        ready = self.orchestrator.is_ready()
        return ready, {name: service["state"] for name, service in self.orchestrator.status().items()}

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def restart_service(self, name: str) -> None:
        if self.orchestrator is None:
            raise KeyError(name)
        await self.orchestrator.restart(name)

    # --- running ---------------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.layout.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = DaemonInfo.read(self.layout)
            pid = f" (pid {info.pid})" if info else ""
            raise AlreadyRunning(f"another daemon is already running on {self.layout.root}{pid}") from None
        self._lock_fd = fd

    async def run(self) -> int:
        # The vault worker spends its time in syscalls that release the GIL; with the default 5 ms
        # switch interval, each return waits behind the watcher and event-loop threads (a convoy
        # that halved burst throughput). A shorter interval hands the GIL back sooner.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
        configure_logging(self.settings.logging.level, self.settings.logging.format, stream=sys.stdout)
        register_settings_secrets(self.settings)
        self.layout.create()
        self._acquire_lock()
        ledger = Ledger(self.layout.state_dir / STATE_DB)
        audit = AuditLog(ledger, self.layout.root / "Logs")
        metrics = Metrics()
        timing.bind(metrics.operation_duration_seconds)
        bus = InProcessEventBus()
        await bus.start()
        bus.subscribe(None, lambda event: _track_services(event, metrics), name="service-metrics")
        work_log = WorkLog(bus)
        token = new_token()
        host = self.settings.health.host
        control = ControlServer(self, metrics, host=host, port=self.settings.health.port or 0, token=token)
        loop = asyncio.get_running_loop()
        try:
            # Visible first: the control port and daemon.json, so that status and stop find the
            # daemon before anything slow (SDK imports, plug-ins, recovery) has happened.
            port = await open_port(host, self.settings.health.port, control.start)
            self.port = port
            self.webhooks = await start_webhooks(self.settings, control)
            DaemonInfo(
                pid=os.getpid(),
                port=port,
                token=token,
                host=self.settings.health.host,
                vault=str(self.layout.root),
                started=self.started.isoformat(),
                argv=self.argv,
            ).write(self.layout)
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.request_stop)
            install_stack_dump(loop)
            await self._serve(ledger, audit, metrics, bus, control, port)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                loop.remove_signal_handler(signum)
            if self.webhooks is not None:
                await self.webhooks.stop()
            await control.stop()
            work_log.close()
            await bus.close()
            audit.flush()
            ledger.close()
            if self.store is not None:
                await asyncio.to_thread(self.store.close)
            if self.store_engine is not None:
                self.store_engine.dispose()
            timing.bind(None)
            current = DaemonInfo.read(self.layout)
            if current is not None and current.pid == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    (self.layout.state_dir / DAEMON_FILE).unlink()
            self._release_lock()
        if self._store_error is not None:
            raise self._store_error
        return 0

    async def _start_store(
        self,
        opening: asyncio.Task[Any],
        orchestrator: Orchestrator,
        pipeline: PipelineService,
        dashboard: DashboardService,
        ledger: Ledger,
        bus: InProcessEventBus,
        metrics: Metrics,
        control: ControlServer,
    ) -> None:
        """The store once its database is open: its service (which catches up from the ledger
        once the pipeline has recovered, covering what was announced before it listened),
        `GET /tasks`, and the dashboard's facts. A database that cannot be reached stops the
        daemon; `run` then raises its error (one line from the CLI, exit 1)."""
        from ai_employee.store.errors import StoreUnavailable

        try:
            self.store_engine = await opening
        except StoreUnavailable as error:
            self._store_error = error
            self.request_stop()
            return
        from ai_employee.control.tasks import TaskRoutes
        from ai_employee.store.service import build_store_service

        self.store = build_store_service(
            self.store_engine,
            url=self.settings.database.url,
            layout=self.layout,
            ledger=ledger,
            bus=bus,
            metrics=metrics,
            recovered=pipeline.ready.is_set,
        )
        orchestrator.register(self.store)
        TaskRoutes(self.store_engine).register(control)
        dashboard.store = self.store_engine
        await orchestrator.launch_all()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _serve(
        self,
        ledger: Ledger,
        audit: AuditLog,
        metrics: Metrics,
        bus: InProcessEventBus,
        control: ControlServer,
        port: int,
    ) -> None:
        """Build the services and run them until asked to stop. The vault path (pipeline, watcher,
        dashboard) is launched before the plug-ins are even imported; then every plug-in at once:
        nothing outside holds up the start, and /readyz says when the vault path works."""
        # Plug-ins and SDKs take a second to import: in a thread, so that the control port answers.
        registry = await asyncio.to_thread(ExecutorRegistry.from_entry_points, self.settings)
        self.registry = registry
        for problem in unknown_action_names(self.settings, registry):
            log.warning(problem)
        planner = build_planner(self.settings, registry, ledger)  # a model planner builds in a thread
        self.planner_name = planner.name
        self.planner = planner
        steps = VaultSteps(
            self.layout,
            ledger,
            audit,
            self.settings,
            registry,
            planner,
            committer=start_committer(),
            intake_renderer=start_intake_renderer(self.layout.root, planner),
        )
        decisions = Decisions(self.layout)
        self.work = await distributed_work(self.settings, ledger, planner, metrics)
        if self.work is not None:  # documents are read by workers, in the daemon when none could
            steps.intake.documents.read_on_workers(self.work)
        pipeline = PipelineService(
            steps,
            bus=bus,
            metrics=metrics,
            settings=self.settings,
            planner=planner,
            auto_approve=may_auto_approve,
            approve=decisions.approve,
            work=self.work,
        )
        watcher = WatcherService(
            self.layout,
            hint=pipeline.hint_threadsafe,
            rescan=pipeline.request_reconcile,
            bus=bus,
            metrics=metrics,
            writes=pipeline.steps.intake.writes,
        )
        orchestrator = Orchestrator(
            bus,
            health_interval=self.settings.health.check_interval_seconds,
            grace_seconds=self.settings.services.grace_seconds,
            required=self.settings.services.required,
        )
        self.orchestrator = orchestrator
        reporter = report_to_service_manager(bus, self.readiness)
        dashboard = DashboardService(self.layout, ledger, bus, self.status)
        try:
            orchestrator.register(pipeline)
            orchestrator.register(watcher)
            orchestrator.register(dashboard)
            if self.work is not None:
                from ai_employee.bus.worker_health import WorkersService

                orchestrator.register(WorkersService(self.work, self.settings.bus))
            await orchestrator.launch_all()
            reporter.start()
            # The vault path first: plug-ins import their SDKs (a second of CPU) once it runs, or
            # after VAULT_FIRST_SECONDS (a large vault's recovery holds up no integration longer).
            await orchestrator.wait_running((pipeline.name, watcher.name), VAULT_FIRST_SECONDS)
            context = ServiceContext(
                settings=self.settings,
                bus=bus,
                intake=pipeline,
                vault_root=self.layout.root,
                state=_StateStore(ledger),
                approvals=decisions,
                routes=_RouteProxy(control),
                actions=_ActionLookup(ledger),
                transcription=transcription_on_workers(self.work),
            )
            supervision = await asyncio.to_thread(load_supervision)
            register_supervision(orchestrator, context, supervision, self.health_view)
            register_plugins(orchestrator, context, *await asyncio.to_thread(load_factories, SERVICES_GROUP))
            # The audit store opens (imports, connect, migrations) once the vault path runs and the
            # plug-ins are registered, while they start; a database that cannot be reached stops
            # the daemon: one line, exit 1.
            opening = (
                asyncio.create_task(asyncio.to_thread(open_store, self.settings, self.layout))
                if self.settings.database.store
                else None
            )
            await orchestrator.launch_all()
            self._integrations_registered = True
            if opening is not None:
                await self._start_store(
                    opening, orchestrator, pipeline, dashboard, ledger, bus, metrics, control
                )
            bus.publish(Event(type=EventType.SYSTEM_STARTED, payload={"pid": os.getpid(), "port": port}))
            log.info(
                "daemon started",
                vault=str(self.layout.root),
                port=port,
                pid=os.getpid(),
                dry_run=self.settings.execution.dry_run,
                planner=planner.name,
            )
            await self._stop_requested.wait()
            log.info("stopping: letting in-flight work finish")
            reporter.stopping()
            bus.publish(Event(type=EventType.SYSTEM_STOPPING))
            started = time.monotonic()
            await orchestrator.stop_all()
            bus.publish(Event(type=EventType.SYSTEM_STOPPED))
            log.info("daemon stopped", seconds=round(time.monotonic() - started, 3))
        finally:
            reporter.stopping()
            await reporter.aclose()
            await registry.aclose()
            await planner.aclose()
            pipeline.close()
            if self.work is not None:
                await self.work.close()


def _track_services(event: Event, metrics: Metrics) -> None:
    name = event.payload.get("service") if event.payload else None
    if not isinstance(name, str):
        return
    if event.type in (EventType.SERVICE_STARTED, EventType.SERVICE_RESTARTED):
        metrics.service_up.labels(service=name).set(1)
    elif event.type in (EventType.SERVICE_FAILED, EventType.SERVICE_STOPPED):
        metrics.service_up.labels(service=name).set(0)
    if event.type == EventType.SERVICE_RESTARTED:
        metrics.service_restarts.labels(service=name).inc()


def unknown_action_names(settings: Settings, registry: ExecutorRegistry) -> list[str]:
    """What the config names as an action that no executor is (a typo): said at start. Harmless
    for safety (such a name makes nothing live or auto-approved), but the person meant something."""
    known = set(registry.names()) | set(registry.disabled)
    problems = []
    for key in ("live_actions", "auto_approve"):
        unknown = sorted(set(getattr(settings.execution, key)) - known)
        if unknown:
            actions = ", ".join(sorted(known))
            problems.append(f"execution.{key} names no action: {', '.join(unknown)} (the actions: {actions})")
    return problems


def service_names() -> list[str]:
    """Every service a daemon runs: the vault path's own, then the plug-ins' (their entry-point
    names: nothing is imported)."""
    plugins = sorted(entry.name for entry in entry_points(group=SERVICES_GROUP))
    return [PipelineService.name, WatcherService.name, DashboardService.name, *plugins]


def run_daemon(settings: Settings, argv: list[str] | None = None) -> int:
    daemon = Daemon(settings, argv=argv)
    return asyncio.run(daemon.run())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with Path(f"/proc/{pid}/stat").open() as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True
