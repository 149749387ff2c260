"""The template planner: keyword rules that the pipeline runs inline and falls back to."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ai_employee.config import load_settings
from ai_employee.planners.template import SCAN_CHARS, TemplatePlanner, create
from tests.planning.helpers import (
    GOLDEN,
    action_specs,
    load_cases,
    make_request,
    request_for_case,
    validate_params,
)

planner = TemplatePlanner()
GOLDEN_CASES = load_cases(GOLDEN)


def test_the_pump_example_becomes_a_high_priority_work_order_for_pump_3_on_line_2() -> None:
    proposal = planner.plan_local(make_request("Pump 3 on line 2 is leaking oil, needs fixing today"))

    assert proposal.action == "atlas.work_order"
    assert proposal.intent == "work_order"
    assert proposal.params["priority"] == "HIGH"
    assert proposal.params["asset"] == "Pump 3"
    assert proposal.params["location"].lower() == "line 2"
    assert proposal.risk == "high"
    assert proposal.planner == "template"
    validate_params(proposal.action, proposal.params)


def test_golden_set_gets_at_least_18_of_20_intents_right() -> None:
    assert len(GOLDEN_CASES) == 20
    right = [
        case["id"]
        for case in GOLDEN_CASES
        if planner.plan_local(request_for_case(case)).intent == case["expected"]["intent"]
    ]
    wrong = sorted({case["id"] for case in GOLDEN_CASES} - set(right))
    assert len(right) >= 18, f"only {len(right)}/20 right; wrong: {wrong}"


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=[case["id"] for case in GOLDEN_CASES])
def test_every_golden_proposal_validates_against_its_executors_params_model(case: dict[str, Any]) -> None:
    proposal = planner.plan_local(request_for_case(case))
    validate_params(proposal.action, proposal.params)
    assert proposal.summary and proposal.steps


@pytest.mark.parametrize(
    "case",
    [case for case in GOLDEN_CASES if set(case["expected"]) - {"intent"}],
    ids=lambda case: case["id"],
)
def test_golden_work_orders_carry_the_expected_priority_asset_and_location(case: dict[str, Any]) -> None:
    proposal = planner.plan_local(request_for_case(case))
    for key, value in case["expected"].items():
        if key != "intent":
            assert str(proposal.params.get(key)).lower() == str(value).lower(), key


def test_no_rush_makes_a_work_order_low_priority() -> None:
    proposal = planner.plan_local(make_request("The extract fan 2 is rattling, fix it when you can"))
    assert proposal.params["priority"] == "LOW"
    assert proposal.risk == "medium"


def test_a_hazard_is_high_priority_even_when_the_sender_says_no_rush() -> None:
    proposal = planner.plan_local(make_request("Sparks from the panel next to mixer 3, no rush though"))
    assert proposal.params["priority"] == "HIGH"


def test_a_fault_without_urgency_words_is_medium_priority() -> None:
    proposal = planner.plan_local(make_request("Valve 14 on the cooling loop is stuck half open"))
    assert proposal.action == "atlas.work_order"
    assert proposal.params["priority"] == "MEDIUM"
    assert proposal.params["asset"] == "Valve 14"


def test_research_wording_becomes_a_manus_research_task_with_the_request_as_prompt() -> None:
    text = "Please research the best condition-monitoring sensors for our compressors"
    proposal = planner.plan_local(make_request(text))
    assert proposal.action == "manus.research"
    assert proposal.intent == "research"
    assert proposal.params == {"prompt": text}
    assert proposal.risk == "low"
    validate_params(proposal.action, proposal.params)


def test_an_imperative_research_request_wins_over_the_equipment_fault_it_mentions() -> None:
    text = "Compare replacement motors for press 4, the old one keeps tripping. Need options by Friday."
    assert planner.plan_local(make_request(text)).action == "manus.research"


def test_a_fault_report_that_asks_to_investigate_stays_a_work_order() -> None:
    text = "Pump 5 is vibrating badly. Can someone investigate?"
    assert planner.plan_local(make_request(text)).action == "atlas.work_order"


def test_anything_else_becomes_a_note_in_the_notes_folder() -> None:
    proposal = planner.plan_local(make_request("Lunch for the team is on Friday at noon", title="Team lunch"))
    assert proposal.action == "vault.note"
    assert proposal.intent == "note"
    assert proposal.params == {
        "title": "Team lunch",
        "content": "Lunch for the team is on Friday at noon",
        "folder": "Notes",
    }
    assert proposal.risk == "low"
    validate_params(proposal.action, proposal.params)


def test_a_repair_report_is_news_not_a_fault() -> None:
    proposal = planner.plan_local(make_request("Conveyor 2 was repaired this morning, back up and running"))
    assert proposal.action == "vault.note"


def test_a_spelled_out_number_names_the_asset() -> None:
    proposal = planner.plan_local(make_request("chiller two tripped on high pressure again"))
    assert proposal.params["asset"] == "Chiller 2"


def test_a_file_name_title_is_replaced_by_the_first_sentence() -> None:
    request = make_request("The dock door is broken. It will not close.", title="scan_0042.txt")
    proposal = planner.plan_local(request)
    assert proposal.params["title"] == "The dock door is broken"


def test_an_action_that_is_not_registered_becomes_a_note_that_says_so() -> None:
    request = make_request("Pump 3 is leaking", actions=action_specs(("vault.note",)))
    proposal = planner.plan_local(request)
    assert proposal.action == "vault.note"
    assert proposal.intent == "unknown"
    assert "atlas.work_order" in proposal.params["content"]
    validate_params(proposal.action, proposal.params)


def test_with_no_action_list_every_action_is_allowed() -> None:
    assert planner.plan_local(make_request("Pump 3 is leaking", actions=[])).action == "atlas.work_order"


def test_only_the_first_few_kilobytes_are_read() -> None:
    text = "Quarterly report attached. " + "x" * (SCAN_CHARS + 100) + " Pump 3 is leaking badly."
    proposal = planner.plan_local(make_request(text, title="Report"))
    assert proposal.action == "vault.note"
    assert len(proposal.params["content"]) < SCAN_CHARS + 200


def test_an_empty_message_still_gets_a_valid_note() -> None:
    proposal = planner.plan_local(make_request("", title=""))
    assert proposal.action == "vault.note"
    validate_params(proposal.action, proposal.params)


def test_the_same_message_always_gets_the_same_plan() -> None:
    request = make_request("Smoke from motor #12 in bay 3! Send someone now.")
    assert planner.plan_local(request) == planner.plan_local(request)


def test_a_few_kilobytes_plan_in_well_under_a_millisecond() -> None:
    messages = [
        make_request(("Pump 3 on line 2 is leaking oil and the motor is overheating. " * 70)[:SCAN_CHARS]),
        make_request(("Minutes of the weekly meeting, nothing to report here. " * 80)[:SCAN_CHARS]),
        make_request(("Please compare suppliers of hydraulic hoses and fittings. " * 80)[:SCAN_CHARS]),
    ]
    rounds = 100
    started = time.perf_counter()
    for _ in range(rounds):
        for request in messages:
            planner.plan_local(request)
    per_message = (time.perf_counter() - started) / (rounds * len(messages))
    assert per_message < 0.001, f"{per_message * 1000:.3f} ms per message"


def test_plan_delegates_to_plan_local() -> None:
    request = make_request("Fan 4 bearing is worn and noisy")
    assert asyncio.run(planner.plan(request)) == planner.plan_local(request)


def test_the_entry_point_factory_returns_a_local_template_planner(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("", encoding="utf-8")
    created = create(load_settings(config, environ={}))
    assert isinstance(created, TemplatePlanner)
    assert created.local is True
    assert created.name == "template"
