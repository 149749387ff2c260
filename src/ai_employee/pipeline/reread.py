"""An attachment that changed after its action was read: read again, planned again, approved again.

A writer nobody could see (a network share, a writer that reopened the file) may change an Inbox
file after the intake took it. The intake keeps the newest mtime of the action's files as the
ledger-only property `_content_mtime_ns`; when its plan is approved, a newer mtime means the plan
was made from text that is no longer what the file says. The plan then does not run: it is taken
out of Approved/, the action note is read again and the plan made again, for a fresh approval.

Order, for crashes: the ledger first says the plan was returned and the action is to plan again,
then the approved copy goes, then the note is rewritten with the new fingerprint. A crash anywhere
leaves an action that recovery plans again; a plan made from stale text still carries a stale
fingerprint, so its approval is caught here again. Never a half-read plan executed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from datetime import datetime

import structlog

from ai_employee.pipeline.context import StepContext, utcnow
from ai_employee.pipeline.documents import CONTENT_FINGERPRINT
from ai_employee.pipeline.intake import IntakeSteps
from ai_employee.pipeline.renderer import NewAction
from ai_employee.vault import fs
from ai_employee.vault.audit import audit_record
from ai_employee.vault.layout import Folder
from ai_employee.vault.ledger import ActionRow, ExecutionRow

log = structlog.get_logger(__name__)

CHANGED_NOTICE = (
    "> [!warning] The attachment changed after it was first read ({when}): it was read again and the plan"
    " made again. Check the plan before you approve it."
)


def newest_mtime_ns(ctx: StepContext, attachments: Sequence[str]) -> int:
    newest = 0
    for relative in attachments:
        with contextlib.suppress(OSError):
            newest = max(newest, os.stat(ctx.layout.resolve(relative), follow_symlinks=False).st_mtime_ns)
    return newest


class RereadSteps:
    def __init__(self, ctx: StepContext, intake: IntakeSteps) -> None:
        self.ctx = ctx
        self.intake = intake

    def changed(self, row: ActionRow) -> bool:
        """The action's files changed since they were read (Inbox files and folders only)."""
        recorded = row.extra.get(CONTENT_FINGERPRINT)
        if not isinstance(recorded, int) or not row.attachments:
            return False
        return newest_mtime_ns(self.ctx, row.attachments) > recorded

    def return_plan(
        self, name: str, plan_id: str, action: str, row: ActionRow, previous: ExecutionRow | None
    ) -> None:
        """The approved plan of a changed action is not run: recorded as returned, removed."""
        ctx = self.ctx
        ctx.ledger.upsert_execution(
            ExecutionRow(
                plan_id=plan_id,
                action_id=row.action_id,
                state="returned",
                attempts=previous.attempts if previous else 0,
                action=action,
                note_rel=row.plan_rel,
            ),
            [
                audit_record(
                    "approval.revoked",
                    plan_id,
                    action_id=row.action_id,
                    reason="an attachment changed after it was read; the plan is made again",
                )
            ],
        )
        ctx.ledger.set_action_state([(row.action_id, "noted", None)])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ctx.path(Folder.APPROVED, name))
        fs.fsync_dir(ctx.layout.folder(Folder.APPROVED))
        log.warning(
            "attachment changed after intake; plan returned", plan_id=plan_id, action_id=row.action_id
        )

    def reread(self, action_id: str) -> NewAction | None:
        """Read the action's files again and rewrite its note (and, with a local planner, its plan:
        `planned` is then set). None for an unknown action."""
        ctx = self.ctx
        row = ctx.ledger.action(action_id)
        if row is None:
            return None
        fingerprint = newest_mtime_ns(ctx, row.attachments)  # before reading: a later change is seen
        if row.extra.get("kept_in"):
            text = self.intake.folders.read_again(row)
        else:
            path = ctx.layout.resolve(row.attachments[0])
            described = self.intake.folders.describe_now(path, os.stat(path))
            text = self.intake.note_text(described, row)
        when = datetime.fromtimestamp(fingerprint / 1e9, tz=utcnow().tzinfo).isoformat(timespec="seconds")
        row.extra[CONTENT_FINGERPRINT] = fingerprint
        item = NewAction(
            row=row, text=f"{CHANGED_NOTICE.format(when=when)}\n\n{text}", received=_received(row)
        )
        ctx.ledger.update_action_extra(row.action_id, row.extra)
        ctx.ledger.add_audit([audit_record("action.updated", row.action_id, reason="attachment changed")])
        self.intake.write_actions([item])
        return item


def _received(row: ActionRow) -> datetime:
    try:
        return datetime.fromisoformat(row.created_at)
    except ValueError:
        return utcnow()
