"""The executor interface.

An executor is registered by name (`atlas.work_order`), has a pydantic params model that
the approved note is validated against at execution time, a dry-run rendering (the exact
requests it would send, secrets masked) and `execute`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from ai_employee.model.services import LinkStatus


class ActionParams(BaseModel):
    """Base for every executor's params: unknown keys are refused, so what runs is what was shown."""

    # a number typed into a text property is read by YAML as a number (`asset: 3`): taken as text
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True)


class ExecutionError(Exception):
    """An execution failed; `str(error)` goes into the plan's `error` property as written.

    `retryable` failures were already retried by the client; they are reported all the same.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ExecutorUnavailable(ExecutionError):
    """The executor cannot run here (e.g. its credentials are absent)."""


class ExecutionJournal(Protocol):
    """Durable per-plan memory for exactly-once external calls.

    Write an intent before a call that has an outside effect, and what came back after it:
    after a crash the executor reads them and finishes instead of calling again.
    """

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Durable when it returns."""


ProgressCallback = Callable[[str, Mapping[str, Any]], None]


@dataclass
class ExecutionContext:
    plan_id: str
    action_id: str
    vault_root: Path
    live: bool  # False: dry-run; never send anything outside
    journal: ExecutionJournal
    action_files: list[Path] = field(default_factory=list)  # the action's attachments (absolute)
    action_title: str = ""
    progress: ProgressCallback = field(default=lambda message, data: None)


class Executor(ABC):
    name: ClassVar[str]
    params_model: ClassVar[type[ActionParams]]
    description: ClassVar[str] = ""
    #: False for executors whose effect stays in the vault: they run for real in dry-run mode.
    external: ClassVar[bool] = True

    def unavailable_reason(self) -> str | None:
        """None when the executor can run live; otherwise why not (shown in `status`)."""
        return None

    def link(self) -> LinkStatus | None:
        """How its outside server stood at the last live call (`degraded` with the reason when
        it could not be reached); None for an executor with no server, or before its first call.
        Executors do not retry on their own: the next execution is the next attempt."""
        return None

    def validate(self, params: Mapping[str, Any]) -> ActionParams:
        return validate_params(self.params_model, params)

    @abstractmethod
    def render_dry_run(self, params: ActionParams, ctx: ExecutionContext) -> dict[str, Any]:
        """The exact requests a live run would send: method, URL, JSON body; secrets masked."""

    @abstractmethod
    async def execute(self, params: ActionParams, ctx: ExecutionContext) -> dict[str, Any]:
        """Do it for real. Returns the plan's `result` mapping; raises ExecutionError."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""


#: What pydantic says when a mapping or a list was given as text.
_STRUCTURE_ERRORS = frozenset(
    {"dict_type", "list_type", "tuple_type", "set_type", "model_type", "model_attributes_type"}
)


def validate_params(model: type[ActionParams], params: Mapping[str, Any]) -> ActionParams:
    """Validate a plan's params. A nested value is written in a plan note as one text property
    holding its JSON (decision 0009): it is decoded where the params expect a mapping or a list."""
    values = dict(params)
    try:
        return model.model_validate(values)
    except ValidationError as error:
        decoded = dict(values)
        for item in error.errors():
            name = item["loc"][0] if item["loc"] else None
            if (
                item["type"] in _STRUCTURE_ERRORS
                and isinstance(name, str)
                and isinstance(values.get(name), str)
            ):
                try:
                    decoded[name] = json.loads(values[name])
                except ValueError:
                    continue
        if decoded == values:
            raise
        return model.model_validate(decoded)
