"""What a chat door says (Telegram, WhatsApp): plain text, no parse mode; and the ids its
Approve / Reject buttons carry.

Plain text because message content (transcripts, plan titles, errors) comes from outside and
would need escaping for Markdown or HTML; a stray `*` must not make a reply fail. Both apps
limit a text message to 4096 characters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from ai_employee.clients.whisper import Transcript
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import ApprovalGateway, Decider, DecisionResult
from ai_employee.sources.chat_content import Content, format_duration

Decision = Literal["approve", "reject"]
ChatDoor = Literal["telegram", "whatsapp"]

CALLBACK_PREFIX = "aie"
MAX_CALLBACK_BYTES = 64  # Bot API limit for callback_data (WhatsApp allows 256 for a reply id)
MAX_MESSAGE_CHARS = 4096  # Bot API and WhatsApp limit for a message text
_QUOTE_CHARS = 600


def truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def callback_data(decision: Decision, plan_id: str, limit: int = MAX_CALLBACK_BYTES) -> str | None:
    """A button's id ("aie:approve:<plan id>"), or None when it is longer than `limit` bytes."""
    data = f"{CALLBACK_PREFIX}:{decision}:{plan_id}"
    return data if len(data.encode("utf-8")) <= limit else None


def parse_callback(data: str | None) -> tuple[Decision, str] | None:
    if not data:
        return None
    parts = data.split(":", 2)
    if len(parts) != 3 or parts[0] != CALLBACK_PREFIX or not parts[2]:
        return None
    if parts[1] == "approve":
        return "approve", parts[2]
    if parts[1] == "reject":
        return "reject", parts[2]
    return None


def decide(
    approvals: ApprovalGateway,
    decision: Decision,
    plan_id: str,
    who: str,
    door: Literal["telegram", "whatsapp"],
) -> DecisionResult:
    """Make a button's decision: the same move as Obsidian, recorded with who and the door."""
    if decision == "approve":
        return approvals.approve(plan_id, Decider(who, door))
    app = "Telegram" if door == "telegram" else "WhatsApp"
    return approvals.reject(plan_id, f"rejected in {app} by {who}", Decider(who, door))


def plan_and_action(event: Event) -> tuple[str, str]:
    """The plan id and the action id a plan event names ("" for one it does not name)."""
    plan_id = str(event.payload.get("plan_id") or "")
    return plan_id, event.correlation_id or str(event.payload.get("action_id") or "")


def _quote(text: str) -> str:
    return truncate(" ".join(text.split()), _QUOTE_CHARS)


def arrival_text(
    action_id: str,
    content: Content,
    *,
    transcript: Transcript | None = None,
    pending_reason: str | None = None,
    transcription_error: str | None = None,
    attachment_error: str | None = None,
) -> str:
    """The first answer: the message is safely stored, under which id, and what was heard."""
    lines = [f"Received. Saved as action {action_id}."]
    if transcript is not None:
        seconds = round(transcript.duration_seconds)
        lines.append(f"Transcript ({format_duration(seconds)}): {_quote(transcript.text) or '(no speech)'}")
    elif pending_reason is not None:
        lines.append(f"Transcription pending: {pending_reason}")
    elif transcription_error is not None:
        lines.append(f"It could not be transcribed: {transcription_error}")
    if attachment_error is not None:
        lines.append(f"The file could not be fetched: {attachment_error}")
    lines.append("A plan will follow for your approval.")
    return truncate("\n".join(lines))


def transcribed_text(transcript: Transcript) -> str:
    """Sent when a voice note that was pending has been transcribed after all."""
    return truncate(
        f"Transcribed your voice note ({format_duration(round(transcript.duration_seconds))}): "
        f"{_quote(transcript.text) or '(no speech)'}"
    )


def plan_text(plan_id: str, payload: Mapping[str, Any]) -> str:
    """What waits for a decision: enough to decide from the chat (the full plan is in Plans/)."""
    lines = [f"Plan {plan_id} waits for your approval."]
    params = payload.get("params")
    # the plan event names its title in the action's parameters (a work order's title)
    named = params.get("title") if isinstance(params, Mapping) else None
    for label, key in (("Title", "title"), ("Action", "action"), ("Risk", "risk")):
        value = payload.get(key) or (named if key == "title" else None)
        if isinstance(value, str) and value:
            lines.append(f"{label}: {_quote(value)}")
    summary = payload.get("summary")
    if isinstance(summary, str) and summary.strip():
        lines.append(_quote(summary))
    if isinstance(params, Mapping) and params:
        lines.append("Will send: " + truncate(json.dumps(params, ensure_ascii=False, default=str), 1500))
    return truncate("\n".join(lines))


def plan_text_without_buttons(plan_id: str, payload: Mapping[str, Any]) -> str:
    return truncate(
        plan_text(plan_id, payload)
        + f"\nDecide with: ai-employee approve {plan_id} (or reject), or move the note in Obsidian."
    )


def decided_suffix(result: DecisionResult, who: str) -> str:
    if result.outcome == "approved":
        return f"\n\nApproved by {who}."
    if result.outcome == "rejected":
        return f"\n\nRejected by {who}."
    if result.outcome == "already_decided":
        return "\n\nAlready decided" + (f": {result.detail}" if result.detail else ".")
    return "\n\nThis plan no longer exists."


def callback_answer(result: DecisionResult) -> str:
    """The short toast shown to whoever pressed the button (at most 200 characters)."""
    if result.outcome == "approved":
        text = f"Approved {result.plan_id}."
    elif result.outcome == "rejected":
        text = f"Rejected {result.plan_id}."
    elif result.outcome == "already_decided":
        text = "Already decided" + (f": {result.detail}" if result.detail else ".")
    else:
        text = f"Plan {result.plan_id} was not found."
    return truncate(text, 200)


def describe_result(result: Any) -> str:
    """A human line for a plan's `result` mapping, whatever executor produced it."""
    if not isinstance(result, Mapping):
        return "" if result is None else truncate(str(result), 500)
    requests = result.get("requests")
    service = result.get("service")
    if isinstance(requests, list) and isinstance(service, str):  # a dry-run rendering
        return f"it would have sent {len(requests)} request(s) to {service}"
    parts: list[str] = []
    work_order = _work_order_id(result)
    if work_order:
        parts.append(f"work order {work_order} created")
    summary = result.get("summary") or result.get("message")
    if isinstance(summary, str) and summary.strip():
        parts.append(_quote(summary))
    path = result.get("path")
    if isinstance(path, str) and path and "note" in result:
        parts.append(f"note {path} written")
    else:
        for key in ("url", "task_url", "note"):
            value = result.get(key)
            if isinstance(value, str) and value:
                parts.append(value)
                break
    if parts:
        return "; ".join(parts)
    return truncate(json.dumps(dict(result), ensure_ascii=False, default=str), 500)


def _work_order_id(result: Mapping[str, Any]) -> str | None:
    for key in ("work_order_custom_id", "custom_id", "customId", "work_order_id"):
        value = result.get(key)
        if isinstance(value, str | int) and str(value):
            return str(value)
    nested = result.get("work_order")
    if isinstance(nested, Mapping):
        return _work_order_id(nested)
    return None


def executed_text(plan_id: str, payload: Mapping[str, Any]) -> str:
    described = describe_result(payload.get("result"))
    if payload.get("dry_run") is True:
        head = f"Plan {plan_id} ran in dry-run mode: nothing was sent."
        return truncate(head + (f" ({described})" if described else ""))
    return truncate(f"Done: {described}." if described else f"Plan {plan_id} is done.")


def failed_text(plan_id: str, payload: Mapping[str, Any]) -> str:
    error = payload.get("error")
    reason = _quote(str(error)) if error else "no reason was given"
    return truncate(f"Plan {plan_id} failed: {reason}")


def no_decision_text(plan_id: str, payload: Mapping[str, Any]) -> str | None:
    """What to say of a plan created with a status that needs no decision; None if it needs one."""
    status = payload.get("status")
    if isinstance(status, str) and status not in ("", "pending_approval"):
        return truncate(f"Plan {plan_id} was created ({status}); no decision is needed.")
    return None


def outcome_text(plan_id: str, event: Event) -> str:
    """What to say of a plan's PLAN_EXECUTED or PLAN_FAILED event."""
    if event.type == EventType.PLAN_EXECUTED:
        return executed_text(plan_id, event.payload)
    return failed_text(plan_id, event.payload)


def unsupported_text() -> str:
    return "I can take text, voice notes, audio, photos and documents; this message was not saved."
