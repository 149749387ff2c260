"""Catch-up at start: what the ledger knows and the store does not (records queued in memory when
the process was killed, a store switched on for a vault with a history), as the same records the
live events give, with the same keys, so nothing is written twice.

Only what changed since shortly before the store's newest fact is read (`CATCH_UP_MARGIN`): the
events lost to a crash are the last few seconds' worth, and the margin covers a clock that
stepped back. A store that is empty reads the whole ledger once (the history of the vault).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, func, select

from ai_employee.model.ids import short_id
from ai_employee.model.services import Decider
from ai_employee.store import records as r
from ai_employee.store import schema
from ai_employee.store.records import Record
from ai_employee.vault.layout import VaultLayout
from ai_employee.vault.ledger import ActionRow, ExecutionRow, Ledger
from ai_employee.vault.notes import NoteError, parse_note

log = structlog.get_logger(__name__)

CATCH_UP_MARGIN = timedelta(hours=1)
_ACTION_STATUS = {
    "noted": "received",
    "planned": "pending_approval",
    "done": "done",
    "rejected": "rejected",
    "failed": "failed",
}
_EXECUTION_STATUS = {
    "approved": "approved",
    "running": "running",
    "executed": "running",
    "failing": "running",
    "done": "done",
    "failed": "failed",
    "rejected": "rejected",
    "returned": "pending_approval",
}


def watermark(engine: Engine) -> str:
    """Read the ledger from here: an hour before the store's newest fact ("" when it has none)."""
    with engine.connect() as connection:
        newest = connection.execute(select(func.max(schema.tasks.c.updated_at))).scalar()
    if not newest:
        return ""
    return (datetime.fromisoformat(str(newest)) - CATCH_UP_MARGIN).isoformat(timespec="milliseconds")


def catch_up_records(
    ledger: Ledger, layout: VaultLayout, since: str, known: Mapping[str, str | None] | None = None
) -> list[Record]:
    """`known`: action id -> `planned_at` of the items the store has; an item it has with as much
    as the ledger knows of its intake costs no note read and no record."""
    known = known or {}
    out: list[Record] = []
    for action in ledger.actions_since(since):
        if action.action_id in known and (known[action.action_id] or action.state == "noted"):
            continue
        out += _action_records(action, layout)
    for execution in ledger.executions_since(since):
        out += _execution_records(execution, layout)
    return out


def _iso(stamp: object, fallback: str = "") -> str:
    """A time as the live events write it (UTC, milliseconds), so that times compare as text."""
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return fallback
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _properties(layout: VaultLayout, relative: str | None) -> dict[str, Any]:
    if not relative:
        return {}
    try:
        properties, _ = parse_note(layout.resolve(relative).read_text(encoding="utf-8"))
    except (OSError, NoteError, UnicodeDecodeError):
        return {}
    return properties


def _action_records(row: ActionRow, layout: VaultLayout) -> list[Record]:
    at = _iso(row.created_at)
    out = [
        r.task(
            row.action_id,
            at,
            short_id=short_id(row.action_id),
            source=row.source,
            source_ref=row.source_ref,
            sender=row.sender,
            title=row.title,
            note=row.note_rel,
            plan_id=row.plan_id,
            status="received",
        ),
        r.checkpoint(f"{row.action_id}:received", row.action_id, "received", at, detail=row.source),
    ]
    usd = row.extra.get("transcript_cost_usd") if isinstance(row.extra, dict) else None
    if isinstance(usd, (int, float)) and usd:
        out.append(
            r.cost(f"{row.action_id}:whisper", row.action_id, "whisper", float(usd), at, unit="minutes")
        )
    if row.state in ("planned", "done", "rejected", "failed"):
        plan = _properties(layout, row.plan_rel)
        planned_at = _iso(plan.get("created"), at)
        out.append(
            r.task(
                row.action_id,
                planned_at,
                plan_id=row.plan_id,
                action=plan.get("action"),
                risk=plan.get("risk"),
                planner=plan.get("planner"),
                plan_note=row.plan_rel,
                planned_at=planned_at,
                status="pending_approval",
            )
        )
        out.append(
            r.checkpoint(
                f"{row.action_id}:planned",
                row.action_id,
                "planned",
                planned_at,
                plan_id=row.plan_id,
                detail=f"by {plan['planner']}" if plan.get("planner") else None,
            )
        )
    return out


def _execution_records(row: ExecutionRow, layout: VaultLayout) -> list[Record]:
    action_id = row.action_id or ""
    if not action_id:
        return []
    at = _iso(row.updated_at)
    plan_id = row.plan_id
    attempt = max(row.attempts, 1)
    properties = _properties(layout, row.final_rel or row.note_rel)
    decider = Decider.of(properties)
    decided_at = _iso(properties.get("decided_at"), at)
    status = _EXECUTION_STATUS.get(row.state, row.state)
    out = [
        r.task(
            action_id,
            at,
            plan_id=plan_id,
            status=status,
            action=row.action,
            plan_note=row.final_rel or row.note_rel,
        )
    ]
    if row.state == "rejected":
        reason = properties.get("rejection_reason")
        out.append(
            r.intervention(
                f"{plan_id}:reject",
                action_id,
                "reject",
                decider.who,
                decider.door,
                decided_at,
                plan_id=plan_id,
                reason=str(reason) if reason else None,
            )
        )
        out.append(r.checkpoint(f"{plan_id}:rejected", action_id, "rejected", at, plan_id=plan_id))
        return out
    if row.state == "returned":
        out.append(r.returned(plan_id, action_id, attempt, at))
        out.append(
            r.intervention(
                f"{plan_id}:edit:{attempt}", action_id, "edit", "vault", "vault", at, plan_id=plan_id
            )
        )
        return out
    kind = "approve" if attempt <= 1 else "retry"
    out.append(
        r.intervention(
            f"{plan_id}:{kind}:{attempt}",
            action_id,
            kind,
            decider.who,
            decider.door,
            decided_at,
            plan_id=plan_id,
        )
    )
    out.append(r.approved(plan_id, action_id, attempt, decided_at))
    if row.state in ("done", "failed"):
        done = row.state == "done"
        detail = ("dry run" if row.dry_run else "live") if done else row.error
        out.append(r.task(action_id, at, finished_at=at, status=status))
        out.append(r.finished(plan_id, action_id, attempt, at, done=done, detail=detail))
    return out


def known_items(engine: Engine, since: str) -> dict[str, str | None]:
    """action id -> planned_at of the store's items changed since `since`."""
    tasks = schema.tasks
    with engine.connect() as connection:
        rows = connection.execute(
            select(tasks.c.action_id, tasks.c.planned_at).where(tasks.c.updated_at >= since)
        ).all()
    return {str(action_id): planned_at for action_id, planned_at in rows}


def catch_up(engine: Engine, ledger: Ledger, layout: VaultLayout) -> list[Record]:
    since = watermark(engine)
    found = catch_up_records(ledger, layout, since, known_items(engine, since) if since else None)
    log.info("audit store catch-up", since=since or "the beginning", records=len(found))
    return found
