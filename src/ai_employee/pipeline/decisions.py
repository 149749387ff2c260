"""Decisions: what a human put into Approved/ or Rejected/ is examined.

An approved plan is validated again (its action known, its params valid) and becomes an
`ExecutionJob`; one that changed after approval goes back to Plans/; one that ran already is
quarantined, never run twice; a rejected plan is recorded and never runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from ai_employee.model.jobs import ExecutionJob, Finished
from ai_employee.pipeline.context import StepContext, utcnow
from ai_employee.pipeline.finishing import FinishingSteps, with_decision
from ai_employee.pipeline.plan_refresh import PlanRefresh
from ai_employee.pipeline.quarantine import Quarantined, quarantine
from ai_employee.pipeline.rendering import decide_section
from ai_employee.vault import fs
from ai_employee.vault.audit import audit_record
from ai_employee.vault.deciders import decider_of, stamp_hand_decision
from ai_employee.vault.layout import Folder, is_ignored_name, unsafe_reason
from ai_employee.vault.ledger import ActionRow, ExecutionRow
from ai_employee.vault.migrations import upgrade
from ai_employee.vault.note_models import PlanNote, describe_validation, read_plan
from ai_employee.vault.notes import NoteError, render_note
from ai_employee.vault.plan_format import (
    DECIDE_HEADING,
    DECISION_HEADING,
    replace_section,
    without_decision,
)

__all__ = ["DecisionOutcome", "DecisionSteps", "decider_fields", "decider_of"]

log = structlog.get_logger(__name__)

MAX_PLAN_BYTES = 1024 * 1024


@dataclass
class DecisionOutcome:
    jobs: list[ExecutionJob] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # plan ids
    granted: list[tuple[str, str]] = field(default_factory=list)  # (plan id, action id)
    revoked: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    deferred: list[tuple[str, float]] = field(default_factory=list)  # (name, seconds until settled)
    #: plan id -> what the announcement says of a decision: by, door, attempt, action, reason
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    reread: list[str] = field(default_factory=list)  # action ids whose files changed: read and plan again


class Rereading(Protocol):
    def changed(self, row: ActionRow) -> bool: ...

    def return_plan(
        self, name: str, plan_id: str, action: str, row: ActionRow, previous: ExecutionRow | None
    ) -> None: ...


class DecisionSteps:
    def __init__(
        self, ctx: StepContext, finishing: FinishingSteps, refresh: PlanRefresh | None = None
    ) -> None:
        self.ctx = ctx
        self.finishing = finishing
        self.refresh = refresh or PlanRefresh(ctx)
        #: catches plans made from files that changed after they were read (pipeline/reread.py)
        self.rereading: Rereading | None = None

    # --- Approved/ -------------------------------------------------------------------------

    def examine_approved(self, names: Sequence[str]) -> DecisionOutcome:
        outcome = DecisionOutcome()
        for name in dict.fromkeys(names):
            try:
                self._examine_approved(name, outcome)
            except OSError as error:
                log.error("could not examine an approved note", file=name, error=str(error))
        self.ctx.commit_audit()
        return outcome

    def _examine_approved(self, name: str, outcome: DecisionOutcome) -> None:
        if is_ignored_name(name):
            return
        path = self.ctx.path(Folder.APPROVED, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        reason = unsafe_reason(name, info.st_mode)
        if reason is None and not name.endswith(".md"):
            reason = "not a plan note: only .md plan notes are executed"
        if reason is None and info.st_size > MAX_PLAN_BYTES:
            reason = f"larger than {MAX_PLAN_BYTES // 1024} KiB: not a plan note"
        if reason is not None:
            found = quarantine(self.ctx, Folder.APPROVED, name, reason)
            if found:
                outcome.quarantined.append(found)
            return
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        text = data.decode("utf-8", errors="replace")
        try:
            plan, properties, body = read_plan(text)
        except NoteError as error:
            age = time.time() - max(info.st_mtime, info.st_ctime)
            settle = self.ctx.settings.vault.settle_seconds
            if age < settle:  # perhaps still being written in place: look again once it is still
                outcome.deferred.append((name, settle - age))
                return
            outcome.finished.append(self.fail_unreadable(name, text, str(error)))
            return
        if plan.type != "plan":
            return
        # a move by hand carries no stamp: the vault's door, seen now (the file is not touched)
        stamp_hand_decision(properties, utcnow().isoformat(timespec="seconds"))
        previous = self.ctx.ledger.execution(plan.id)
        if previous is not None and previous.state == "done":
            # our own finalize never leaves a copy behind once the ledger says done (see leave_approved)
            self._ignore_duplicate(name, plan, previous, outcome)
            return
        if previous is not None and previous.state == "rejected":
            why = (
                "this plan was rejected earlier; rejected plans are never executed."
                " Ask for a new plan instead."
            )
            outcome.finished.append(self._fail(name, plan, properties, body, digest, why, previous))
            return
        if previous is not None and previous.state in ("executed", "failing"):
            outcome.finished.append(self.finishing.finalize(name, plan.id, properties, body, previous))
            return
        if (
            previous is not None
            and previous.state in ("approved", "running")
            and previous.content_hash != digest
        ):
            outcome.revoked.append(self.revoke(name, plan, properties, body, previous))
            outcome.facts[plan.id] = {"action_id": plan.action_id, "attempt": previous.attempts}
            return
        resumed = previous is not None and previous.state in ("approved", "running")
        executor = self.ctx.registry.get(plan.action)
        if executor is None:
            known = ", ".join(self.ctx.registry.names()) or "none"
            why = f"unknown action '{plan.action}' (known: {known})"
            outcome.finished.append(self._fail(name, plan, properties, body, digest, why, previous))
            return
        try:
            params = executor.validate(plan.params)
        except ValidationError as invalid:
            why = f"invalid params for {plan.action}: {describe_validation(invalid)}"
            outcome.finished.append(self._fail(name, plan, properties, body, digest, why, previous))
            return
        action = self.ctx.ledger.action(plan.action_id)
        if (
            not resumed
            and action is not None
            and self.rereading is not None
            and self.rereading.changed(action)
        ):
            self.rereading.return_plan(name, plan.id, plan.action, action, previous)
            outcome.reread.append(plan.action_id)
            return
        attempt = (previous.attempts if previous else 0) + (0 if resumed else 1)
        if not resumed:
            self.ctx.ledger.upsert_execution(
                ExecutionRow(
                    plan_id=plan.id,
                    action_id=plan.action_id,
                    state="approved",
                    content_hash=digest,
                    attempts=attempt,
                    action=plan.action,
                    note_rel=f"{Folder.APPROVED.value}/{name}",
                ),
                [
                    audit_record(
                        "approval.granted",
                        plan.id,
                        action_id=plan.action_id,
                        action=plan.action,
                        attempt=attempt,
                        **decider_fields(properties),
                    )
                ],
                durable=False,  # nothing leaves the machine before `running`, which is durable
            )
            outcome.granted.append((plan.id, plan.action_id))
            outcome.facts[plan.id] = {
                "action_id": plan.action_id,
                "action": plan.action,
                "attempt": attempt,
                "note": f"{Folder.APPROVED.value}/{name}",
                **decider_fields(properties),
            }
        outcome.jobs.append(
            ExecutionJob(
                plan_id=plan.id,
                action_id=plan.action_id,
                name=name,
                digest=digest,
                properties=properties,
                body=body,
                executor=executor,
                params=params,
                attempt=attempt,
                action_title=action.title if action else "",
                attachments=action.attachments if action else [],
                resumed=resumed,
            )
        )

    def _fail(
        self,
        name: str,
        plan: PlanNote,
        properties: dict[str, Any],
        body: str,
        digest: str,
        error: str,
        previous: ExecutionRow | None,
    ) -> Finished:
        row = ExecutionRow(
            plan_id=plan.id,
            action_id=plan.action_id,
            state="failing",
            content_hash=digest,
            attempts=(previous.attempts if previous else 0) + 1,
            action=plan.action,
            error=error,
            note_rel=f"{Folder.APPROVED.value}/{name}",
        )
        self.ctx.ledger.upsert_execution(
            row,
            [audit_record("plan.failed", plan.id, action_id=plan.action_id, action=plan.action, error=error)],
        )
        log.warning("plan failed validation", plan_id=plan.id, error=error)
        return self.finishing.finalize(name, plan.id, properties, body, row)

    def fail_unreadable(self, name: str, text: str, error: str) -> Finished:
        """A note whose frontmatter cannot be read: keep it as it is, add the reason, move it to Failed/."""
        match = re.search(r"^id:\s*['\"]?([A-Za-z0-9_.:-]{1,128})", text, re.MULTILINE)
        subject = match.group(1) if match else name
        annotated = text.rstrip("\n") + f"\n\n> [!error] ai-employee could not run this plan\n> {error}\n"
        target = self.finishing.leave_approved(name, Folder.FAILED, subject, annotated)
        self.ctx.ledger.add_audit([audit_record("plan.failed", subject, error=error, file=name)])
        log.warning("unreadable plan moved to Failed", file=name, error=error)
        return Finished(
            plan_id=subject,
            action_id="",
            action="",
            status="failed",
            dry_run=None,
            result=None,
            error=error,
            final_rel=self.ctx.layout.relative(target),
        )

    def _ignore_duplicate(
        self, name: str, plan: PlanNote, previous: ExecutionRow, outcome: DecisionOutcome
    ) -> None:
        reason = (
            f"plan {plan.id} was already executed ({previous.updated_at}); a copy that reappears in Approved/"
            " is never executed again"
        )
        self.ctx.ledger.add_audit(
            [audit_record("plan.duplicate_ignored", plan.id, file=name, executed=previous.final_rel)]
        )
        found = quarantine(self.ctx, Folder.APPROVED, name, reason)
        if found:
            outcome.quarantined.append(found)
        outcome.duplicates.append(plan.id)

    def revoke(
        self, name: str, plan: PlanNote, properties: dict[str, Any], body: str, previous: ExecutionRow
    ) -> str:
        """Changed after approval: back to Plans/ for a fresh approval (the old approval's stamp
        taken out, "What will be sent" made from the edited note)."""
        updated, body, _ = upgrade(without_decision(properties), body)
        updated["status"] = "pending_approval"
        if DECISION_HEADING in body:
            body = replace_section(body, DECISION_HEADING, "")
        if DECIDE_HEADING not in body:
            body = replace_section(body, DECIDE_HEADING, decide_section(plan.id))
        body = self.refresh.sent_body(updated, body)
        target = self.finishing.leave_approved(name, Folder.PLANS, plan.id, render_note(updated, body))
        self.ctx.ledger.upsert_execution(
            ExecutionRow(
                plan_id=plan.id,
                action_id=plan.action_id,
                state="returned",
                attempts=previous.attempts,
                action=plan.action,
                note_rel=self.ctx.layout.relative(target),
            ),
            [
                audit_record(
                    "approval.revoked",
                    plan.id,
                    action_id=plan.action_id,
                    reason="the note changed after it was approved; approve it again",
                )
            ],
        )
        log.warning("plan changed after approval; returned to Plans", plan_id=plan.id)
        return plan.id

    # --- Rejected/ -------------------------------------------------------------------------

    def examine_rejected(self, names: Sequence[str]) -> DecisionOutcome:
        outcome = DecisionOutcome()
        for name in dict.fromkeys(names):
            if is_ignored_name(name) or not name.endswith(".md"):
                continue
            path = self.ctx.path(Folder.REJECTED, name)
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
                plan, properties, body = read_plan(text)
            except FileNotFoundError:
                continue
            except NoteError:
                continue  # not a plan we can read; a rejected note is never executed anyway
            if properties.get("type") != "plan":
                continue
            previous = self.ctx.ledger.execution(plan.id)
            if previous is not None and previous.state in ("rejected", "done", "running", "executed"):
                if previous.state != "rejected":
                    log.warning("plan moved to Rejected after it ran; nothing to undo", plan_id=plan.id)
                continue
            reason = properties.get("rejection_reason")
            self.ctx.ledger.upsert_execution(
                ExecutionRow(
                    plan_id=plan.id,
                    action_id=plan.action_id,
                    state="rejected",
                    attempts=previous.attempts if previous else 0,
                    action=plan.action,
                    note_rel=f"{Folder.REJECTED.value}/{name}",
                ),
                [
                    audit_record(
                        "approval.denied",
                        plan.id,
                        action_id=plan.action_id,
                        reason=str(reason) if reason else None,
                        **decider_fields(properties),
                    )
                ],
            )
            if properties.get("status") != "rejected" or DECISION_HEADING not in body:
                updated, body, _ = upgrade(dict(properties), body)
                stamp_hand_decision(updated, utcnow().isoformat(timespec="seconds"))
                updated["status"] = "rejected"
                body = with_decision(body, updated, approved=False)
                fs.write_durable(
                    path, render_note(updated, body).encode("utf-8"), temp_dir=self.ctx.layout.state_dir
                )
            self.finishing.update_action_note(plan.action_id, "rejected")
            outcome.rejected.append(plan.id)
            outcome.facts[plan.id] = {
                "action_id": plan.action_id,
                "action": plan.action,
                "reason": str(reason) if reason else None,
                "note": f"{Folder.REJECTED.value}/{name}",
                **decider_fields(properties),
            }
        self.ctx.commit_audit()
        return outcome


def decider_fields(properties: Mapping[str, Any]) -> dict[str, str]:
    """The audit fields that say who decided and through which door."""
    decider = decider_of(properties)
    return {"by": decider.who, "door": decider.door}
