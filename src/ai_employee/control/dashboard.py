"""Dashboard.md: pending approvals (links), recent results, service health, cost today.

Regenerated on bus events, at most once per `min_interval` (a burst of 10,000 files makes a
handful of rewrites, not 10,000), and written only when its content changed.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    ) -> None:
        super().__init__()
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
        mode = "dry-run (nothing leaves the machine)" if status.get("dry_run", True) else "LIVE"
        lines = [
            "# AI Employee: Dashboard",
            "",
            f"_Written by the daemon at {now:%Y-%m-%d %H:%M:%S} UTC; edits here are overwritten._",
            f"Mode: **{mode}** · planner: {status.get('planner', '?')}",
            "",
        ]
        pending = self._pending()
        lines += [f"## Pending approvals ({len(pending)})", ""]
        if not pending:
            lines.append("Nothing is waiting for you.")
        for name in pending[:MAX_LISTED]:
            lines.append(f"- {wikilink(f'{Folder.PLANS.value}/{name}', _label(name).replace('|', '-'))}")
        if len(pending) > MAX_LISTED:
            lines.append(f"- … and {len(pending) - MAX_LISTED} more in `Plans/`")
        lines += ["", "Approve: move a plan to `Approved/`. Reject: move it to `Rejected/`.", ""]
        lines += ["## Recent results", ""]
        recent = self.ledger.recent_executions(15)
        if not recent:
            lines.append("No plan has run yet.")
        else:
            lines += ["| when | plan | action | outcome |", "|---|---|---|---|"]
            for row in recent:
                link = f"[[{row.final_rel[:-3]}\\|{row.plan_id}]]" if row.final_rel else row.plan_id
                if row.state == "done":
                    outcome = "done (dry run)" if row.dry_run else "done"
                else:
                    outcome = "failed: " + _cell(row.error or "")
                lines.append(
                    f"| {row.updated_at[:19].replace('T', ' ')} | {link} | {row.action or ''} | {outcome} |"
                )
        lines += ["", "## Service health", "", "| service | state | detail |", "|---|---|---|"]
        for name, service in sorted(status.get("services", {}).items()):
            detail = service.get("detail") or service.get("last_error") or ""
            lines.append(f"| {name} | {service.get('state')} | {_cell(str(detail))} |")
        lines += ["", "## Cost today", "", f"Planner: ${self.ledger.cost(now.strftime('%Y-%m-%d')):.4f}", ""]
        return "\n".join(lines)

    def _pending(self) -> list[str]:
        try:
            with os.scandir(self.layout.folder(Folder.PLANS)) as entries:
                names = [
                    entry.name
                    for entry in entries
                    if entry.name.endswith(".md") and not is_ignored_name(entry.name)
                ]
        except FileNotFoundError:
            return []
        return sorted(names, reverse=True)


def _label(name: str) -> str:
    stem = name[:-3].removesuffix(" plan")
    parts = stem.split(" ", 1)
    return parts[1].rsplit(" ", 1)[0].replace("-", " ") if len(parts) == 2 else stem


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:160]
