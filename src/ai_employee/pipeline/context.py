"""What every step of an item's life shares: the vault, the ledger, the audit log, the settings,
the executors and the planner, and the few caches and ids they hand out together."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import structlog

from ai_employee.config import Settings
from ai_employee.model.ids import new_action_id
from ai_employee.model.plans import ActionSpec
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.planners.base import Planner
from ai_employee.vault import fs
from ai_employee.vault.audit import AuditLog
from ai_employee.vault.layout import Folder, VaultLayout
from ai_employee.vault.ledger import Ledger

log = structlog.get_logger(__name__)

HANDBOOK_CHARS = 50_000


def utcnow() -> datetime:
    return datetime.now(UTC)


class StepContext:
    def __init__(
        self,
        layout: VaultLayout,
        ledger: Ledger,
        audit: AuditLog,
        settings: Settings,
        registry: ExecutorRegistry,
        planner: Planner,
    ) -> None:
        self.layout = layout
        self.ledger = ledger
        self.audit = audit
        self.settings = settings
        self.registry = registry
        self.planner = planner
        #: temp files of group commits: outside the note folders, so that a watcher of the vault
        #: (ours, Obsidian's, a sync tool's) sees one arrival per note, not create/write/close/move
        self.temp_dir = layout.state_dir / "tmp"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.audit_dirty = False
        self._handbook: tuple[float, str] = (-1.0, "")
        self._made_dirs: set[str] = set()
        self._issued: set[str] = set()  # action ids of prepared batches not yet in the ledger
        self._issued_lock = threading.Lock()

    def path(self, folder: Folder, name: str) -> Path:
        return self.layout.folder(folder) / name

    def handbook(self) -> str:
        """Company_Handbook.md, read again only when it changed."""
        try:
            mtime = self.layout.handbook.stat().st_mtime
        except FileNotFoundError:
            return ""
        if mtime != self._handbook[0]:
            text = self.layout.handbook.read_text(encoding="utf-8", errors="replace")[:HANDBOOK_CHARS]
            self._handbook = (mtime, text)
        return self._handbook[1]

    def planning_context(self) -> tuple[str, list[ActionSpec]]:
        """The handbook and the actions on offer, for a planner that plans inline."""
        if not self.planner.local:
            return "", []
        return self.handbook(), self.registry.specs()

    def attachment_dir(self, day: str) -> Path:
        """Attachments/<day>/, made (durably) the first time it is needed."""
        directory = self.layout.folder(Folder.ATTACHMENTS) / day
        if day not in self._made_dirs:
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
                fs.fsync_dir(directory.parent)
            self._made_dirs.add(day)
        return directory

    def commit_audit(self) -> None:
        """Audit lines are durable in the ledger's outbox already; appending them to the log is
        batched: the service calls `flush_audit` when its queue drains (or at least every second)."""
        self.audit_dirty = True

    def flush_audit(self) -> None:
        self.audit_dirty = False
        try:
            self.audit.flush()
        except OSError as error:  # the outbox keeps the lines; the next flush retries
            self.audit_dirty = True
            log.error("audit log write failed", error=str(error))

    def issue_action_ids(self, now: datetime, count: int, *, prefer: str | None = None) -> list[str]:
        """`count` new ids, none in the ledger nor issued to a batch still being written: the short
        random part repeats by chance in a burst. `prefer`: the first candidate for a single id.
        Release them once they are in the ledger (or given up)."""
        with self._issued_lock:
            chosen: list[str] = []
            while len(chosen) < count:
                if prefer is not None:
                    candidates, prefer = {prefer}, None
                else:
                    candidates = {new_action_id(now) for _ in range(count - len(chosen))}
                candidates -= self._issued
                candidates -= set(chosen)
                chosen.extend(sorted(candidates - self.ledger.taken_action_ids(sorted(candidates))))
            self._issued.update(chosen)
            return chosen

    def release_action_ids(self, action_ids: Sequence[str]) -> None:
        """Written (the ledger holds them now) or given up."""
        with self._issued_lock:
            self._issued.difference_update(action_ids)
