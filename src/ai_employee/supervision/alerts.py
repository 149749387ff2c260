"""Alerts: one when a condition turns bad, one when it recovers; never one per health check.

Conditions, each with a key, looked at every `supervision.check_interval` and at once after an
event that may change them:
- a service down (`failed`, `retrying`, `degraded`) for `down_after`, or restarting in a loop
  (`restart_loop` restarts within `restart_window`): email (IMAP), Telegram, Slack, ...;
- an executor's or the planner's outside server unreachable (Atlas, Manus, the model APIs);
- the vault's disk nearly full (`disk_min_free_percent`);
- plans waiting for a decision longer than `stale_after` (default 24 h);
- an execution (a Manus task, a work order) running longer than `task_limit`;
- the failure rate of the last `failure_window` executions at or above `failure_rate`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from ai_employee.config import SupervisionSettings
from ai_employee.model.events import Event, EventType
from ai_employee.supervision.checkpoints import format_duration
from ai_employee.supervision.status import Status

log = structlog.get_logger(__name__)

DOWN_STATES = frozenset({"failed", "retrying", "degraded"})
SHOWN_NAMES = 5


class AlertSink(Protocol):
    def alert(self, title: str, detail: str, status: Status) -> None: ...


@dataclass(frozen=True)
class Condition:
    """A condition that is bad now."""

    key: str
    title: str
    detail: str = ""
    severity: Status = Status.FAILED


@dataclass
class _Open:
    title: str
    since: float


class AlertMonitor:
    """Watches the daemon's status, the bus and the vault's disk; tells the sinks of changes."""

    def __init__(
        self,
        settings: SupervisionSettings,
        *,
        status: Callable[[], Mapping[str, Any]],
        plans_folder: Path,
        sinks: Iterable[AlertSink],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._status = status
        self._plans = plans_folder
        self._sinks = list(sinks)
        self._clock = clock
        self._open: dict[str, _Open] = {}  # alerts sent and not yet recovered
        self._bad_since: dict[str, float] = {}  # service keys seen bad, not yet alerted (down_after)
        self._restarts: dict[str, deque[float]] = {}
        self._running: dict[str, tuple[float, str]] = {}  # plan id -> (started, action)
        self._outcomes: deque[bool] = deque(maxlen=settings.failure_window)  # True: failed
        self.sent = 0

    def add_sink(self, sink: AlertSink) -> None:
        self._sinks.append(sink)

    @property
    def open_alerts(self) -> dict[str, str]:
        return {key: item.title for key, item in self._open.items()}

    # -- events -----------------------------------------------------------------------------

    def observe(self, event: Event) -> bool:
        """Note what an event changes; True when the conditions should be looked at now."""
        payload = event.payload
        now = self._clock()
        if event.type in (EventType.SERVICE_RESTARTED, EventType.SERVICE_FAILED):
            name = str(payload.get("service") or "")
            if name and event.type is EventType.SERVICE_RESTARTED:
                self._restarts.setdefault(name, deque(maxlen=64)).append(now)
            return True
        if event.type is EventType.PLAN_EXECUTING:
            self._running[str(payload.get("plan_id") or "")] = (now, str(payload.get("action") or ""))
            return False
        if event.type in (EventType.PLAN_EXECUTED, EventType.PLAN_FAILED):
            self._running.pop(str(payload.get("plan_id") or ""), None)
            self._outcomes.append(event.type is EventType.PLAN_FAILED)
            return True
        return event.type in (
            EventType.SERVICE_RETRYING,
            EventType.SERVICE_CONNECTED,
            EventType.HEALTH_CHANGED,
        )

    # -- looking ----------------------------------------------------------------------------

    def check(self) -> list[tuple[str, bool]]:
        """Look at every condition; alert on what turned bad or recovered. Returns the changes
        (key, bad)."""
        bad = {condition.key: condition for condition in self.conditions()}
        changes: list[tuple[str, bool]] = []
        now = self._clock()
        for key, condition in bad.items():
            if key not in self._open:
                self._open[key] = _Open(condition.title, now)
                self._send(condition.title, condition.detail, condition.severity)
                changes.append((key, True))
        for key in [key for key in self._open if key not in bad]:
            opened = self._open.pop(key)
            self._send(
                f"Recovered: {opened.title}",
                f"after {format_duration(now - opened.since)}",
                Status.COMPLETE,
            )
            changes.append((key, False))
        return changes

    def conditions(self) -> list[Condition]:
        found: list[Condition] = []
        try:
            status = self._status()
        except Exception:
            log.exception("supervision.status_failed")
            status = {}
        found.extend(self._services(status.get("services")))
        found.extend(self._dependencies(status))
        found.extend(self._disk())
        found.extend(self._stale_plans())
        found.extend(self._long_tasks())
        found.extend(self._failure_rate())
        return found

    def _services(self, services: Any) -> list[Condition]:
        found: list[Condition] = []
        now = self._clock()
        seen: set[str] = set()
        if isinstance(services, Mapping):
            for name, entry in services.items():
                if not isinstance(entry, Mapping):
                    continue
                key = f"service:{name}"
                state = str(entry.get("state") or "")
                if state in DOWN_STATES:
                    seen.add(key)
                    first = self._bad_since.setdefault(key, now)
                    if now - first >= self._settings.down_after or key in self._open:
                        error = entry.get("last_error") or entry.get("detail") or ""
                        target = entry.get("target")
                        found.append(
                            Condition(
                                key,
                                f"{name} is {state}" + (f" ({target})" if target else ""),
                                f"{error}; down for {format_duration(now - first)}" if error else "",
                            )
                        )
        for key in [key for key in self._bad_since if key not in seen]:
            del self._bad_since[key]
        window = self._settings.restart_window
        for name, times in self._restarts.items():
            recent = [at for at in times if now - at <= window]
            if len(recent) >= self._settings.restart_loop:
                found.append(
                    Condition(
                        f"restarts:{name}",
                        f"{name} is restarting in a loop",
                        f"{len(recent)} restarts in the last {format_duration(window)}",
                    )
                )
        return found

    def _dependencies(self, status: Mapping[str, Any]) -> list[Condition]:
        """Executors' and the planner's servers: told at their last call (no retry of their own)."""
        found: list[Condition] = []
        executors = status.get("executors")
        if isinstance(executors, Mapping):
            for name, entry in executors.items():
                if isinstance(entry, Mapping) and entry.get("state") in DOWN_STATES:
                    target = entry.get("target") or name
                    found.append(
                        Condition(
                            f"executor:{name}",
                            f"{target} is unreachable ({name})",
                            str(entry.get("last_error") or ""),
                        )
                    )
        planner = status.get("planner_link")
        if isinstance(planner, Mapping) and planner.get("state") in DOWN_STATES:
            found.append(
                Condition(
                    "planner",
                    f"{planner.get('target') or 'the planner'} is unreachable",
                    f"{planner.get('last_error') or ''}; plans fall back to the template planner",
                    Status.WARNING,
                )
            )
        return found

    def _disk(self) -> list[Condition]:
        try:
            usage = shutil.disk_usage(self._plans.parent)
        except OSError:
            return []
        free = 100.0 * usage.free / usage.total if usage.total else 100.0
        if free < self._settings.disk_min_free_percent:
            return [
                Condition(
                    "disk",
                    "the vault's disk is nearly full",
                    f"{free:.1f} % free ({usage.free // (1024 * 1024)} MB) on {self._plans.parent}",
                )
            ]
        return []

    def _stale_plans(self) -> list[Condition]:
        """Plans/ only (what waits for a decision), by modification time: one scan of one folder."""
        limit = self._clock() - self._settings.stale_after
        stale: list[tuple[float, str]] = []
        try:
            with os.scandir(self._plans) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.name.endswith(".md"):
                        continue
                    try:
                        modified = entry.stat().st_mtime
                    except OSError:
                        continue
                    if modified < limit:
                        stale.append((modified, entry.name))
        except OSError:
            return []
        if not stale:
            return []
        stale.sort()
        names = ", ".join(name for _, name in stale[:SHOWN_NAMES]) + (
            " ..." if len(stale) > SHOWN_NAMES else ""
        )
        return [
            Condition(
                "stale_plans",
                f"plans waiting for a decision longer than {format_duration(self._settings.stale_after)}",
                f"{len(stale)} waiting, oldest first: {names}",
                Status.WARNING,
            )
        ]

    def _long_tasks(self) -> list[Condition]:
        now = self._clock()
        late = [
            (plan_id, action, now - started)
            for plan_id, (started, action) in self._running.items()
            if now - started > self._settings.task_limit
        ]
        if not late:
            return []
        shown = "; ".join(
            f"{plan} ({action}) for {format_duration(seconds)}"
            for plan, action, seconds in late[:SHOWN_NAMES]
        )
        return [
            Condition(
                "long_tasks",
                f"executions running longer than {format_duration(self._settings.task_limit)}",
                shown,
                Status.WARNING,
            )
        ]

    def _failure_rate(self) -> list[Condition]:
        total = len(self._outcomes)
        failed = sum(self._outcomes)
        if total >= self._settings.failure_min and failed / total >= self._settings.failure_rate:
            return [
                Condition(
                    "failure_rate",
                    "many executions are failing",
                    f"{failed} of the last {total} failed",
                )
            ]
        return []

    def _send(self, title: str, detail: str, severity: Status) -> None:
        self.sent += 1
        log.warning("supervision.alert", title=title, detail=detail, status=severity.value)
        for sink in self._sinks:
            try:
                sink.alert(title, detail, severity)
            except Exception:
                log.exception("supervision.alert_sink_failed")
