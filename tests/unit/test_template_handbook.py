"""The template planner follows Company_Handbook.md where it can read it, like the model planners
do, and where it cannot, the plan says so."""

from __future__ import annotations

from pathlib import Path

from ai_employee.cli import DEFAULT_HANDBOOK
from ai_employee.model.plans import PlanProposal
from ai_employee.planners.handbook_rules import parse_handbook
from ai_employee.planners.template import TemplatePlanner
from tests.planning.helpers import make_request, validate_params

REPO = Path(__file__).resolve().parents[2]
BUNDLED = (REPO / "AI_Employee_Vault" / "Company_Handbook.md").read_text(encoding="utf-8")
planner = TemplatePlanner()


def plan(text: str, handbook: str) -> PlanProposal:
    return planner.plan_local(make_request(text, handbook=handbook))


def test_a_rule_raising_risk_to_high_for_a_keyword_raises_it() -> None:
    handbook = "# Rules\n\n- Anything mentioning `forklift` is high risk.\n"

    proposal = plan("The new forklift training schedule is attached.", handbook)

    assert proposal.action == "vault.note"
    assert proposal.risk == "high"
    assert any("Risk high, by the company handbook" in step and "forklift" in step for step in proposal.steps)


def test_without_the_rule_the_same_message_is_low_risk() -> None:
    assert plan("The new forklift training schedule is attached.", "# Rules\n").risk == "low"


def test_a_listed_priority_rule_sets_a_work_orders_priority_and_risk() -> None:
    handbook = "- Anything involving ammonia or a gas smell is HIGH priority.\n"
    text = "Chiller 2 is rattling next to the ammonia tank"
    assert plan(text, "").params["priority"] == "MEDIUM"

    proposal = plan(text, handbook)

    assert proposal.action == "atlas.work_order"
    assert proposal.params["priority"] == "HIGH"
    assert proposal.risk == "high"
    assert proposal.steps[0].startswith("Create a HIGH priority work order")
    assert "(priority HIGH)" in proposal.summary
    validate_params(proposal.action, proposal.params)


def test_a_listed_term_matches_other_forms_of_its_words() -> None:
    handbook = "- Anything involving a leak of coolant is HIGH priority.\n"

    assert plan("Pump 4 on line 1 is leaking coolant", handbook).params["priority"] == "HIGH"


def test_the_bundled_handbooks_quoted_low_priority_phrases_lower_a_work_order() -> None:
    proposal = plan("Conveyor 2 is squeaking, fix it at the next shutdown", BUNDLED)

    assert proposal.params["priority"] == "LOW"
    assert any("next shutdown" in step for step in proposal.steps)


def test_a_rule_wrapped_over_two_lines_is_read_whole() -> None:
    proposal = plan("Conveyor 3 jammed and a person is at risk near it", BUNDLED)

    assert proposal.params["priority"] == "HIGH"
    assert any("person at risk" in step for step in proposal.steps)


def test_a_low_priority_rule_does_not_lower_a_hazard_and_the_plan_says_so() -> None:
    proposal = plan(
        "Motor 5 is smoking, deal with it at the next shutdown", '- "next shutdown" means LOW priority.'
    )

    assert proposal.params["priority"] == "HIGH"
    assert any(step.startswith("Priority kept HIGH: the message names a hazard") for step in proposal.steps)


def test_a_high_priority_rule_on_a_message_that_is_no_work_order_makes_it_high_risk_and_says_why() -> None:
    proposal = plan("Reminder: the fire drill is on Friday at 10.", BUNDLED)

    assert proposal.action == "vault.note"
    assert proposal.risk == "high"
    assert any("found no equipment fault to open a work order for" in step for step in proposal.steps)


def test_a_rule_the_template_planner_cannot_apply_is_named_when_it_concerns_the_message() -> None:
    handbook = "- Invoices from Acme go to the finance folder.\n- Never discuss salaries.\n"

    proposal = plan("Attached is the Acme invoice for March.", handbook)

    assert any(
        "Not checked by the template planner" in step and "Invoices from Acme" in step
        for step in proposal.steps
    )
    assert not any("salaries" in step for step in proposal.steps)


def test_a_risk_rule_never_lowers_risk_and_the_plan_says_so() -> None:
    handbook = "- Anything about a pump is low risk.\n"

    proposal = plan("Pump 3 on line 2 is leaking oil, needs fixing today", handbook)

    assert proposal.risk == "high"
    assert any("never lowers a plan's risk" in step for step in proposal.steps)


def test_a_rule_may_name_its_level_first() -> None:
    rules = parse_handbook("1. Risk is high for anything about ammonia.\n")

    (rule,) = rules.levels
    assert (rule.kind, rule.level, [term.label for term in rule.terms]) == ("risk", "high", ["ammonia"])


def test_at_risk_before_a_priority_is_a_priority_rule() -> None:
    (rule,) = parse_handbook("- A person at risk is **HIGH** priority.\n").levels

    assert (rule.kind, rule.level) == ("priority", "high")


def test_the_bundled_handbook_yields_its_two_priority_rules() -> None:
    rules = parse_handbook(BUNDLED)

    assert [(rule.kind, rule.level) for rule in rules.levels] == [("priority", "high"), ("priority", "low")]
    assert [term.label for term in rules.levels[1].terms] == ["When you get a chance", "next shutdown"]


def test_the_handbook_init_writes_yields_its_priority_rule() -> None:
    (rule,) = parse_handbook(DEFAULT_HANDBOOK).levels

    assert (rule.kind, rule.level) == ("priority", "high")
    assert [term.label for term in rule.terms] == [
        "smoke",
        "fire",
        "leak of oil",
        "chemicals",
        "person at risk",
    ]
