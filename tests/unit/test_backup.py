"""Backup and restore of .ai-employee/: consistent SQLite snapshots, checked restores, nothing lost."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from ai_employee.vault.backup import (
    BackupError,
    DaemonRunning,
    backup_state,
    holding_daemon_lock,
    read_manifest,
    restore_state,
)
from ai_employee.vault.ledger import SCHEMA_VERSION, Ledger


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "vault" / ".ai-employee"
    folder.mkdir(parents=True)
    return folder


def _kv(path: Path, key: str) -> str | None:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT value FROM kv WHERE namespace = 'test' AND key = ?", (key,)).fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


def test_backup_snapshots_a_live_ledger_with_its_wal(state: Path, tmp_path: Path) -> None:
    ledger = Ledger(state / "state.db")  # stays open: WAL mode, the row may live only in the -wal file
    ledger.kv_put("test", "offset", "41")
    (state / "daemon.json").write_text('{"pid": 1, "port": 1}')
    (state / "telegram.json").write_text('{"offset": 7}')
    try:
        result = backup_state(state, tmp_path / "b.tar.gz", version="9.9.9")
    finally:
        ledger.close()
    assert result.databases == ["state.db"] and result.files == ["telegram.json"]
    manifest = read_manifest(tmp_path / "b.tar.gz")
    assert manifest["ai_employee"] == "9.9.9"
    assert {entry["name"]: entry.get("schema_version") for entry in manifest["files"]} == {
        "state.db": SCHEMA_VERSION,
        "telegram.json": None,
    }
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        names = tar.getnames()
    assert "files/daemon.json" not in names and not any(name.endswith("-wal") for name in names)


def test_restore_brings_back_the_state_and_keeps_the_replaced_one_aside(state: Path, tmp_path: Path) -> None:
    ledger = Ledger(state / "state.db")
    ledger.kv_put("test", "offset", "41")
    ledger.close()
    backup_state(state, tmp_path / "b.tar.gz", version="0")
    ledger = Ledger(state / "state.db")
    ledger.kv_put("test", "offset", "99")
    ledger.close()
    (state / "audit.sqlite").write_bytes(b"")  # made after the backup: not consistent with it

    result = restore_state(tmp_path / "b.tar.gz", state, lock_path=state / "daemon.lock")

    assert result.restored == ["state.db"]
    assert _kv(state / "state.db", "offset") == "41"
    assert not (state / "audit.sqlite").exists()
    assert result.set_aside is not None
    assert _kv(result.set_aside / "state.db", "offset") == "99"
    assert (result.set_aside / "audit.sqlite").exists()
    reopened = Ledger(state / "state.db")  # the restored ledger opens and migrates as usual
    assert reopened.kv_get("test", "offset") == "41"
    reopened.close()


def test_restore_is_refused_while_the_daemon_holds_the_lock(state: Path, tmp_path: Path) -> None:
    Ledger(state / "state.db").close()
    backup_state(state, tmp_path / "b.tar.gz", version="0")
    with holding_daemon_lock(state / "daemon.lock"), pytest.raises(DaemonRunning, match="stop it first"):
        restore_state(tmp_path / "b.tar.gz", state, lock_path=state / "daemon.lock")


def test_a_damaged_backup_is_refused_before_anything_changes(state: Path, tmp_path: Path) -> None:
    Ledger(state / "state.db").close()
    archive = tmp_path / "b.tar.gz"
    backup_state(state, archive, version="0")
    manifest = read_manifest(archive)
    manifest["files"][0]["sha256"] = "0" * 64
    forged = tmp_path / "forged.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(forged, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member)
            if member.name == "manifest.json":
                raw = json.dumps(manifest).encode()
                member.size = len(raw)
                target.addfile(member, io.BytesIO(raw))
            else:
                target.addfile(member, data)
    before = (state / "state.db").read_bytes()
    with pytest.raises(BackupError, match="damaged"):
        restore_state(forged, state, lock_path=state / "daemon.lock")
    assert (state / "state.db").read_bytes() == before
    assert not list(state.glob("pre-restore-*"))


def test_a_backup_never_overwrites_an_existing_file(state: Path, tmp_path: Path) -> None:
    (tmp_path / "b.tar.gz").write_text("precious")
    with pytest.raises(BackupError, match="exists already"):
        backup_state(state, tmp_path / "b.tar.gz", version="0")
    assert (tmp_path / "b.tar.gz").read_text() == "precious"


def test_a_file_that_is_not_a_backup_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(BackupError, match="not a readable ai-employee backup"):
        read_manifest(tmp_path / "x.tar.gz")
