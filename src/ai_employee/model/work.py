"""Where the slow steps' work runs: the seam between the pipeline, which commits, and the work
functions (`Planner.plan`, `executors.run.run_job`). In the daemon by default
(`pipeline.work.InProcessWork`); on workers over Redis Streams with `REDIS_URL`
(`bus.redis_work.RedisWork`, docs/distributed.md)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from ai_employee.model.executor import ExecutionContext
from ai_employee.model.jobs import ExecutionJob, ExecutionResult
from ai_employee.model.plans import PlanProposal, PlanRequest


class WorkRunner(Protocol):
    async def plan(self, request: PlanRequest) -> PlanProposal:
        """The proposal for `request`; raises what the planner raises."""

    async def execute(self, job: ExecutionJob, ctx: ExecutionContext, *, dry_run: bool) -> ExecutionResult:
        """What running `job` gave; never raises (a failure is the result's `error`)."""

    def concurrency(self, step: str, default: int) -> int:
        """How many of `step`'s jobs the pipeline may have running at once."""

    def status(self) -> dict[str, Any] | None:
        """Workers, stream lag and dead letters for `status`; None when the work runs in process."""


class DocumentWork(Protocol):
    """Reading documents on workers (`bus.redis_work.RedisWork` with `REDIS_URL`); the daemon's
    `documents.remote.WorkerReader` reads in process whatever comes back None."""

    def read_document(
        self, path: Path, name: str, content_type: str | None, *, reading_seconds: float
    ) -> Future[Sequence[Any] | None]:
        """Any thread: a worker's reading of the file as `Extraction.to_wire()`, or None when no
        worker could (none runs `extract`, the file cannot travel, the worker failed, no answer in
        time). `reading_seconds`: the longest one reading may take (`documents.timeout_seconds`)."""
