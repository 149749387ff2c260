"""The bus events of an item's life, as store records (one place that knows both).

The pipeline's announcer publishes each step's outcome with the facts the store needs (ids,
attempt, who and through which door, durations, costs); `records_for` turns one event into the
rows it means. Events the store does not keep give no records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ai_employee.model.events import Event, EventType
from ai_employee.model.ids import action_id_for, short_id
from ai_employee.store import records as r
from ai_employee.store.records import Record

Translator = Callable[[Event, str], list[Record]]


def records_for(event: Event) -> list[Record]:
    translate = _TRANSLATORS.get(event.type)
    if translate is None:
        return []
    at = event.time.isoformat(timespec="milliseconds")
    return translate(event, at)


def _str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return str(value) if value is not None and value != "" else None


def _num(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _ids(event: Event) -> tuple[str, str | None]:
    plan_id = _str(event.payload, "plan_id")
    action_id = _str(event.payload, "action_id") or event.correlation_id
    if not action_id and plan_id:
        action_id = action_id_for(plan_id)
    return action_id or "", plan_id


def _attempt(event: Event) -> int:
    value = event.payload.get("attempt")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 1


def _whisper_cost(action_id: str, p: Mapping[str, Any], at: str) -> list[Record]:
    """The transcription's cost, when the event carries one (one row per item: the key is stable)."""
    usd = _num(p, "transcript_cost_usd")
    if not usd:
        return []
    seconds = _num(p, "duration_seconds")
    return [
        r.cost(
            f"{action_id}:whisper",
            action_id,
            "whisper",
            usd,
            at,
            quantity=round(seconds / 60, 3) if seconds else None,
            unit="minutes",
        )
    ]


def _decision(
    event: Event, key: str, action_id: str, kind: str, at: str, plan_id: str | None, reason: str | None = None
) -> Record:
    """The person's decision, by whom and through which door (the vault when the event does not say)."""
    p = event.payload
    return r.intervention(
        key,
        action_id,
        kind,
        _str(p, "by") or "vault",
        _str(p, "door") or "vault",
        at,
        plan_id=plan_id,
        reason=reason,
    )


def action_created(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, _ = _ids(event)
    if not action_id:
        return []
    out = [
        r.task(
            action_id,
            at,
            short_id=short_id(action_id),
            source=_str(p, "source"),
            source_ref=_str(p, "source_ref"),
            sender=_str(p, "sender"),
            title=_str(p, "title"),
            note=_str(p, "note"),
            status="received",
        ),
        r.checkpoint(f"{action_id}:received", action_id, "received", at, detail=_str(p, "source")),
    ]
    return out + _whisper_cost(action_id, p, at)


def plan_created(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, plan_id = _ids(event)
    if not action_id:
        return []
    planner = _str(p, "planner")
    out = [
        r.task(
            action_id,
            at,
            plan_id=plan_id,
            short_id=short_id(action_id),
            action=_str(p, "action"),
            risk=_str(p, "risk"),
            planner=planner,
            plan_note=_str(p, "note"),
            source=_str(p, "source"),
            title=_str(p, "title"),
            planned_at=at,
            status="pending_approval",
        ),
        r.checkpoint(
            f"{action_id}:planned",
            action_id,
            "planned",
            at,
            plan_id=plan_id,
            duration_ms=_num(p, "duration_ms"),
            detail=f"by {planner}" if planner else None,
        ),
    ]
    usd = _num(p, "cost_usd")
    if usd:
        tokens = _num(p, "tokens")
        out.append(
            r.cost(f"{action_id}:llm:{plan_id}", action_id, "llm", usd, at, quantity=tokens, unit="tokens")
        )
    return out


def plan_fallback(event: Event, at: str) -> list[Record]:
    action_id, plan_id = _ids(event)
    return [
        r.checkpoint(
            f"{action_id}:plan_fallback",
            action_id,
            "plan_fallback",
            at,
            plan_id=plan_id,
            status="warning",
            detail=_str(event.payload, "reason"),
        )
    ]


def context_warning(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, plan_id = _ids(event)
    level = _str(p, "level") or "70"
    return [
        r.checkpoint(
            f"{action_id}:context:{level}",
            action_id,
            "context_warning",
            at,
            plan_id=plan_id,
            status="warning",
            detail=_str(p, "detail"),
        )
    ]


def approval_granted(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, plan_id = _ids(event)
    attempt = _attempt(event)
    kind = "approve" if attempt <= 1 else "retry"
    return [
        r.task(action_id, at, plan_id=plan_id, status="approved", decided_at=at, plan_note=_str(p, "note")),
        r.approved(plan_id, action_id, attempt, at),
        _decision(event, f"{plan_id}:{kind}:{attempt}", action_id, kind, at, plan_id),
    ]


def approval_denied(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, plan_id = _ids(event)
    return [
        r.task(
            action_id,
            at,
            plan_id=plan_id,
            status="rejected",
            decided_at=at,
            finished_at=at,
            plan_note=_str(p, "note"),
        ),
        r.checkpoint(
            f"{plan_id}:rejected", action_id, "rejected", at, plan_id=plan_id, detail=_str(p, "reason")
        ),
        _decision(event, f"{plan_id}:reject", action_id, "reject", at, plan_id, _str(p, "reason")),
    ]


def approval_revoked(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, plan_id = _ids(event)
    attempt = _attempt(event)
    kind = "cancel" if p.get("reason") == "vanished" else "edit"
    return [
        r.task(action_id, at, plan_id=plan_id, status="pending_approval"),
        r.returned(plan_id, action_id, attempt, at, detail=_str(p, "detail")),
        _decision(event, f"{plan_id}:{kind}:{attempt}", action_id, kind, at, plan_id),
    ]


def plan_executing(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, plan_id = _ids(event)
    attempt = _attempt(event)
    mode = "live" if p.get("live") else "dry run"
    return [
        r.task(action_id, at, plan_id=plan_id, status="running", action=_str(p, "action")),
        r.checkpoint(
            f"{plan_id}:executing:{attempt}",
            action_id,
            "executing",
            at,
            plan_id=plan_id,
            detail=f"{p.get('action')} ({mode})",
        ),
    ]


def plan_finished(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, plan_id = _ids(event)
    if not action_id:
        return []
    attempt = _attempt(event)
    done = event.type == EventType.PLAN_EXECUTED
    detail = ("dry run" if p.get("dry_run") else "live") if done else _str(p, "error")
    out = [
        r.task(
            action_id,
            at,
            plan_id=plan_id,
            status="done" if done else "failed",
            finished_at=at,
            plan_note=_str(p, "note"),
            action=_str(p, "action"),
        ),
        r.finished(
            plan_id, action_id, attempt, at, done=done, detail=detail, duration_ms=_num(p, "duration_ms")
        ),
    ]
    result = p.get("result")
    if done and isinstance(result, Mapping):
        out += _artifacts(action_id, plan_id or "", result, at, dry_run=bool(p.get("dry_run")))
    return out


def _artifacts(
    action_id: str, plan_id: str, result: Mapping[str, Any], at: str, *, dry_run: bool
) -> list[Record]:
    out: list[Record] = []
    if dry_run:
        return out
    if result.get("work_order_id") is not None:
        ref = str(result.get("custom_id") or result["work_order_id"])
        out.append(
            r.artifact(
                f"{plan_id}:work_order",
                action_id,
                "work_order",
                at,
                plan_id=plan_id,
                ref=ref,
                url=_str(result, "url"),
            )
        )
    if result.get("task_id") is not None:
        out.append(
            r.artifact(
                f"{plan_id}:manus_task",
                action_id,
                "manus_task",
                at,
                plan_id=plan_id,
                ref=str(result["task_id"]),
                url=_str(result, "task_url"),
                path=_str(result, "note"),
            )
        )
        credits = _num(result, "credit_usage")
        usd = _num(result, "cost_usd")
        if credits or usd:
            out.append(
                r.cost(
                    f"{plan_id}:manus", action_id, "manus", usd or 0.0, at, quantity=credits, unit="credits"
                )
            )
    elif result.get("path") is not None:
        out.append(
            r.artifact(f"{plan_id}:note", action_id, "note", at, plan_id=plan_id, path=_str(result, "path"))
        )
    return out


def transcription(event: Event, at: str) -> list[Record]:
    p = event.payload
    action_id, _ = _ids(event)
    if not action_id:
        return []
    return [
        r.checkpoint(
            f"{action_id}:transcribed", action_id, "transcribed", at, detail=_str(p, "transcription_model")
        ),
        *_whisper_cost(action_id, p, at),
    ]


def duplicate_ignored(event: Event, at: str) -> list[Record]:
    action_id, plan_id = _ids(event)
    return [
        r.checkpoint(
            f"{plan_id}:duplicate:{event.id}",
            action_id,
            "duplicate_ignored",
            at,
            plan_id=plan_id,
            status="warning",
            detail="a copy reappeared in Approved/; never run twice",
        )
    ]


def task_linked(event: Event, at: str) -> list[Record]:
    """`task.linked`: another part (the Slack supervisor) tells where the item's thread is."""
    action_id, _ = _ids(event)
    thread = _str(event.payload, "slack_thread")
    if not action_id or not thread:
        return []
    return [r.task(action_id, at, slack_thread=thread)]


def cost_incurred(event: Event, at: str) -> list[Record]:
    """`cost.incurred`: money spent for an item outside the steps above (a service's own call)."""
    p = event.payload
    action_id, _ = _ids(event)
    usd = _num(p, "usd")
    service = _str(p, "service")
    key = _str(p, "key") or event.id
    if usd is None or not service:
        return []
    return [
        r.cost(key, action_id or None, service, usd, at, quantity=_num(p, "quantity"), unit=_str(p, "unit"))
    ]


_TRANSLATORS: dict[EventType, Translator] = {
    EventType.ACTION_CREATED: action_created,
    EventType.PLAN_CREATED: plan_created,
    EventType.PLAN_FALLBACK: plan_fallback,
    EventType.PLAN_CONTEXT_WARNING: context_warning,
    EventType.APPROVAL_GRANTED: approval_granted,
    EventType.APPROVAL_DENIED: approval_denied,
    EventType.APPROVAL_REVOKED: approval_revoked,
    EventType.PLAN_EXECUTING: plan_executing,
    EventType.PLAN_EXECUTED: plan_finished,
    EventType.PLAN_FAILED: plan_finished,
    EventType.PLAN_DUPLICATE_IGNORED: duplicate_ignored,
    EventType.TRANSCRIPTION_COMPLETED: transcription,
    EventType.TASK_LINKED: task_linked,
    EventType.COST_INCURRED: cost_incurred,
}

#: the event types the store listens to
STORED_EVENTS = frozenset(_TRANSLATORS)
