"""manus.research: a Manus research task whose result becomes a note in the vault."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ai_employee.executors.base import ActionParams
from ai_employee.plugins import PluginDisabled


class ResearchParams(ActionParams):
    prompt: str = Field(min_length=1, max_length=20_000)
    profile: Literal["lite", "standard", "max"] = "standard"
    task_mode: Literal["chat", "adaptive", "agent"] = "agent"
    attach_files: bool = True


def create(settings: Any) -> None:
    raise PluginDisabled("manus.research is not built yet")
