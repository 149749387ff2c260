"""What a step's work function is and gives back, shared by the worker's steps and its loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ai_employee.bus.redis_streams import WorkMessage

#: (kind, body): kind is `done` or `error`
Outcome = tuple[str, dict[str, Any]]
Handler = Callable[[WorkMessage, int], Awaitable[Outcome]]


class JobInterrupted(Exception):
    """The run lost Redis or its lease on the way: its outcome is not an answer. The message stays
    pending; whoever takes it over resumes from the journal."""
