"""What the store writes: one `Record` per fact, keyed so that writing it twice changes nothing.

A record names its table and carries its column values; the same shape goes to the database and,
while PostgreSQL is away, to the local spool (one JSON object per line). Keys are built from the
facts (action or plan id, step, attempt), never from a random event id, so a step redone after a
crash produces the same key as the first time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Table = Literal["tasks", "checkpoints", "interventions", "artifacts", "costs"]
TABLES: tuple[Table, ...] = ("tasks", "checkpoints", "interventions", "artifacts", "costs")

#: kinds of human intervention, and the statuses of a checkpoint
INTERVENTION_KINDS = ("approve", "reject", "edit", "retry", "cancel")
CHECKPOINT_STATUSES = ("ok", "warning", "failed")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Record:
    table: Table
    values: dict[str, Any]

    def to_line(self) -> str:
        return json.dumps({"table": self.table, "values": self.values}, default=str, separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str) -> Record:
        data = json.loads(line)
        table = data["table"]
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return cls(table, dict(data["values"]))


def task(action_id: str, at: str, **fields: Any) -> Record:
    """What is known of one item now; merged into its row (later facts win, gaps are kept)."""
    values = {key: value for key, value in fields.items() if value is not None}
    values.update(action_id=action_id, updated_at=at)
    values.setdefault("created_at", at)
    return Record("tasks", values)


def checkpoint(
    key: str,
    action_id: str,
    step: str,
    at: str,
    *,
    plan_id: str | None = None,
    status: str = "ok",
    duration_ms: float | None = None,
    detail: str | None = None,
) -> Record:
    return Record(
        "checkpoints",
        {
            "key": key,
            "action_id": action_id,
            "plan_id": plan_id,
            "step": step,
            "status": status,
            "at": at,
            "duration_ms": duration_ms,
            "detail": detail,
        },
    )


def returned(
    plan_id: str | None, action_id: str, attempt: int, at: str, *, detail: str | None = None
) -> Record:
    """The checkpoint of an approved plan sent back to Pending_Approval (edited or vanished)."""
    return checkpoint(
        f"{plan_id}:returned:{attempt}",
        action_id,
        "returned",
        at,
        plan_id=plan_id,
        status="warning",
        detail=detail or "changed after approval; approve it again",
    )


def approved(plan_id: str | None, action_id: str, attempt: int, at: str) -> Record:
    """The checkpoint of a plan's approval (one per attempt)."""
    return checkpoint(
        f"{plan_id}:approved:{attempt}",
        action_id,
        "approved",
        at,
        plan_id=plan_id,
        detail=f"attempt {attempt}",
    )


def finished(
    plan_id: str | None,
    action_id: str,
    attempt: int,
    at: str,
    *,
    done: bool,
    detail: str | None,
    duration_ms: float | None = None,
) -> Record:
    """The checkpoint of a run's end: `executed` (ok) or `failed`, one per attempt."""
    step = "executed" if done else "failed"
    return checkpoint(
        f"{plan_id}:{step}:{attempt}",
        action_id,
        step,
        at,
        plan_id=plan_id,
        status="ok" if done else "failed",
        duration_ms=duration_ms,
        detail=detail,
    )


def intervention(
    key: str,
    action_id: str,
    kind: str,
    who: str,
    door: str,
    at: str,
    *,
    plan_id: str | None = None,
    reason: str | None = None,
) -> Record:
    return Record(
        "interventions",
        {
            "key": key,
            "action_id": action_id,
            "plan_id": plan_id,
            "kind": kind,
            "who": who,
            "door": door,
            "at": at,
            "reason": reason,
        },
    )


def artifact(
    key: str,
    action_id: str,
    kind: str,
    at: str,
    *,
    plan_id: str | None = None,
    ref: str | None = None,
    url: str | None = None,
    path: str | None = None,
) -> Record:
    return Record(
        "artifacts",
        {
            "key": key,
            "action_id": action_id,
            "plan_id": plan_id,
            "kind": kind,
            "ref": ref,
            "url": url,
            "path": path,
            "at": at,
        },
    )


def cost(
    key: str,
    action_id: str | None,
    service: str,
    usd: float,
    at: str,
    *,
    quantity: float | None = None,
    unit: str | None = None,
) -> Record:
    return Record(
        "costs",
        {
            "key": key,
            "action_id": action_id,
            "service": service,
            "usd": float(usd),
            "quantity": quantity,
            "unit": unit,
            "day": at[:10],
            "at": at,
        },
    )
