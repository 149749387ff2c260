"""vault.note: writes a note inside the vault, and nowhere else whatever the params say."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ai_employee.executors.vault_note import VaultNoteExecutor, VaultNoteParams
from ai_employee.model.executor import ExecutionContext, ExecutionError
from ai_employee.vault.notes import parse_note

PLAN_ID = "plan-20261121-101500-a1b2c3"


class MemoryJournal:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        self.entries[key] = dict(value)


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    root.mkdir()
    return root


def context(vault: Path) -> ExecutionContext:
    return ExecutionContext(
        plan_id=PLAN_ID,
        action_id="act-20261121-101500-a1b2c3",
        vault_root=vault,
        live=False,
        journal=MemoryJournal(),
    )


def everything_under(path: Path) -> set[str]:
    return {str(entry.relative_to(path)) for entry in path.rglob("*")}


async def test_note_is_written_under_notes_by_default(vault: Path) -> None:
    executor = VaultNoteExecutor()
    params = executor.validate({"title": "Pump 3 leaking", "content": "Seen at 10:15 on line 2."})
    result = await executor.execute(params, context(vault))
    assert result == {"note": "[[Notes/pump-3-leaking a1b2c3]]", "path": "Notes/pump-3-leaking a1b2c3.md"}
    properties, body = parse_note((vault / result["path"]).read_text(encoding="utf-8"))
    assert properties["plan_id"] == PLAN_ID
    assert properties["title"] == "Pump 3 leaking"
    assert "Seen at 10:15 on line 2." in body


async def test_note_goes_into_a_nested_folder_that_is_created(vault: Path) -> None:
    executor = VaultNoteExecutor()
    params = executor.validate({"title": "Shift log", "folder": "Maintenance/2026/Line 2"})
    result = await executor.execute(params, context(vault))
    assert result["path"] == "Maintenance/2026/Line 2/shift-log a1b2c3.md"
    assert (vault / result["path"]).is_file()


async def test_running_again_rewrites_the_same_note(vault: Path) -> None:
    executor = VaultNoteExecutor()
    params = executor.validate({"title": "Once", "content": "x"})
    first = await executor.execute(params, context(vault))
    second = await executor.execute(params, context(vault))
    assert first == second
    assert everything_under(vault) == {"Notes", "Notes/once a1b2c3.md"}


def test_dry_run_rendering_names_the_file_it_would_write(vault: Path) -> None:
    executor = VaultNoteExecutor()
    params = executor.validate({"title": "Pump 3"})
    assert executor.render_dry_run(params, context(vault)) == {"writes": "vault/Notes/pump-3 a1b2c3.md"}
    assert everything_under(vault) == set()


@pytest.mark.parametrize("folder", ["..", "../outside", "Notes/../../outside", "a/./../../b"])
def test_folder_with_dot_dot_is_refused(folder: str) -> None:
    with pytest.raises(ValidationError, match=r"no '\.\.'"):
        VaultNoteExecutor().validate({"title": "x", "folder": folder})


@pytest.mark.parametrize("folder", ["/etc", "/tmp/x", "\\\\server\\share"])
def test_absolute_folder_is_refused(folder: str) -> None:
    with pytest.raises(ValidationError, match="absolute"):
        VaultNoteExecutor().validate({"title": "x", "folder": folder})


@pytest.mark.parametrize("folder", [".obsidian", ".trash/x", "Notes/.hidden"])
def test_dot_folder_is_refused(folder: str) -> None:
    with pytest.raises(ValidationError):
        VaultNoteExecutor().validate({"title": "x", "folder": folder})


@pytest.mark.parametrize(
    "folder",
    [
        "Inbox",
        "inbox",
        "Approved/sub",
        "Plans",
        "Done",
        "Failed",
        "Quarantine",
        "Attachments",
        "Logs",
        "Needs_Action",
        "Rejected",
        ".ai-employee",
    ],
)
def test_daemon_state_folder_is_refused(folder: str) -> None:
    with pytest.raises(ValidationError):
        VaultNoteExecutor().validate({"title": "x", "folder": folder})


def test_unknown_param_is_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        VaultNoteExecutor().validate({"title": "x", "path": "/etc/passwd"})


def test_empty_title_is_refused() -> None:
    with pytest.raises(ValidationError):
        VaultNoteExecutor().validate({"title": "   "})


def test_blank_folder_means_notes() -> None:
    params = VaultNoteExecutor().validate({"title": "x", "folder": " / "})
    assert isinstance(params, VaultNoteParams)
    assert params.folder == "Notes"


async def test_symlinked_folder_leading_outside_the_vault_is_refused(vault: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (vault / "Shared").symlink_to(outside, target_is_directory=True)
    executor = VaultNoteExecutor()
    params = executor.validate({"title": "Escape", "content": "x", "folder": "Shared"})
    with pytest.raises(ExecutionError, match="outside the vault"):
        await executor.execute(params, context(vault))
    assert os.listdir(outside) == []


async def test_symlink_outside_is_refused_before_any_folder_is_made_there(
    vault: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (vault / "Shared").symlink_to(outside, target_is_directory=True)
    executor = VaultNoteExecutor()
    params = executor.validate({"title": "Escape", "folder": "Shared/deeper/still"})
    with pytest.raises(ExecutionError, match="outside the vault"):
        await executor.execute(params, context(vault))
    assert os.listdir(outside) == []


async def test_symlinked_folder_inside_the_vault_is_followed(vault: Path) -> None:
    (vault / "Real").mkdir()
    (vault / "Alias").symlink_to(vault / "Real", target_is_directory=True)
    executor = VaultNoteExecutor()
    result = await executor.execute(executor.validate({"title": "Kept", "folder": "Alias"}), context(vault))
    assert (vault / "Real" / "kept a1b2c3.md").is_file()
    assert result["path"] == "Alias/kept a1b2c3.md"
