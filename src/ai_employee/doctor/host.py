"""Checks of this machine and the vault: Python, folders, disk, inotify, OCR, the port, the ledger."""

from __future__ import annotations

import errno
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from ai_employee.config import Settings
from ai_employee.control.port import DEFAULT_PORT
from ai_employee.daemon import STATE_DB, DaemonInfo, pid_alive
from ai_employee.doctor.report import Check
from ai_employee.vault.backup import is_sqlite
from ai_employee.vault.layout import HANDBOOK, Folder, VaultLayout
from ai_employee.vault.ledger import SCHEMA_VERSION, schema_version

MIN_PYTHON = (3, 11)
DISK_FAIL_BYTES = 100 * 1024 * 1024
DISK_WARN_BYTES = 1024 * 1024 * 1024
INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
#: the share of the inotify watch limit a vault may take before it is a warning (others use watches too)
INOTIFY_WARN_SHARE = 0.5


def python_and_platform() -> Check:
    version = ".".join(str(part) for part in sys.version_info[:3])
    system = f"Python {version} on {platform.system()} {platform.release()} ({platform.machine()})"
    if sys.version_info[:2] < MIN_PYTHON:
        return Check.fail("python", system, "install Python 3.11 or newer")
    if platform.system() != "Linux":
        return Check.warn(
            "python",
            system,
            "Linux is what ai-employee is built and tested on (inotify, syncfs); elsewhere it may be slower",
        )
    return Check.ok("python", system)


def vault_folders(layout: VaultLayout) -> Check:
    root = layout.root
    if not root.exists():
        return Check.warn(
            "vault", f"{root} does not exist yet", f"ai-employee init {root} (start creates it too)"
        )
    if not root.is_dir():
        return Check.fail(
            "vault", f"{root} is not a folder", "point --vault, AIE_VAULT or vault.path at a folder"
        )
    problems: list[str] = []
    missing: list[str] = []
    for folder in Folder:
        path = layout.folder(folder)
        if not path.exists():
            missing.append(folder.value)
        elif not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            problems.append(f"{folder.value}/ is not a folder this user ({_user()}) can write")
    state = layout.state_dir
    if state.exists() and not os.access(state, os.W_OK | os.X_OK):
        problems.append(f"{state.name}/ is not writable by {_user()}")
    if not os.access(root, os.W_OK | os.X_OK):
        problems.append(f"the vault folder is not writable by {_user()}")
    devices = {path.stat().st_dev for path in (root, *(layout.folder(f) for f in Folder)) if path.is_dir()}
    if len(devices) > 1:
        problems.append("its folders span filesystems: moves would not be atomic")
    if problems:
        return Check.fail(
            "vault",
            "; ".join(problems),
            f"give {_user()} write access to every folder of {root} (chown -R), on one filesystem",
        )
    if state.exists() and state.stat().st_mode & 0o077:
        return Check.warn(
            "vault",
            f"{state} is readable by other users (the state holds senders and titles)",
            f"chmod 700 {state}",
        )
    if missing:
        return Check.ok("vault", f"{root}; missing folders are created at start: {', '.join(missing)}")
    if not layout.handbook.exists():
        return Check.warn(
            "vault", f"{root}: no {HANDBOOK}", f"write the rules the planner follows in {layout.handbook}"
        )
    return Check.ok("vault", f"{root}: every folder present and writable")


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return f"uid {os.getuid()}"


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def disk_space(layout: VaultLayout) -> Check:
    where = _existing_parent(layout.root)
    usage = shutil.disk_usage(where)
    free = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB on {where}"
    data = {"free_bytes": usage.free, "total_bytes": usage.total}
    if usage.free < DISK_FAIL_BYTES:
        return Check.fail(
            "disk", free, "free space on the vault's filesystem: notes and originals need it", **data
        )
    if usage.free < DISK_WARN_BYTES:
        return Check.warn(
            "disk", free, "free some space: under 1 GiB left for attachments and the ledger", **data
        )
    return Check.ok("disk", free, **data)


def count_folders(root: Path) -> int:
    """Folders under the vault (the watcher takes one inotify watch for each)."""
    count = 0
    stack = [root]
    while stack:
        current = stack.pop()
        count += 1
        try:
            with os.scandir(current) as entries:
                stack.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return count


def inotify_watches(layout: VaultLayout, limit_file: Path = INOTIFY_WATCHES) -> Check:
    try:
        limit = int(limit_file.read_text().strip())
    except (OSError, ValueError):
        return Check.ok("inotify", "no inotify watch limit to read here (not Linux?)")
    if not layout.root.is_dir():
        return Check.ok("inotify", f"limit {limit} watches; the vault does not exist yet", limit=limit)
    folders = count_folders(layout.root)
    detail = f"the vault has {folders} folders (one watch each); the limit is {limit} per user"
    fix = (
        f"raise it: echo fs.inotify.max_user_watches={max(524288, folders * 4)}"
        " > /etc/sysctl.d/60-ai-employee.conf && sysctl --system"
    )
    if folders >= limit:
        return Check.fail(
            "inotify", detail + ": the watcher cannot watch it all", fix, folders=folders, limit=limit
        )
    if folders > limit * INOTIFY_WARN_SHARE:
        return Check.warn(
            "inotify", detail + ": little room left for other programs", fix, folders=folders, limit=limit
        )
    return Check.ok("inotify", detail, folders=folders, limit=limit)


def ocr_engine() -> Check:
    binary = shutil.which("tesseract")
    fix = "apt-get install tesseract-ocr (macOS: brew install tesseract); scans stay unread without it"
    if binary is None:
        return Check.warn("ocr", "tesseract is not installed", fix)
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Check.warn("ocr", f"tesseract at {binary} does not run: {error}", fix)
    first = (result.stdout or result.stderr).strip().splitlines()
    if result.returncode != 0 or not first:
        return Check.warn("ocr", f"tesseract at {binary} exited with {result.returncode}", fix)
    return Check.ok("ocr", f"{first[0]} ({binary})")


def control_port(settings: Settings, layout: VaultLayout) -> Check:
    host, port = settings.health.host, settings.health.port
    if port == 0:
        return Check.ok("port", "0: the daemon takes any free port and writes it to daemon.json")
    if port is None:
        return Check.ok(
            "port", f"not set: {DEFAULT_PORT} when it is free, else any free port (written to daemon.json)"
        )
    info = DaemonInfo.read(layout)
    if info is not None and pid_alive(info.pid) and info.port == port:
        return Check.ok("port", f"{host}:{port} is in use by this vault's daemon (pid {info.pid})")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return Check.fail(
                    "port",
                    f"{host}:{port} is taken by another program",
                    "stop it, or choose another port: health.port, HEALTH_SERVER_PORT or --port",
                )
            return Check.fail(
                "port",
                f"cannot listen on {host}:{port}: {error.strerror}",
                "set health.host to an address of this machine (127.0.0.1 by default)",
            )
    return Check.ok("port", f"{host}:{port} is free")


def daemon_state(layout: VaultLayout) -> Check:
    info = DaemonInfo.read(layout)
    if info is not None and pid_alive(info.pid):
        return Check.ok("daemon", f"running (pid {info.pid}, control port {info.port})", pid=info.pid)
    return Check.ok("daemon", "not running")


def ledger_schema(layout: VaultLayout) -> Check:
    path = layout.state_dir / STATE_DB
    if not path.exists():
        return Check.ok("ledger", f"none yet: the first start creates it at schema version {SCHEMA_VERSION}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            version = schema_version(db)
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as error:
        return Check.fail(
            "ledger",
            f"{path} cannot be read: {error}",
            "restore the last backup (ai-employee restore FILE)",
        )
    if verdict != "ok":
        return Check.fail(
            "ledger", f"{path} is damaged: {verdict}", "restore the last backup (ai-employee restore FILE)"
        )
    if version > SCHEMA_VERSION:
        return Check.fail(
            "ledger",
            f"schema version {version}, newer than this ai-employee knows ({SCHEMA_VERSION})",
            "upgrade ai-employee to the version that wrote it, or restore a backup made by this one",
            schema_version=version,
        )
    if version < SCHEMA_VERSION:
        return Check.ok(
            "ledger",
            f"schema version {version}: the next start migrates it to {SCHEMA_VERSION} (back it up first)",
            schema_version=version,
        )
    return Check.ok("ledger", f"schema version {version} (current)", schema_version=version)


def state_databases(layout: VaultLayout) -> Check:
    """The other SQLite databases of `.ai-employee/` (the audit store's, by default): readable,
    whole, and the schema revision their migrations recorded (`alembic_version`), if any."""
    state = layout.state_dir
    found = (
        [
            path
            for path in sorted(state.glob("*"))
            if path.name != STATE_DB and path.is_file() and is_sqlite(path)
        ]
        if state.is_dir()
        else []
    )
    if not found:
        return Check.ok("state-databases", "no other database in .ai-employee/ yet")
    described: list[str] = []
    for path in found:
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
                has_alembic = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
                ).fetchone()
                revision = (
                    db.execute("SELECT version_num FROM alembic_version").fetchone() if has_alembic else None
                )
            finally:
                db.close()
        except sqlite3.Error as error:
            return Check.fail(
                "state-databases", f"{path.name} cannot be read: {error}", "restore the last backup"
            )
        if verdict != "ok":
            return Check.fail(
                "state-databases", f"{path.name} is damaged: {verdict}", "restore the last backup"
            )
        described.append(
            f"{path.name} at revision {revision[0]}" if revision else f"{path.name} (no revision)"
        )
    return Check.ok("state-databases", "; ".join(described))
