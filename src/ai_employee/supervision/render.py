"""Slack messages as Block Kit: an item's top message, its checkpoint replies (with Approve /
Reject buttons when a plan waits), the decided message, alerts.

Colours need a legacy attachment around the blocks (Block Kit itself has none); `text` is the
notification fallback. Everything a user typed is escaped (`&`, `<`, `>`), so that a title can
never ping a channel or forge a link.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ai_employee.supervision.checkpoints import ItemView, clip, obsidian_uri
from ai_employee.supervision.status import Status

APPROVE_ACTION = "aie_approve"
REJECT_ACTION = "aie_reject"
DECISION_BLOCK = "aie_decision"
MAX_SECTION = 2900
MAX_LINES_SHOWN = 40


@dataclass(frozen=True)
class Message:
    text: str
    attachments: list[dict[str, Any]]

    def as_kwargs(self) -> dict[str, Any]:
        return {"text": self.text, "attachments": self.attachments}


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def top_message(view: ItemView, vault_name: str) -> Message:
    status = _status(view.status)
    look = status.look
    title = escape(clip(view.title or view.action_id, 200))
    facts = [
        ("Source", view.source + (f" ({view.sender})" if view.sender else "")),
        ("Action", view.action),
        ("Risk", view.risk),
        ("Status", f"{look.emoji} {look.label}"),
        ("Elapsed", view.elapsed()),
        ("Cost so far", f"${view.cost_usd:.4f}" if view.cost_usd else "$0"),
    ]
    shown = [{"type": "mrkdwn", "text": f"*{name}*\n{escape(value)}"} for name, value in facts if value]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{look.emoji} *{title}*"}},
        {"type": "section", "fields": shown[:10]},
    ]
    if view.note:
        uri = obsidian_uri(vault_name, view.note)
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"<{uri}|Open in Obsidian> · `{escape(view.note)}` · {view.action_id}",
                    }
                ],
            }
        )
    text = escape(f"{look.label}: {clip(view.title or view.action_id, 150)}")
    return Message(text, [{"color": look.colour, "fallback": text, "blocks": blocks}])


def checkpoint_reply(lines: Sequence[tuple[Status, str]], decide_plan: str | None = None) -> Message:
    """One reply for the checkpoints that came together; buttons when `decide_plan` still waits."""
    shown = list(lines)
    if len(shown) > MAX_LINES_SHOWN:
        dropped = len(shown) - MAX_LINES_SHOWN + 1
        shown = [*shown[: MAX_LINES_SHOWN - 2], (Status.WARNING, f"({dropped} more steps)"), shown[-1]]
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(f"{status.look.emoji} {escape(line)}", MAX_SECTION)},
        }
        for status, line in shown
    ]
    last = shown[-1][0] if shown else Status.STARTING
    if decide_plan:
        blocks.append(decision_buttons(decide_plan))
    text = escape(clip(" / ".join(line.split("\n", 1)[0] for _, line in shown), 300))
    return Message(text, [{"color": last.look.colour, "fallback": text, "blocks": blocks}])


def decision_buttons(plan_id: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": DECISION_BLOCK,
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Approve"},
                "action_id": APPROVE_ACTION,
                "value": plan_id,
                "style": "primary",
            },
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Reject"},
                "action_id": REJECT_ACTION,
                "value": plan_id,
                "style": "danger",
            },
        ],
    }


def decided_message(text: str, status: Status, decided_line: str) -> Message:
    """The message that carried the buttons, once decided: what it said, who decided, no buttons."""
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(escape(text), MAX_SECTION)}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"{status.look.emoji} {escape(decided_line)}"}],
        },
    ]
    fallback = escape(clip(f"{decided_line}: {text}", 300))
    return Message(fallback, [{"color": status.look.colour, "fallback": fallback, "blocks": blocks}])


def alert_message(title: str, detail: str, status: Status) -> Message:
    look = status.look
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{look.emoji} *{escape(clip(title, 200))}*"}},
    ]
    if detail:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(escape(detail), MAX_SECTION)}}
        )
    text = escape(clip(f"{look.emoji} {title}", 300))
    return Message(text, [{"color": look.colour, "fallback": text, "blocks": blocks}])


def _status(value: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        return Status.STARTING
