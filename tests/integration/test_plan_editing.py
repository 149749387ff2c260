"""Plans a person edits and decides in Obsidian (decision 0009): parameters as flat properties,
"What will be sent" made from what runs, the decision shown in the note, older notes migrated."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_employee.model.services import Decider
from ai_employee.vault.decisions import Decisions
from ai_employee.vault.layout import Folder
from ai_employee.vault.migrations import migrate_vault
from ai_employee.vault.notes import parse_note, render_note
from tests.conftest import frontmatter, notes
from tests.integration.test_steps import Vault, approve_the_only_plan, context_for, intake_one


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Vault]:
    monkeypatch.chdir(tmp_path)
    opened = Vault(tmp_path / "vault")
    yield opened
    opened.close()


def the_plan(vault: Vault, folder: Folder = Folder.PLANS) -> Path:
    [plan] = [path for path in notes(vault.folder(folder)) if frontmatter(path).get("type") == "plan"]
    return plan


def edit_properties(path: Path, **changes: Any) -> None:
    """What Obsidian's Properties panel does: the frontmatter changed, the body kept."""
    properties, body = parse_note(path.read_text(encoding="utf-8"))
    for name, value in changes.items():
        if value is None:
            properties.pop(name, None)
        else:
            properties[name] = value
    path.write_text(render_note(properties, body), encoding="utf-8")


def sent_block(path: Path) -> str:
    body = path.read_text(encoding="utf-8")
    match = re.search(r"## What will be sent\n(.*?)(?=\n## |\Z)", body, re.DOTALL)
    assert match is not None, body
    return match.group(1)


async def run(vault: Vault, steps: Any, name: str) -> Any:
    [job] = steps.examine_approved([name]).jobs
    assert steps.start_job(job) is True
    result = await job.executor.execute(job.params, context_for(vault, steps, job))
    return steps.record_result(job, dry_run=False, result=result, error=None)


OLD_PLAN = """---
id: plan-20261121-101500-a1b2c3
type: plan
action_id: act-20261121-101500-a1b2c3
action: vault.note
params:
  title: Pump 3 leaking
  content: oil under the pump
status: pending_approval
planner: template
risk: low
created: 2026-11-21T10:15:02+00:00
planner_usage:
  input_tokens: 12
  output_tokens: 3
---

# Plan: file it

## What will be sent
The `params` property above, exactly as it stands when the plan runs:

```json
{"title": "Pump 3 leaking", "content": "oil under the pump"}
```

## Decide
Approve: move this note to `Approved/`.
"""


# --- parameters are flat properties -----------------------------------------------------------


def test_a_new_plan_carries_each_parameter_as_a_flat_property(vault: Vault) -> None:
    intake_one(vault)
    properties = frontmatter(the_plan(vault))
    assert "params" not in properties
    assert properties["title"].startswith("Please file this")
    assert properties["folder"] == "Notes"
    # what Obsidian's Properties panel edits: text, numbers, checkboxes, dates, lists of those
    for name, value in properties.items():
        assert not isinstance(value, dict), name
        assert not isinstance(value, list) or all(not isinstance(item, (dict, list)) for item in value), name


def test_a_parameter_edited_in_the_properties_is_what_runs(vault: Vault) -> None:
    steps = intake_one(vault)
    edit_properties(the_plan(vault), title="Badge printer ribbons", folder="Facilities")
    [job] = steps.examine_approved([approve_the_only_plan(vault)]).jobs
    assert (job.params.title, job.params.folder) == ("Badge printer ribbons", "Facilities")  # type: ignore[attr-defined]


def test_a_misspelt_parameter_fails_the_plan_with_its_name_instead_of_being_ignored(vault: Vault) -> None:
    steps = intake_one(vault)
    edit_properties(the_plan(vault), titel="typo")
    outcome = steps.examine_approved([approve_the_only_plan(vault)])
    assert outcome.jobs == []
    failed = frontmatter(the_plan(vault, Folder.FAILED))
    assert "titel" in failed["error"]


def test_an_empty_property_is_a_parameter_not_given(vault: Vault) -> None:
    steps = intake_one(vault)
    edit_properties(the_plan(vault), folder=None)
    path = the_plan(vault)
    path.write_text(path.read_text().replace("status: pending_approval", "folder:\nstatus: pending_approval"))
    [job] = steps.examine_approved([approve_the_only_plan(vault)]).jobs
    assert job.params.folder == "Notes"  # type: ignore[attr-defined]  # the default


# --- "What will be sent" follows the properties ----------------------------------------------------


def test_editing_a_waiting_plan_makes_what_will_be_sent_again(vault: Vault) -> None:
    steps = intake_one(vault)
    plan = the_plan(vault)
    edit_properties(plan, title="Badge printer ribbons")
    assert steps.refresh_plans([plan.name]) == 1
    shown = sent_block(plan)
    assert '"title": "Badge printer ribbons"' in shown
    assert "Please file this" not in shown.split('"content"')[0]
    assert frontmatter(plan)["title"] == "Badge printer ribbons"


def test_a_waiting_plan_edited_into_an_invalid_one_says_why_it_would_fail(vault: Vault) -> None:
    steps = intake_one(vault)
    plan = the_plan(vault)
    edit_properties(plan, title="")
    steps.refresh_plans([plan.name])
    assert "would fail" in sent_block(plan) and "title" in sent_block(plan)


def test_refreshing_a_plan_twice_writes_it_once(vault: Vault) -> None:
    """Our own write is a fixed point: the watcher's next look changes nothing (no loop)."""
    steps = intake_one(vault)
    plan = the_plan(vault)
    edit_properties(plan, title="Badge printer ribbons")
    assert steps.refresh_plans([plan.name]) == 1
    written = plan.read_bytes()
    os.utime(plan)  # a look for another reason
    assert steps.refresh_plans([plan.name]) == 0
    assert plan.read_bytes() == written


def test_refreshing_keeps_the_persons_frontmatter_byte_for_byte(vault: Vault) -> None:
    steps = intake_one(vault)
    plan = the_plan(vault)
    text = plan.read_text().replace("folder: Notes", "folder: 'Facilities'   # moved")
    plan.write_text(text)
    steps.refresh_plans([plan.name])
    after = plan.read_text()
    assert "folder: 'Facilities'   # moved" in after
    assert '"folder": "Facilities"' in sent_block(plan)


def test_a_plan_decided_while_its_note_was_refreshed_leaves_no_copy_in_plans(vault: Vault) -> None:
    """The move to Approved/ came between the refresh's read and its write (the rename recreated it)."""
    steps = intake_one(vault)
    plan = the_plan(vault)
    edit_properties(plan, title="Badge printer ribbons")
    approved = vault.folder(Folder.APPROVED) / plan.name
    approved.write_bytes(plan.read_bytes())  # the person's move, as the refresh's write lands
    steps.refresh_plans([plan.name])
    assert not plan.exists()
    assert frontmatter(approved)["title"] == "Badge printer ribbons"


# --- the decision in the note ---------------------------------------------------------------------


async def test_a_done_note_shows_who_approved_it_through_which_door_and_when(vault: Vault) -> None:
    steps = intake_one(vault)
    plan_id = str(frontmatter(the_plan(vault))["id"])
    Decisions(vault.layout).approve(plan_id, Decider("alice", "cli"))
    await run(vault, steps, the_plan(vault, Folder.APPROVED).name)
    done = the_plan(vault, Folder.DONE)
    text = done.read_text()
    assert "## Decide\n" not in text and "ai-employee approve" not in text
    assert re.search(r"## Decision\nApproved by \*\*alice\*\* via cli · \d{4}-", text), text
    properties = frontmatter(done)
    assert (properties["decided_by"], properties["decided_via"]) == ("alice", "cli")


async def test_a_plan_moved_by_hand_records_the_vault_door_and_when_it_was_seen(vault: Vault) -> None:
    steps = intake_one(vault)
    await run(vault, steps, approve_the_only_plan(vault))
    done = the_plan(vault, Folder.DONE)
    properties = frontmatter(done)
    assert properties["decided_via"] == "vault" and "decided_by" not in properties
    assert str(properties["decided_at"]).startswith("20")
    assert "Approved in the vault" in done.read_text()


def test_a_rejected_note_shows_the_reason_in_its_body(vault: Vault) -> None:
    steps = intake_one(vault)
    plan_id = str(frontmatter(the_plan(vault))["id"])
    Decisions(vault.layout).reject(plan_id, "we have spare ribbons", Decider("bob", "telegram"))
    rejected = the_plan(vault, Folder.REJECTED)
    steps.examine_rejected([rejected.name])
    text = rejected.read_text()
    assert "## Decide\n" not in text
    assert "Rejected by **bob** via telegram" in text
    assert "Reason: we have spare ribbons" in text


def test_a_failed_plan_forgets_its_approver_so_a_retry_is_not_credited_to_them(vault: Vault) -> None:
    steps = intake_one(vault)
    edit_properties(the_plan(vault), title="")
    plan_id = str(frontmatter(the_plan(vault))["id"])
    Decisions(vault.layout).approve(plan_id, Decider("alice", "cli"))
    steps.examine_approved([the_plan(vault, Folder.APPROVED).name])
    failed = the_plan(vault, Folder.FAILED)
    properties = frontmatter(failed)
    assert not {"decided_by", "decided_via", "decided_at"} & set(properties)
    assert "Approved by **alice** via cli" in failed.read_text()  # the story stays in the body


async def test_a_failed_plan_retried_shows_the_new_decision_once_and_the_latest_outcome(vault: Vault) -> None:
    steps = intake_one(vault)
    edit_properties(the_plan(vault), title="")
    plan_id = str(frontmatter(the_plan(vault))["id"])
    Decisions(vault.layout).approve(plan_id, Decider("alice", "cli"))
    steps.examine_approved([the_plan(vault, Folder.APPROVED).name])
    edit_properties(the_plan(vault, Folder.FAILED), title="Fixed title")
    Decisions(vault.layout).approve(plan_id, Decider("bob", "telegram"))
    await run(vault, steps, the_plan(vault, Folder.APPROVED).name)
    text = the_plan(vault, Folder.DONE).read_text()
    assert text.count("## Decision\n") == 1 and "Approved by **bob** via telegram" in text
    assert "alice" not in text
    assert text.count("## Result\n") == 1 and "## Error" not in text


def test_a_plan_returned_after_an_edit_forgets_its_approver(vault: Vault) -> None:
    steps = intake_one(vault)
    plan_id = str(frontmatter(the_plan(vault))["id"])
    Decisions(vault.layout).approve(plan_id, Decider("alice", "cli"))
    name = the_plan(vault, Folder.APPROVED).name
    [job] = steps.examine_approved([name]).jobs
    edit_properties(vault.folder(Folder.APPROVED) / name, title="Changed after approval")
    assert steps.start_job(job) is False
    returned = the_plan(vault)
    properties = frontmatter(returned)
    assert not {"decided_by", "decided_via", "decided_at"} & set(properties)
    assert '"title": "Changed after approval"' in sent_block(returned)
    assert "## Decide\n" in returned.read_text()


# --- links ----------------------------------------------------------------------------------------


def wikilinks(path: Path) -> list[str]:
    return re.findall(r"\[\[([^\]|#]+)", path.read_text(encoding="utf-8"))


def resolves(vault: Vault, target: str) -> bool:
    """As Obsidian resolves a wikilink: a vault path, or a note's name anywhere in the vault."""
    if (vault.root / target).exists() or (vault.root / f"{target}.md").exists():
        return True
    return any(path.stem == target for path in vault.root.rglob("*.md"))


async def test_every_link_in_the_notes_opens_also_after_they_moved_to_done(vault: Vault) -> None:
    vault.inbox("pump 3 report #2.txt")
    steps = vault.steps()
    steps.intake_files(["pump 3 report #2.txt"], renamed={"pump 3 report #2.txt"})
    action = notes(vault.folder(Folder.NEEDS_ACTION))[0]
    plan = the_plan(vault)
    assert plan.stem in wikilinks(action) and action.stem in wikilinks(plan)
    await run(vault, steps, approve_the_only_plan(vault))
    done = notes(vault.folder(Folder.DONE))
    assert len(done) == 2
    for note in done:
        links = wikilinks(note)
        assert links, note
        for target in links:
            assert resolves(vault, target), (note.name, target)


# --- older notes --------------------------------------------------------------------------------


def test_an_old_note_with_nested_params_that_reaches_approved_still_runs(vault: Vault) -> None:
    steps = vault.steps()
    (vault.folder(Folder.APPROVED) / "old plan.md").write_text(OLD_PLAN)
    [job] = steps.examine_approved(["old plan.md"]).jobs
    assert job.params.title == "Pump 3 leaking"  # type: ignore[attr-defined]


def test_migration_rewrites_old_notes_into_flat_properties(vault: Vault) -> None:
    plan = vault.folder(Folder.PLANS) / "old plan.md"
    plan.write_text(OLD_PLAN)
    [migrated] = migrate_vault(vault.layout)
    assert migrated.path == "Plans/old plan.md" and migrated.skipped is None
    properties = frontmatter(plan)
    assert "params" not in properties and "planner_usage" not in properties
    assert (properties["title"], properties["content"]) == ("Pump 3 leaking", "oil under the pump")
    assert (properties["planner_input_tokens"], properties["planner_output_tokens"]) == (12, 3)
    assert "The `params` property above" not in plan.read_text()
    assert '"title": "Pump 3 leaking"' in sent_block(plan)


def test_migration_moves_an_old_result_into_the_body_with_flat_summaries(vault: Vault) -> None:
    failed = vault.folder(Folder.FAILED) / "old result.md"
    failed.write_text(
        OLD_PLAN.replace("status: pending_approval", "status: failed").replace(
            "planner: template", "planner: template\nresult:\n  work_order_id: 42\n  url: https://cmms/wo/42"
        )
    )
    migrate_vault(vault.layout)
    properties = frontmatter(failed)
    assert "result" not in properties
    assert (properties["work_order"], properties["result_url"]) == ("42", "https://cmms/wo/42")
    assert '"work_order_id": 42' in failed.read_text()


def test_migration_is_idempotent_and_a_dry_run_changes_nothing(vault: Vault) -> None:
    plan = vault.folder(Folder.PLANS) / "old plan.md"
    plan.write_text(OLD_PLAN)
    [would] = migrate_vault(vault.layout, dry_run=True)
    assert would.changes and plan.read_text() == OLD_PLAN
    assert len(migrate_vault(vault.layout)) == 1
    migrated = plan.read_bytes()
    assert migrate_vault(vault.layout) == []
    assert plan.read_bytes() == migrated


def test_migration_leaves_a_plan_that_is_being_run_as_it_was_approved(vault: Vault) -> None:
    approved = vault.folder(Folder.APPROVED) / "old plan.md"
    approved.write_text(OLD_PLAN)
    [note] = migrate_vault(vault.layout, in_flight={"plan-20261121-101500-a1b2c3"}.__contains__)
    assert note.skipped is not None
    assert approved.read_text() == OLD_PLAN


def test_the_daemon_migrates_old_notes_at_start(vault: Vault) -> None:
    plan = vault.folder(Folder.PLANS) / "old plan.md"
    plan.write_text(OLD_PLAN)
    vault.steps().recover()
    assert "params" not in frontmatter(plan)
