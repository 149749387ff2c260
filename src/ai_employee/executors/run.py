"""The work of the execution step: run one approved job and say what it gave. Writes no vault
file (the daemon commits the result), so it can run wherever the executor's credentials are."""

from __future__ import annotations

import structlog

from ai_employee.model.executor import ExecutionContext, ExecutionError, ExecutorUnavailable
from ai_employee.model.jobs import ExecutionJob, ExecutionResult

log = structlog.get_logger(__name__)


async def run_job(job: ExecutionJob, ctx: ExecutionContext, *, dry_run: bool) -> ExecutionResult:
    """In dry-run, the exact requests a live run would send; live, the executor's result. Every
    failure, an executor's bug included, becomes the result's `error`: it never escapes."""
    executor = job.executor
    structlog.contextvars.bind_contextvars(action_id=job.action_id, plan_id=job.plan_id)
    try:
        if dry_run:
            return ExecutionResult(dry_run=True, result=executor.render_dry_run(job.params, ctx))
        reason = executor.unavailable_reason() if executor.external else None
        if reason is not None:
            raise ExecutorUnavailable(f"{executor.name} is unavailable: {reason}")
        return ExecutionResult(dry_run=False, result=await executor.execute(job.params, ctx))
    except ExecutionError as failure:
        return ExecutionResult(dry_run=dry_run, error=str(failure) or type(failure).__name__)
    except Exception as failure:  # an executor bug must not take the pipeline down
        log.exception("executor raised", action=executor.name)
        return ExecutionResult(
            dry_run=dry_run, error=f"unexpected error in {executor.name}: {type(failure).__name__}: {failure}"
        )
    finally:
        structlog.contextvars.unbind_contextvars("action_id", "plan_id")
