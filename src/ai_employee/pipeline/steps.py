"""The steps of an item's life, wired together: one object that the pipeline service (and the
step tests) hold. Each step lives in a room of its own and can be read in one sitting:

- `pipeline.intake`: Inbox files and messages become action notes;
- `pipeline.planning`: an action becomes a plan note;
- `pipeline.plan_refresh`: a plan edited while it waits in `Plans/` shows what would run;
- `pipeline.decisions`: what is in `Approved/` and `Rejected/` is examined;
- `pipeline.execution`: an approved job is checked, run and its result recorded once;
- `pipeline.finishing`: notes move to `Done/` or `Failed/`;
- `pipeline.recovery`: what a crash interrupted is finished at start.

All of them are blocking and idempotent, keyed by stable ids, and run on the service's worker
thread (the intake's reading on the preparer thread).
"""

from __future__ import annotations

from ai_employee.config import Settings
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.pipeline.context import StepContext
from ai_employee.pipeline.decisions import DecisionSteps
from ai_employee.pipeline.execution import ExecutionSteps
from ai_employee.pipeline.finishing import FinishingSteps
from ai_employee.pipeline.intake import IntakeSteps
from ai_employee.pipeline.plan_refresh import PlanRefresh
from ai_employee.pipeline.planning import PlanningSteps
from ai_employee.pipeline.recovery import RecoverySteps
from ai_employee.pipeline.renderer import IntakeRenderer
from ai_employee.pipeline.reread import RereadSteps
from ai_employee.planners.base import Planner
from ai_employee.vault.audit import AuditLog
from ai_employee.vault.layout import VaultLayout
from ai_employee.vault.ledger import Ledger
from ai_employee.vault.writer import Committer


class VaultSteps:
    def __init__(
        self,
        layout: VaultLayout,
        ledger: Ledger,
        audit: AuditLog,
        settings: Settings,
        registry: ExecutorRegistry,
        planner: Planner,
        committer: Committer | None = None,
        intake_renderer: IntakeRenderer | None = None,
    ) -> None:
        self.ctx = StepContext(layout, ledger, audit, settings, registry, planner)
        self.intake = IntakeSteps(self.ctx, committer, intake_renderer)
        self.planning = PlanningSteps(self.ctx, self.intake.renderer)
        self.finishing = FinishingSteps(self.ctx)
        self.plan_refresh = PlanRefresh(self.ctx)
        self.decisions = DecisionSteps(self.ctx, self.finishing, self.plan_refresh)
        self.execution = ExecutionSteps(self.ctx, self.decisions, self.finishing)
        self.recovery = RecoverySteps(self.ctx, self.intake, self.finishing)
        self.rereading = RereadSteps(self.ctx, self.intake)
        self.decisions.rereading = self.rereading
        # the step API, as the service and the tests call it
        self.layout, self.ledger = layout, ledger
        self.intake_files = self.intake.intake_files
        self.prepare_intake = self.intake.prepare_intake
        self.read_intake = self.intake.read_intake
        self.start_render = self.intake.start_render
        self.finish_render = self.intake.finish_render
        self.commit_intake = self.intake.commit_intake
        self.begin_intake = self.intake.begin_intake
        self.finish_intake = self.intake.finish_intake
        self.intake_message = self.intake.intake_message
        self.start_intake_renderer = self.intake.start_intake_renderer
        self.start_committer = self.intake.start_committer
        self.helper_pids = self.intake.helper_pids
        self.plan_request = self.planning.plan_request
        self.write_plans = self.planning.write_plans
        self.apply_transcript = self.planning.apply_transcript
        self.refresh_plans = self.plan_refresh.refresh_plans
        self.examine_approved = self.decisions.examine_approved
        self.examine_rejected = self.decisions.examine_rejected
        self.start_job = self.execution.start_job
        self.record_result = self.execution.record_result
        self.recover = self.recovery.recover
        self.reread = self.rereading.reread
        self.flush_audit = self.ctx.flush_audit

    @property
    def audit_dirty(self) -> bool:
        return self.ctx.audit_dirty

    @property
    def committer(self) -> Committer:
        return self.intake.committer

    @committer.setter
    def committer(self, committer: Committer) -> None:
        self.intake.committer = committer

    @property
    def intake_renderer(self) -> IntakeRenderer:
        return self.intake.intake_renderer

    @intake_renderer.setter
    def intake_renderer(self, renderer: IntakeRenderer) -> None:
        self.intake.intake_renderer = renderer
