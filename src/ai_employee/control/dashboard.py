"""Dashboard.md: pending approvals (titles, links, age), failures needing attention, recent results,
service health, today's and this month's cost; flat properties on top for Dataview.

Regenerated on bus events, at most once per `min_interval` (a burst of 10,000 files makes a
handful of rewrites, not 10,000), and written only when its content changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from ai_employee.model.bus import EventBus, Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import HealthReport, Service
from ai_employee.vault.fs import write_durable
from ai_employee.vault.layout import Folder, VaultLayout, is_ignored_name
from ai_employee.vault.ledger import Ledger
from ai_employee.vault.notes import wikilink

log = structlog.get_logger(__name__)

MAX_LISTED = 50
_QUIET = {EventType.HEALTH_CHECKED, EventType.EXECUTION_PROGRESS, EventType.FILE_DETECTED}


class DashboardService(Service):
    name = "dashboard"
    required = False

    def __init__(
        self,
        layout: VaultLayout,
        ledger: Ledger,
        bus: EventBus,
        status: Callable[[], dict[str, Any]],
        *,
        min_interval: float = 1.0,
        store: Any = None,
    ) -> None:
        super().__init__()
        # the audit store's Engine: titles, ages, errors and costs (None: folders only)
        self.store = store
        self.layout = layout
        self.ledger = ledger
        self.bus = bus
        self._status = status
        self._min_interval = min_interval
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_text = ""
        self.writes = 0

    def _on_event(self, event: Event) -> None:
        if event.type not in _QUIET:
            self._dirty.set()

    async def run(self) -> None:
        self._stop.clear()
        subscription: Subscription = self.bus.subscribe(None, self._on_event, name="dashboard")
        try:
            await self._write()
            self.ready.set()
            while not self._stop.is_set():
                dirty = asyncio.create_task(self._dirty.wait())
                stop = asyncio.create_task(self._stop.wait())
                await asyncio.wait({dirty, stop}, return_when=asyncio.FIRST_COMPLETED)
                dirty.cancel()
                stop.cancel()
                if self._stop.is_set():
                    break
                self._dirty.clear()
                await self._write()
                # coalesce what arrives meanwhile into the next write
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self._min_interval)
            await self._write()
        finally:
            self.bus.unsubscribe(subscription)

    async def stop(self) -> None:
        self._stop.set()

    async def health(self) -> HealthReport:
        return HealthReport(healthy=True, detail=f"{self.writes} writes")

    async def _write(self) -> None:
        status = await asyncio.to_thread(self._status)
        text = await asyncio.to_thread(self.render, status)
        if text != self._last_text:
            await asyncio.to_thread(write_durable, self.layout.dashboard, text.encode("utf-8"))
            self._last_text = text
            self.writes += 1

    def render(self, status: dict[str, Any]) -> str:
        now = datetime.now(UTC)
        live = not status.get("dry_run", True)
        mode = "LIVE" if live else "dry-run (nothing leaves the machine)"
        pending = self._listing(Folder.PLANS)
        failed = [name for name in self._listing(Folder.FAILED) if name.endswith(" plan.md")]
        facts = self._facts([_short_of(name) for name in (pending[:MAX_LISTED] + failed[:MAX_LISTED])])
        today, month = self._costs(now)
        properties = {
            "type": "dashboard",
            "updated": now.isoformat(timespec="seconds"),
            "mode": "live" if live else "dry-run",
            "planner": str(status.get("planner", "?")),
            "pending_approvals": len(pending),
            "failures": len(failed),
            "cost_today_usd": round(sum(today.values()), 4),
            "cost_month_usd": round(sum(month.values()), 4),
        }
        lines = ["---", *(f"{key}: {_yaml_scalar(value)}" for key, value in properties.items()), "---", ""]
        lines += [
            "# AI Employee: Dashboard",
            "",
            f"_Written by the daemon at {now:%Y-%m-%d %H:%M:%S} UTC; edits here are overwritten._",
            f"Mode: **{mode}** · planner: {status.get('planner', '?')}",
            "",
        ]
        lines += [f"## Pending approvals ({len(pending)})", ""]
        if not pending:
            lines.append("Nothing is waiting for you.")
        for name in pending[:MAX_LISTED]:
            fact = facts.get(_short_of(name), {})
            age = _age(now, fact.get("planned_at") or fact.get("created_at"), self._mtime(Folder.PLANS, name))
            label = _cell(str(fact.get("title") or _label(name)))
            extra = f" · {fact['action']}" if fact.get("action") else ""
            extra += f" · risk {fact['risk']}" if fact.get("risk") else ""
            link = wikilink(f"{Folder.PLANS.value}/{name}", label)  # a Markdown link for an odd name
            lines.append(f"- {link} · waiting {age}{extra}")
        if len(pending) > MAX_LISTED:
            lines.append(f"- … and {len(pending) - MAX_LISTED} more in `Plans/`")
        lines += ["", "Approve: move a plan to `Approved/`. Reject: move it to `Rejected/`.", ""]
        lines += [f"## Failures needing attention ({len(failed)})", ""]
        if not failed:
            lines.append("No failed plan is waiting.")
        for name in failed[:MAX_LISTED]:
            fact = facts.get(_short_of(name), {})
            label = _cell(str(fact.get("title") or _label(name)))
            error = self._failure(fact.get("action_id"))
            lines.append(f"- [[{Folder.FAILED.value}/{name[:-3]}|{label}]]" + (f": {error}" if error else ""))
        if failed:
            lines += ["", "Retry: fix the plan if needed and move it back to `Approved/`."]
        lines += ["", "## Recent results", ""]
        recent = self.ledger.recent_executions(15)
        if not recent:
            lines.append("No plan has run yet.")
        else:
            lines += ["| when | plan | action | outcome |", "|---|---|---|---|"]
            for row in recent:
                lines.append(
                    f"| {row.updated_at[:19].replace('T', ' ')} | {self._link(row.final_rel, row.plan_id)}"
                    f" | {row.action or ''} | {_outcome(row.state, row.dry_run, row.error)} |"
                )
        lines += ["", "## Service health", "", "| service | state | detail |", "|---|---|---|"]
        for name, service in sorted(status.get("services", {}).items()):
            detail = service.get("detail") or service.get("last_error") or ""
            lines.append(f"| {name} | {service.get('state')} | {_cell(str(detail))} |")
        lines += ["", "## Cost", "", "| | today | this month |", "|---|---|---|"]
        for service in sorted(set(today) | set(month)) or ["llm"]:
            lines.append(f"| {service} | ${today.get(service, 0.0):.4f} | ${month.get(service, 0.0):.4f} |")
        lines.append(f"| **total** | **${sum(today.values()):.4f}** | **${sum(month.values()):.4f}** |")
        lines.append("")
        return "\n".join(lines)

    def _listing(self, folder: Folder) -> list[str]:
        try:
            with os.scandir(self.layout.folder(folder)) as entries:
                names = [
                    entry.name
                    for entry in entries
                    if entry.name.endswith(".md") and not is_ignored_name(entry.name)
                ]
        except FileNotFoundError:
            return []
        return sorted(names, reverse=True)

    def _pending(self) -> list[str]:
        return self._listing(Folder.PLANS)

    def _mtime(self, folder: Folder, name: str) -> float | None:
        try:
            return os.stat(self.layout.folder(folder) / name).st_mtime
        except OSError:
            return None

    def _link(self, relative: str | None, text: str) -> str:
        """A wikilink only to a note that is there (a plan quarantined or moved on is plain text)."""
        if relative and self.layout.resolve(relative).is_file():
            return f"[[{relative[:-3]}\\|{text}]]"
        return text

    def _facts(self, short_ids: list[str]) -> dict[str, dict[str, Any]]:
        if self.store is None:
            return {}
        from sqlalchemy.exc import SQLAlchemyError

        from ai_employee.store.queries import titles_by_short_id

        try:
            found = titles_by_short_id(self.store, [short for short in short_ids if short])
        except SQLAlchemyError:
            return {}
        for fact in found.values():
            fact.setdefault("action_id", None)
        return found

    def _failure(self, action_id: str | None) -> str:
        if self.store is None or not action_id:
            return ""
        from sqlalchemy.exc import SQLAlchemyError

        from ai_employee.store.queries import last_failure

        try:
            return _cell(last_failure(self.store, [action_id]).get(action_id, ""))
        except SQLAlchemyError:
            return ""

    def _costs(self, now: datetime) -> tuple[dict[str, float], dict[str, float]]:
        day = now.strftime("%Y-%m-%d")
        if self.store is not None:
            from sqlalchemy.exc import SQLAlchemyError

            from ai_employee.store.queries import cost_between

            try:
                return cost_between(self.store, day, day), cost_between(self.store, day[:8] + "01", day)
            except SQLAlchemyError:
                pass
        planner = self.ledger.cost(day)
        return {"llm": planner}, {}


def _short_of(name: str) -> str:
    stem = name[:-3].removesuffix(" plan")
    short = stem.rsplit(" ", 1)[-1]
    return short if len(short) == 6 else ""


def _age(now: datetime, stamp: Any, mtime: float | None) -> str:
    try:
        since = datetime.fromisoformat(str(stamp)) if stamp else None
    except ValueError:
        since = None
    if since is None and mtime is not None:
        since = datetime.fromtimestamp(mtime, UTC)
    if since is None:
        return "?"
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _outcome(state: str, dry_run: bool | None, error: str | None) -> str:
    if state == "done":
        return "done (dry run)" if dry_run else "done"
    return "failed: " + _cell(error or "")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a double-quoted YAML string


def _label(name: str) -> str:
    stem = name[:-3].removesuffix(" plan")
    parts = stem.split(" ", 1)
    return parts[1].rsplit(" ", 1)[0].replace("-", " ") if len(parts) == 2 else stem


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]
