"""The foreground log shows the work as it happens: one line per step of an item, readable on a
console, JSON lines otherwise, and a burst summarised instead of drowning the terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.model.events import Event, EventType
from ai_employee.observability.logging import configure_logging
from ai_employee.pipeline.work_log import WorkLog

ACTION = "act-20261207-101500-a1b2c3"
PLAN = "plan-20261207-101500-a1b2c3"

STORY = [
    Event(EventType.ACTION_CREATED, {"action_id": ACTION, "source": "file", "title": "Pump 3 leaking"}),
    Event(
        EventType.PLAN_CREATED,
        {"plan_id": PLAN, "action": "atlas.work_order", "risk": "high", "planner": "template"},
    ),
    Event(EventType.APPROVAL_GRANTED, {"plan_id": PLAN}),
    Event(EventType.PLAN_EXECUTED, {"plan_id": PLAN, "action": "atlas.work_order", "dry_run": True}),
    Event(EventType.PLAN_FAILED, {"plan_id": PLAN, "action": "atlas.work_order", "error": "Atlas said 500"}),
]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_each_step_of_an_item_is_one_readable_console_line() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    bus = InProcessEventBus()
    work_log = WorkLog(bus)

    for event in STORY:
        bus.publish(event)
    work_log.close()

    lines = out.getvalue().splitlines()
    assert [line.split("]", 1)[1].split()[0] for line in lines] == [
        "received",
        "planned",
        "approved",
        "done",
        "failed",
    ]
    assert f"action_id={ACTION}" in lines[0] and "title='Pump 3 leaking'" in lines[0]
    assert "action=atlas.work_order" in lines[1] and "risk=high" in lines[1]
    assert "error='Atlas said 500'" in lines[4]


def test_lines_are_json_when_the_output_is_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", stream=out)
    bus = InProcessEventBus()
    work_log = WorkLog(bus)

    bus.publish(STORY[0])
    work_log.close()

    (line,) = [json.loads(raw) for raw in out.getvalue().splitlines()]
    assert line["event"] == "received"
    assert line["action_id"] == ACTION
    assert line["logger"] == "ai_employee.work"


def test_a_burst_beyond_the_line_limit_is_summarised_in_one_line() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    bus = InProcessEventBus()
    now = [100.0]
    work_log = WorkLog(bus, max_per_second=3, clock=lambda: now[0])

    for index in range(10):
        bus.publish(Event(EventType.ACTION_CREATED, {"action_id": f"act-{index}", "source": "file"}))
    now[0] += 1.5
    bus.publish(Event(EventType.ACTION_CREATED, {"action_id": "act-after", "source": "file"}))
    work_log.close()

    lines = [json.loads(raw) for raw in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "received",
        "received",
        "received",
        "burst: 7 received more than the lines above",
        "received",
    ]
    assert lines[3]["received"] == 7
    assert lines[4]["action_id"] == "act-after"
