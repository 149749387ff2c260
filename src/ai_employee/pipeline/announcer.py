"""What the pipeline tells the rest of the daemon: each step's outcome as bus events (correlated
by action id) and as metrics. Observers (the dashboard, supervision, the audit store) listen to
these; nothing here changes the vault."""

from __future__ import annotations

from typing import Any

from ai_employee.model.bus import EventBus
from ai_employee.model.events import Event, EventType
from ai_employee.model.ids import action_id_for
from ai_employee.model.jobs import Finished
from ai_employee.model.plans import PlanProposal
from ai_employee.observability.metrics import Metrics
from ai_employee.pipeline.decisions import DecisionOutcome
from ai_employee.pipeline.renderer import NewAction

#: a planner prompt over these shares of the model's context window gets a warning checkpoint
CONTEXT_WARNING_LEVELS = (85, 70)


class Announcer:
    def __init__(self, bus: EventBus, metrics: Metrics) -> None:
        self.bus = bus
        self.metrics = metrics

    def publish(
        self, event_type: EventType, payload: dict[str, Any], correlation_id: str | None = None
    ) -> None:
        self.metrics.events_published.labels(type=event_type.value).inc()
        self.bus.publish(
            Event(type=event_type, payload=payload, correlation_id=correlation_id, source="pipeline")
        )

    def action_created(self, item: NewAction) -> None:
        row = item.row
        self.metrics.actions_created.labels(source=row.source).inc()
        if row.source == "file":
            self.metrics.files_detected.inc()
        self.publish(
            EventType.ACTION_CREATED,
            {
                "action_id": row.action_id,
                "source": row.source,
                "source_ref": row.source_ref,
                "title": row.title,
                "note": row.note_rel,
                "sender": row.sender,
                "transcript_cost_usd": row.extra.get("transcript_cost_usd"),
                "duration_seconds": row.extra.get("duration_seconds"),
            },
            correlation_id=row.action_id,
        )

    def plan_created(self, item: NewAction, proposal: PlanProposal, duration_ms: float | None = None) -> None:
        row = item.row
        planner = proposal.planner.split(":")[0]
        self.metrics.plans_created.labels(planner=planner, action=proposal.action).inc()
        self.metrics.pending_approvals.inc()
        if proposal.cost_usd:
            self.metrics.planner_cost_usd.labels(planner=planner).inc(proposal.cost_usd)
        self.publish(
            EventType.PLAN_CREATED,
            {
                "plan_id": row.plan_id,
                "action_id": row.action_id,
                "action": proposal.action,
                "params": proposal.params,
                "summary": proposal.summary,
                "risk": proposal.risk,
                "planner": proposal.planner,
                "note": row.plan_rel,
                "source": row.source,
                "source_ref": row.source_ref,
                "title": row.title,
                "cost_usd": proposal.cost_usd,
                "tokens": sum(proposal.usage.values()) if proposal.usage else None,
                "duration_ms": duration_ms,
            },
            correlation_id=row.action_id,
        )
        if proposal.context_used is not None:
            self.context_used(row.action_id, row.plan_id, proposal)
        if proposal.fallback_reason:
            self.publish(
                EventType.PLAN_FALLBACK,
                {"plan_id": row.plan_id, "reason": proposal.fallback_reason},
                correlation_id=row.action_id,
            )

    def context_used(self, action_id: str, plan_id: str, proposal: PlanProposal) -> None:
        """A warning checkpoint when the planner's prompt filled 70% (or 85%) of the model's window."""
        used = proposal.context_used or 0.0
        level = next((level for level in CONTEXT_WARNING_LEVELS if used >= level / 100), None)
        if level is None:
            return
        self.publish(
            EventType.PLAN_CONTEXT_WARNING,
            {
                "plan_id": plan_id,
                "action_id": action_id,
                "level": level,
                "used": round(used, 3),
                "detail": f"the prompt used {used:.0%} of {proposal.planner}'s context window"
                f" (over {level}%)",
            },
            correlation_id=action_id,
        )

    def quarantined(self, name: str, reason: str) -> None:
        self.metrics.inputs_quarantined.labels(reason=reason.split(":")[0].split(" ")[0]).inc()
        self.publish(EventType.INPUT_QUARANTINED, {"file": name, "reason": reason})

    def decisions(self, outcome: DecisionOutcome) -> None:
        """Everything a look at Approved/ or Rejected/ decided, but the jobs it started."""
        for quarantined in outcome.quarantined:
            self.quarantined(quarantined.name, quarantined.reason)
        for plan_id, action_id in outcome.granted:
            self.metrics.approvals.labels(decision="approved").inc()
            self.metrics.pending_approvals.dec()
            facts = outcome.facts.get(plan_id, {})
            self.publish(EventType.APPROVAL_GRANTED, {"plan_id": plan_id, **facts}, correlation_id=action_id)
        for plan_id in outcome.rejected:
            self.metrics.approvals.labels(decision="rejected").inc()
            self.metrics.pending_approvals.dec()
            self._about_plan(EventType.APPROVAL_DENIED, plan_id, outcome.facts.get(plan_id))
        for plan_id in outcome.revoked:
            self._about_plan(EventType.APPROVAL_REVOKED, plan_id, outcome.facts.get(plan_id))
        for plan_id in outcome.duplicates:
            self._about_plan(EventType.PLAN_DUPLICATE_IGNORED, plan_id)
        for finished in outcome.finished:
            self.finished(finished)

    def _about_plan(self, event_type: EventType, plan_id: str, facts: dict[str, Any] | None = None) -> None:
        payload = {
            "plan_id": plan_id,
            **{key: value for key, value in (facts or {}).items() if value is not None},
        }
        self.publish(event_type, payload, correlation_id=action_id_for(plan_id))

    def finished(self, finished: Finished) -> None:
        if finished.repeat:
            return  # announced when it was first recorded
        payload = {
            "plan_id": finished.plan_id,
            "action": finished.action,
            "status": finished.status,
            "dry_run": finished.dry_run,
            "note": finished.final_rel,
            "attempt": finished.attempt,
            "duration_ms": finished.duration_ms,
        }
        correlation_id = finished.action_id or None
        if finished.status == "done":
            self.metrics.plans_executed.labels(
                action=finished.action, dry_run=str(bool(finished.dry_run)).lower()
            ).inc()
            self.publish(EventType.PLAN_EXECUTED, {**payload, "result": finished.result}, correlation_id)
        else:
            self.metrics.plans_failed.labels(action=finished.action or "unknown").inc()
            self.publish(EventType.PLAN_FAILED, {**payload, "error": finished.error}, correlation_id)

