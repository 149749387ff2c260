"""Dashboard.md with the audit store: titles (not file slugs) and ages of pending approvals,
failures needing attention, today's and this month's cost, links only to notes that are there,
and flat properties for Dataview."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.control.dashboard import DashboardService
from ai_employee.store import records as r
from ai_employee.store.database import open_store
from ai_employee.store.writer import StoreWriter
from ai_employee.vault.layout import Folder, VaultLayout
from ai_employee.vault.ledger import ExecutionRow, Ledger
from ai_employee.vault.notes import parse_note

PENDING = "20261207-101500 pump-3-on-line-2 a1b2c3 plan.md"
FAILED = "20261207-090000 order-filters d4e5f6 plan.md"


@pytest.fixture
def layout(tmp_path: Path) -> VaultLayout:
    made = VaultLayout(tmp_path / "vault")
    made.create()
    return made


@pytest.fixture
def ledger(layout: VaultLayout) -> Iterator[Ledger]:
    opened = Ledger(layout.state_dir / "state.db")
    yield opened
    opened.close()


@pytest.fixture
def engine(layout: VaultLayout) -> Iterator[Engine]:
    opened = open_store(None, layout.state_dir)
    yield opened
    opened.dispose()


def store_facts(engine: Engine, layout: VaultLayout) -> None:
    now = datetime.now(UTC)
    two_hours_ago = (now - timedelta(hours=2, minutes=5)).isoformat(timespec="milliseconds")
    today = now.isoformat(timespec="milliseconds")
    earlier_this_month = now.replace(day=1, hour=0, minute=0).isoformat(timespec="milliseconds")
    writer = StoreWriter(engine, layout.state_dir / "spool.jsonl", linger=0.0)
    writer.start()
    writer.submit(
        [
            r.task(
                "act-20261207-101500-a1b2c3",
                two_hours_ago,
                short_id="a1b2c3",
                title="Pump 3 leaking | line 2",
                action="atlas.work_order",
                risk="high",
                status="pending_approval",
                planned_at=two_hours_ago,
            ),
            r.task(
                "act-20261207-090000-d4e5f6",
                two_hours_ago,
                short_id="d4e5f6",
                title="Order coffee filters",
                status="failed",
            ),
            r.checkpoint(
                "plan-20261207-090000-d4e5f6:failed:1",
                "act-20261207-090000-d4e5f6",
                "failed",
                today,
                status="failed",
                detail="Atlas answered 500: try later",
            ),
            r.cost("c1", "act-20261207-101500-a1b2c3", "llm", 0.25, today),
            r.cost("c2", "act-20261207-090000-d4e5f6", "whisper", 0.5, earlier_this_month),
        ]
    )
    assert writer.drain(10)
    writer.close()


@pytest.fixture
def dashboard(layout: VaultLayout, ledger: Ledger, engine: Engine) -> str:
    (layout.folder(Folder.PLANS) / PENDING).write_text("---\nid: plan-x\n---\n")
    (layout.folder(Folder.FAILED) / FAILED).write_text("---\nid: plan-y\n---\n")
    ledger.upsert_execution(
        ExecutionRow(
            plan_id="plan-20261206-080000-ffffff",
            action_id="act-20261206-080000-ffffff",
            state="done",
            action="vault.note",
            dry_run=True,
            final_rel="Done/20261206-080000 gone ffffff plan.md",
        )
    )
    store_facts(engine, layout)
    service = DashboardService(layout, ledger, InProcessEventBus(), dict, store=engine)
    return service.render({"dry_run": True, "planner": "template", "services": {}})


def test_pending_approvals_show_the_title_and_how_long_they_wait(dashboard: str) -> None:
    assert f"[[Plans/{PENDING[:-3]}|Pump 3 leaking \\| line 2]] · waiting 2 h 5 min" in dashboard
    assert "atlas.work_order · risk high" in dashboard


def test_failures_needing_attention_link_the_plan_with_its_error(dashboard: str) -> None:
    assert "## Failures needing attention (1)" in dashboard
    assert f"[[Failed/{FAILED[:-3]}|Order coffee filters]]: Atlas answered 500: try later" in dashboard


def test_a_result_whose_note_is_gone_is_not_a_dead_link(dashboard: str) -> None:
    assert "plan-20261206-080000-ffffff" in dashboard
    assert "[[Done/20261206-080000 gone ffffff plan" not in dashboard


def test_costs_of_today_and_this_month_per_service(dashboard: str) -> None:
    assert "| llm | $0.2500 | $0.2500 |" in dashboard
    assert "| **total** | **$0.2500** | **$0.7500** |" in dashboard or datetime.now(UTC).day == 1


def test_the_dashboard_has_flat_properties_for_dataview(dashboard: str) -> None:
    properties, body = parse_note(dashboard)
    assert properties["type"] == "dashboard"
    assert (properties["pending_approvals"], properties["failures"]) == (1, 1)
    assert properties["cost_today_usd"] == 0.25 and properties["mode"] == "dry-run"
    assert body.lstrip().startswith("# AI Employee: Dashboard")
