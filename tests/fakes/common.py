"""Doubles of the ports a service's context holds, for tests and benches that need no more.

`MemoryStore` is the key-value state (it outlives the services it is given to, as a file
would); `NoApprovals` finds no plan; `NoActions` knows no item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_employee.model.services import Decider, DecisionResult

#: Prefixes of the environment variables that configure the daemon and its outside services: a
#: test or bench that starts a daemon drops them, so no setting or credential of this machine leaks in.
SERVICE_ENV_PREFIXES = (
    "AIE_",
    "ANTHROPIC",
    "CLAUDE",
    "OPENAI",
    "ATLAS",
    "MANUS",
    "TELEGRAM",
    "IMAP",
    "SLACK",
)


class MemoryStore:
    """KeyValueStore: durable as far as this test is concerned (it outlives the services)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    def get(self, namespace: str, key: str) -> str | None:
        return self.data.get((namespace, key))

    def put(self, namespace: str, key: str, value: str) -> None:
        self.data[(namespace, key)] = value


class NoApprovals:
    """ApprovalGateway that knows no plan: every decision answers `not_found`."""

    def approve(self, plan_id: str, decider: Decider | None = None) -> DecisionResult:
        return DecisionResult("not_found", plan_id)

    def reject(
        self, plan_id: str, reason: str | None = None, decider: Decider | None = None
    ) -> DecisionResult:
        return DecisionResult("not_found", plan_id)


class NoActions:
    """ActionLookup that knows no item."""

    def action_info(self, action_id: str) -> Mapping[str, Any] | None:
        return None


class ReadyHooks:
    """ControlHooks of a process that is up and ready: `status` is the given mapping (a copy each
    call), a stop request does nothing, no service can be restarted."""

    def __init__(self, status: Mapping[str, Any] | None = None) -> None:
        self._status = dict(status or {})

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return True, {}

    def request_stop(self) -> None:
        return None

    async def restart_service(self, name: str) -> None:
        raise KeyError(name)
