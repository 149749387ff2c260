"""Folders dropped into Inbox/ (a phone's "share as folder", a scanner's batch): one action with all
their files, nested ones too, once the whole folder has settled.

A folder is looked at like a file: it waits until nothing in it has changed for the settle time,
no partial download (`*.part`, `*.crdownload`, ...) is left in it and no process is seen writing
into it (up to `vault.max_write_wait`). Its documents are read by the reading workers first. Then
it is claimed in the ledger and moved whole, by one rename, to `Attachments/<day>/<id>-<name>/`;
recovery finishes a move a crash interrupted (the ledger row has the folder's inode).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ai_employee.documents.markdown import document_markdown, extraction_properties
from ai_employee.documents.text import describe_or_sniff, human_size
from ai_employee.model.ids import display_name
from ai_employee.pipeline.context import StepContext
from ai_employee.pipeline.documents import Described, InboxDocuments
from ai_employee.pipeline.renderer import NewAction
from ai_employee.vault import fs
from ai_employee.vault.layout import Folder, is_conflict_copy, is_ignored_name
from ai_employee.vault.ledger import ActionRow
from ai_employee.vault.writes import writer_holds

if TYPE_CHECKING:
    from ai_employee.pipeline.intake import PreparedIntake

log = structlog.get_logger(__name__)

#: Files listed (and read) per folder; the rest are moved along and counted.
MAX_FOLDER_FILES = 200
#: Entries walked per folder at most; a folder with more is quarantined.
MAX_FOLDER_ENTRIES = 10_000
MAX_DEPTH = 16
#: Text of all files together in the note.
MAX_FOLDER_CHARS = 200_000


@dataclass
class FolderFile:
    relative: str  # path inside the folder, "/"-separated
    info: os.stat_result


@dataclass
class FolderScan:
    files: list[FolderFile] = field(default_factory=list)
    newest: float = 0.0
    partial: list[str] = field(default_factory=list)  # downloads still in progress
    unsafe: str | None = None  # why it must go to Quarantine/
    entries: int = 0


@dataclass
class ReadyFolder:
    """A settled folder whose files are described: its note is rendered once its place is known."""

    name: str
    scan: FolderScan
    described: list[tuple[FolderFile, Described]]

    @property
    def title(self) -> str:
        return display_name(self.name)

    @property
    def files(self) -> list[str]:
        """Relative paths of the files listed as attachments."""
        return [item.relative for item, _ in self.described]

    @property
    def empty(self) -> bool:
        return not self.scan.files

    @property
    def newest_mtime_ns(self) -> int:
        return max((item.info.st_mtime_ns for item in self.scan.files), default=0)

    def properties(self) -> dict[str, object]:
        properties: dict[str, object] = {"dropped_folder": self.title, "files": len(self.scan.files)}
        documents = [got.document for _, got in self.described if got.document is not None]
        properties.update(extraction_properties(documents))
        return properties

    def text(self, kept_as: str) -> str:
        """The note's body; `kept_as`: the folder's vault-relative path under Attachments/."""
        scan = self.scan
        total = sum(item.info.st_size for item in scan.files)
        if self.empty:
            return f"Empty folder `{self.title}`: there is nothing to read."
        lines = [f"Folder `{self.title}`: {len(scan.files)} file(s), {human_size(total)}."]
        if scan.partial:
            lines.append(
                "> [!warning] Some files were still downloading after `vault.max_write_wait` and may be"
                " incomplete: " + ", ".join(f"`{display_name(item)}`" for item in scan.partial[:10])
            )
        used = 0
        for item, got in self.described:
            if got.document is not None:
                section = document_markdown(got.document, f"{kept_as}/{item.relative}")
            else:
                section = got.text.strip()
            if used + len(section) > MAX_FOLDER_CHARS:
                section = (
                    f"_… not shown: the note holds at most {MAX_FOLDER_CHARS:,} characters of a folder._"
                )
            used += len(section)
            lines.append(f"## {display_name(item.relative)}\n\n{section}")
        more = len(scan.files) - len(self.described)
        if more > 0:
            lines.append(f"_… and {more} more file(s), kept in the folder but not listed here._")
        return "\n\n".join(lines)


def scan_folder(path: str) -> FolderScan:
    """Every entry under `path`, without following links."""
    scan = FolderScan()
    scan.newest = _changed(os.lstat(path))

    def walk(directory: str, prefix: str, depth: int) -> None:
        if scan.unsafe is not None:
            return
        if depth > MAX_DEPTH:
            scan.unsafe = f"folder nested deeper than {MAX_DEPTH} levels"
            return
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda item: item.name):
                scan.entries += 1
                if scan.entries > MAX_FOLDER_ENTRIES:
                    scan.unsafe = f"folder with more than {MAX_FOLDER_ENTRIES:,} entries"
                    return
                relative = f"{prefix}{entry.name}"
                info = entry.stat(follow_symlinks=False)
                scan.newest = max(scan.newest, _changed(info))
                if stat.S_ISLNK(info.st_mode):
                    scan.unsafe = f"folder with a symlink inside ({relative}): links are never followed"
                    return
                if stat.S_ISDIR(info.st_mode):
                    if not entry.name.startswith("."):
                        walk(entry.path, f"{relative}/", depth + 1)
                    continue
                if not stat.S_ISREG(info.st_mode):
                    scan.unsafe = f"folder with something that is not a regular file inside ({relative})"
                    return
                if entry.name.startswith("."):
                    continue  # .DS_Store and the like: moved along, not listed
                if is_ignored_name(entry.name) and not is_conflict_copy(entry.name):
                    scan.partial.append(relative)
                    continue
                scan.files.append(FolderFile(relative, info))

    walk(path, "", 1)
    return scan


def _changed(info: os.stat_result) -> float:
    return max(info.st_mtime, info.st_ctime)


class FolderDrops:
    """Decides when a dropped folder is taken, and what its note says (the preparer thread)."""

    def __init__(self, documents: InboxDocuments, max_body_bytes: int) -> None:
        self._documents = documents
        self._max_body_bytes = max_body_bytes
        self._first_seen: dict[str, float] = {}

    def look(
        self, inbox: Path, name: str, *, settle: float, max_wait: float, defer: Callable[[float], None]
    ) -> ReadyFolder | str | None:
        """The folder's note when it can be taken; a reason to quarantine it; None to look again
        (`defer` was told when, or a worker is reading its documents and will hint it)."""
        path = f"{inbox}/{name}"
        try:
            scan = scan_folder(path)
        except FileNotFoundError:
            self._first_seen.pop(name, None)
            return None
        except OSError as error:
            return f"folder that could not be read ({error.strerror})"
        if scan.unsafe is not None:
            self._first_seen.pop(name, None)
            return scan.unsafe
        now = time.monotonic()
        waited = now - self._first_seen.setdefault(name, now)
        age = time.time() - scan.newest
        if age < settle:
            defer(settle - age)
            return None
        if waited < max_wait and (scan.partial or writer_holds(path, under=True)):
            defer(max(settle, 0.5))
            return None
        described: list[tuple[FolderFile, Described]] = []
        pending = False
        for item in scan.files[:MAX_FOLDER_FILES]:
            got = self._documents.describe(
                Path(path) / item.relative, f"{name}/{item.relative}", item.info, hint_as=name
            )
            if got is None:
                pending = True
            else:
                described.append((item, got))
        if pending:
            return None
        self._first_seen.pop(name, None)
        return ReadyFolder(name, scan, described)


class FolderSteps:
    """The intake of dropped folders, called by `IntakeSteps`: `look` on the preparer thread, `take`
    and `recover` on the worker."""

    def __init__(
        self,
        ctx: StepContext,
        documents: InboxDocuments,
        write_actions: Callable[[Sequence[NewAction]], None],
    ) -> None:
        self.ctx = ctx
        self._documents = documents
        self._write_actions = write_actions
        self.drops = FolderDrops(documents, ctx.settings.vault.max_body_bytes)

    def look(self, name: str, info: os.stat_result, prepared: PreparedIntake) -> None:
        """A folder dropped into Inbox/: taken whole once settled and its documents read."""
        settings = self.ctx.settings.vault
        found = self.drops.look(
            self.ctx.layout.folder(Folder.INBOX),
            name,
            settle=settings.settle_seconds,
            max_wait=settings.max_write_wait,
            defer=lambda delay: prepared.outcome.deferred.append((name, delay)),
        )
        if isinstance(found, str):
            prepared.unsafe.append((name, found))
        elif found is not None:
            prepared.ready_folders.append((name, info, found))
        elif not any(deferred == name for deferred, _ in prepared.outcome.deferred):
            prepared.outcome.reading.append(name)

    def take(self, prepared: PreparedIntake) -> None:
        """Claim each ready folder and move it whole (one rename) under Attachments/, then write its
        notes (on the worker; folders are few). Recovery finishes a move a crash interrupted."""
        ctx = self.ctx
        inbox = ctx.layout.folder(Folder.INBOX)
        for name, item in prepared.folders:
            row = item.row
            try:
                info = os.lstat(inbox / name)
            except FileNotFoundError:
                continue
            if info.st_ino != row.inbox_ino:
                prepared.outcome.deferred.append((name, 0.0))
                continue
            ctx.ledger.insert_actions([row])
            target = ctx.layout.resolve(str(row.extra["kept_in"]))
            ctx.attachment_dir(target.parent.name)
            os.rename(inbox / name, target)
            fs.fsync_dir(target.parent)
            fs.fsync_dir(inbox)
            self._write_actions([item])
            prepared.outcome.actions.append(item)

    def recover(self, row: ActionRow, received: datetime) -> NewAction | None:
        """Finish the intake of a folder a crash interrupted: move it if it was not moved yet, then
        write its notes again from what is in it. The action to plan, or None."""
        ctx = self.ctx
        source = ctx.path(Folder.INBOX, row.inbox_name or "")
        target = ctx.layout.resolve(str(row.extra["kept_in"]))
        if not target.is_dir():
            try:
                info = os.lstat(source)
            except FileNotFoundError:
                info = None
            if info is None or info.st_ino != row.inbox_ino:
                log.error("claimed inbox folder is gone; the action is abandoned", action_id=row.action_id)
                ctx.ledger.set_action_state([(row.action_id, "abandoned", None)])
                return None
            ctx.attachment_dir(target.parent.name)
            os.rename(source, target)
            fs.fsync_dir(target.parent)
            fs.fsync_dir(source.parent)
        item = NewAction(row=row, text=self.read_again(row), received=received)
        self._write_actions([item])
        log.info("recovered an interrupted folder intake", action_id=row.action_id)
        return None if item.planned or row.extra.get("empty") is True else item

    def read_again(self, row: ActionRow) -> str:
        """The note's text for a folder already under Attachments/, read now (recovery, rereading)."""
        kept_in = str(row.extra["kept_in"])
        target = self.ctx.layout.resolve(kept_in)
        scan = scan_folder(os.fspath(target))
        described = [
            (item, self.describe_now(target / item.relative, item.info))
            for item in scan.files[:MAX_FOLDER_FILES]
        ]
        return ReadyFolder(row.inbox_name or target.name, scan, described).text(kept_in)

    def describe_now(self, path: Path, info: os.stat_result) -> Described:
        """A file described at once, a document read in a worker while the caller waits (recovery)."""
        title, text, kind = describe_or_sniff(
            path, path.name, info.st_size, limit=self.ctx.settings.vault.max_body_bytes
        )
        if kind in (None, "empty"):
            return Described(title, text, None, empty=kind == "empty")
        return Described(path.name, "", self._documents.reader.read(path, path.name))
