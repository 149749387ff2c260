"""Approve or reject a plan by id: the same move a human makes in Obsidian.

Used by the CLI (with or without a running daemon), the Telegram and Slack buttons. It
only moves the note; the daemon's watcher sees the move like any other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ai_employee.model.services import Decider, DecisionResult
from ai_employee.vault import fs
from ai_employee.vault.layout import Folder, VaultLayout
from ai_employee.vault.notes import NoteError, parse_note, render_note
from ai_employee.vault.plan_refs import find_plan

_SEARCH_ORDER = (Folder.PLANS, Folder.FAILED, Folder.APPROVED, Folder.REJECTED, Folder.DONE)


class Decisions:
    def __init__(self, layout: VaultLayout) -> None:
        self.layout = layout

    def find(self, plan_id: str, folders: tuple[Folder, ...] = _SEARCH_ORDER) -> tuple[Folder, Path] | None:
        """Find a plan note by its exact id (`vault.plan_refs.find_plan`; for what a person types,
        a short id or a file name, see `vault.plan_refs.resolve_plan`)."""
        found = find_plan(self.layout, plan_id.strip(), folders)
        return None if found is None else (found.folder, found.path)

    def _undecided(self, plan_id: str) -> Path | DecisionResult:
        """The plan's note if it still waits for a decision (Plans/, or Failed/ for a retry)."""
        found = self.find(plan_id)
        if found is None:
            return DecisionResult("not_found", plan_id, f"no plan with id {plan_id} in Plans/ or Failed/")
        folder, path = found
        if folder not in (Folder.PLANS, Folder.FAILED):
            return DecisionResult("already_decided", plan_id, f"the plan is already in {folder.value}/")
        return path

    def approve(self, plan_id: str, decider: Decider | None = None) -> DecisionResult:
        path = self._undecided(plan_id)
        if isinstance(path, DecisionResult):
            return path
        self._stamp(path, decider, {})
        target = fs.unique_path(self.layout.folder(Folder.APPROVED), path.stem, ".md")
        fs.move(path, target)
        return DecisionResult("approved", plan_id, f"moved to {self.layout.relative(target)}")

    def reject(
        self, plan_id: str, reason: str | None = None, decider: Decider | None = None
    ) -> DecisionResult:
        path = self._undecided(plan_id)
        if isinstance(path, DecisionResult):
            return path
        self._stamp(path, decider, {"rejection_reason": reason} if reason else {})
        target = fs.unique_path(self.layout.folder(Folder.REJECTED), path.stem, ".md")
        fs.move(path, target)
        return DecisionResult("rejected", plan_id, f"moved to {self.layout.relative(target)}")

    @staticmethod
    def _stamp(path: Path, decider: Decider | None, extra: dict[str, Any]) -> None:
        """Write who decided, through which door and when into the note, before it moves.

        A plan moved by hand carries none of these; the pipeline then records the vault door.
        """
        stamp: dict[str, Any] = dict(extra)
        if decider is not None:
            stamp["decided_by"] = decider.who
            stamp["decided_via"] = decider.door
            stamp["decided_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        if not stamp:
            return
        try:
            properties, body = parse_note(path.read_text(encoding="utf-8"))
            properties.update(stamp)
            fs.write_durable(path, render_note(properties, body).encode("utf-8"))
        except (OSError, NoteError):
            pass  # the move is what counts; who decided is a courtesy
