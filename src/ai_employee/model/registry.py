"""The executor registry: executors by action name, loaded from entry points."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from ai_employee.config import Settings
from ai_employee.model.executor import Executor
from ai_employee.model.plans import ActionSpec
from ai_employee.model.plugins import EXECUTORS_GROUP, PluginDisabled, load_factories

log = structlog.get_logger(__name__)


class ExecutorRegistry:
    def __init__(self, executors: Iterable[Executor] = ()) -> None:
        self._executors: dict[str, Executor] = {}
        self._specs: list[ActionSpec] | None = None
        self.disabled: dict[str, str] = {}
        for executor in executors:
            self.register(executor)

    def register(self, executor: Executor) -> None:
        self._executors[executor.name] = executor
        self._specs = None

    def get(self, name: str) -> Executor | None:
        return self._executors.get(name)

    def names(self) -> list[str]:
        return sorted(self._executors)

    def specs(self) -> list[ActionSpec]:
        """What planners may propose (built once: JSON schema generation is not free)."""
        if self._specs is None:
            self._specs = self._build_specs()
        return self._specs

    def _build_specs(self) -> list[ActionSpec]:
        return [
            ActionSpec(
                name=executor.name,
                description=executor.description,
                params_schema=executor.params_model.model_json_schema(),
            )
            for executor in self._executors.values()
        ]

    def status(self) -> dict[str, dict[str, Any]]:
        """Each executor: whether it can run live, and how its outside server stood at its last
        live call: `state` is `running` (reached), `degraded` (not reached: `last_error` says why,
        `attempts` how often since it was last reached), `idle` (not called yet) or `disabled`."""
        found: dict[str, dict[str, Any]] = {}
        for name, executor in sorted(self._executors.items()):
            reason = executor.unavailable_reason()
            link = executor.link()
            entry: dict[str, Any] = {"available": reason is None, **({"detail": reason} if reason else {})}
            if link is not None:
                entry.update(
                    state=link.state.value,
                    last_error=link.last_error,
                    attempts=link.attempts,
                    target=link.target,
                    since=link.since.isoformat(timespec="seconds"),
                )
            else:
                idle = "running" if not executor.external else "idle" if reason is None else "disabled"
                entry.update(state=idle, last_error=None, attempts=0, target=None)
            found[name] = entry
        for name, reason in self.disabled.items():
            found[name] = {
                "available": False,
                "detail": reason,
                "state": "disabled",
                "last_error": None,
                "attempts": 0,
                "target": None,
            }
        return found

    async def aclose(self) -> None:
        for executor in self._executors.values():
            await executor.aclose()

    @classmethod
    def from_entry_points(cls, settings: Settings) -> ExecutorRegistry:
        registry = cls()
        factories, broken = load_factories(EXECUTORS_GROUP)
        for name, reason in broken.items():
            registry.disabled[name] = reason
            log.error("executor failed to load", executor=name, reason=reason)
        for name, factory in factories.items():
            try:
                executor = factory(settings)
            except PluginDisabled as reason:
                registry.disabled[name] = str(reason)
                log.info("executor disabled", executor=name, reason=str(reason))
                continue
            if executor is not None:
                registry.register(executor)
        return registry
