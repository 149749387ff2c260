"""The work of the slow steps, done in the daemon's own process (no `REDIS_URL`)."""

from __future__ import annotations

from typing import Any

from ai_employee.executors.run import run_job
from ai_employee.model.executor import ExecutionContext
from ai_employee.model.jobs import ExecutionJob, ExecutionResult
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.planners.base import Planner


class InProcessWork:
    """`model.work.WorkRunner` in the daemon: the planner and the executors called directly."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    async def plan(self, request: PlanRequest) -> PlanProposal:
        return await self.planner.plan(request)

    async def execute(self, job: ExecutionJob, ctx: ExecutionContext, *, dry_run: bool) -> ExecutionResult:
        return await run_job(job, ctx, dry_run=dry_run)

    def concurrency(self, step: str, default: int) -> int:
        return default

    def status(self) -> dict[str, Any] | None:
        return None
