"""What a long-running part of the daemon is (a `Service`: run, stop, health, its state), and
what a plug-in service is handed when it is built (`ServiceContext`): the bus, the intake, the
approval door, the control port's routes, durable key-value state.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

from ai_employee.config import Settings
from ai_employee.model.bus import EventBus
from ai_employee.model.messages import IntakeSink
from ai_employee.model.transcription import TranscriptionWork


class ServiceState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"  # running, but its last health check failed
    FAILED = "failed"  # crashed; a restart is pending after the backoff
    RESTARTING = "restarting"  # launched again, waiting for it to be ready
    DISABLED = "disabled"  # stays off (no credentials); the reason is in status
    CONNECTING = "connecting"  # running, reaching its outside server (first try, or after a loss)
    RETRYING = "retrying"  # running, its outside server unreachable; it tries again by itself


#: the states of a service's link to its outside server (`LinkStatus.state`)
LINK_STATES = frozenset({ServiceState.CONNECTING, ServiceState.RUNNING, ServiceState.RETRYING})


@dataclass(frozen=True)
class LinkStatus:
    """How an integration stands with its outside server, as the integration itself knows it:
    status shows this instead of the orchestrator's view while the service runs."""

    state: ServiceState  # CONNECTING, RUNNING (connected) or RETRYING
    target: str  # what it reaches, without secrets: "IMAP imap.example.com:993"
    since: datetime  # in this state since
    attempts: int = 0  # failed attempts since it was last connected
    last_error: str | None = None  # in plain words: "connection timed out after 10 s"
    next_attempt: datetime | None = None  # when it tries again (RETRYING)
    down_since: datetime | None = None  # first failure since it was last connected

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "target": self.target,
            "since": self.since.isoformat(timespec="seconds"),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt": self.next_attempt.isoformat(timespec="seconds") if self.next_attempt else None,
            "down_since": self.down_since.isoformat(timespec="seconds") if self.down_since else None,
        }


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

    def link(self) -> LinkStatus | None:
        """An integration's link to its outside server; None for a service that has none.

        An integration sets `ready` as soon as its run is under way, not once connected: reaching
        its server is its own business (with deadlines and backoff), reported here."""
        return None


class ServiceDisabledError(Exception):
    """The service is off (its credentials are absent, or it failed to load): there is nothing to
    restart. `reason` says why it is off."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} is off: {reason}")
        self.name = name
        self.reason = reason


class KeyValueStore(Protocol):
    """Durable small state for sources: update offsets, seen ids. Durable when `put` returns."""

    def get(self, namespace: str, key: str) -> str | None: ...

    def put(self, namespace: str, key: str, value: str) -> None: ...


DecisionOutcome = Literal["approved", "rejected", "already_decided", "not_found"]

# Through which door a decision came in. A plan moved by hand (Obsidian, a file manager,
# a sync tool) came through the vault; the others name the program that made the move.
Door = Literal["vault", "cli", "slack", "telegram", "whatsapp", "email"]
DOORS: tuple[Door, ...] = ("vault", "cli", "slack", "telegram", "whatsapp", "email")


@dataclass(frozen=True)
class Decider:
    """Who decided, and through which door (kept in the plan note: `decided_by`, `decided_via`)."""

    who: str  # a Slack/Telegram user, an email sender, an OS user; "vault" for a file move
    door: Door

    @classmethod
    def vault(cls) -> Decider:
        return cls("vault", "vault")

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> Decider:
        """Who decided a plan, from the stamp the CLI and the buttons write (`decided_by`,
        `decided_via`); a bare move is the vault's."""
        door = properties.get("decided_via")
        who = properties.get("decided_by")
        if door in DOORS and isinstance(who, str) and who:
            return cls(who, door)
        return cls.vault()


@dataclass(frozen=True)
class DecisionResult:
    outcome: DecisionOutcome
    plan_id: str
    detail: str = ""  # for the human: where the plan is, what was decided before


class ApprovalGateway(Protocol):
    """Approve or reject a plan by id: the same move a human makes in Obsidian."""

    def approve(self, plan_id: str, decider: Decider | None = None) -> DecisionResult: ...

    def reject(
        self, plan_id: str, reason: str | None = None, decider: Decider | None = None
    ) -> DecisionResult: ...


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
    #: voice notes transcribed on workers (the Redis backend); None: each source's own Whisper
    transcription: TranscriptionWork | None = None
