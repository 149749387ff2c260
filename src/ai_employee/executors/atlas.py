"""atlas.work_order: create a work order in Atlas CMMS."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import Field

from ai_employee.executors.base import ActionParams
from ai_employee.plugins import PluginDisabled


class WorkOrderParams(ActionParams):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    priority: Literal["NONE", "LOW", "MEDIUM", "HIGH"] = "MEDIUM"
    due_date: date | None = None
    asset: str | None = Field(None, max_length=200, description="asset name, resolved to its id")
    location: str | None = Field(None, max_length=200, description="location name, resolved to its id")
    assignees: list[str] = Field(default_factory=list, description="user emails, resolved to ids")


def create(settings: Any) -> None:
    raise PluginDisabled("atlas.work_order is not built yet")
