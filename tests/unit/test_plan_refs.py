"""Naming a plan on the command line (`vault.plan_refs`), `ai-employee list` and `migrate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ai_employee.cli import main
from ai_employee.vault.layout import Folder, VaultLayout
from ai_employee.vault.notes import render_note
from ai_employee.vault.plan_refs import PlanRefError, resolve_plan, waiting_plans

PLAN_ID = "plan-20261121-101500-a1b2c3"


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VaultLayout:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIE_VAULT", raising=False)
    monkeypatch.delenv("AIE_CONFIG", raising=False)
    vault = VaultLayout(tmp_path / "vault")
    vault.create()
    return vault


def write_plan(
    layout: VaultLayout,
    plan_id: str = PLAN_ID,
    folder: Folder = Folder.PLANS,
    name: str | None = None,
    created: str = "2026-11-21T10:15:02+00:00",
    title: str = "Pump 3 leaking",
) -> Path:
    stamp, short = plan_id.removeprefix("plan-")[:15], plan_id.rsplit("-", 1)[1]
    path = layout.folder(folder) / (name or f"{stamp} pump-3 {short} plan.md")
    properties = {
        "id": plan_id,
        "type": "plan",
        "action_id": "act-" + plan_id.removeprefix("plan-"),
        "action": "atlas.work_order",
        "title": title,
        "status": "pending_approval",
        "planner": "template",
        "risk": "high",
        "created": created,
    }
    path.write_text(render_note(properties, "# Plan: fix it\n"), encoding="utf-8")
    return path


def test_a_plan_is_found_by_its_full_id(layout: VaultLayout) -> None:
    path = write_plan(layout)
    found = resolve_plan(layout, PLAN_ID)
    assert (found.plan_id, found.folder, found.path) == (PLAN_ID, Folder.PLANS, path)


def test_a_plan_is_found_by_the_short_id_in_its_file_name(layout: VaultLayout) -> None:
    write_plan(layout, folder=Folder.FAILED)
    found = resolve_plan(layout, "a1b2c3")
    assert (found.plan_id, found.folder) == (PLAN_ID, Folder.FAILED)


def test_a_plan_is_found_by_its_file_name_with_or_without_md(layout: VaultLayout) -> None:
    path = write_plan(layout)
    assert resolve_plan(layout, path.name).plan_id == PLAN_ID
    assert resolve_plan(layout, path.stem).plan_id == PLAN_ID


def test_a_plan_is_found_by_its_path_absolute_or_in_the_vault(layout: VaultLayout) -> None:
    path = write_plan(layout)
    assert resolve_plan(layout, str(path)).plan_id == PLAN_ID
    assert resolve_plan(layout, f"Plans/{path.name}").plan_id == PLAN_ID


def test_a_renamed_plan_is_found_by_its_id(layout: VaultLayout) -> None:
    write_plan(layout, name="my own name.md")
    assert resolve_plan(layout, PLAN_ID).path.name == "my own name.md"
    assert resolve_plan(layout, "a1b2c3").path.name == "my own name.md"


def test_an_action_id_or_its_note_names_its_plan(layout: VaultLayout) -> None:
    write_plan(layout)
    action = layout.folder(Folder.NEEDS_ACTION) / "20261121-101500 pump-3 a1b2c3.md"
    action.write_text(
        render_note({"id": "act-20261121-101500-a1b2c3", "type": "action", "title": "x"}, "x"),
        encoding="utf-8",
    )
    assert resolve_plan(layout, "act-20261121-101500-a1b2c3").plan_id == PLAN_ID
    assert resolve_plan(layout, action.name).plan_id == PLAN_ID


def test_an_ambiguous_short_id_is_an_error_that_lists_the_candidates(layout: VaultLayout) -> None:
    write_plan(layout)
    other = "plan-20261122-090000-a1b2c3"
    write_plan(layout, other, folder=Folder.DONE)
    with pytest.raises(PlanRefError) as error:
        resolve_plan(layout, "a1b2c3")
    assert {ref.plan_id for ref in error.value.candidates} == {PLAN_ID, other}
    assert PLAN_ID in str(error.value) and other in str(error.value) and "full id" in str(error.value)
    assert resolve_plan(layout, other).folder == Folder.DONE  # the full id is never ambiguous


def test_a_reference_to_no_plan_says_so(layout: VaultLayout) -> None:
    with pytest.raises(PlanRefError, match="no plan with the short id ffffff"):
        resolve_plan(layout, "ffffff")
    with pytest.raises(PlanRefError, match="no plan named"):
        resolve_plan(layout, "pump")


def test_waiting_plans_are_the_plans_and_failed_notes_oldest_first(layout: VaultLayout) -> None:
    write_plan(layout, "plan-20261122-090000-bbbbbb", created="2026-11-22T09:00:00+00:00", title="second")
    write_plan(layout, created="2026-11-21T10:15:02+00:00", title="first")
    write_plan(layout, "plan-20261120-090000-cccccc", folder=Folder.DONE)
    waiting = waiting_plans(layout)
    assert [(plan.short_id, plan.title) for plan in waiting] == [("a1b2c3", "first"), ("bbbbbb", "second")]


def test_cli_list_shows_short_id_age_action_and_title(layout: VaultLayout) -> None:
    write_plan(layout)
    result = CliRunner().invoke(main, ["list", "--vault", str(layout.root)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("a1b2c3"))
    assert "atlas.work_order" in row and "Pump 3 leaking" in row and "d " in row


def test_cli_list_json(layout: VaultLayout) -> None:
    write_plan(layout)
    result = CliRunner().invoke(main, ["list", "--vault", str(layout.root), "--json"])
    [entry] = json.loads(result.output)
    assert (entry["id"], entry["short_id"], entry["action"], entry["title"]) == (
        PLAN_ID,
        "a1b2c3",
        "atlas.work_order",
        "Pump 3 leaking",
    )
    assert entry["age_seconds"] > 0


def test_cli_approve_takes_a_short_id(layout: VaultLayout) -> None:
    write_plan(layout)
    result = CliRunner().invoke(main, ["approve", "a1b2c3", "--vault", str(layout.root)])
    assert result.exit_code == 0, result.output
    assert [path.name for path in layout.folder(Folder.APPROVED).iterdir()] != []


def test_cli_reject_of_an_ambiguous_short_id_exits_4_and_moves_nothing(layout: VaultLayout) -> None:
    write_plan(layout)
    write_plan(layout, "plan-20261122-090000-a1b2c3")
    result = CliRunner().invoke(main, ["reject", "a1b2c3", "--vault", str(layout.root)])
    assert result.exit_code == 4
    assert "names 2 plans" in result.output
    assert list(layout.folder(Folder.REJECTED).iterdir()) == []


def test_cli_migrate_dry_run_shows_the_changes_and_changes_nothing(layout: VaultLayout) -> None:
    path = layout.folder(Folder.PLANS) / "old.md"
    old = (
        "---\nid: plan-x\ntype: plan\naction: vault.note\nparams:\n  title: t\n"
        "status: pending_approval\n---\nbody\n"
    )
    path.write_text(old, encoding="utf-8")
    result = CliRunner().invoke(main, ["migrate", "--vault", str(layout.root), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        "Plans/old.md: would change" in result.output and "params -> flat properties (title)" in result.output
    )
    assert path.read_text(encoding="utf-8") == old
    result = CliRunner().invoke(main, ["migrate", "--vault", str(layout.root)])
    assert "1 note(s) migrated" in result.output
    assert "\ntitle: t\n" in path.read_text(encoding="utf-8")
