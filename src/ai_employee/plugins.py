"""How plug-ins (executors, planners, sources) meet the core.

Each plug-in module registers a factory under an entry point group in pyproject.toml; the
core loads the groups and knows no plug-in by name. A factory returns None (or raises
PluginDisabled with the reason) when its configuration is absent: that is not an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol

from ai_employee.bus.base import EventBus
from ai_employee.config import Settings
from ai_employee.sources.base import IntakeSink

EXECUTORS_GROUP = "ai_employee.executors"
PLANNERS_GROUP = "ai_employee.planners"
SERVICES_GROUP = "ai_employee.services"


class PluginDisabled(Exception):
    """Raised by a factory whose plug-in stays off; the message says why (shown in status)."""


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


def load_factories(group: str) -> tuple[dict[str, Callable[..., Any]], dict[str, str]]:
    """(name -> factory, name -> why it failed to import) for every entry point of `group`."""
    found: dict[str, Callable[..., Any]] = {}
    broken: dict[str, str] = {}
    for entry in entry_points(group=group):
        try:
            found[entry.name] = entry.load()
        except Exception as error:  # a broken plug-in must not stop the daemon
            broken[entry.name] = f"failed to load: {type(error).__name__}: {error}"
    return found, broken


def load_factory(group: str, name: str) -> Callable[..., Any] | None:
    """One entry point of `group` by name (importing only that plug-in); None if there is none.

    Raises what the import raises: the caller decides whether a broken plug-in is fatal."""
    for entry in entry_points(group=group, name=name):
        factory: Callable[..., Any] = entry.load()
        return factory
    return None
