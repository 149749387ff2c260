"""What a long-running part of the daemon is (a `Service`: run, stop, health, its state), and
what a plug-in service is handed when it is built (`ServiceContext`): the bus, the intake, the
approval door, the control port's routes, durable key-value state.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

from ai_employee.config import Settings
from ai_employee.model.bus import EventBus
from ai_employee.model.messages import IntakeSink


class ServiceState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"  # running, but its last health check failed
    FAILED = "failed"  # crashed; a restart is pending after the backoff
    RESTARTING = "restarting"  # launched again, waiting for it to be ready
    DISABLED = "disabled"  # stays off (no credentials); the reason is in status


@dataclass
class HealthReport:
    healthy: bool
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class Service(ABC):
    """A long-running part of the daemon.

    `run()` does the work until asked to stop and sets `ready` once it is up (connected,
    listening); the orchestrator gives it a fresh `ready` before each run. Returning from
    `run()` without being asked, or raising, is a crash.
    """

    name: str
    required: bool = True
    ready: asyncio.Event

    def __init__(self) -> None:
        self.ready = asyncio.Event()

    @abstractmethod
    async def run(self) -> None:
        """Work until stop() asks otherwise; set `self.ready` when up."""

    async def stop(self) -> None:  # noqa: B027 - optional: without it the run is cancelled after the grace
        """Ask run() to return once its in-flight work is finished."""

    async def health(self) -> HealthReport:
        return HealthReport(healthy=True)


class KeyValueStore(Protocol):
    """Durable small state for sources: update offsets, seen ids. Durable when `put` returns."""

    def get(self, namespace: str, key: str) -> str | None: ...

    def put(self, namespace: str, key: str, value: str) -> None: ...


DecisionOutcome = Literal["approved", "rejected", "already_decided", "not_found"]


@dataclass(frozen=True)
class DecisionResult:
    outcome: DecisionOutcome
    plan_id: str
    detail: str = ""  # for the human: where the plan is, what was decided before


class ApprovalGateway(Protocol):
    """Approve or reject a plan by id: the same move a human makes in Obsidian."""

    def approve(self, plan_id: str) -> DecisionResult: ...

    def reject(self, plan_id: str, reason: str | None = None) -> DecisionResult: ...


WebRequestHandler = Callable[[Any], Awaitable[Any]]  # aiohttp.web.Request -> aiohttp.web.StreamResponse


class RouteRegistrar(Protocol):
    """Adds a route to the control port (webhooks). Each route verifies its caller itself."""

    def add_route(self, method: str, path: str, handler: WebRequestHandler) -> None: ...


class ActionLookup(Protocol):
    """Read the ledger's view of an action: its source, source_ref, note path, plan id, state."""

    def action_info(self, action_id: str) -> Mapping[str, Any] | None: ...


@dataclass
class ServiceContext:
    settings: Settings
    bus: EventBus
    intake: IntakeSink
    vault_root: Path
    state: KeyValueStore
    approvals: ApprovalGateway
    routes: RouteRegistrar
    actions: ActionLookup
