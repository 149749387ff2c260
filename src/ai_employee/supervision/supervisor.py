"""The supervisor: every item's checkpoints (to Slack, or to the log), and alerts.

Always on. It turns the bus's events into checkpoints (checkpoints.checkpoint_for) and hands them
to the Slack service's outbox, or, without Slack (no `SLACK_BOT_TOKEN`), logs them as
`slack.checkpoint`: the same steps, in the structured log. The alert monitor runs here too; its
alerts go to Slack's alert channel, to the Telegram chat `TELEGRAM_ADMIN_CHAT_ID` when set, and
always to the log. Both sinks queue and never hold up the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from telegram import Bot
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.request import HTTPXRequest

from ai_employee.clients.retry import describe
from ai_employee.config import Settings
from ai_employee.model.bus import Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.services import HealthReport, Service, ServiceContext
from ai_employee.supervision.alerts import AlertMonitor, AlertSink
from ai_employee.supervision.checkpoints import Checkpoint, checkpoint_for
from ai_employee.supervision.slack import SlackService
from ai_employee.supervision.status import Status

log = structlog.get_logger(__name__)

#: the events that are steps of an item (the rest the monitor looks at)
ITEM_EVENTS = (
    EventType.ACTION_CREATED,
    EventType.PLAN_CREATED,
    EventType.PLAN_FALLBACK,
    EventType.APPROVAL_GRANTED,
    EventType.APPROVAL_DENIED,
    EventType.APPROVAL_REVOKED,
    EventType.PLAN_EXECUTING,
    EventType.PLAN_EXECUTED,
    EventType.PLAN_FAILED,
    EventType.PLAN_DUPLICATE_IGNORED,
)
MONITOR_EVENTS = (
    EventType.SERVICE_RESTARTED,
    EventType.SERVICE_FAILED,
    EventType.SERVICE_RETRYING,
    EventType.SERVICE_CONNECTED,
    EventType.HEALTH_CHANGED,
    EventType.PLAN_EXECUTING,
    EventType.PLAN_EXECUTED,
    EventType.PLAN_FAILED,
)
TELEGRAM_QUEUE = 100
SEEN_EVENTS = 50_000
TELEGRAM_TRIES = 5


class CheckpointSink(Protocol):
    def add(self, checkpoint: Checkpoint) -> None: ...


class LogCheckpoints:
    """Log-only mode: the checkpoints as `slack.checkpoint` lines, coalesced per item like the
    Slack posts (one line per item per `min_interval`, with every step since the last one): a
    burst of files must not cost a log line per step on the event loop."""

    def __init__(self, min_interval: float) -> None:
        self._min_interval = min_interval
        self._pending: dict[str, list[Checkpoint]] = {}
        self._wake = asyncio.Event()
        self.logged = 0

    def add(self, checkpoint: Checkpoint) -> None:
        self._pending.setdefault(checkpoint.action_id, []).append(checkpoint)
        self._wake.set()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for steps in pending.values():
            self.logged += 1
            last = steps[-1]
            log.info(
                "slack.checkpoint",
                action_id=last.action_id,
                status=last.status.value,
                text="\n".join(step.line for step in steps),
                plan_id=next((step.plan_id for step in reversed(steps) if step.plan_id), ""),
                steps=[step.status.value for step in steps],
            )

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                await _first(self._wake, stop)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._min_interval)  # let a burst's steps gather
                self.flush()
        finally:
            self.flush()


class TelegramAlerts:
    """Alerts to one Telegram chat through python-telegram-bot's Bot (base URL from the settings)."""

    def __init__(
        self, token: str, chat_id: int, api_base_url: str, *, connect_timeout: float, read_timeout: float
    ) -> None:
        root = api_base_url.rstrip("/")
        request = HTTPXRequest(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self._bot = Bot(token, base_url=f"{root}/bot", base_file_url=f"{root}/file/bot", request=request)
        self._chat_id = chat_id
        self._queue: deque[str] = deque(maxlen=TELEGRAM_QUEUE)
        self._wake = asyncio.Event()
        self.sent = 0

    def alert(self, title: str, detail: str, status: Status) -> None:
        text = f"{_TEXT_MARK.get(status, '!')} {title}" + (f"\n{detail}" if detail else "")
        self._queue.append(text[:4000])
        self._wake.set()

    async def run(self, stop: asyncio.Event, initial_backoff: float, max_backoff: float) -> None:
        try:
            while not stop.is_set():
                if not self._queue:
                    self._wake.clear()
                    await _first(self._wake, stop)
                    continue
                text = self._queue[0]
                for attempt in range(TELEGRAM_TRIES):
                    try:
                        await self._bot.send_message(self._chat_id, text)
                        self.sent += 1
                        break
                    except (BadRequest, Forbidden) as error:  # a wrong chat id: asking again will not help
                        log.error(
                            "supervision.telegram_alert_refused", error=describe(error), chat_id=self._chat_id
                        )
                        break
                    except (TelegramError, OSError) as error:
                        log.warning(
                            "supervision.telegram_alert_failed", error=describe(error), attempt=attempt + 1
                        )
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(
                                stop.wait(), min(max_backoff, initial_backoff * 2**attempt)
                            )
                        if stop.is_set():
                            return
                self._queue.popleft()
        finally:
            with contextlib.suppress(Exception):
                await self._bot.shutdown()


_TEXT_MARK = {Status.FAILED: "🔴", Status.WARNING: "🟠", Status.COMPLETE: "🟢"}


class SupervisorService(Service):
    name = "supervisor"
    required = False

    def __init__(
        self,
        ctx: ServiceContext,
        status: Callable[[], Mapping[str, Any]],
        slack: SlackService | None,
    ) -> None:
        super().__init__()
        self._ctx = ctx
        self._settings: Settings = ctx.settings
        self.slack = slack
        self.log_sink: LogCheckpoints | None = None
        self.sink: CheckpointSink
        if slack is None:
            self.log_sink = LogCheckpoints(ctx.settings.slack.min_interval)
            self.sink = self.log_sink
        else:
            self.sink = slack
        sinks: list[AlertSink] = [slack] if slack is not None else []
        self.telegram = _telegram_alerts(ctx.settings)
        if self.telegram is not None:
            sinks.append(self.telegram)
        self.monitor = AlertMonitor(
            ctx.settings.supervision,
            status=status,
            plans_folder=ctx.vault_root / "Plans",
            sinks=sinks,
        )
        self._stop_requested = asyncio.Event()
        self._look_now = asyncio.Event()
        self._subscriptions: list[Subscription] = []
        self._running = False
        self._seen: dict[str, None] = {}  # item events already turned into checkpoints, oldest first

    async def run(self) -> None:
        self._stop_requested.clear()
        bus = self._ctx.bus
        self._subscriptions = [
            bus.subscribe(event_type, self.on_item_event, name="supervision.checkpoints")
            for event_type in ITEM_EVENTS
        ] + [
            bus.subscribe(event_type, self.on_monitor_event, name="supervision.alerts")
            for event_type in MONITOR_EVENTS
        ]
        self._catch_up()
        tasks: list[asyncio.Task[None]] = []
        if self.log_sink is not None:
            tasks.append(asyncio.create_task(self.log_sink.run(self._stop_requested), name="supervision:log"))
        if self.telegram is not None:
            services = self._settings.services
            telegram = self.telegram.run(self._stop_requested, services.initial_backoff, services.max_backoff)
            tasks.append(asyncio.create_task(telegram, name="supervision:telegram-alerts"))
        self._running = True
        self.ready.set()
        log.info(
            "supervision.started",
            checkpoints="slack" if self.slack is not None else "log",
            telegram_alerts=self.telegram is not None,
        )
        try:
            interval = self._settings.supervision.check_interval
            while not self._stop_requested.is_set():
                self.monitor.check()
                self._look_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(self._look_now, self._stop_requested), interval)
        finally:
            self._running = False
            for subscription in self._subscriptions:
                bus.unsubscribe(subscription)
            self._subscriptions = []
            if tasks:  # they end on the stop event (the log flushes what it holds)
                _, late = await asyncio.wait(tasks, timeout=5)
                for task in late:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def stop(self) -> None:
        self._stop_requested.set()

    async def health(self) -> HealthReport:
        data: dict[str, Any] = {
            "checkpoints": "slack" if self.slack is not None else "log",
            "open_alerts": self.monitor.open_alerts,
            "alerts_sent": self.monitor.sent,
            "telegram_alerts": self.telegram is not None,
        }
        if not self._running:
            return HealthReport(False, "not running", data)
        return HealthReport(True, f"{len(self.monitor.open_alerts)} open alerts", data)

    def on_item_event(self, event: Event) -> None:
        if event.id in self._seen:
            return
        self._seen[event.id] = None
        if len(self._seen) > SEEN_EVENTS:
            self._seen.pop(next(iter(self._seen)))
        checkpoint = checkpoint_for(event)
        if checkpoint is not None:
            self.sink.add(checkpoint)

    def _catch_up(self) -> None:
        """Events are hints: what happened before this service subscribed (the daemon's vault path
        starts first; a restart of this service) is in the bus's history, and is posted now."""
        wanted = set(ITEM_EVENTS)
        missed = [
            event for event in self._ctx.bus.history() if event.type in wanted and event.id not in self._seen
        ]
        for event in missed:
            self.on_item_event(event)
        if missed:
            log.info("supervision.caught_up", events=len(missed))

    def on_monitor_event(self, event: Event) -> None:
        if self.monitor.observe(event):
            self._look_now.set()


def _telegram_alerts(settings: Settings) -> TelegramAlerts | None:
    telegram = settings.telegram
    if (
        telegram.admin_chat_id is None
        or telegram.bot_token is None
        or not telegram.bot_token.get_secret_value()
    ):
        return None
    return TelegramAlerts(
        telegram.bot_token.get_secret_value(),
        telegram.admin_chat_id,
        telegram.api_base_url,
        connect_timeout=settings.services.connect_timeout,
        read_timeout=settings.services.read_timeout,
    )


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def build_supervision(
    ctx: ServiceContext, status: Callable[[], Mapping[str, Any]]
) -> tuple[list[Service], dict[str, str]]:
    """The supervisor (always) and the Slack service (when configured); (services, off: name -> why)."""
    off: dict[str, str] = {}
    slack: SlackService | None
    try:
        slack = SlackService(ctx)
    except PluginDisabled as reason:
        slack = None
        off["slack"] = str(reason)
    supervisor = SupervisorService(ctx, status, slack)
    services: list[Service] = [supervisor] if slack is None else [supervisor, slack]
    return services, off
