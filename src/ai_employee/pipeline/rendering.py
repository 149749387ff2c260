"""What action and plan notes say: properties for the machine, a body for the human."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ai_employee.model.ids import short_id
from ai_employee.model.plans import PlanProposal
from ai_employee.vault.notes import json_block, render_note, wikilink
from ai_employee.vault.plan_format import (
    DECIDE_HEADING,
    DECISION_HEADING,
    param_properties,
    sent_section,
)


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
    plan_rel: str | None = None,
) -> str:
    """`plan_rel`: the plan note made for it, linked from the body once it exists."""
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
        if not key.startswith("_"):  # "_name": kept in the ledger, not shown
            properties.setdefault(key, value)
    lines = [f"# {title}", ""]
    if plan_rel:
        lines += [f"Plan: {wikilink(plan_rel.rpartition('/')[2])}", ""]
    lines += [body_text.rstrip() if body_text.strip() else "_(no text)_", ""]
    if attachments:
        shown = [
            f"- !{link}" if _is_image(path) else f"- {link}"
            for path, link in zip(attachments, links, strict=True)
        ]
        lines += ["## Attachments", *shown, ""]
    return render_note(properties, "\n".join(lines))


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg", ".avif")


def _is_image(path: str) -> bool:
    """Obsidian shows an embedded image (`![[...]]`) in the note itself."""
    return path.lower().endswith(_IMAGE_SUFFIXES)


def plan_properties(
    *, plan_id: str, action_id: str, proposal: PlanProposal, created: datetime
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "id": plan_id,
        "type": "plan",
        "action_id": action_id,
        "action": proposal.action,
        **param_properties(proposal.params),
        "status": "pending_approval",
        "planner": proposal.planner,
        "risk": proposal.risk,
        "created": created.isoformat(timespec="seconds"),
        "intent": proposal.intent,
        "confidence": round(proposal.confidence, 2),
    }
    if proposal.fallback_reason:
        properties["planner_fallback_reason"] = proposal.fallback_reason
    for name, count in (proposal.usage or {}).items():
        properties[f"planner_{name}"] = count  # planner_input_tokens, planner_output_tokens
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
        sent_section({name: value for name, value in proposal.params.items() if value is not None}),
        decide_section(plan_id),
    ]
    return "\n".join(lines)


def decide_section(plan_id: str) -> str:
    short = short_id(plan_id)
    return (
        f"{DECIDE_HEADING}\n"
        f"Approve: move this note to `Approved/` (or `ai-employee approve {short}`)."
        f" Reject: move it to `Rejected/` (or `ai-employee reject {short} --reason '...'`).\n"
    )


def decision_section(
    *, approved: bool, who: str, door: str, when: str | None, reason: str | None = None
) -> str:
    """Who decided, when and through which door: what a decided note shows instead of "Decide"."""
    verb = "Approved" if approved else "Rejected"
    if door == "vault":
        line = f"{verb} in the vault: the note was moved to `{'Approved' if approved else 'Rejected'}/`"
    else:
        line = f"{verb} by **{who}** via {door}"
    if when:
        line += f" · {when}"
    lines = [DECISION_HEADING, line]
    if not approved:
        lines += ["", f"Reason: {reason}" if reason else "No reason was given."]
    return "\n".join(lines) + "\n"


def outcome_section(
    *, status: str, dry_run: bool | None, result: dict[str, Any] | None, error: str | None, when: datetime
) -> str:
    heading = {"done": "## Result", "failed": "## Error"}.get(status, "## Outcome")
    lines = ["", heading, f"_{when.isoformat(timespec='seconds')}_"]
    if dry_run:
        lines.append("Dry run: nothing was sent. This is exactly what a live run would send:")
    summary = result_lines(result)
    if summary:
        lines += ["", *summary]
    if result is not None:
        lines += ["", json_block(result)]
    if error:
        lines += ["", f"> [!error] {error}"]
    return "\n".join(lines) + "\n"


def result_lines(result: dict[str, Any] | None) -> list[str]:
    """The result's scalar facts as a list a person reads (the full result follows as JSON)."""
    if not result:
        return []
    lines = []
    for key, value in result.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            text = str(value)
            if "\n" in text or len(text) > 300:
                continue
            lines.append(f"- **{key.replace('_', ' ')}**: {text}")
    return lines
