"""An item's life as checkpoints: what the bus says about an action, in the words its thread shows.

`checkpoint_for(event)` is a plain function of one event: received, planned and waiting,
approved or rejected (by whom, through which door), running, done (with its result) or failed
(with the error and how to retry). `ItemView` is the item as it is now: what the thread's top
message shows, updated in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ai_employee.model.events import Event, EventType
from ai_employee.supervision.status import Status

DOOR_NAMES = {
    "vault": "Obsidian",
    "cli": "the CLI",
    "slack": "Slack",
    "telegram": "Telegram",
    "whatsapp": "WhatsApp",
    "email": "email",
}
MAX_LINE = 600
_RESULT_KEYS = (
    "work_order",
    "work_order_id",
    "work_order_url",
    "result_url",
    "url",
    "custom_id",
    "task_id",
    "task_url",
    "note",
    "research_note",
)


@dataclass
class ItemView:
    """What the top message of an item's thread shows."""

    action_id: str
    title: str = ""
    source: str = ""
    source_ref: str = ""
    sender: str = ""
    action: str = ""
    risk: str = ""
    status: str = Status.STARTING.value
    received: str = ""  # ISO time the item arrived
    finished: str = ""  # ISO time it reached a final state
    cost_usd: float = 0.0
    note: str = ""  # the vault path of the plan note (else the action note)
    plan_id: str = ""

    def merge(self, changes: Mapping[str, Any]) -> bool:
        """Take the non-empty changes; True when something changed."""
        changed = False
        for name, value in changes.items():
            if value in (None, "") or not hasattr(self, name):
                continue
            if name == "cost_usd":
                value = round(float(value), 6)
            if getattr(self, name) != value:
                setattr(self, name, value)
                changed = True
        return changed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ItemView | None:
        if not isinstance(data, dict) or not isinstance(data.get("action_id"), str):
            return None
        known = {item.name for item in fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError:
            return None

    def elapsed(self, now: datetime | None = None) -> str:
        try:
            start = datetime.fromisoformat(self.received)
        except ValueError:
            return ""
        end = now or datetime.now(UTC)
        if self.finished:
            with contextlib.suppress(ValueError):
                end = datetime.fromisoformat(self.finished)
        return format_duration((end - start).total_seconds())


@dataclass
class Checkpoint:
    """One step of an item, for its thread: a reply line, and what the top message now shows."""

    action_id: str
    status: Status
    line: str
    view: dict[str, Any] = field(default_factory=dict)
    plan_id: str = ""
    asks_decision: bool = False  # the plan waits for a human: buttons, where anyone may decide
    decided: bool = False  # a decision was made: the buttons go
    event_id: str = ""

    def to_log(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "status": self.status.value,
            "text": self.line,
            "plan_id": self.plan_id,
        }


def checkpoint_for(event: Event) -> Checkpoint | None:
    """The checkpoint an event makes, or None for events that are no step of an item."""
    payload = event.payload
    action_id = event.correlation_id or str(payload.get("action_id") or "")
    if not action_id:
        return None
    plan_id = str(payload.get("plan_id") or "")
    at = event.time.isoformat(timespec="seconds")

    def make(status: Status, line: str, **view: Any) -> Checkpoint:
        return Checkpoint(
            action_id,
            status,
            clip(line),
            view={"status": status.value, **({"finished": at} if status.final else {}), **view},
            plan_id=plan_id,
            event_id=event.id,
        )

    kind = event.type
    if kind is EventType.ACTION_CREATED:
        title = str(payload.get("title") or action_id)
        source = str(payload.get("source") or "")
        sender = str(payload.get("sender") or "")
        origin = f"from {source}" + (f" ({sender})" if sender else "") if source else ""
        return make(
            Status.STARTING,
            f"Received {origin}: {title}".replace("Received : ", "Received: "),
            title=title,
            source=source,
            source_ref=str(payload.get("source_ref") or ""),
            sender=sender,
            received=at,
            note=str(payload.get("note") or ""),
        )
    if kind is EventType.PLAN_CREATED:
        action = str(payload.get("action") or "")
        summary = str(payload.get("summary") or "")
        risk = str(payload.get("risk") or "")
        line = (
            f"Planned: {action}" + (f" ({risk} risk)" if risk else "") + (f" — {summary}" if summary else "")
        )
        params = _params_line(payload.get("params"))
        if params:
            line += f"\nWill send: {params}"
        checkpoint = make(
            Status.WAITING,
            line + "\nWaiting for approval.",
            action=action,
            risk=risk,
            plan_id=plan_id,
            note=str(payload.get("note") or ""),
            cost_usd=payload.get("cost_usd") or None,
            title=str(payload.get("title") or ""),
            source=str(payload.get("source") or ""),
            source_ref=str(payload.get("source_ref") or ""),
        )
        checkpoint.asks_decision = True
        return checkpoint
    if kind is EventType.PLAN_FALLBACK:
        return make(Status.WARNING, f"Planned by the template planner instead: {payload.get('reason') or ''}")
    if kind in (EventType.APPROVAL_GRANTED, EventType.APPROVAL_DENIED):
        granted = kind is EventType.APPROVAL_GRANTED
        checkpoint = make(
            Status.APPROVED if granted else Status.REJECTED,
            ("Approved" if granted else "Rejected") + decided_by(payload),
        )
        checkpoint.decided = True
        return checkpoint
    if kind is EventType.APPROVAL_REVOKED:
        checkpoint = make(
            Status.WAITING,
            "The plan changed after it was approved: it is back in Plans/ for a fresh approval.",
        )
        checkpoint.asks_decision = True
        return checkpoint
    if kind is EventType.PLAN_EXECUTING:
        mode = "live" if payload.get("live") else "dry run"
        return make(Status.WORKING, f"Running {payload.get('action') or ''} ({mode}).")
    if kind is EventType.PLAN_EXECUTED:
        line = "Done" + (" (dry run: nothing was sent)" if payload.get("dry_run") else "") + "."
        result = _result_line(payload.get("result"))
        if result:
            line += f" {result}"
        return make(Status.COMPLETE, line, note=str(payload.get("note") or ""))
    if kind is EventType.PLAN_FAILED:
        error = str(payload.get("error") or "unknown error")
        line = (
            f"Failed: {error}\nTo retry: move the plan from Failed/ back to Approved/ "
            f"(or `ai-employee approve {plan_id}`)."
        )
        return make(Status.FAILED, line, note=str(payload.get("note") or ""))
    if kind is EventType.PLAN_DUPLICATE_IGNORED:
        return make(Status.WARNING, "The plan reappeared in Approved/ after it ran: it was not run again.")
    return None


def decided_by(payload: Mapping[str, Any]) -> str:
    who = payload.get("by")
    door = payload.get("door")
    if not who and not door:
        return ""
    place = DOOR_NAMES.get(str(door), str(door)) if door else ""
    if door == "vault" or who == "vault":
        return f" in {place or 'Obsidian'}"
    return f" by {who}" + (f" via {place}" if place else "")


def obsidian_uri(vault_name: str, note: str) -> str:
    """A link that opens the note in Obsidian (its path in the vault, without `.md`)."""
    file = note[:-3] if note.endswith(".md") else note
    return f"obsidian://open?vault={quote(vault_name, safe='')}&file={quote(file, safe='')}"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days {hours % 24} h"


def clip(text: str, limit: int = MAX_LINE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _params_line(params: Any) -> str:
    if not isinstance(params, Mapping):
        return ""
    parts = []
    for key, value in params.items():
        if isinstance(value, str | int | float | bool) and value != "":
            shown = str(value).replace("\n", " ")
            parts.append(f"{key}={clip(shown, 80)}")
    return clip(", ".join(parts), 300)


def _result_line(result: Any) -> str:
    if not isinstance(result, Mapping):
        return ""
    parts = [
        f"{key}: {result[key]}"
        for key in _RESULT_KEYS
        if key in result and isinstance(result[key], str | int | float) and result[key] != ""
    ]
    return clip("; ".join(parts), 300)
