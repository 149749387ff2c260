"""Reading the store: lists of items, one item's whole story, and resolving what a person types
(full id, plan id, the 6-character short id, a note's file name) to an action id."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, RowMapping, func, or_, select

from ai_employee.model.ids import action_id_for
from ai_employee.store import schema

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_SHORT = re.compile(r"([0-9a-f]{6})(?:[ _-]plan)?$")
_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class BadQuery(ValueError):
    """A filter a person typed that cannot be used; the message says why."""


def parse_since(text: str | None, now: datetime | None = None) -> str | None:
    """`7d`, `12h`, `30m`, `2w` or an ISO date/time -> the ISO instant it means (UTC)."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    match = _SINCE.match(text.strip().lower())
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now - delta).isoformat(timespec="milliseconds")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadQuery(f"--since {text!r}: use 7d, 12h, 30m, 2w or an ISO date (2026-12-01)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def resolve_item_id(engine: Engine, text: str) -> str | None:
    """The action id that `text` names: an action id, a plan id, a short id or a note's file name.

    The one place that reads what a person typed; when the vault's own resolver lands
    (vault/decisions.py), this is the function to point at it."""
    text = text.strip()
    name = text.rsplit("/", 1)[-1].removesuffix(".md").strip()
    if name.startswith("plan-"):
        name = action_id_for(name)
    tasks = schema.tasks
    with engine.connect() as connection:
        if name.startswith("act-"):
            found = connection.execute(select(tasks.c.action_id).where(tasks.c.action_id == name)).first()
            return str(found[0]) if found else None
        match = _SHORT.search(name.lower())
        if match is None:
            return None
        rows = connection.execute(
            select(tasks.c.action_id).where(tasks.c.short_id == match.group(1)).limit(2)
        ).all()
    return str(rows[0][0]) if len(rows) == 1 else None


def _task(row: RowMapping) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 - RowMapping's keys


def list_tasks(
    engine: Engine,
    *,
    status: str | None = None,
    since: str | None = None,
    action: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """Items newest first, filtered by status, creation time and action type."""
    tasks = schema.tasks
    query = select(tasks).order_by(tasks.c.created_at.desc()).limit(max(1, min(limit, MAX_LIMIT)))
    if status:
        query = query.where(tasks.c.status == status)
    if since:
        query = query.where(tasks.c.created_at >= since)
    if action:
        query = query.where(tasks.c.action == action)
    with engine.connect() as connection:
        return [_task(row) for row in connection.execute(query).mappings()]


def story(engine: Engine, action_id: str) -> dict[str, Any] | None:
    """One item: its task row, and every checkpoint, intervention, artifact and cost in time order."""
    with engine.connect() as connection:
        row = (
            connection.execute(select(schema.tasks).where(schema.tasks.c.action_id == action_id))
            .mappings()
            .first()
        )
        if row is None:
            return None
        parts: dict[str, list[dict[str, Any]]] = {}
        for name, table in (
            ("checkpoints", schema.checkpoints),
            ("interventions", schema.interventions),
            ("artifacts", schema.artifacts),
            ("costs", schema.costs),
        ):
            query = select(table).where(table.c.action_id == action_id).order_by(table.c.at, table.c.id)
            parts[name] = [
                {key: value for key, value in item.items() if key not in ("id", "key")}
                for item in connection.execute(query).mappings()
            ]
    timeline: list[dict[str, Any]] = []
    for name, items in parts.items():
        for item in items:
            timeline.append({"type": name[:-1], **item})
    timeline.sort(key=lambda item: str(item["at"]))
    return {"task": _task(row), "timeline": timeline, **parts}


def cost_between(engine: Engine, start_day: str, end_day: str) -> dict[str, float]:
    """USD per service for the UTC days start_day..end_day (inclusive, YYYY-MM-DD)."""
    costs = schema.costs
    query = (
        select(costs.c.service, func.sum(costs.c.usd))
        .where(costs.c.day >= start_day, costs.c.day <= end_day)
        .group_by(costs.c.service)
    )
    with engine.connect() as connection:
        return {str(service): float(total or 0) for service, total in connection.execute(query).all()}


def titles_by_short_id(engine: Engine, short_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Title, planned time, status and error-free facts of the items with these short ids."""
    if not short_ids:
        return {}
    tasks = schema.tasks
    query = select(
        tasks.c.short_id,
        tasks.c.action_id,
        tasks.c.title,
        tasks.c.planned_at,
        tasks.c.created_at,
        tasks.c.action,
        tasks.c.risk,
        tasks.c.cost_usd,
    ).where(tasks.c.short_id.in_(short_ids))
    with engine.connect() as connection:
        return {str(row.short_id): dict(row._mapping) for row in connection.execute(query)}


def last_failure(engine: Engine, action_ids: list[str]) -> dict[str, str]:
    """The detail of each item's latest failed checkpoint (the error)."""
    if not action_ids:
        return {}
    checkpoints = schema.checkpoints
    query = (
        select(checkpoints.c.action_id, checkpoints.c.detail, checkpoints.c.at)
        .where(checkpoints.c.action_id.in_(action_ids), or_(checkpoints.c.status == "failed"))
        .order_by(checkpoints.c.at)
    )
    found: dict[str, str] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            found[str(row.action_id)] = str(row.detail or "")
    return found
