"""The note models: what an action or plan note's properties must be (pydantic checks them)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ai_employee.vault.notes import NoteError, parse_note
from ai_employee.vault.plan_format import params_of

ActionStatus = Literal["needs_action", "planned", "done", "rejected", "failed"]
PlanStatus = Literal["pending_approval", "approved", "running", "done", "failed", "rejected"]


class _Note(BaseModel):
    model_config = ConfigDict(extra="allow")

    @field_validator("id", check_fields=False)
    @classmethod
    def _id_is_plain(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", value):
            raise ValueError("id must be letters, digits and - _ . : only")
        return value


class ActionNote(_Note):
    id: str
    type: Literal["action"] = "action"
    source: Literal["file", "email", "telegram", "whatsapp", "slack"]
    received: datetime
    title: str
    status: ActionStatus
    attachments: list[str] = Field(default_factory=list)
    sender: str | None = None
    subject: str | None = None
    source_ref: str | None = None
    intent: str | None = None
    transcript_cost_usd: float | None = None


class PlanNote(_Note):
    id: str
    type: Literal["plan"] = "plan"
    action_id: str
    action: str = Field(min_length=1, max_length=100)
    #: the action's parameters, from the flat properties (or the old nested `params`): decision 0009
    params: dict[str, Any] = Field(default_factory=dict)
    status: PlanStatus
    planner: str
    risk: Literal["low", "medium", "high"]
    created: datetime
    executed_at: datetime | None = None
    dry_run: bool | None = None
    result: dict[str, Any] | None = None  # the old nested form; now the result is in the body
    error: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _collect_params(cls, data: Any) -> Any:
        if isinstance(data, dict) and (isinstance(data.get("params"), dict) or "params" not in data):
            return {**data, "params": params_of(data)}
        return data  # a `params` that is not a mapping: refused with its own message


def read_plan(text: str) -> tuple[PlanNote, dict[str, Any], str]:
    """Parse and type-check a plan note: (model, raw properties, body). Raises NoteError."""
    properties, body = parse_note(text)
    if properties.get("type") not in (None, "plan"):
        raise NoteError(f"this is not a plan note (type: {properties.get('type')!r})")
    try:
        plan = PlanNote.model_validate(properties)
    except ValidationError as error:
        raise NoteError("the plan's properties are invalid: " + describe_validation(error)) from error
    return plan, properties, body


def describe_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(piece) for piece in item["loc"]) or "(note)"
        parts.append(f"{where}: {item['msg']}")
    more = len(error.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
