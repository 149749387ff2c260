"""Execution: an approved job is checked one last time, run (`executors.run.run_job`, the work),
and its result recorded exactly once (the commit), then finished into Done/ or Failed/."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import structlog

from ai_employee.config import Settings
from ai_employee.model.executor import ExecutionContext, Executor, ProgressCallback
from ai_employee.model.jobs import ExecutionJob, ExecutionResult, Finished
from ai_employee.pipeline.context import StepContext
from ai_employee.pipeline.decisions import DecisionSteps
from ai_employee.pipeline.finishing import FinishingSteps
from ai_employee.vault.audit import audit_record
from ai_employee.vault.layout import Folder
from ai_employee.vault.ledger import ExecutionRow, Ledger
from ai_employee.vault.note_models import read_plan
from ai_employee.vault.notes import NoteError

log = structlog.get_logger(__name__)


class LedgerJournal:
    """ExecutionJournal backed by the ledger, scoped to one plan."""

    def __init__(self, ledger: Ledger, plan_id: str) -> None:
        self._ledger = ledger
        self._plan_id = plan_id

    def get(self, key: str) -> dict[str, Any] | None:
        return self._ledger.journal_get(self._plan_id, key)

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        self._ledger.journal_put(self._plan_id, key, value)


def runs_live(settings: Settings, executor: Executor) -> bool:
    """Live mode is on and names this action (or every action): then its effect leaves the machine."""
    return settings.live and (
        not settings.execution.live_actions or executor.name in settings.execution.live_actions
    )


class ExecutionSteps:
    def __init__(self, ctx: StepContext, decisions: DecisionSteps, finishing: FinishingSteps) -> None:
        self.ctx = ctx
        self.decisions = decisions
        self.finishing = finishing

    def context_for(self, job: ExecutionJob, *, live: bool, progress: ProgressCallback) -> ExecutionContext:
        root = self.ctx.layout.root
        return ExecutionContext(
            plan_id=job.plan_id,
            action_id=job.action_id,
            vault_root=root,
            live=live,
            journal=LedgerJournal(self.ctx.ledger, job.plan_id),
            action_files=[root / relative for relative in job.attachments],
            action_title=job.action_title,
            progress=progress,
        )

    def start_job(self, job: ExecutionJob, *, leaves_machine: bool = True) -> bool:
        """Last check before running: the note must still be exactly what was approved.

        `leaves_machine`: the run has an outside effect, so `running` must be durable before it."""
        path = self.ctx.path(Folder.APPROVED, job.name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            log.warning("approved plan vanished before it ran", plan_id=job.plan_id)
            return False
        if hashlib.sha256(data).hexdigest() != job.digest:
            try:
                plan, properties, body = read_plan(data.decode("utf-8", errors="replace"))
            except NoteError as error:
                self.decisions.fail_unreadable(job.name, data.decode("utf-8", "replace"), str(error))
                return False
            previous = self.ctx.ledger.execution(job.plan_id)
            assert previous is not None
            self.decisions.revoke(job.name, plan, properties, body, previous)
            return False
        self.ctx.ledger.upsert_execution(
            ExecutionRow(
                plan_id=job.plan_id,
                action_id=job.action_id,
                state="running",
                content_hash=job.digest,
                attempts=job.attempt,
                action=job.executor.name,
                note_rel=f"{Folder.APPROVED.value}/{job.name}",
            ),
            durable=leaves_machine,
        )
        return True

    def record_result(
        self, job: ExecutionJob, *, dry_run: bool, result: dict[str, Any] | None, error: str | None
    ) -> Finished:
        """The exactly-once point: `executed` (or `failed`) and its audit line in one transaction."""
        return self.record(job, ExecutionResult(dry_run=dry_run, result=result, error=error))

    def record(self, job: ExecutionJob, outcome: ExecutionResult) -> Finished:
        previous = self.ctx.ledger.execution(job.plan_id)
        if (
            previous is not None
            and previous.attempts == job.attempt
            and previous.state in ("executed", "failing", "done", "failed")
        ):
            return self._recorded_before(job, previous)
        row = ExecutionRow(
            plan_id=job.plan_id,
            action_id=job.action_id,
            state="executed" if outcome.error is None else "failing",
            content_hash=job.digest,
            attempts=job.attempt,
            action=job.executor.name,
            dry_run=outcome.dry_run,
            result=outcome.result,
            error=outcome.error,
            note_rel=f"{Folder.APPROVED.value}/{job.name}",
        )
        common = {
            "action_id": job.action_id,
            "action": job.executor.name,
            "dry_run": outcome.dry_run,
            "attempt": job.attempt,
        }
        if outcome.error is None:
            line = audit_record("plan.executed", job.plan_id, **common, result=_audit_result(outcome.result))
        else:
            line = audit_record("plan.failed", job.plan_id, **common, error=outcome.error)
        self.ctx.ledger.upsert_execution(row, [line])
        finished = self.finishing.finalize(job.name, job.plan_id, job.properties, job.body, row)
        self.ctx.commit_audit()
        return finished

    def _recorded_before(self, job: ExecutionJob, previous: ExecutionRow) -> Finished:
        """A second result for one execution (two looks at one plan, or a run resumed after its
        result was committed): the first one stands; no second audit line, no second announcement."""
        log.warning("this execution's result is recorded already; keeping the first", plan_id=job.plan_id)
        if previous.state in ("executed", "failing"):  # recorded, not yet moved: finish the move
            finished = self.finishing.finalize(job.name, job.plan_id, job.properties, job.body, previous)
        else:
            finished = Finished(
                plan_id=job.plan_id,
                action_id=job.action_id,
                action=job.executor.name,
                status=previous.state,
                dry_run=previous.dry_run,
                result=previous.result,
                error=previous.error,
                final_rel=previous.final_rel or "",
                attempt=previous.attempts,
            )
        finished.repeat = True
        return finished


def _audit_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result's scalar facts (ids, credits) for the audit line; requests stay in the note."""
    if not result:
        return None
    return {key: value for key, value in result.items() if isinstance(value, (str, int, float, bool))}
