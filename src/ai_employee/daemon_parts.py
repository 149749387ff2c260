"""The daemon's optional parts, each wired from the settings: the webhook listener, the audit
store's database, distributed work over Redis, the service-manager reporter, supervision and the
plug-in services. `daemon.py` calls these while it builds one vault's services."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.config import Settings
from ai_employee.control.server import ControlServer
from ai_employee.control.webhooks import WebhookListener
from ai_employee.model.events import EventType
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.model.plugins import PLANNERS_GROUP, PluginDisabled, load_factory
from ai_employee.model.services import ServiceContext
from ai_employee.model.transcription import TranscriptionWork
from ai_employee.observability.metrics import Metrics
from ai_employee.observability.service_manager import Notifier, ServiceManagerReporter
from ai_employee.orchestrator import Orchestrator
from ai_employee.pipeline.work import InProcessWork
from ai_employee.planners.base import Planner
from ai_employee.vault.layout import VaultLayout
from ai_employee.vault.ledger import Ledger

if TYPE_CHECKING:  # imported when REDIS_URL is set: redis takes a tenth of a second to import
    from ai_employee.bus.redis_work import RedisWork

log = structlog.get_logger(__name__)

#: the events after which readiness may have changed: the service manager hears of it at once
_READINESS_EVENTS = (
    EventType.SERVICE_STARTED,
    EventType.SERVICE_STOPPED,
    EventType.SERVICE_FAILED,
    EventType.SERVICE_RESTARTED,
    EventType.SERVICE_CONNECTING,
    EventType.SERVICE_CONNECTED,
    EventType.SERVICE_RETRYING,
    EventType.HEALTH_CHANGED,
    EventType.SYSTEM_STARTED,
)


async def start_webhooks(settings: Settings, control: ControlServer) -> WebhookListener | None:
    """The public listener for the webhook routes only (`webhooks.port`; off when unset)."""
    port = settings.webhooks.port
    if port is None:
        return None
    webhooks = WebhookListener(control.dispatch_webhook, host=settings.webhooks.host, port=port)
    await webhooks.start()
    return webhooks


def open_store(settings: Settings, layout: VaultLayout) -> Any:
    """The audit store's database (imports, connect, migrations): its SQLAlchemy Engine."""
    from ai_employee.store.database import open_store as open_database

    return open_database(settings.database.url, layout.state_dir)


async def distributed_work(
    settings: Settings, ledger: Ledger, planner: Planner, metrics: Metrics
) -> RedisWork | None:
    """With REDIS_URL (or `bus.backend: redis`): the slow steps go to workers (docs/distributed.md).
    The daemon's id names its result stream; it is kept in the ledger, so that a restarted daemon
    reads the results it had not taken yet."""
    url = settings.redis.url
    if not settings.bus.enabled(url):
        return None
    if not url:
        raise RuntimeError("bus.backend is redis, but no REDIS_URL (redis.url) is set")
    from ai_employee.bus.redis_streams import RedisStreams
    from ai_employee.bus.redis_work import RedisWork

    daemon_id = ledger.kv_get("bus", "daemon_id")
    if daemon_id is None:
        daemon_id = secrets.token_hex(8)
        ledger.kv_put("bus", "daemon_id", daemon_id)
    template_factory = load_factory(PLANNERS_GROUP, "template")
    assert template_factory is not None
    template: Planner = template_factory(settings)

    def template_plan(request: PlanRequest, reason: str) -> PlanProposal:
        return dataclasses.replace(template.plan_local(request), fallback_reason=reason)

    work = RedisWork(
        RedisStreams(url, settings.bus.namespace),
        settings.bus,
        daemon_id=daemon_id,
        local=InProcessWork(planner),
        template_plan=template_plan,
        plan_remotely=not planner.local,
        metrics=metrics,
    )
    await work.start()
    return work


def transcription_on_workers(work: RedisWork | None) -> TranscriptionWork | None:
    """With the Redis backend the chat sources' voice notes go to the workers' `transcribe` step
    (each source keeps its own Whisper as the fallback); None without it."""
    if work is None:
        return None
    from ai_employee.bus.redis_transcription import RedisTranscription

    return RedisTranscription(work)


def report_to_service_manager(
    bus: InProcessEventBus, readiness: Callable[[], tuple[bool, dict[str, Any]]]
) -> ServiceManagerReporter:
    """systemd's Type=notify (deploy/systemd): READY=1 when /readyz first says ready, STATUS=,
    WATCHDOG=1, STOPPING=1. Nothing is sent without NOTIFY_SOCKET."""
    reporter = ServiceManagerReporter(Notifier.from_environ(os.environ), readiness)
    for event_type in _READINESS_EVENTS:
        bus.subscribe(event_type, lambda _event: reporter.poke(), name="service-manager")
    return reporter


def load_supervision() -> Callable[..., Any]:
    """Import supervision (slack-sdk, python-telegram-bot: a second of CPU) off the event loop."""
    from ai_employee.supervision.supervisor import build_supervision

    return build_supervision


def register_supervision(
    orchestrator: Orchestrator,
    context: ServiceContext,
    build: Callable[..., Any],
    health_view: Callable[[], dict[str, Any]],
) -> None:
    """The supervisor (checkpoints, alerts) and the Slack service: part of the daemon, since
    they watch the orchestrator's status; Slack stays off without its token (docs/slack.md)."""
    try:
        services, off = build(context, health_view)
    except Exception as error:
        log.exception("supervision could not be built")
        orchestrator.register_disabled("supervisor", f"could not be built: {error}")
        return
    for name, reason in off.items():
        log.info("service off", service=name, reason=reason)
        orchestrator.register_disabled(name, reason)
    for service in services:
        orchestrator.register(service)


def register_plugins(
    orchestrator: Orchestrator,
    context: ServiceContext,
    factories: dict[str, Callable[..., Any]],
    broken: dict[str, str],
) -> None:
    """The plug-in services (entry points): those that failed to load or to build, or that are
    off, are registered as disabled with their reason."""
    for name, reason in broken.items():
        log.error("service failed to load", service=name, reason=reason)
        orchestrator.register_disabled(name, reason)
    for name, factory in factories.items():
        try:
            service = factory(context)
        except PluginDisabled as reason:
            log.info("service off", service=name, reason=str(reason))
            orchestrator.register_disabled(name, str(reason))
            continue
        except Exception as error:
            log.exception("service could not be built", service=name)
            orchestrator.register_disabled(name, f"could not be built: {error}")
            continue
        orchestrator.register(service)
