"""What `status` says about live mode: in dry-run no action is live; in live mode the actions that
send for real are named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_employee.config import load_settings
from ai_employee.daemon import Daemon, unknown_action_names
from ai_employee.executors.atlas import create as create_atlas
from ai_employee.executors.vault_note import VaultNoteExecutor
from ai_employee.model.registry import ExecutorRegistry

ATLAS = {
    "ATLAS_BASE_URL": "http://127.0.0.1:9/api",
    "ATLAS_EMAIL": "a@example.com",
    "ATLAS_PASSWORD": "pw-123",
}


def _status(tmp_path: Path, **environ: str) -> dict[str, Any]:
    settings = load_settings(environ={"AIE_VAULT": str(tmp_path / "vault"), **ATLAS, **environ})
    daemon = Daemon(settings)
    daemon.layout.create()
    daemon.registry = ExecutorRegistry([VaultNoteExecutor(), create_atlas(settings)])
    return daemon.status()


def test_dry_run_status_names_no_live_action(tmp_path: Path) -> None:
    status = _status(tmp_path)

    assert status["dry_run"] is True
    assert status["live_actions"] == []
    assert [entry["live"] for entry in status["executors"].values()] == [False, False]


def test_live_status_names_the_actions_that_send_for_real(tmp_path: Path) -> None:
    status = _status(tmp_path, AIE_LIVE="1")

    assert status["dry_run"] is False
    assert status["live_actions"] == ["atlas.work_order"]  # vault.note writes a note: it sends nothing
    assert status["executors"]["atlas.work_order"]["live"] is True


def test_live_status_leaves_out_actions_not_in_live_actions(tmp_path: Path) -> None:
    status = _status(tmp_path, AIE_LIVE="1", AIE_EXECUTION__LIVE_ACTIONS="manus.research")

    assert status["live_actions"] == []


def test_an_action_name_in_the_config_that_no_executor_has_is_reported() -> None:
    settings = load_settings(environ={"AIE_EXECUTION__AUTO_APPROVE": "vault.note,vault.nte"})

    problems = unknown_action_names(settings, ExecutorRegistry([VaultNoteExecutor()]))

    assert problems == ["execution.auto_approve names no action: vault.nte (the actions: vault.note)"]
