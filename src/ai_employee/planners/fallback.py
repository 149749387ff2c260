"""The one place where planning falls back to the template planner.

The pipeline calls `FallbackPlanner.plan` and always gets a plan: the primary planner's, or on
an API error, a timeout, an invalid answer or a spent budget, the template planner's, marked
`planner="template"` with `fallback_reason` saying why (that reason goes into the plan note
and the audit log). Configured secrets are redacted from every plan it returns.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.planners.base import Planner
from ai_employee.planners.errors import BudgetExceeded, PlannerError
from ai_employee.planners.guard import redact
from ai_employee.planners.template import TemplatePlanner

log = structlog.get_logger(__name__)


class FallbackPlanner(Planner):
    local = False

    def __init__(
        self,
        primary: Planner,
        fallback: Planner | None = None,
        *,
        secrets: list[str] | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback or TemplatePlanner()
        self.secrets = secrets or []
        self.name = primary.name  # type: ignore[misc]  # the instance takes its primary's name
        self._budget_day_logged: str | None = None

    async def plan(self, request: PlanRequest) -> PlanProposal:
        try:
            proposal = await self.primary.plan(request)
        except PlannerError as error:
            return await self._fall_back(request, str(error), error)
        except Exception as error:  # a bug in a planner must not stop the pipeline
            log.exception("planner crashed; using the template planner", action_id=request.action_id)
            return await self._fall_back(request, f"planner error: {type(error).__name__}", None)
        return self._clean(proposal)

    async def _fall_back(self, request: PlanRequest, reason: str, error: PlannerError | None) -> PlanProposal:
        if isinstance(error, BudgetExceeded):
            day = datetime.now(UTC).date().isoformat()
            if self._budget_day_logged != day:  # once a day, not once a message
                self._budget_day_logged = day
                log.warning("planning budget spent: using the template planner", reason=reason)
        else:
            log.warning(
                "planner failed; using the template planner",
                action_id=request.action_id,
                planner=self.primary.name,
                reason=reason,
            )
        proposal = (
            self.fallback.plan_local(request) if self.fallback.local else await self.fallback.plan(request)
        )
        proposal.planner = "template"
        proposal.fallback_reason = reason
        if error is not None and error.cost_usd:
            proposal.usage = error.usage  # a refused answer still cost tokens
            proposal.cost_usd = error.cost_usd
        return self._clean(proposal)

    def _clean(self, proposal: PlanProposal) -> PlanProposal:
        if self.secrets:
            proposal.params = redact(proposal.params, self.secrets)
            proposal.summary = redact(proposal.summary, self.secrets)
            proposal.steps = redact(proposal.steps, self.secrets)
        return proposal

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.fallback.aclose()
