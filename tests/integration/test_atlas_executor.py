"""atlas.work_order against the loopback Atlas: dry-run, live create, exactly once across failures."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ai_employee.clients.atlas import AtlasClient
from ai_employee.clients.retry import RetryPolicy
from ai_employee.config import Settings
from ai_employee.executors.atlas import (
    JOURNAL_KEY,
    AtlasWorkOrderExecutor,
    WorkOrderParams,
    create,
    marker_for,
    work_order_body,
)
from ai_employee.model.executor import ExecutionContext, ExecutionError, ExecutorUnavailable
from tests.fakes.atlas_server import AtlasFake
from tests.fakes.journal import FileJournal

FAST = RetryPolicy(attempts=4, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
EMAIL = "admin@example.com"
PASSWORD = "s3cret-pass"
PLAN = "plan-20261121-101500-a1b2c3"
ACTION = "act-20261121-101500-a1b2c3"


@pytest.fixture
async def fake() -> AsyncIterator[AtlasFake]:
    server = AtlasFake(email=EMAIL, password=PASSWORD)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.json"


def context(tmp_path: Path, journal_path: Path, *, live: bool = True) -> ExecutionContext:
    return ExecutionContext(
        plan_id=PLAN, action_id=ACTION, vault_root=tmp_path, live=live, journal=FileJournal(journal_path)
    )


def executor_for(fake: AtlasFake) -> AtlasWorkOrderExecutor:
    return AtlasWorkOrderExecutor(fake.base_url, EMAIL, PASSWORD, retry=FAST, timeout_seconds=5.0)


def params(**changes: Any) -> WorkOrderParams:
    values: dict[str, Any] = {
        "title": "Pump 3 leaking on line 2",
        "description": "Oil under the pump.",
        "priority": "HIGH",
    }
    values.update(changes)
    return WorkOrderParams.model_validate(values)


async def test_dry_run_sends_nothing_and_masks_the_password(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    executor = executor_for(fake)
    rendered = executor.render_dry_run(
        params(asset="Pump 3", assignees=["tech@example.com"]), context(tmp_path, journal_path, live=False)
    )
    assert fake.requests == []
    text = json.dumps(rendered)
    assert PASSWORD not in text
    assert '"password": "***"' in text
    create_request = rendered["requests"][-1]
    assert (create_request["method"], create_request["url"]) == ("POST", f"{fake.base_url}/work-orders")
    assert create_request["json"]["description"].endswith(f"\n\n{marker_for(PLAN)}")
    assert create_request["json"]["asset"] == {"id": "<id of asset 'Pump 3'>"}
    assert [r["url"].rsplit("/", 2)[-2] for r in rendered["requests"][1:-1]] == ["assets", "users"]


async def test_missing_credentials_make_it_unavailable_but_dry_run_still_renders(
    tmp_path: Path, journal_path: Path
) -> None:
    executor = create(Settings())
    assert executor.unavailable_reason() == "ATLAS_BASE_URL, ATLAS_EMAIL and ATLAS_PASSWORD are not set"
    rendered = executor.render_dry_run(params(), context(tmp_path, journal_path, live=False))
    assert rendered["requests"][-1]["url"] == "${ATLAS_BASE_URL}/work-orders"
    assert rendered["unavailable"] == executor.unavailable_reason()
    with pytest.raises(
        ExecutorUnavailable, match="ATLAS_BASE_URL, ATLAS_EMAIL and ATLAS_PASSWORD are not set"
    ):
        await executor.execute(params(), context(tmp_path, journal_path))


def test_one_missing_setting_is_named_alone() -> None:
    settings = Settings(atlas={"base_url": "http://atlas.invalid", "email": EMAIL})
    assert create(settings).unavailable_reason() == "ATLAS_PASSWORD is not set"


async def test_live_run_creates_the_work_order_with_resolved_ids(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    line = fake.add_location("Line 2")
    pump = fake.add_asset("Pump 3", location_id=line["id"])
    tech = fake.add_user("tech@example.com")
    executor = executor_for(fake)
    result = await executor.execute(
        params(asset="Pump 3", location="Line 2", assignees=["tech@example.com"], due_date=date(2026, 12, 1)),
        context(tmp_path, journal_path),
    )
    [work_order] = fake.work_orders.values()
    assert result["work_order_id"] == work_order["id"]
    assert result["custom_id"] == "WO000001"
    assert (result["title"], result["priority"], result["status"]) == (
        "Pump 3 leaking on line 2",
        "HIGH",
        "OPEN",
    )
    assert (work_order["asset"], work_order["location"], work_order["assignedTo"]) == (
        pump["id"],
        line["id"],
        [tech["id"]],
    )
    assert work_order["dueDate"] == "2026-12-01T12:00:00.000+00:00"
    assert work_order["description"].splitlines()[-1] == marker_for(PLAN)
    assert FileJournal(journal_path).get(JOURNAL_KEY)["work_order_id"] == work_order["id"]  # type: ignore[index]
    await executor.aclose()


async def test_running_the_plan_again_returns_the_recorded_work_order(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    executor = executor_for(fake)
    first = await executor.execute(params(), context(tmp_path, journal_path))
    before = len(fake.requests)
    second = await executor_for(fake).execute(params(), context(tmp_path, journal_path))
    assert second == first
    assert len(fake.requests) == before
    await executor.aclose()


async def test_dropped_connection_after_commit_yields_exactly_one_work_order(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    fake.inject("POST", "/work-orders", drop="after")
    executor = executor_for(fake)
    result = await executor.execute(params(), context(tmp_path, journal_path))
    assert len(fake.work_orders) == 1
    assert result["work_order_id"] == next(iter(fake.work_orders))
    assert len(fake.requests_to("POST", "/work-orders")) == 1
    await executor.aclose()


async def test_after_a_crash_with_only_the_intent_the_marker_is_found_and_nothing_created(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    # The run before the crash: intent written, work order created, answer never recorded.
    FileJournal(journal_path).put(JOURNAL_KEY, {"state": "intent", "marker": marker_for(PLAN)})
    before = AtlasClient(fake.base_url, EMAIL, PASSWORD, retry=FAST)
    made = await before.create_work_order({"title": "Pump 3", "description": f"text\n\n{marker_for(PLAN)}"})
    await before.aclose()
    fresh = executor_for(fake)
    result = await fresh.execute(params(), context(tmp_path, journal_path))
    assert result["work_order_id"] == made["id"]
    assert len(fake.work_orders) == 1
    assert len(fake.requests_to("POST", "/work-orders")) == 1  # only the one before the crash
    assert FileJournal(journal_path).get(JOURNAL_KEY)["state"] == "created"  # type: ignore[index]
    await fresh.aclose()


async def test_after_a_crash_before_the_create_reached_atlas_it_creates_once(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    FileJournal(journal_path).put(JOURNAL_KEY, {"state": "intent", "marker": marker_for(PLAN)})
    fresh = executor_for(fake)
    await fresh.execute(params(), context(tmp_path, journal_path))
    assert len(fake.work_orders) == 1
    await fresh.aclose()


async def test_a_work_order_of_another_plan_is_not_taken_for_ours(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    FileJournal(journal_path).put(JOURNAL_KEY, {"state": "intent", "marker": marker_for(PLAN)})
    other = AtlasClient(fake.base_url, EMAIL, PASSWORD, retry=FAST)
    await other.create_work_order({"title": "other", "description": marker_for(PLAN + "0")})
    await other.aclose()
    fresh = executor_for(fake)
    await fresh.execute(params(), context(tmp_path, journal_path))
    assert len(fake.work_orders) == 2
    await fresh.aclose()


async def test_atlas_validation_error_fails_with_its_message_and_is_not_retried(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    fake.inject(
        "POST",
        "/work-orders",
        status=400,
        body={"success": False, "message": "title: size must be between 0 and 100"},
    )
    executor = executor_for(fake)
    with pytest.raises(ExecutionError, match="title: size must be between 0 and 100") as failure:
        await executor.execute(params(), context(tmp_path, journal_path))
    assert not failure.value.retryable
    assert len(fake.requests_to("POST", "/work-orders")) == 1
    await executor.aclose()


async def test_rate_limited_create_is_retried_and_made_once(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    fake.inject("POST", "/work-orders", status=429, times=2)
    executor = executor_for(fake)
    await executor.execute(params(), context(tmp_path, journal_path))
    assert len(fake.work_orders) == 1
    await executor.aclose()


async def test_unknown_asset_is_left_unlinked_and_said_so(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    fake.add_asset("Pump 30")
    executor = executor_for(fake)
    result = await executor.execute(params(asset="Pump 3"), context(tmp_path, journal_path))
    [work_order] = fake.work_orders.values()
    assert work_order["asset"] is None
    assert "Asset: Pump 3 (not found in Atlas: no Atlas asset has name 'Pump 3'" in work_order["description"]
    assert work_order["description"].splitlines()[-1] == marker_for(PLAN)
    assert result["not_linked"] == ["Asset 'Pump 3': no Atlas asset has name 'Pump 3'; similar: 'Pump 30'"]
    await executor.aclose()


async def test_unknown_asset_with_require_links_fails_before_anything_is_created(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    executor = executor_for(fake)
    with pytest.raises(ExecutionError, match="no Atlas asset has name 'Pump 9'"):
        await executor.execute(params(asset="Pump 9", require_links=True), context(tmp_path, journal_path))
    assert fake.requests_to("POST", "/work-orders") == []
    assert FileJournal(journal_path).get(JOURNAL_KEY) is None
    await executor.aclose()


async def test_wrong_password_fails_with_a_clear_message(
    fake: AtlasFake, tmp_path: Path, journal_path: Path
) -> None:
    executor = AtlasWorkOrderExecutor(fake.base_url, EMAIL, "nope", retry=FAST)
    with pytest.raises(ExecutionError, match=r"Atlas sign-in failed.*Invalid credentials"):
        await executor.execute(params(), context(tmp_path, journal_path))
    await executor.aclose()


async def test_an_unreachable_atlas_fails_the_plan_with_the_reason_in_plain_words(
    tmp_path: Path, journal_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    executor = AtlasWorkOrderExecutor(f"http://127.0.0.1:{port}", EMAIL, PASSWORD, retry=FAST)
    with pytest.raises(ExecutionError, match=r"connection refused \(nothing is listening\)$") as failure:
        await executor.execute(params(), context(tmp_path, journal_path))
    assert failure.value.retryable
    link = executor.link()
    assert (
        link is not None
        and link.last_error == f"Atlas 127.0.0.1:{port}: connection refused (nothing is listening)"
    )
    await executor.aclose()


def test_work_order_url_points_at_the_web_app_when_the_api_sits_under_api() -> None:
    executor = AtlasWorkOrderExecutor("https://cmms.example.com/api", EMAIL, PASSWORD)
    assert executor.work_order_url(12) == "https://cmms.example.com/app/work-orders/12"
    assert AtlasWorkOrderExecutor("http://atlas:8080", EMAIL, PASSWORD).work_order_url(12) is None


def test_a_long_description_is_cut_so_the_marker_stays_within_atlas_limit() -> None:
    body = work_order_body(params(description="x" * 10_000), marker_for(PLAN))
    assert len(body["description"]) <= 10_000
    assert body["description"].endswith("…\n\n" + marker_for(PLAN))
