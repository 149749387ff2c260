"""What action and plan notes say: properties for the machine, a body for the human."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ai_employee.model.plans import PlanProposal
from ai_employee.vault.notes import json_block, render_note, wikilink


def action_note(
    *,
    action_id: str,
    source: str,
    received: datetime,
    title: str,
    status: str,
    attachments: list[str],
    body_text: str,
    source_ref: str | None = None,
    sender: str | None = None,
    subject: str | None = None,
    intent: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    links = [wikilink(path) for path in attachments]
    properties: dict[str, Any] = {
        "id": action_id,
        "type": "action",
        "source": source,
        "received": received.isoformat(timespec="seconds"),
        "title": title,
        "status": status,
        "attachments": links,
    }
    if sender:
        properties["sender"] = sender
    if subject:
        properties["subject"] = subject
    if source_ref:
        properties["source_ref"] = source_ref
    if intent:
        properties["intent"] = intent
    for key, value in (extra or {}).items():
        properties.setdefault(key, value)
    lines = [f"# {title}", "", body_text.rstrip() if body_text.strip() else "_(no text)_", ""]
    if attachments:
        lines += ["## Attachments", *[f"- {link}" for link in links], ""]
    return render_note(properties, "\n".join(lines))


def plan_properties(
    *, plan_id: str, action_id: str, proposal: PlanProposal, created: datetime
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "id": plan_id,
        "type": "plan",
        "action_id": action_id,
        "action": proposal.action,
        "params": proposal.params,
        "status": "pending_approval",
        "planner": proposal.planner,
        "risk": proposal.risk,
        "created": created.isoformat(timespec="seconds"),
        "intent": proposal.intent,
        "confidence": round(proposal.confidence, 2),
    }
    if proposal.fallback_reason:
        properties["planner_fallback_reason"] = proposal.fallback_reason
    if proposal.usage:
        properties["planner_usage"] = dict(proposal.usage)
    if proposal.cost_usd is not None:
        properties["planner_cost_usd"] = round(proposal.cost_usd, 6)
    if proposal.context_used is not None:
        properties["planner_context_used"] = proposal.context_used  # share of the model's window
    return properties


def plan_body(*, proposal: PlanProposal, plan_id: str, action_note_stem: str) -> str:
    steps = proposal.steps or ["Run the action below with exactly these parameters."]
    lines = [
        f"# Plan: {proposal.summary}",
        "",
        f"For [[{action_note_stem}]] · action `{proposal.action}` · risk **{proposal.risk}**"
        f" · planner {proposal.planner}",
        "",
        "## Steps",
        *[f"{number}. {step}" for number, step in enumerate(steps, 1)],
        "",
        "## What will be sent",
        "The `params` property above, exactly as it stands when the plan runs (edit it before approving"
        " if it is wrong):",
        "",
        json_block(proposal.params),
        "",
        "## Decide",
        f"Approve: move this note to `Approved/` (or `ai-employee approve {plan_id}`)."
        f" Reject: move it to `Rejected/` (or `ai-employee reject {plan_id}`).",
        "",
    ]
    return "\n".join(lines)


def outcome_section(
    *, status: str, dry_run: bool | None, result: dict[str, Any] | None, error: str | None, when: datetime
) -> str:
    heading = {"done": "## Result", "failed": "## Error"}.get(status, "## Outcome")
    lines = ["", heading, f"_{when.isoformat(timespec='seconds')}_"]
    if dry_run:
        lines.append("Dry run: nothing was sent. This is exactly what a live run would send:")
    if result is not None:
        lines += ["", json_block(result)]
    if error:
        lines += ["", f"> [!error] {error}"]
    return "\n".join(lines) + "\n"
