"""Backup and restore of the daemon's private state (`<vault>/.ai-employee/`).

The vault's notes are the human's, backed up with the vault (Syncthing, git, the file server);
what only the daemon holds is its state folder: the ledger (which step of which item is done,
sources' offsets, executors' journals), the audit store, small JSON state. A backup is one
`.tar.gz` with a `manifest.json`:

- every SQLite database is copied with SQLite's online backup API: a consistent snapshot even
  while the daemon writes, WAL included (the `-wal`/`-shm` files are never copied as files);
- every other small regular file is copied as it is; the daemon's run files (`daemon.json`,
  `daemon.lock`, `daemon.log`), temp files and earlier restores' leftovers are not.

A restore checks the whole archive first (names, checksums, SQLite integrity), holds the
daemon's lock while it works, so no daemon can start half-way, and moves the state it replaces
into `.ai-employee/pre-restore-<time>/` (nothing is deleted). The folders stay the truth: the
daemon's recovery at start reconciles the restored ledger with what the notes say.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ai_employee.vault.fs import fsync_dir

ARCHIVE_FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_HEADER = b"SQLite format 3\x00"
#: run files of a live daemon: meaningless in another run
RUN_FILES = frozenset({"daemon.json", "daemon.lock", "daemon.log"})
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")
PRE_RESTORE_PREFIX = "pre-restore-"
#: a state file larger than this is not state (a log, a dump) and is left out, with a word
MAX_PLAIN_FILE_BYTES = 64 * 1024 * 1024


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why and what to do."""


class DaemonRunning(BackupError):
    """A daemon holds the vault: restoring under it would pull its state from under its feet."""


@dataclass
class BackupResult:
    archive: Path
    databases: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    restored: list[str]
    set_aside: Path | None


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def default_archive_name(vault: Path, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"ai-employee-backup-{vault.name or 'vault'}-{stamp}.tar.gz"


def _state_files(state_dir: Path) -> Iterator[Path]:
    """The files of the state folder worth keeping, in a stable order, subfolders included."""
    for path in sorted(state_dir.rglob("*")):
        relative = path.relative_to(state_dir)
        if relative.parts[0].startswith((PRE_RESTORE_PREFIX, ".")) or any(
            part.startswith(".") for part in relative.parts
        ):
            continue
        if path.is_symlink() or not path.is_file():
            continue
        if relative.as_posix() in RUN_FILES or path.name.endswith(SIDE_FILE_SUFFIXES):
            continue
        yield path


def _sqlite_snapshot(source: Path, target: Path) -> int:
    """Copy a live database with the online backup API; returns its `user_version`."""
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
            return int(dst.execute("PRAGMA user_version").fetchone()[0])
        finally:
            dst.close()
    finally:
        src.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def backup_state(state_dir: Path, archive: Path, *, version: str) -> BackupResult:
    """Write a backup of `state_dir` to `archive` (durably: temp, fsync, rename, fsync the folder)."""
    if not state_dir.is_dir():
        raise BackupError(f"there is no state to back up: {state_dir} does not exist")
    archive = archive.resolve()
    if archive.exists():
        raise BackupError(f"{archive} exists already; choose another name with --to")
    if archive.is_relative_to(state_dir.resolve()):
        raise BackupError("the backup cannot be written inside the state folder it backs up")
    result = BackupResult(archive)
    entries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=".aie-backup-", dir=archive.parent) as scratch_name:
        scratch = Path(scratch_name)
        for path in _state_files(state_dir):
            name = path.relative_to(state_dir).as_posix()
            copy = scratch / "files" / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            if is_sqlite(path):
                try:
                    schema = _sqlite_snapshot(path, copy)
                except sqlite3.Error as error:
                    raise BackupError(f"cannot read the database {name}: {error}") from error
                entries.append({"name": name, "kind": "sqlite", "schema_version": schema})
                result.databases.append(name)
            elif path.stat().st_size <= MAX_PLAIN_FILE_BYTES:
                shutil.copy2(path, copy)
                entries.append({"name": name, "kind": "file"})
                result.files.append(name)
            else:
                result.skipped.append(name)
                continue
            entries[-1]["sha256"] = _sha256(copy)
            entries[-1]["bytes"] = copy.stat().st_size
        manifest = {
            "format": ARCHIVE_FORMAT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "ai_employee": version,
            "state_dir": str(state_dir),
            "files": entries,
            "skipped": result.skipped,
        }
        temp = scratch / "archive.tar.gz"
        with tarfile.open(temp, "w:gz") as tar:
            data = json.dumps(manifest, indent=2).encode("utf-8")
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            info.mtime = int(datetime.now(UTC).timestamp())
            tar.addfile(info, io.BytesIO(data))
            for entry in entries:
                tar.add(scratch / "files" / entry["name"], arcname=f"files/{entry['name']}", recursive=False)
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)  # the ledger holds senders and titles: as private as the state folder
        os.link(temp, archive)  # never replaces a file that appeared meanwhile
        fsync_dir(archive.parent)
    return result


def read_manifest(archive: Path) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise BackupError(f"{archive} is not an ai-employee backup (no {MANIFEST})")
            manifest: dict[str, Any] = json.loads(member.read())
    except (OSError, tarfile.TarError, KeyError, ValueError) as error:
        raise BackupError(f"{archive} is not a readable ai-employee backup: {error}") from error
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise BackupError(f"{archive} has backup format {manifest.get('format')!r}; this version reads 1")
    return manifest


@contextlib.contextmanager
def holding_daemon_lock(lock_path: Path) -> Iterator[None]:
    """The daemon's own lock, so that none runs (or starts) while the state is replaced."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DaemonRunning(
                f"a daemon is running on this vault ({lock_path.parent.parent}): stop it first"
                " (ai-employee stop), then restore"
            ) from None
        yield
    finally:
        os.close(fd)


def _safe_name(name: Any) -> str:
    path = PurePosixPath(str(name))
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0].startswith("."):
        raise BackupError(f"the backup names a file outside the state folder: {name!r}")
    if path.as_posix() in RUN_FILES:
        raise BackupError(f"the backup carries a run file it must not: {name!r}")
    return path.as_posix()


def _extract_checked(archive: Path, manifest: dict[str, Any], into: Path) -> list[str]:
    names: list[str] = []
    with tarfile.open(archive, "r:gz") as tar:
        for entry in manifest.get("files", []):
            name = _safe_name(entry.get("name"))
            member = tar.extractfile(f"files/{name}")
            if member is None:
                raise BackupError(f"the backup lists {name} but does not hold it")
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as handle:
                shutil.copyfileobj(member, handle)
                handle.flush()
                os.fsync(handle.fileno())
            if _sha256(target) != entry.get("sha256"):
                raise BackupError(f"{name} in the backup is damaged (checksum mismatch)")
            if entry.get("kind") == "sqlite":
                _check_database(target, name)
            names.append(name)
    return names


def _check_database(path: Path, name: str) -> None:
    db = sqlite3.connect(path)
    try:
        verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.Error as error:
        raise BackupError(f"{name} in the backup is not a usable database: {error}") from error
    finally:
        db.close()
    if verdict != "ok":
        raise BackupError(f"{name} in the backup fails SQLite's integrity check: {verdict}")


def restore_state(archive: Path, state_dir: Path, *, lock_path: Path) -> RestoreResult:
    """Replace the state in `state_dir` by the backup's, keeping what it replaces aside."""
    manifest = read_manifest(archive)
    state_dir.mkdir(parents=True, exist_ok=True)
    with holding_daemon_lock(lock_path):
        staging = Path(tempfile.mkdtemp(prefix=".aie-restore-", dir=state_dir))
        try:
            names = _extract_checked(archive, manifest, staging)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            aside = state_dir / f"{PRE_RESTORE_PREFIX}{stamp}"
            # The whole current state goes aside, not only what the backup replaces: a database
            # made after the backup would not be consistent with the restored ledger.
            moved_aside = False
            for current in list(_state_files(state_dir)):
                for path in (current, *(Path(f"{current}{suffix}") for suffix in SIDE_FILE_SUFFIXES)):
                    if path.exists():
                        kept = aside / path.relative_to(state_dir)
                        kept.parent.mkdir(parents=True, exist_ok=True)
                        os.rename(path, kept)
                        moved_aside = True
            for name in names:
                current = state_dir / name
                current.parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging / name, current)
                fsync_dir(current.parent)
            if moved_aside:
                fsync_dir(aside)
            fsync_dir(state_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(restored=names, set_aside=aside if moved_aside else None)
