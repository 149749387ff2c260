"""The pipeline's running of approved jobs: each one started at most once in this process, at
most `execution.concurrency` at a time, checked one last time and recorded on the vault worker
(`pipeline.execution`), run as work (`model.work.WorkRunner`), and announced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import structlog

from ai_employee.config import Settings
from ai_employee.model.events import EventType
from ai_employee.model.jobs import ExecutionJob
from ai_employee.model.work import WorkRunner
from ai_employee.observability.metrics import Metrics
from ai_employee.observability.timing import timer
from ai_employee.pipeline.announcer import Announcer
from ai_employee.pipeline.execution import runs_live
from ai_employee.pipeline.steps import VaultSteps

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class JobRunner:
    """Runs the jobs of approved plans for the pipeline service."""

    def __init__(
        self,
        steps: VaultSteps,
        *,
        settings: Settings,
        metrics: Metrics,
        work: WorkRunner,
        announce: Announcer,
        worker: ThreadPoolExecutor,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        wake: Callable[[], None],
    ) -> None:
        self.steps = steps
        self.settings = settings
        self.metrics = metrics
        self.work = work
        self.announce = announce
        self._worker = worker  # the vault worker: the checks and the record run there
        self._spawn = spawn
        self._wake = wake  # the loop appends the audit lines
        self._running_plans: set[str] = set()  # plan ids with a job in flight in this process
        self._executions = asyncio.Semaphore(work.concurrency("execute", settings.execution.concurrency))

    def start(self, job: ExecutionJob) -> None:
        if job.plan_id in self._running_plans:
            # a second look at a plan whose job is under way (the watcher's event and a rescan
            # both saw it): the running job is the one execution
            log.debug("plan already running; not starting it twice", plan_id=job.plan_id)
            return
        self._running_plans.add(job.plan_id)
        self._spawn(self._execute(job))

    async def _in_thread(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: function(*args, **kwargs))

    async def _execute(self, job: ExecutionJob) -> None:
        try:
            await self._execute_once(job)
        finally:
            self._running_plans.discard(job.plan_id)

    def _returned_for_approval(self, plan_id: str) -> bool:
        row = self.steps.ledger.execution(plan_id)
        return row is not None and row.state == "returned"

    async def _execute_once(self, job: ExecutionJob) -> None:
        execution = self.steps.execution
        async with self._executions:
            executor = job.executor
            live = runs_live(self.settings, executor)
            dry_run = executor.external and not live
            if not await self._in_thread(execution.start_job, job, leaves_machine=executor.external and live):
                returned = await self._in_thread(self._returned_for_approval, job.plan_id)
                self.announce.publish(
                    EventType.APPROVAL_REVOKED,
                    {
                        "plan_id": job.plan_id,
                        "action_id": job.action_id,
                        "attempt": job.attempt,
                        # edited after approval (back in Plans/), or taken out of Approved/ before it ran
                        "reason": "edited" if returned else "vanished",
                    },
                    correlation_id=job.action_id,
                )
                self._wake()  # the loop appends the audit line
                return
            self.announce.publish(
                EventType.PLAN_EXECUTING,
                {"plan_id": job.plan_id, "action": executor.name, "live": live, "attempt": job.attempt},
                correlation_id=job.action_id,
            )
            ctx = execution.context_for(
                job,
                live=live,
                progress=lambda message, data: self.announce.publish(
                    EventType.EXECUTION_PROGRESS,
                    {"plan_id": job.plan_id, "message": message, **data},
                    correlation_id=job.action_id,
                ),
            )
            with timer("execute") as timing:
                result = await self.work.execute(job, ctx, dry_run=dry_run)
            self.metrics.step_duration_seconds.labels(step="execute").observe(timing.seconds)
            finished = await self._in_thread(execution.record, job, result)
            finished.duration_ms = timing.ms
        self.announce.finished(finished)
        self._wake()  # the loop appends the audit line
