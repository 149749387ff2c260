"""`ai-employee backup` while the daemon runs, `restore` refused until it stops, then restored."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from tests.conftest import DaemonProcess, drop, notes, wait_for


def _actions(state_db: Path) -> int:
    db = sqlite3.connect(state_db)
    try:
        return int(db.execute("SELECT COUNT(*) FROM actions").fetchone()[0])
    finally:
        db.close()


def test_backup_of_a_running_daemon_restores_after_it_stopped(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    drop(vault, "first.txt", "pump 3 leaks")
    wait_for(lambda: notes(vault / "Plans"), message="a plan")
    archive = vault.parent / "state.tar.gz"

    made = daemon.cli("backup", "--vault", str(vault), "--to", str(archive))
    assert made.returncode == 0, made.stderr
    # the ledger, and the audit store's database once the store has opened (it opens after the vault)
    assert re.search(r"backed up [12] database\(s\)", made.stdout), made.stdout

    refused = daemon.cli("restore", str(archive), "--vault", str(vault))
    assert refused.returncode == 1
    assert "stop it first" in refused.stderr

    assert daemon.terminate() == 0
    (vault / ".ai-employee" / "state.db").write_bytes(b"")  # the state is lost

    restored = daemon.cli("restore", str(archive), "--vault", str(vault))
    assert restored.returncode == 0, restored.stderr
    assert _actions(vault / ".ai-employee" / "state.db") == 1
    assert "kept in" in restored.stdout
