"""Why a planner could not plan. The fallback planner records `str(error)` as the plan's reason."""

from __future__ import annotations


class PlannerError(Exception):
    """Planning failed; the message is short, safe to show and to log (no secrets, no message text).

    An answer that came back but was refused still cost tokens: `usage` and `cost_usd` carry them
    so that the fallback plan reports what was spent.
    """

    def __init__(
        self, message: str, *, usage: dict[str, int] | None = None, cost_usd: float | None = None
    ) -> None:
        super().__init__(message)
        self.usage = usage
        self.cost_usd = cost_usd


class PlannerUnavailable(PlannerError):
    """The API could not be reached, failed, or timed out."""


class InvalidAnswer(PlannerError):
    """The model answered, but not with one valid plan."""


class BudgetExceeded(PlannerError):
    """Today's planning budget is spent; no model is called until tomorrow (UTC)."""
