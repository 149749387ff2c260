"""The plan note format (decision 0009): which property is a parameter, and how values travel."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from watchdog.events import FileClosedEvent, FileCreatedEvent, FileMovedEvent

from ai_employee.model.executor import ActionParams, validate_params
from ai_employee.vault.fs import TEMP_PREFIX
from ai_employee.vault.layout import Folder
from ai_employee.vault.notes import parse_note, render_note, wikilink
from ai_employee.vault.plan_format import param_properties, params_of, replace_section, result_summary
from ai_employee.vault.watcher import _PlanEditRouter


class Where(BaseModel):
    building: str
    floor: int


class ToyParams(ActionParams):
    title: str
    status: str = "open"  # a parameter named like a plan property
    where: Where | None = None
    tags_of_asset: list[str] = []
    due: date | None = None


def round_trip(params: dict[str, Any]) -> dict[str, Any]:
    """Written into a note, read back as Obsidian would leave it."""
    plan = {"id": "plan-x", "type": "plan", "action": "toy", "status": "pending_approval"}
    properties, _ = parse_note(render_note({**plan, **param_properties(params)}, "body"))
    return params_of(properties)


def test_a_parameter_named_like_a_plan_property_is_written_with_the_param_prefix() -> None:
    properties = param_properties({"title": "t", "status": "closed", "id": "7"})
    assert properties == {"title": "t", "param_status": "closed", "param_id": "7"}
    assert round_trip({"title": "t", "status": "closed"}) == {"title": "t", "status": "closed"}


def test_plan_and_obsidian_properties_are_never_parameters() -> None:
    properties = {
        "id": "plan-x",
        "type": "plan",
        "status": "pending_approval",
        "tags": ["maintenance"],
        "decided_by": "alice",
        "planner_input_tokens": 3,
        "result_url": "https://x",
        "work_order": "42",
        "title": "t",
    }
    assert params_of(properties) == {"title": "t"}


def test_a_nested_value_travels_as_json_text_and_runs_as_the_mapping() -> None:
    params = {"title": "t", "where": {"building": "B2", "floor": 3}}
    flat = param_properties(params)
    assert isinstance(flat["where"], str)  # a text property Obsidian can edit
    validated = validate_params(ToyParams, round_trip(params))
    assert validated.where == Where(building="B2", floor=3)  # type: ignore[attr-defined]


def test_lists_of_scalars_and_dates_stay_typed_properties() -> None:
    params = {"title": "t", "tags_of_asset": ["pump", "line 2"], "due": date(2026, 12, 1)}
    assert param_properties(params)["tags_of_asset"] == ["pump", "line 2"]
    validated = validate_params(ToyParams, round_trip(params))
    assert validated.due == date(2026, 12, 1)  # type: ignore[attr-defined]


def test_text_that_is_not_json_for_a_mapping_is_refused_with_the_parameters_name() -> None:
    with pytest.raises(ValidationError, match="where"):
        validate_params(ToyParams, {"title": "t", "where": "building B2"})


def test_a_number_typed_into_a_text_property_is_taken_as_text() -> None:
    assert validate_params(ToyParams, {"title": 42}).title == "42"  # type: ignore[attr-defined]


def test_the_old_nested_params_are_still_read() -> None:
    assert params_of({"params": {"title": "t", "due": None}, "title": "ignored"}) == {"title": "t"}


def test_result_summary_is_flat_and_typed_per_property() -> None:
    summary = result_summary({"work_order_id": 42, "custom_id": "WO-7", "url": "https://x/7", "requests": []})
    assert summary == {"work_order": "WO-7", "result_url": "https://x/7"}


def test_the_decide_paragraph_is_replaced_without_what_a_person_wrote_after_it() -> None:
    body = "# Plan\n\n## Decide\nApprove: move it.\n\nMy own note.\n"
    replaced = replace_section(body, "## Decide", "## Decision\nApproved by alice\n")
    assert replaced == "# Plan\n\n## Decision\nApproved by alice\n\nMy own note.\n"


def test_the_plans_watch_hints_edits_in_place_but_not_our_own_writes(tmp_path: Path) -> None:
    plans = tmp_path / "Plans"
    hints: list[tuple[Folder, str, bool]] = []
    router = _PlanEditRouter({str(plans): Folder.PLANS}, lambda *hint: hints.append(hint))
    router.on_any_event(FileClosedEvent(f"{plans}/edited in obsidian.md"))
    router.on_any_event(FileClosedEvent(f"{plans}/{TEMP_PREFIX}ab-x.md"))  # a temp file of ours
    router.on_any_event(FileMovedEvent("", f"{plans}/written by the daemon.md"))
    router.on_any_event(FileCreatedEvent(f"{plans}/new.md"))
    assert [name for _, name, _ in hints] == ["edited in obsidian.md"]


def test_links_to_names_with_spaces_are_wikilinks_and_names_obsidian_cannot_wikilink_are_encoded() -> None:
    assert wikilink("Plans/20261121 pump 3 a1b2c3 plan.md") == "[[Plans/20261121 pump 3 a1b2c3 plan]]"
    assert wikilink("Attachments/x/pump 3.pdf") == "[[Attachments/x/pump 3.pdf]]"
    # '#' would open a heading, '|' cut the label, ']' end the link: a Markdown link instead
    assert wikilink("Quarantine/report #2 [v1].txt") == (
        "[report #2 \\[v1\\].txt](Quarantine/report%20%232%20%5Bv1%5D.txt)"
    )
