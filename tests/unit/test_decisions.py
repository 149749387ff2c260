"""Approve and reject by id: the same move a human makes, found by the note's id, not its name."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_employee.model.services import Decider
from ai_employee.pipeline.decisions import decider_of
from ai_employee.vault.decisions import Decisions
from ai_employee.vault.layout import Folder, VaultLayout
from ai_employee.vault.notes import parse_note, render_note

PLAN_ID = "plan-20261121-101500-a1b2c3"


@pytest.fixture
def layout(tmp_path: Path) -> VaultLayout:
    layout = VaultLayout(tmp_path / "vault")
    layout.create()
    return layout


def put_plan(layout: VaultLayout, folder: Folder, name: str, plan_id: str = PLAN_ID) -> Path:
    properties = {
        "id": plan_id,
        "type": "plan",
        "action_id": "act-" + plan_id.removeprefix("plan-"),
        "action": "vault.note",
        "params": {"title": "x"},
        "status": "pending_approval",
        "planner": "template",
        "risk": "low",
        "created": "2026-11-21T10:15:02+00:00",
    }
    path = layout.folder(folder) / name
    path.write_text(render_note(properties, "# Plan\n\nBody kept as written.\n"), encoding="utf-8")
    return path


def files(layout: VaultLayout, folder: Folder) -> list[str]:
    return sorted(path.name for path in layout.folder(folder).iterdir())


def test_approve_moves_the_plan_from_plans_to_approved(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "20261121-101500 pump a1b2c3 plan.md")
    result = Decisions(layout).approve(PLAN_ID)
    assert (result.outcome, result.plan_id) == ("approved", PLAN_ID)
    assert files(layout, Folder.PLANS) == []
    assert files(layout, Folder.APPROVED) == ["20261121-101500 pump a1b2c3 plan.md"]


def test_approve_moves_a_failed_plan_back_to_approved_for_a_retry(layout: VaultLayout) -> None:
    put_plan(layout, Folder.FAILED, "20261121-101500 pump a1b2c3 plan.md")
    assert Decisions(layout).approve(PLAN_ID).outcome == "approved"
    assert files(layout, Folder.FAILED) == []
    assert files(layout, Folder.APPROVED) == ["20261121-101500 pump a1b2c3 plan.md"]


def test_approve_leaves_the_note_unchanged(layout: VaultLayout) -> None:
    original = put_plan(layout, Folder.PLANS, "p a1b2c3.md").read_bytes()
    Decisions(layout).approve(PLAN_ID)
    assert (layout.folder(Folder.APPROVED) / "p a1b2c3.md").read_bytes() == original


def test_plan_renamed_by_the_human_is_found_by_its_id(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "my favourite plan.md")
    assert Decisions(layout).approve(PLAN_ID).outcome == "approved"
    assert files(layout, Folder.APPROVED) == ["my favourite plan.md"]


def test_a_name_carrying_the_short_id_of_another_plan_is_not_taken_for_it(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "other a1b2c3.md", plan_id="plan-20261120-090000-a1b2c3")
    put_plan(layout, Folder.PLANS, "renamed.md")
    assert Decisions(layout).approve(PLAN_ID).outcome == "approved"
    assert files(layout, Folder.APPROVED) == ["renamed.md"]
    assert files(layout, Folder.PLANS) == ["other a1b2c3.md"]


def test_approve_keeps_an_existing_note_of_the_same_name_in_approved(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "p a1b2c3.md")
    (layout.folder(Folder.APPROVED) / "p a1b2c3.md").write_text("someone else's note")
    assert Decisions(layout).approve(PLAN_ID).outcome == "approved"
    assert files(layout, Folder.APPROVED) == ["p a1b2c3 (2).md", "p a1b2c3.md"]
    assert (layout.folder(Folder.APPROVED) / "p a1b2c3.md").read_text() == "someone else's note"


def test_unknown_id_is_not_found(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "p a1b2c3.md")
    result = Decisions(layout).approve("plan-20261121-101500-ffffff")
    assert result.outcome == "not_found"
    assert files(layout, Folder.PLANS) == ["p a1b2c3.md"]


@pytest.mark.parametrize("folder", [Folder.APPROVED, Folder.REJECTED, Folder.DONE])
def test_decided_plan_is_already_decided_and_stays_put(layout: VaultLayout, folder: Folder) -> None:
    put_plan(layout, folder, "p a1b2c3.md")
    decisions = Decisions(layout)
    for result in (decisions.approve(PLAN_ID), decisions.reject(PLAN_ID, "too late")):
        assert result.outcome == "already_decided"
        assert folder.value in result.detail
    assert files(layout, folder) == ["p a1b2c3.md"]


def test_reject_moves_the_plan_to_rejected(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "p a1b2c3.md")
    assert Decisions(layout).reject(PLAN_ID).outcome == "rejected"
    assert files(layout, Folder.PLANS) == []
    assert files(layout, Folder.REJECTED) == ["p a1b2c3.md"]


def test_reject_from_failed_is_allowed(layout: VaultLayout) -> None:
    put_plan(layout, Folder.FAILED, "p a1b2c3.md")
    assert Decisions(layout).reject(PLAN_ID).outcome == "rejected"
    assert files(layout, Folder.REJECTED) == ["p a1b2c3.md"]


def test_reject_reason_is_kept_in_the_note(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "p a1b2c3.md")
    Decisions(layout).reject(PLAN_ID, reason="Pump 3 was replaced last week")
    rejected = layout.folder(Folder.REJECTED) / "p a1b2c3.md"
    properties, body = parse_note(rejected.read_text(encoding="utf-8"))
    assert properties["rejection_reason"] == "Pump 3 was replaced last week"
    assert properties["id"] == PLAN_ID
    assert "Body kept as written." in body


def test_unreadable_notes_in_plans_do_not_stop_the_search(layout: VaultLayout) -> None:
    (layout.folder(Folder.PLANS) / "broken.md").write_text("---\nid: [unclosed\n---\n")
    (layout.folder(Folder.PLANS) / "no frontmatter.md").write_text("# hello\n")
    put_plan(layout, Folder.PLANS, "renamed.md")
    assert Decisions(layout).approve(PLAN_ID).outcome == "approved"


def test_approve_with_a_decider_stamps_who_and_the_door_into_the_note(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "20261121-101500 pump a1b2c3 plan.md")
    Decisions(layout).approve(PLAN_ID, Decider("maria", "cli"))
    note = layout.folder(Folder.APPROVED) / "20261121-101500 pump a1b2c3 plan.md"
    properties, _ = parse_note(note.read_text())
    assert (properties["decided_by"], properties["decided_via"]) == ("maria", "cli")
    assert str(properties["decided_at"]).startswith("20")


def test_reject_with_a_decider_stamps_who_the_door_and_the_reason(layout: VaultLayout) -> None:
    put_plan(layout, Folder.PLANS, "20261121-101500 pump a1b2c3 plan.md")
    Decisions(layout).reject(PLAN_ID, "not now", Decider("@sam", "telegram"))
    note = layout.folder(Folder.REJECTED) / "20261121-101500 pump a1b2c3 plan.md"
    properties, _ = parse_note(note.read_text())
    assert (properties["decided_by"], properties["decided_via"], properties["rejection_reason"]) == (
        "@sam",
        "telegram",
        "not now",
    )


def test_a_plan_moved_by_hand_was_decided_through_the_vault_door() -> None:
    assert decider_of({"id": PLAN_ID}) == Decider("vault", "vault")
    assert decider_of({"decided_by": "maria", "decided_via": "cli"}) == Decider("maria", "cli")
    assert decider_of({"decided_by": "maria", "decided_via": "fax"}) == Decider("vault", "vault")
