"""Planning: an action becomes a plan note. The work is the planner's (`Planner.plan` of a
`PlanRequest`, writing nothing); `write_plans` commits what it proposed. A local planner plans
inline while the intake renders the notes instead (see `pipeline.renderer`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.pipeline.context import StepContext, utcnow
from ai_employee.pipeline.renderer import ActionRenderer, NewAction, plan_audit, plan_request
from ai_employee.vault import fs
from ai_employee.vault.audit import audit_record
from ai_employee.vault.ledger import ActionRow, AuditRecord

log = structlog.get_logger(__name__)


class PlanningSteps:
    def __init__(self, ctx: StepContext, renderer: ActionRenderer) -> None:
        self.ctx = ctx
        self.renderer = renderer

    def plan_request(self, item: NewAction) -> PlanRequest:
        return plan_request(item, self.ctx.handbook(), self.ctx.registry.specs())

    def write_plans(self, planned: Sequence[tuple[NewAction, PlanProposal]]) -> None:
        """Plans from an async planner: plan note, then the action note marked planned."""
        ctx = self.ctx
        writes: list[tuple[str | Path, bytes]] = []
        audit: list[AuditRecord] = []
        today = utcnow().strftime("%Y-%m-%d")
        for item, proposal in planned:
            item.planned = proposal
            writes.append(self.renderer.plan_write(item.row, proposal))
            writes.append(
                (
                    ctx.layout.resolve(item.row.note_rel),
                    self.renderer.action_text(item, status="planned").encode(),
                )
            )
            audit.append(plan_audit(item.row, proposal))
            if proposal.cost_usd:
                ctx.ledger.add_cost(today, proposal.planner, proposal.cost_usd)
        fs.write_durable_batch(writes, barrier=ctx.layout.root, temp_dir=ctx.temp_dir)
        ctx.ledger.set_action_state([(item.row.action_id, "planned", None) for item, _ in planned], audit)
        ctx.commit_audit()

    def apply_transcript(
        self, action_id: str, transcript: str, properties: dict[str, Any]
    ) -> NewAction | None:
        """A late transcript (a voice note first saved as `transcription: pending`): it becomes the
        action note's body, and the plan is made again while nobody has decided on it yet.

        Returns the action to plan again, or None when it is decided already (or unknown)."""
        ctx = self.ctx
        row = ctx.ledger.action(action_id)
        if row is None:
            log.warning("transcript for an unknown action", action_id=action_id)
            return None
        row.extra.update({key: value for key, value in properties.items() if value is not None})
        ctx.ledger.update_action_extra(action_id, row.extra)
        item = NewAction(row=row, text=transcript, received=_received_of(row))
        execution = ctx.ledger.execution(row.plan_id)
        plan_pending = ctx.layout.resolve(row.plan_rel).exists() and (
            execution is None or execution.state == "returned"
        )
        if not plan_pending and row.state != "noted":
            # decided already: keep the transcript with the action, leave the plan alone
            note = ctx.layout.resolve(row.note_rel)
            fs.write_durable(note, self.renderer.action_text(item, status=row.state).encode("utf-8"))
            return None
        ctx.ledger.add_audit([audit_record("action.updated", action_id, reason="transcript arrived")])
        ctx.commit_audit()
        return item


def _received_of(row: ActionRow) -> datetime:
    try:
        return datetime.fromisoformat(row.created_at)
    except ValueError:
        return utcnow()
