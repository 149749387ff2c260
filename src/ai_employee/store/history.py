"""`ai-employee history`: an item's story, or a list of items, as a person reads them."""

from __future__ import annotations

from typing import Any


def _when(stamp: Any) -> str:
    return str(stamp or "")[:19].replace("T", " ")


def _duration(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return ""
    return f" ({ms / 1000:.1f} s)" if ms >= 1000 else f" ({ms:.0f} ms)"


def story_lines(found: dict[str, Any]) -> list[str]:
    task = found["task"]
    lines = [
        str(task.get("title") or task["action_id"]),
        f"  action {task['action_id']}  plan {task.get('plan_id') or '-'}"
        f"  short id {task.get('short_id') or '-'}",
        "  "
        + "  ".join(
            f"{label} {value}"
            for label, value in (
                ("source", task.get("source")),
                ("from", task.get("sender")),
                ("does", task.get("action")),
                ("risk", task.get("risk")),
                ("planner", task.get("planner")),
                ("status", task.get("status")),
            )
            if value
        ),
        f"  cost ${float(task.get('cost_usd') or 0):.4f}"
        + (f"  Slack thread {task['slack_thread']}" if task.get("slack_thread") else ""),
        "",
    ]
    for item in found["timeline"]:
        lines.append(f"{_when(item['at'])}  {_event_text(item)}")
    return lines


def _event_text(item: dict[str, Any]) -> str:
    kind = item["type"]
    if kind == "checkpoint":
        mark = {"warning": "! ", "failed": "x "}.get(str(item.get("status")), "")
        detail = f": {item['detail']}" if item.get("detail") else ""
        return f"{mark}{item['step']}{detail}{_duration(item.get('duration_ms'))}"
    if kind == "intervention":
        verb = {
            "approve": "approved",
            "reject": "rejected",
            "edit": "edited after approval",
            "retry": "retried",
            "cancel": "cancelled",
        }.get(str(item["kind"]), str(item["kind"]))
        reason = f": {item['reason']}" if item.get("reason") else ""
        return f"{verb} by {item['who']} via {item['door']}{reason}"
    if kind == "artifact":
        parts = [str(item.get(key)) for key in ("ref", "url", "path") if item.get(key)]
        return f"produced {item['kind']}: {' '.join(parts)}"
    if kind == "cost":
        quantity = (
            f" ({item['quantity']:g} {item.get('unit') or ''})".rstrip() if item.get("quantity") else ""
        )
        return f"cost {item['service']} ${float(item['usd']):.4f}{quantity}"
    return str(item)


def list_lines(tasks: list[dict[str, Any]]) -> list[str]:
    if not tasks:
        return ["No items match."]
    lines = [f"{'created':<19}  {'short':<6}  {'status':<16}  {'action':<18}  {'cost':>8}  title"]
    for task in tasks:
        short, status, action = task.get("short_id") or "", task.get("status") or "", task.get("action") or ""
        cost = float(task.get("cost_usd") or 0)
        lines.append(
            f"{_when(task['created_at']):<19}  {short:<6}  {status:<16}  {action:<18}  ${cost:>7.4f}"
            f"  {task.get('title') or ''}"
        )
    return lines
