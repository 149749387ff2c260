"""The vault's folders and the contract's rules on which names are taken, ignored or quarantined."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from ai_employee.vault.fs import ensure_same_filesystem


class Folder(StrEnum):
    INBOX = "Inbox"
    NEEDS_ACTION = "Needs_Action"
    PLANS = "Plans"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    DONE = "Done"
    FAILED = "Failed"
    QUARANTINE = "Quarantine"
    ATTACHMENTS = "Attachments"
    LOGS = "Logs"
    NOTES = "Notes"


STATE_DIR = ".ai-employee"
DASHBOARD = "Dashboard.md"
HANDBOOK = "Company_Handbook.md"

#: Folders the watcher watches: a human (or a sync tool) puts things there.
WATCHED = (Folder.INBOX, Folder.APPROVED, Folder.REJECTED)

_IGNORED_PATTERNS = ("*.tmp", "*.part", "*.crdownload", "*~", "~$*", ".~lock.*", "*.icloud", ".syncthing.*")
_IGNORED = re.compile("|".join(fnmatch.translate(pattern) for pattern in _IGNORED_PATTERNS), re.DOTALL)
_CONFLICT = re.compile(r"\.sync-conflict-|\(conflicted copy |conflicted copy ", re.IGNORECASE)


def is_ignored_name(name: str) -> bool:
    """Dot-files and partial/temporary files of editors, browsers and sync tools."""
    return name.startswith(".") or _IGNORED.match(name) is not None


def is_conflict_copy(name: str) -> bool:
    return bool(_CONFLICT.search(name))


def unsafe_reason(name: str, mode: int) -> str | None:
    """Why an entry must go to Quarantine/ instead of being processed; None if it is safe."""
    if stat.S_ISLNK(mode):
        return "symlink: links are never followed, so nothing outside the vault is read"
    if stat.S_ISDIR(mode):
        return "folder: only notes are taken from here (a folder is taken whole only from Inbox/)"
    if not stat.S_ISREG(mode):
        return "not a regular file (FIFO, socket or device)"
    if is_conflict_copy(name):
        return "sync-conflict copy: never executed; compare it with the original by hand"
    return None


@dataclass(frozen=True)
class VaultLayout:
    root: Path
    #: folder -> (mtime_ns, listed at ns, visible entries) of its last listing, for `counts`
    _counts: dict[Folder, tuple[int, int, int]] = field(default_factory=dict, compare=False, repr=False)

    def folder(self, folder: Folder) -> Path:
        return self.root / folder.value

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def dashboard(self) -> Path:
        return self.root / DASHBOARD

    @property
    def handbook(self) -> Path:
        return self.root / HANDBOOK

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def resolve(self, relative: str) -> Path:
        return self.root / relative

    def create(self) -> None:
        """Create missing folders; refuse state folders that span filesystems."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in Folder:
            self.folder(folder).mkdir(exist_ok=True)
        self.state_dir.mkdir(exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        ensure_same_filesystem([self.root, self.state_dir, *(self.folder(folder) for folder in Folder)])

    def counts(self) -> dict[str, int]:
        """Visible notes/files per folder (status --json).

        A folder is listed again only when its modification time changed, so asking every second
        costs a stat per folder, not a listing of 100,000 notes in Done/."""
        result: dict[str, int] = {}
        for folder in Folder:
            if folder in (Folder.LOGS, Folder.ATTACHMENTS, Folder.NOTES):
                continue
            path = self.folder(folder)
            try:
                stamp = path.stat().st_mtime_ns
            except FileNotFoundError:
                result[folder.value] = 0
                continue
            cached = self._counts.get(folder)
            # trusted only if listed well after the last change: directory times are coarse (a few
            # ms), and whole seconds on some filesystems (ext3, FAT, many network mounts), where a
            # second change within the same second leaves the time as it was
            if cached is not None and cached[0] == stamp and cached[1] - stamp > _granularity(stamp):
                result[folder.value] = cached[2]
                continue
            listed_at = time.time_ns()
            try:
                with os.scandir(path) as entries:
                    count = sum(1 for entry in entries if not is_ignored_name(entry.name))
            except FileNotFoundError:
                count = 0
            self._counts[folder] = (stamp, listed_at, count)
            result[folder.value] = count
        return result


_COARSE_CLOCK_NS = 100_000_000
_WHOLE_SECONDS_NS = 2_000_000_000  # FAT keeps even seconds


def _granularity(stamp_ns: int) -> int:
    """How long after `stamp_ns` a listing can miss no change stamped with it."""
    return _WHOLE_SECONDS_NS if stamp_ns % 1_000_000_000 == 0 else _COARSE_CLOCK_NS
