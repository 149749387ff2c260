"""Finishing: a plan that ran (or failed) gets its outcome written into it and moves to Done/ or
Failed/; its action note follows it. Every move is a durable write and an unlink, so a crash
in between is finished the same way by the next look."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import structlog

from ai_employee.model.jobs import Finished
from ai_employee.pipeline import rendering
from ai_employee.pipeline.context import StepContext, utcnow
from ai_employee.vault import fs
from ai_employee.vault.deciders import decider_of
from ai_employee.vault.layout import Folder
from ai_employee.vault.ledger import ExecutionRow
from ai_employee.vault.migrations import upgrade
from ai_employee.vault.notes import NoteError, parse_note, render_note
from ai_employee.vault.plan_format import (
    DECIDE_HEADING,
    DECISION_HEADING,
    SENT_INTRO,
    SENT_INTRO_RAN,
    find_section,
    replace_section,
    result_summary,
    without_decision,
    without_outcome,
)

log = structlog.get_logger(__name__)

_OUTCOME = re.compile(r"\n## (Result|Error|Outcome)\n_\d{4}-.*", re.DOTALL)


class FinishingSteps:
    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def finalize(
        self, name: str, plan_id: str, properties: dict[str, Any], body: str, row: ExecutionRow
    ) -> Finished:
        """Write the outcome into the plan note, move it to Done/ or Failed/, update the action note."""
        failed = row.error is not None
        status = "failed" if failed else "done"
        when = utcnow()
        properties, body, _ = upgrade(dict(properties), body)  # a note in an older format
        updated = without_outcome(properties)
        updated["status"] = status
        updated["executed_at"] = when.isoformat(timespec="seconds")
        if row.dry_run is not None:
            updated["dry_run"] = row.dry_run
        if failed:
            updated["error"] = row.error
        else:
            updated.update(result_summary(row.result))
        body = body.replace(SENT_INTRO, SENT_INTRO_RAN, 1)
        new_body = with_decision(_strip_outcome(body), properties, approved=True) + rendering.outcome_section(
            status=status, dry_run=row.dry_run, result=row.result, error=row.error, when=when
        )
        if failed:  # a retry is a new decision: not credited to this one (the body keeps its story)
            updated = without_decision(updated)
        target_folder = Folder.FAILED if failed else Folder.DONE
        target = self.leave_approved(name, target_folder, plan_id, render_note(updated, new_body))
        final_rel = self.ctx.layout.relative(target)
        self.ctx.ledger.upsert_execution(
            ExecutionRow(
                plan_id=plan_id,
                action_id=row.action_id,
                state="failed" if failed else "done",
                content_hash=row.content_hash,
                attempts=row.attempts,
                action=row.action,
                dry_run=row.dry_run,
                result=row.result,
                error=row.error,
                note_rel=final_rel,
                final_rel=final_rel,
            ),
            durable=False,  # recovery finds the note in its folder if this is lost
        )
        action_id = row.action_id or str(properties.get("action_id", ""))
        self.update_action_note(action_id, status)
        return Finished(
            plan_id=plan_id,
            action_id=action_id,
            action=str(row.action or properties.get("action", "")),
            status=status,
            dry_run=row.dry_run,
            result=row.result,
            error=row.error,
            final_rel=final_rel,
            attempt=row.attempts,
        )

    def leave_approved(self, name: str, folder: Folder, plan_id: str, text: str) -> Path:
        """Write a plan's new text straight into `folder` (not watched), then drop it from Approved/.

        Never a rename inside Approved/: watchdog holds a "moved from" event half a second and every
        approval behind it waits. A crash between the write and the unlink leaves both; the next look
        at Approved/ finds the same plan id at the target and finishes the same way."""
        target = self._target_for(folder, Path(name).stem, plan_id)
        fs.write_durable(target, text.encode("utf-8"))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.ctx.path(Folder.APPROVED, name))
        fs.fsync_dir(self.ctx.layout.folder(Folder.APPROVED))
        return target

    def _target_for(self, folder: Folder, stem: str, plan_id: str) -> Path:
        """`folder/stem.md`, unless another note holds that name (then a numbered one)."""
        candidate = self.ctx.layout.folder(folder) / f"{stem}.md"
        if candidate.exists():
            try:
                same = parse_note(candidate.read_text(encoding="utf-8"))[0].get("id") == plan_id
            except (OSError, NoteError):
                same = False
            if not same:
                return fs.unique_path(self.ctx.layout.folder(folder), stem, ".md")
        return candidate

    def update_action_note(self, action_id: str, status: str) -> None:
        """Mark the action note; an executed or rejected action's note joins its plan."""
        ledger, layout = self.ctx.ledger, self.ctx.layout
        action = ledger.action(action_id) if action_id else None
        if action is None:
            return
        source = layout.resolve(action.note_rel)
        destination = {"done": Folder.DONE, "rejected": Folder.REJECTED}.get(status)
        moved_to = layout.folder(destination) / source.name if destination is not None else None
        if not source.exists() and moved_to is not None and moved_to.exists():
            # a crash came between our move and the ledger's record of it
            ledger.set_action_state([(action_id, status, layout.relative(moved_to))])
            return
        try:
            properties, body = parse_note(source.read_text(encoding="utf-8"))
        except (OSError, NoteError) as error:
            log.warning("action note not updated", action_id=action_id, error=str(error))
            ledger.set_action_state([(action_id, status, None)])
            return
        if properties.get("status") != status:
            properties["status"] = status
            fs.write_durable(source, render_note(properties, body).encode("utf-8"))
        note_rel = None
        if destination is not None and not action.note_rel.startswith(destination.value + "/"):
            target = fs.unique_path(layout.folder(destination), source.stem, ".md")
            fs.move(source, target, source_watched=False)
            note_rel = layout.relative(target)
        ledger.set_action_state([(action_id, status, note_rel)])


def with_decision(body: str, properties: dict[str, Any], *, approved: bool) -> str:
    """The body with the decision (who, when, door) where the "Decide" instructions were."""
    decider = decider_of(properties)
    reason = properties.get("rejection_reason")
    section = rendering.decision_section(
        approved=approved,
        who=decider.who,
        door=decider.door,
        when=str(properties["decided_at"]) if properties.get("decided_at") else None,
        reason=str(reason) if reason else None,
    )
    if find_section(body, DECISION_HEADING) is not None:  # a retry: the new decision in its place
        return replace_section(body, DECISION_HEADING, section)
    return replace_section(body, DECIDE_HEADING, section)


def _strip_outcome(body: str) -> str:
    """A retried plan keeps one outcome section, the latest."""
    return _OUTCOME.sub("", body).rstrip("\n") + "\n"
