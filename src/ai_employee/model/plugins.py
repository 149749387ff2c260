"""How plug-ins (executors, planners, sources) meet the core.

Each plug-in module registers a factory under an entry point group in pyproject.toml; the
core loads the groups and knows no plug-in by name. A factory returns None (or raises
PluginDisabled with the reason) when its configuration is absent: that is not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

EXECUTORS_GROUP = "ai_employee.executors"
PLANNERS_GROUP = "ai_employee.planners"
SERVICES_GROUP = "ai_employee.services"


class PluginDisabled(Exception):
    """Raised by a factory whose plug-in stays off; the message says why (shown in status)."""


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
