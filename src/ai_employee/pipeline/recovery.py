"""Recovery at start: finish what a crash interrupted, with the same paths and ids, so that
nothing is lost and nothing is made twice (docs/architecture.md, "Recovery at start")."""

from __future__ import annotations

import os
from datetime import datetime

import structlog

from ai_employee.pipeline.context import StepContext, utcnow
from ai_employee.pipeline.finishing import FinishingSteps
from ai_employee.pipeline.intake import IntakeSteps
from ai_employee.pipeline.renderer import NewAction
from ai_employee.vault import fs
from ai_employee.vault.layout import Folder
from ai_employee.vault.ledger import ActionRow, ExecutionRow
from ai_employee.vault.migrations import migrate_vault
from ai_employee.vault.notes import NoteError, parse_note

log = structlog.get_logger(__name__)


class RecoverySteps:
    def __init__(self, ctx: StepContext, intake: IntakeSteps, finishing: FinishingSteps) -> None:
        self.ctx = ctx
        self.intake = intake
        self.finishing = finishing

    def recover(self) -> tuple[list[NewAction], list[str]]:
        """Finish what a crash interrupted. Returns (actions still to plan, approved names to re-examine)."""
        ctx = self.ctx
        attachments = ctx.layout.folder(Folder.ATTACHMENTS)
        folders = [ctx.layout.folder(folder) for folder in Folder if folder != Folder.ATTACHMENTS]
        folders += [entry for entry in attachments.iterdir() if entry.is_dir() and not entry.is_symlink()]
        folders += [ctx.layout.root, ctx.layout.state_dir, ctx.temp_dir]
        for directory in folders:
            if directory.is_dir():
                fs.remove_stale_temps(directory)
        ctx.flush_audit()
        self.migrate_notes()
        to_plan: list[NewAction] = []
        for row in ctx.ledger.unfinished_actions():
            item = self._recover_action(row)
            if item is not None:
                to_plan.append(item)
        approved: list[str] = []
        for execution in ctx.ledger.open_executions():
            if not execution.note_rel or not execution.note_rel.startswith(Folder.APPROVED.value + "/"):
                continue
            name = execution.note_rel.split("/", 1)[1]
            if ctx.path(Folder.APPROVED, name).exists():
                approved.append(name)
            elif execution.state in ("executed", "failing"):
                self._recover_moved_plan(execution, name)
        for action_id, state in ctx.ledger.actions_behind_executions():
            self.finishing.update_action_note(action_id, state)
        return to_plan, approved

    def migrate_notes(self) -> None:
        """Notes in an older format, in the folders where they may still be acted on, rewritten
        (`vault.migrations`); a plan already on its way to running is left as it was approved."""
        in_flight = {execution.plan_id for execution in self.ctx.ledger.open_executions()}
        for note in migrate_vault(self.ctx.layout, in_flight=in_flight.__contains__):
            log.info(
                "note migrated" if note.skipped is None else "note not migrated",
                note=note.path,
                changes=note.changes,
                reason=note.skipped,
            )

    def _recover_moved_plan(self, execution: ExecutionRow, name: str) -> None:
        """The plan reached Done/ or Failed/ but the crash came before the ledger said so."""
        folder = Folder.FAILED if execution.state == "failing" else Folder.DONE
        target = self.ctx.path(folder, name)
        if not target.exists():
            log.error("an executed plan is missing", folder=folder.value, plan_id=execution.plan_id)
            return
        final_rel = self.ctx.layout.relative(target)
        execution.state = "failed" if execution.state == "failing" else "done"
        execution.note_rel = execution.final_rel = final_rel
        self.ctx.ledger.upsert_execution(execution)

    def _recover_action(self, row: ActionRow) -> NewAction | None:
        ctx = self.ctx
        received = datetime.fromisoformat(row.created_at) if row.created_at else utcnow()
        if row.state == "claimed" and row.inbox_name is not None and row.extra.get("kept_in"):
            return self.intake.folders.recover(row, received)
        if row.state == "claimed" and row.inbox_name is not None:
            attachment = ctx.layout.resolve(row.attachments[0])
            inbox_path = ctx.path(Folder.INBOX, row.inbox_name)
            if not attachment.exists():
                try:
                    info = os.lstat(inbox_path)
                except FileNotFoundError:
                    info = None
                if info is None or info.st_ino != row.inbox_ino:
                    log.error("claimed inbox file is gone; the action is abandoned", action_id=row.action_id)
                    ctx.ledger.set_action_state([(row.action_id, "abandoned", None)])
                    return None
                ctx.attachment_dir(attachment.parent.name)
                os.link(inbox_path, attachment)
                fs.fsync_dir(attachment.parent)
            fs.finish_move(inbox_path, attachment)
            _, text = self.intake.describe_file(attachment, row.inbox_name, attachment.stat().st_size)
            item = NewAction(row=row, text=text, received=received)
            self.intake.write_actions([item])
            log.info("recovered an interrupted intake", action_id=row.action_id)
            return None if item.planned or row.extra.get("empty") is True else item
        note = ctx.layout.resolve(row.note_rel)
        try:
            properties, body = parse_note(note.read_text(encoding="utf-8"))
        except (OSError, NoteError):
            if row.state == "claimed":
                # a message whose note never became durable: its source will deliver it again
                ctx.ledger.set_action_state([(row.action_id, "abandoned", None)])
                with ctx.ledger.transaction() as db:
                    db.execute("UPDATE actions SET dedup_key = NULL WHERE action_id = ?", (row.action_id,))
            return None
        item = NewAction(
            row=row, text=_body_text(body), received=received, subject=properties.get("subject"), trusted=True
        )
        if row.state == "claimed":
            self.intake.write_actions([item])
            return None if item.planned or row.extra.get("empty") is True else item
        return item


def _body_text(body: str) -> str:
    """The message text from an action note's body (drop the title line and the attachment list)."""
    lines = body.strip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    text = "\n".join(lines)
    return text.split("\n## Attachments\n", 1)[0].strip()
