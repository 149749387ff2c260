"""The audit store, the same suite on SQLite and on PostgreSQL (loopback): migrations at open,
an item's story from the pipeline's announcements, idempotent keys, lists and filters, and what
a person types as an id. PostgreSQL's outages are in test_store_outage.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.model.events import Event, EventType
from ai_employee.model.jobs import Finished
from ai_employee.model.plans import PlanProposal
from ai_employee.observability.metrics import Metrics
from ai_employee.pipeline.announcer import Announcer
from ai_employee.pipeline.decisions import DecisionOutcome
from ai_employee.pipeline.renderer import NewAction
from ai_employee.store import schema
from ai_employee.store.database import StoreUnavailable, head_version, open_store, schema_version
from ai_employee.store.queries import list_tasks, parse_since, resolve_item_id, story
from ai_employee.store.service import StoreService
from ai_employee.store.writer import StoreWriter
from ai_employee.vault.ledger import ActionRow
from tests.conftest import skip_or_fail
from tests.fakes.postgres import OwnDatabase, shared_server_reason

ACTION = "act-20261207-101500-a1b2c3"
PLAN = "plan-20261207-101500-a1b2c3"


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """One database of our own for the module (created, dropped after); each test empties it."""
    reason = shared_server_reason()
    if reason is not None:
        skip_or_fail(reason)
    with OwnDatabase() as database:
        yield database.url


@pytest.fixture(scope="module")
def sqlite_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
def engine(store_url: str | None, sqlite_folder: Path) -> Iterator[Engine]:
    opened = open_store(store_url, sqlite_folder)
    with opened.begin() as connection:
        for table in reversed(schema.metadata.sorted_tables):
            connection.execute(table.delete())
    yield opened
    opened.dispose()


class Pipeline:
    """The announcer of the real pipeline on a real bus, with the store listening."""

    def __init__(self, engine: Engine, spool: Path) -> None:
        self.metrics = Metrics(process_metrics=False)
        self.bus = InProcessEventBus()
        self.announce = Announcer(self.bus, self.metrics)
        self.writer = StoreWriter(engine, spool, target="test", linger=0.01)
        self.store = StoreService(self.writer, self.bus, self.metrics)
        self.bus.subscribe(None, self.store.on_event, name="store")
        self.writer.start()

    def settle(self) -> None:
        assert self.writer.drain(10)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def pipeline(engine: Engine, tmp_path: Path) -> Iterator[Pipeline]:
    made = Pipeline(engine, tmp_path / "spool.jsonl")
    yield made
    made.close()


def new_action(title: str = "Pump 3 leaking on line 2", action_id: str = ACTION) -> NewAction:
    short = action_id.rsplit("-", 1)[1]
    row = ActionRow(
        action_id=action_id,
        source="file",
        source_ref="pump.txt",
        state="planned",
        note_rel=f"Needs_Action/20261207-101500 pump {short}.md",
        plan_id="plan-" + action_id.removeprefix("act-"),
        plan_rel=f"Plans/20261207-101500 pump {short} plan.md",
        title=title,
        extra={"transcript_cost_usd": 0.012, "duration_seconds": 120.0},
    )
    return NewAction(row=row, text="Pump 3 is leaking", received=datetime.now(UTC))


def proposal(**overrides: object) -> PlanProposal:
    values: dict[str, object] = {
        "action": "atlas.work_order",
        "params": {"title": "Fix pump 3"},
        "intent": "maintenance",
        "confidence": 0.9,
        "risk": "high",
        "summary": "A work order for pump 3",
        "planner": "claude:claude-sonnet-4-6",
        "usage": {"input_tokens": 1000, "output_tokens": 200},
        "cost_usd": 0.006,
    }
    values.update(overrides)
    return PlanProposal(**values)  # type: ignore[arg-type]


def approve(pipeline: Pipeline, *, attempt: int = 1, by: str = "alice", door: str = "slack") -> None:
    outcome = DecisionOutcome(granted=[(PLAN, ACTION)])
    outcome.facts[PLAN] = {
        "action_id": ACTION,
        "action": "atlas.work_order",
        "attempt": attempt,
        "by": by,
        "door": door,
    }
    pipeline.announce.decisions(outcome)


def finished(status: str = "done", attempt: int = 1, **overrides: object) -> Finished:
    values: dict[str, object] = {
        "plan_id": PLAN,
        "action_id": ACTION,
        "action": "atlas.work_order",
        "status": status,
        "dry_run": False,
        "result": {"work_order_id": 123, "custom_id": "WO000123", "url": "https://cmms/app/work-orders/123"},
        "error": None if status == "done" else "Atlas said 500",
        "final_rel": f"{'Done' if status == 'done' else 'Failed'}/20261207-101500 pump a1b2c3 plan.md",
        "attempt": attempt,
        "duration_ms": 830.0,
    }
    values.update(overrides)
    return Finished(**values)  # type: ignore[arg-type]


def whole_life(pipeline: Pipeline) -> None:
    item = new_action()
    pipeline.announce.action_created(item)
    pipeline.announce.plan_created(item, proposal(), duration_ms=1234.5)
    approve(pipeline)
    pipeline.announce.finished(finished())
    pipeline.settle()


def count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(schema.metadata.tables[table])).scalar_one()
        )


# --- migrations --------------------------------------------------------------------------------


def test_opening_the_store_brings_its_schema_to_the_newest_version(engine: Engine) -> None:
    assert schema_version(engine) == head_version() is not None


def test_opening_the_store_again_changes_nothing(
    engine: Engine, store_url: str | None, sqlite_folder: Path
) -> None:
    again = open_store(store_url, sqlite_folder)
    try:
        assert schema_version(again) == head_version()
    finally:
        again.dispose()


def test_the_default_store_is_sqlite_in_the_vaults_state_folder(tmp_path: Path) -> None:
    engine = open_store(None, tmp_path / ".ai-employee")
    engine.dispose()
    assert (tmp_path / ".ai-employee" / "store.db").is_file()


def test_an_unreachable_postgresql_is_one_clear_line_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable) as raised:
        open_store("postgresql://aie:s3cret-pw@127.0.0.1:1/aie", tmp_path)
    message = str(raised.value)
    assert "connection refused" in message and "127.0.0.1:1" in message
    assert "s3cret-pw" not in message and "\n" not in message


def test_a_database_url_of_another_kind_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="postgresql://"):
        open_store("mysql://root@localhost/aie", tmp_path)


# --- an item's story ---------------------------------------------------------------------------


def test_an_items_whole_life_is_one_task_row_with_its_facts(pipeline: Pipeline, engine: Engine) -> None:
    whole_life(pipeline)
    [task] = list_tasks(engine)
    assert task["action_id"] == ACTION and task["plan_id"] == PLAN and task["short_id"] == "a1b2c3"
    assert (task["source"], task["title"], task["action"], task["risk"]) == (
        "file",
        "Pump 3 leaking on line 2",
        "atlas.work_order",
        "high",
    )
    assert (task["status"], task["planner"]) == ("done", "claude:claude-sonnet-4-6")
    assert task["decided_at"] and task["finished_at"] and task["planned_at"]
    assert task["cost_usd"] == pytest.approx(0.006 + 0.012)


def test_the_story_is_in_time_order_with_who_approved_and_through_which_door(
    pipeline: Pipeline, engine: Engine
) -> None:
    whole_life(pipeline)
    found = story(engine, ACTION)
    assert found is not None
    steps = [item.get("step") for item in found["checkpoints"]]
    assert steps == ["received", "planned", "approved", "executed"]
    [approval] = found["interventions"]
    assert (approval["kind"], approval["who"], approval["door"]) == ("approve", "alice", "slack")
    times = [item["at"] for item in found["timeline"]]
    assert times == sorted(times)
    planned = found["checkpoints"][1]
    assert planned["duration_ms"] == 1234.5 and planned["detail"] == "by claude:claude-sonnet-4-6"
    assert found["checkpoints"][3]["duration_ms"] == 830.0


def test_what_was_produced_is_an_artifact(pipeline: Pipeline, engine: Engine) -> None:
    whole_life(pipeline)
    found = story(engine, ACTION)
    assert found is not None
    [work_order] = found["artifacts"]
    assert (work_order["kind"], work_order["ref"], work_order["url"]) == (
        "work_order",
        "WO000123",
        "https://cmms/app/work-orders/123",
    )


def test_costs_are_kept_per_service_with_their_quantity(pipeline: Pipeline, engine: Engine) -> None:
    whole_life(pipeline)
    found = story(engine, ACTION)
    assert found is not None
    costs = {item["service"]: (item["usd"], item["quantity"], item["unit"]) for item in found["costs"]}
    assert costs == {"llm": (0.006, 1200.0, "tokens"), "whisper": (0.012, 2.0, "minutes")}
    samples = {
        sample.labels["service"]: sample.value
        for metric in pipeline.metrics.registry.collect()
        if metric.name == "aie_cost_usd"
        for sample in metric.samples
    }
    assert samples == {"llm": pytest.approx(0.006), "whisper": pytest.approx(0.012)}


def test_a_retry_from_failed_is_an_intervention_and_a_second_attempt(
    pipeline: Pipeline, engine: Engine
) -> None:
    whole_life(pipeline)
    pipeline.announce.finished(finished("failed", result=None))  # attempt 1 failed ...
    approve(pipeline, attempt=2, by="vault", door="vault")  # ... moved back to Approved/
    pipeline.announce.finished(finished("done", attempt=2))
    pipeline.settle()
    found = story(engine, ACTION)
    assert found is not None
    assert [(item["kind"], item["door"]) for item in found["interventions"]] == [
        ("approve", "slack"),
        ("retry", "vault"),
    ]
    assert found["task"]["status"] == "done"


def test_a_rejection_keeps_who_rejected_and_why(pipeline: Pipeline, engine: Engine) -> None:
    item = new_action()
    pipeline.announce.action_created(item)
    pipeline.announce.plan_created(item, proposal())
    outcome = DecisionOutcome(rejected=[PLAN])
    outcome.facts[PLAN] = {"action_id": ACTION, "by": "bob", "door": "telegram", "reason": "not ours"}
    pipeline.announce.decisions(outcome)
    pipeline.settle()
    found = story(engine, ACTION)
    assert found is not None and found["task"]["status"] == "rejected"
    [rejection] = found["interventions"]
    assert (rejection["kind"], rejection["who"], rejection["door"], rejection["reason"]) == (
        "reject",
        "bob",
        "telegram",
        "not ours",
    )


def test_a_context_warning_is_a_warning_checkpoint(pipeline: Pipeline, engine: Engine) -> None:
    item = new_action()
    pipeline.announce.action_created(item)
    pipeline.announce.plan_created(item, proposal(context_used=0.9))
    pipeline.settle()
    found = story(engine, ACTION)
    assert found is not None
    [warning] = [item for item in found["checkpoints"] if item["step"] == "context_warning"]
    assert warning["status"] == "warning" and "90%" in warning["detail"]


def test_the_slack_thread_is_filled_by_a_task_linked_event(pipeline: Pipeline, engine: Engine) -> None:
    whole_life(pipeline)
    pipeline.bus.publish(
        Event(EventType.TASK_LINKED, {"action_id": ACTION, "slack_thread": "C042:1712345.678"}, ACTION)
    )
    pipeline.settle()
    [task] = list_tasks(engine)
    assert task["slack_thread"] == "C042:1712345.678" and task["status"] == "done"


# --- nothing twice -----------------------------------------------------------------------------


def test_the_same_announcements_twice_write_each_fact_once(pipeline: Pipeline, engine: Engine) -> None:
    whole_life(pipeline)
    whole_life(pipeline)  # a re-run after a crash announces the same facts again
    assert (count(engine, "tasks"), count(engine, "checkpoints"), count(engine, "interventions")) == (1, 4, 1)
    assert (count(engine, "artifacts"), count(engine, "costs")) == (1, 2)


def test_an_older_fact_arriving_late_does_not_turn_the_status_back(
    pipeline: Pipeline, engine: Engine
) -> None:
    whole_life(pipeline)
    pipeline.bus.publish(
        Event(
            EventType.ACTION_CREATED,
            {"action_id": ACTION, "title": "late"},
            ACTION,
            time=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )
    pipeline.settle()
    [task] = list_tasks(engine)
    assert task["status"] == "done"
    assert task["created_at"].startswith("2026-01-01")  # the earliest creation time is kept


# --- lists and ids ------------------------------------------------------------------------------


def test_lists_filter_by_status_action_and_time(pipeline: Pipeline, engine: Engine) -> None:
    whole_life(pipeline)
    other = new_action("Order coffee filters", "act-20261207-101600-d4e5f6")
    pipeline.announce.action_created(other)
    pipeline.announce.plan_created(other, proposal(action="vault.note", cost_usd=None))
    pipeline.settle()
    assert [task["short_id"] for task in list_tasks(engine)] == ["d4e5f6", "a1b2c3"]
    assert [task["short_id"] for task in list_tasks(engine, status="done")] == ["a1b2c3"]
    assert [task["short_id"] for task in list_tasks(engine, action="vault.note")] == ["d4e5f6"]
    assert list_tasks(engine, since=parse_since("2099-01-01")) == []
    assert len(list_tasks(engine, since=parse_since("7d"))) == 2
    assert len(list_tasks(engine, limit=1)) == 1


def test_an_item_is_found_by_any_id_a_person_types(pipeline: Pipeline, engine: Engine) -> None:
    whole_life(pipeline)
    typed = [
        ACTION,
        PLAN,
        "a1b2c3",
        "20261207-101500 pump a1b2c3 plan.md",
        "Plans/20261207-101500 pump a1b2c3 plan",
    ]
    assert {resolve_item_id(engine, text) for text in typed} == {ACTION}


def test_an_unknown_id_finds_nothing(pipeline: Pipeline, engine: Engine) -> None:
    whole_life(pipeline)
    assert resolve_item_id(engine, "ffffff") is None
    assert story(engine, "act-20990101-000000-ffffff") is None


def test_a_plan_taken_out_of_approved_before_it_ran_is_a_cancel_and_an_edit_is_an_edit(
    pipeline: Pipeline, engine: Engine
) -> None:
    whole_life(pipeline)
    for attempt, reason in ((2, "vanished"), (3, "edited")):
        pipeline.bus.publish(
            Event(
                EventType.APPROVAL_REVOKED,
                {"plan_id": PLAN, "action_id": ACTION, "attempt": attempt, "reason": reason},
                ACTION,
            )
        )
    pipeline.settle()
    found = story(engine, ACTION)
    assert found is not None
    assert [item["kind"] for item in found["interventions"]] == ["approve", "cancel", "edit"]
