"""Rendering new actions in the helper process gives what rendering them in the daemon gives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ai_employee.model.plans import ActionSpec, PlanProposal, PlanRequest
from ai_employee.pipeline.renderer import ActionRenderer, NewAction, RenderedAction, RenderProcess
from ai_employee.planners.base import Planner
from ai_employee.planners.template import TemplatePlanner
from ai_employee.vault.ledger import ActionRow

TEXTS = [
    "Pump 3 on line 2 is leaking oil\n\nThe drip tray is half full. Needs fixing today.\n",
    "Please research suppliers of food-grade conveyor belts in Europe and compare prices.\n",
    "Reminder: order more coffee filters before Friday. Café «spécial» — ünïcode\n",
]
SPECS = [ActionSpec("vault.note", "Write a note in the vault", {"type": "object"})]
RECEIVED = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


class RemotePlanner(Planner):
    """A planner that does not plan inline (a model planner, say)."""

    name = "remote"

    async def plan(self, request: PlanRequest) -> PlanProposal:
        raise NotImplementedError


def actions() -> list[NewAction]:
    made = []
    for number, text in enumerate(TEXTS):
        action_id = f"act-20261121-120000-{number:06x}"
        stem = f"20261121-120000 note-{number} {number:06x}"
        made.append(
            NewAction(
                row=ActionRow(
                    action_id=action_id,
                    source="file",
                    source_ref=f"note {number}.txt",
                    state="claimed",
                    note_rel=f"Needs_Action/{stem}.md",
                    plan_id=action_id.replace("act-", "plan-"),
                    plan_rel=f"Plans/{stem} plan.md",
                    attachments=[f"Attachments/2026-11-21/{number:06x}-note {number}.txt"],
                    title=text.splitlines()[0],
                ),
                text=text,
                received=RECEIVED,
            )
        )
    return made


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[RenderProcess]:
    process = RenderProcess(tmp_path, TemplatePlanner())
    yield process
    process.close()


def comparable(rendered: list[RenderedAction]) -> list[object]:
    """Everything but the moments of rendering (a plan's `created`, audit lines' time and ids)."""
    created = re.compile(rb'^created: "[^"]*"$', re.MULTILINE)
    return [
        (
            [(path, created.sub(b"created: ...", data)) for path, data in action.writes],
            [
                {k: v for k, v in json.loads(r.line).items() if k not in ("ts", "event_id")}
                for r in action.audit
            ],
            action.item.planned,
            action.item.request,
        )
        for action in rendered
    ]


def test_the_helper_renders_what_the_daemon_renders(tmp_path: Path, helper: RenderProcess) -> None:
    local = ActionRenderer(tmp_path, TemplatePlanner())

    helper.send(actions(), "# Handbook\n", SPECS)
    remote = helper.receive()

    assert comparable(remote) == comparable(local.render_now(actions(), "# Handbook\n", SPECS))
    assert all(action.item.planned is not None for action in remote)


def test_batches_sent_back_to_back_come_back_in_order(helper: RenderProcess) -> None:
    first, second = actions()[:1], actions()[1:]

    helper.send(first, "", SPECS)
    helper.send(second, "", SPECS)

    assert [action.item.row.action_id for action in helper.receive()] == [first[0].row.action_id]
    assert [action.item.row.action_id for action in helper.receive()] == [
        item.row.action_id for item in second
    ]


def test_without_inline_planning_only_action_notes_are_rendered(tmp_path: Path) -> None:
    process = RenderProcess(tmp_path, RemotePlanner())
    try:
        process.send(actions(), "", [])
        rendered = process.receive()
    finally:
        process.close()

    assert [len(action.writes) for action in rendered] == [1, 1, 1]
    assert all(action.item.planned is None for action in rendered)
    assert b"status: needs_action" in rendered[0].writes[0][1]


class PluginLocalPlanner(TemplatePlanner):
    """A plug-in that plans inline: the helper could not build it, so it plans in the daemon."""

    name = "plugin"


def test_the_helper_serves_only_planners_it_can_build() -> None:
    assert RenderProcess.can_render_for(TemplatePlanner())
    assert RenderProcess.can_render_for(RemotePlanner())
    assert not RenderProcess.can_render_for(PluginLocalPlanner())


def test_the_helper_processes_import_no_pydantic() -> None:
    """Each helper is a child Python: what its module imports is memory of every daemon (~20 MB
    for pydantic and the settings)."""
    code = (
        "import sys, ai_employee.pipeline.renderer, ai_employee.vault.writer\n"
        "print(sorted(name for name in ('pydantic', 'pydantic_settings', 'httpx') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


def test_an_action_note_embeds_its_images_and_links_its_other_files() -> None:
    from ai_employee.pipeline.rendering import action_note

    text = action_note(
        action_id="act-20261121-101500-a1b2c3",
        source="whatsapp",
        received=datetime(2026, 11, 21, 10, 15, tzinfo=UTC),
        title="Crack in the housing",
        status="needs_action",
        attachments=["Attachments/photo-1.JPG", "Attachments/manual.pdf"],
        body_text="Crack in the housing",
    )
    assert "- ![[Attachments/photo-1.JPG]]" in text
    assert "- [[Attachments/manual.pdf]]" in text
