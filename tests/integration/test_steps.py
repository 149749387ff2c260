"""The pipeline's steps driven directly on a temporary vault: intake, recovery after a crash at each
point, approval and the last check before a plan runs."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ai_employee.config import load_settings
from ai_employee.executors.vault_note import VaultNoteExecutor
from ai_employee.helper_process import HelperProcessError
from ai_employee.model.executor import ExecutionContext
from ai_employee.model.jobs import ExecutionJob
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.pipeline.execution import LedgerJournal
from ai_employee.pipeline.steps import VaultSteps
from ai_employee.planners.template import TemplatePlanner
from ai_employee.vault.audit import AuditLog
from ai_employee.vault.fs import TEMP_PREFIX
from ai_employee.vault.layout import Folder, VaultLayout
from ai_employee.vault.ledger import ActionRow, AuditRecord, Ledger
from ai_employee.vault.notes import json_block
from tests.conftest import audit_lines, frontmatter, notes

TEXT = "Please file this: the visitor badge printer needs new ribbons.\n"


class Crash(BaseException):
    """Stands for the process dying at this point (nothing after it runs)."""


class CrashingLedger(Ledger):
    """The real ledger, with the process 'dying' right after (or instead of) one call."""

    def __init__(self, path: Path, crash_at: str) -> None:
        super().__init__(path)
        self.crash_at = crash_at

    def insert_actions(self, rows: Sequence[ActionRow], audit: Sequence[AuditRecord] = ()) -> None:
        super().insert_actions(rows, audit)
        if self.crash_at == "after the claim is recorded":
            raise Crash

    def set_action_state(
        self, updates: Sequence[tuple[str, str, str | None]], audit: Sequence[AuditRecord] = ()
    ) -> None:
        if self.crash_at == "before the notes are recorded":
            raise Crash
        super().set_action_state(updates, audit)


class Vault:
    """A vault and a factory of 'processes' (steps with their own ledger connection) on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = VaultLayout(root)
        self.layout.create()
        self.settings = load_settings(environ={"AIE_VAULT": str(root), "AIE_VAULT__SETTLE_SECONDS": "0"})
        self.ledgers: list[Ledger] = []
        self.latest: VaultSteps | None = None

    def steps(self, ledger: Ledger | None = None) -> VaultSteps:
        ledger = ledger or Ledger(self.layout.state_dir / "state.db")
        self.ledgers.append(ledger)
        audit = AuditLog(ledger, self.layout.folder(Folder.LOGS))
        registry = ExecutorRegistry([VaultNoteExecutor()])
        self.latest = VaultSteps(self.layout, ledger, audit, self.settings, registry, TemplatePlanner())
        return self.latest

    def crashing_steps(self, crash_at: str) -> VaultSteps:
        return self.steps(CrashingLedger(self.layout.state_dir / "state.db", crash_at))

    def inbox(self, name: str, content: bytes | str = TEXT) -> Path:
        path = self.layout.folder(Folder.INBOX) / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def folder(self, folder: Folder) -> Path:
        return self.layout.folder(folder)

    def close(self) -> None:
        for ledger in self.ledgers:
            ledger.close()


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Vault]:
    monkeypatch.chdir(tmp_path)  # no stray ./config.yaml
    opened = Vault(tmp_path / "vault")
    yield opened
    opened.close()


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(TEMP_PREFIX)]


def attachments(vault: Vault) -> list[Path]:
    return sorted(path for path in vault.folder(Folder.ATTACHMENTS).rglob("*") if path.is_file())


def events(vault: Vault, name: str) -> list[dict[str, object]]:
    """Audit lines of one event, after the flush the pipeline service makes when its queue drains."""
    if vault.latest is not None:
        vault.latest.flush_audit()
    return [line for line in audit_lines(vault.root) if line["event"] == name]


def assert_exactly_one_action_and_plan(vault: Vault, content: str = TEXT) -> None:
    assert len(notes(vault.folder(Folder.NEEDS_ACTION))) == 1
    assert len(notes(vault.folder(Folder.PLANS))) == 1
    assert os.listdir(vault.folder(Folder.INBOX)) == []
    [attachment] = attachments(vault)
    assert attachment.read_text() == content
    assert attachment.stat().st_nlink == 1
    assert temp_files(vault.root) == []
    ledger = Ledger(vault.layout.state_dir / "state.db")
    try:
        assert ledger.count_actions() == 1
        assert ledger.unfinished_actions() == []
    finally:
        ledger.close()
    assert len(events(vault, "action.created")) == 1
    assert len(events(vault, "plan.created")) == 1


# --- intake --------------------------------------------------------------------------------


def test_intake_turns_each_inbox_file_into_an_action_and_a_plan(vault: Vault) -> None:
    names = ["a.txt", "b.txt", "c.txt"]
    inodes = {name: vault.inbox(name, f"Note {name}\n").stat().st_ino for name in names}
    steps = vault.steps()
    outcome = steps.intake_files(names, renamed=set(names))
    assert len(outcome.actions) == 3
    assert len(notes(vault.folder(Folder.NEEDS_ACTION))) == 3
    assert len(notes(vault.folder(Folder.PLANS))) == 3
    assert os.listdir(vault.folder(Folder.INBOX)) == []
    for item in outcome.actions:
        row = steps.ledger.action(item.row.action_id)
        assert row is not None
        assert row.state == "planned"
        attachment = vault.root / row.attachments[0]
        assert attachment.stat().st_ino == inodes[str(row.inbox_name)]  # linked, not copied
        action = frontmatter(vault.root / row.note_rel)
        plan = frontmatter(vault.root / row.plan_rel)
        assert (action["id"], action["status"]) == (row.action_id, "planned")
        assert action["source_ref"] == row.inbox_name
        assert (plan["id"], plan["action_id"]) == (row.plan_id, row.action_id)
        assert plan["status"] == "pending_approval"
    assert len(events(vault, "action.created")) == 3
    assert len(events(vault, "plan.created")) == 3


def test_file_younger_than_the_settle_time_is_deferred(vault: Vault) -> None:
    vault.settings.vault.settle_seconds = 30.0
    vault.inbox("still-writing.txt")
    outcome = vault.steps().intake_files(["still-writing.txt"], renamed=set())
    assert outcome.actions == []
    [(name, seconds)] = outcome.deferred
    assert name == "still-writing.txt"
    assert 0 < seconds <= 30
    assert (vault.folder(Folder.INBOX) / "still-writing.txt").exists()


def test_intake_ignores_temporary_names(vault: Vault) -> None:
    vault.inbox("download.part")
    vault.inbox(".hidden")
    outcome = vault.steps().intake_files(["download.part", ".hidden"], renamed=set())
    assert outcome.actions == [] and outcome.quarantined == []
    assert sorted(os.listdir(vault.folder(Folder.INBOX))) == [".hidden", "download.part"]


def test_a_second_look_at_a_taken_file_does_nothing(vault: Vault) -> None:
    vault.inbox("a.txt")
    steps = vault.steps()
    steps.intake_files(["a.txt"], renamed={"a.txt"})
    outcome = steps.intake_files(["a.txt"], renamed={"a.txt"})
    assert outcome.actions == []
    assert_exactly_one_action_and_plan(vault)


def test_batches_begun_back_to_back_are_all_written_once(vault: Vault) -> None:
    """The service begins batch N+1 before it finishes batch N."""
    for name in ("a.txt", "b.txt", "c.txt"):
        vault.inbox(name, f"Note {name}\n")
    steps = vault.steps()
    first = steps.begin_intake(steps.prepare_intake(["a.txt", "b.txt"], renamed={"a.txt", "b.txt"}))
    second = steps.begin_intake(steps.prepare_intake(["c.txt"], renamed={"c.txt"}))

    written = steps.finish_intake(first).actions + steps.finish_intake(second).actions

    assert sorted(item.row.source_ref for item in written) == ["a.txt", "b.txt", "c.txt"]
    assert len(notes(vault.folder(Folder.PLANS))) == 3
    assert os.listdir(vault.folder(Folder.INBOX)) == []
    assert steps.ledger.unfinished_actions() == []


def test_a_file_taken_by_the_batch_before_is_not_taken_again(vault: Vault) -> None:
    """Both batches read the file before either wrote it (a second hint for the same name)."""
    vault.inbox("a.txt")
    steps = vault.steps()
    first = steps.prepare_intake(["a.txt"], renamed={"a.txt"})
    second = steps.prepare_intake(["a.txt"], renamed={"a.txt"})

    steps.commit_intake(first)
    outcome = steps.commit_intake(second)

    assert outcome.actions == []
    assert_exactly_one_action_and_plan(vault)


def test_a_file_replaced_after_it_was_read_is_read_again(vault: Vault) -> None:
    vault.inbox("a.txt", "First version\n")
    steps = vault.steps()
    prepared = steps.prepare_intake(["a.txt"], renamed={"a.txt"})
    replacement = vault.root / "replacement.txt"
    replacement.write_text("Second version\n")
    os.replace(replacement, vault.folder(Folder.INBOX) / "a.txt")  # another inode under the same name

    outcome = steps.commit_intake(prepared)

    assert outcome.actions == []
    assert outcome.deferred == [("a.txt", 0.0)]
    assert notes(vault.folder(Folder.NEEDS_ACTION)) == []
    assert steps.intake_files(["a.txt"], renamed={"a.txt"}).actions[0].text == "Second version\n"


def test_prepared_batches_never_share_an_action_id(vault: Vault) -> None:
    names = [f"note {number}.txt" for number in range(300)]
    for name in names:
        vault.inbox(name)
    steps = vault.steps()
    prepared = [steps.prepare_intake(names[start : start + 100], set(names)) for start in (0, 100, 200)]

    ids = [action_id for batch in prepared for action_id in batch.action_ids()]

    assert len(set(ids)) == 300
    for batch in prepared:
        steps.commit_intake(batch)
    assert steps.ledger.count_actions() == 300


class DeadHelper:
    """A helper process whose module cannot be imported: the request goes into its pipe, the
    answer never comes (what `HelperProcess` does then: tests/unit/test_helper_process.py)."""

    pid = None

    def send(self, *args: object) -> None:
        pass

    def receive(self) -> list[object]:
        raise HelperProcessError(5, "the test helper exited before it answered")

    def close(self) -> None:
        pass


def test_a_writer_that_cannot_start_leaves_the_daemon_writing_itself(vault: Vault) -> None:
    vault.inbox("a.txt")
    steps = vault.steps()
    steps.committer = DeadHelper()  # type: ignore[assignment]

    steps.start_committer()

    assert steps.intake_files(["a.txt"], renamed={"a.txt"}).actions
    assert_exactly_one_action_and_plan(vault)


def test_a_renderer_that_cannot_start_leaves_the_daemon_rendering_itself(vault: Vault) -> None:
    vault.inbox("a.txt")
    steps = vault.steps()
    steps.intake_renderer = DeadHelper()  # type: ignore[assignment]

    steps.start_intake_renderer()

    assert steps.intake_files(["a.txt"], renamed={"a.txt"}).actions
    assert_exactly_one_action_and_plan(vault)


# --- recovery after a crash at each point ----------------------------------------------------


def crash_during_intake(vault: Vault, crash_at: str) -> ActionRow:
    vault.inbox("report.txt")
    crashed = vault.crashing_steps(crash_at)
    with pytest.raises(Crash):
        crashed.intake_files(["report.txt"], renamed={"report.txt"})
    [row] = crashed.ledger.unfinished_actions()
    crashed.ledger.close()
    return row


def restart(vault: Vault) -> VaultSteps:
    steps = vault.steps()
    to_plan, approved = steps.recover()
    assert (to_plan, approved) == ([], [])  # the template planner plans inline
    return steps


def test_recovery_after_the_claim_was_recorded_with_the_file_still_in_inbox(vault: Vault) -> None:
    row = crash_during_intake(vault, "after the claim is recorded")
    assert row.state == "claimed"
    assert (vault.folder(Folder.INBOX) / "report.txt").exists()
    restart(vault)
    assert_exactly_one_action_and_plan(vault)


def test_recovery_after_the_attachment_was_linked_but_the_inbox_name_not_removed(vault: Vault) -> None:
    row = crash_during_intake(vault, "after the claim is recorded")
    attachment = vault.root / row.attachments[0]
    attachment.parent.mkdir(parents=True, exist_ok=True)
    os.link(vault.folder(Folder.INBOX) / "report.txt", attachment)  # the crash came after link(2)
    restart(vault)
    assert_exactly_one_action_and_plan(vault)


def test_recovery_after_the_file_left_inbox_but_before_any_note(vault: Vault) -> None:
    row = crash_during_intake(vault, "after the claim is recorded")
    attachment = vault.root / row.attachments[0]
    attachment.parent.mkdir(parents=True, exist_ok=True)
    os.link(vault.folder(Folder.INBOX) / "report.txt", attachment)
    os.unlink(vault.folder(Folder.INBOX) / "report.txt")
    restart(vault)
    assert_exactly_one_action_and_plan(vault)


def test_recovery_after_the_notes_were_written_but_not_recorded(vault: Vault) -> None:
    crash_during_intake(vault, "before the notes are recorded")
    assert len(notes(vault.folder(Folder.NEEDS_ACTION))) == 1
    stale = vault.folder(Folder.NEEDS_ACTION) / f"{TEMP_PREFIX}0123456789ab-half written.md"
    stale.write_text("---\nid: half")  # a batch write the crash interrupted
    restart(vault)
    assert_exactly_one_action_and_plan(vault)


def test_recovery_followed_by_a_rescan_of_inbox_makes_nothing_new(vault: Vault) -> None:
    crash_during_intake(vault, "after the claim is recorded")
    steps = vault.steps()
    outcome = steps.intake_files(["report.txt"], renamed=set())  # the reconciler saw it before recovery ran
    assert outcome.actions == []
    steps.recover()
    assert_exactly_one_action_and_plan(vault)


def test_claimed_file_that_vanished_before_the_link_is_abandoned(vault: Vault) -> None:
    row = crash_during_intake(vault, "after the claim is recorded")
    os.unlink(vault.folder(Folder.INBOX) / "report.txt")  # the human took it back
    steps = restart(vault)
    found = steps.ledger.action(row.action_id)
    assert found is not None and found.state == "abandoned"
    assert notes(vault.folder(Folder.NEEDS_ACTION)) == []


# --- approval and the last check before running -----------------------------------------------


def approve_the_only_plan(vault: Vault) -> str:
    [plan] = notes(vault.folder(Folder.PLANS))
    os.rename(plan, vault.folder(Folder.APPROVED) / plan.name)
    return plan.name


def intake_one(vault: Vault) -> VaultSteps:
    vault.inbox("report.txt")
    steps = vault.steps()
    steps.intake_files(["report.txt"], renamed={"report.txt"})
    return steps


def test_approved_plan_becomes_a_job_for_its_executor(vault: Vault) -> None:
    steps = intake_one(vault)
    name = approve_the_only_plan(vault)
    plan = frontmatter(vault.folder(Folder.APPROVED) / name)
    outcome = steps.examine_approved([name])
    [job] = outcome.jobs
    assert (job.plan_id, job.action_id, job.name) == (plan["id"], plan["action_id"], name)
    assert job.executor.name == "vault.note"
    assert outcome.granted == [(plan["id"], plan["action_id"])]
    execution = steps.ledger.execution(str(plan["id"]))
    assert execution is not None and execution.state == "approved"
    assert [line["id"] for line in events(vault, "approval.granted")] == [plan["id"]]


def context_for(vault: Vault, steps: VaultSteps, job: ExecutionJob) -> ExecutionContext:
    return ExecutionContext(
        plan_id=job.plan_id,
        action_id=job.action_id,
        vault_root=vault.root,
        live=False,
        journal=LedgerJournal(steps.ledger, job.plan_id),
    )


async def test_approved_plan_runs_and_lands_in_done_with_its_action_note(vault: Vault) -> None:
    steps = intake_one(vault)
    [job] = steps.examine_approved([approve_the_only_plan(vault)]).jobs
    assert steps.start_job(job) is True
    result = await job.executor.execute(job.params, context_for(vault, steps, job))
    finished = steps.record_result(job, dry_run=False, result=result, error=None)
    assert finished.status == "done"
    assert os.listdir(vault.folder(Folder.APPROVED)) == []
    [plan_note] = [path for path in notes(vault.folder(Folder.DONE)) if frontmatter(path)["type"] == "plan"]
    properties = frontmatter(plan_note)
    # the result is read in the body; the properties hold flat summaries of it (decision 0009)
    assert (properties["status"], properties["result_note"], properties["result_path"]) == (
        "done",
        result["note"],
        result["path"],
    )
    assert "result" not in properties
    assert json_block(result) in plan_note.read_text(encoding="utf-8")
    assert notes(vault.folder(Folder.NEEDS_ACTION)) == []  # the action note joined its plan
    assert (vault.root / result["path"]).is_file()
    assert [line["id"] for line in events(vault, "plan.executed")] == [job.plan_id]


async def test_copy_of_a_done_plan_put_back_into_approved_is_not_run_again(vault: Vault) -> None:
    steps = intake_one(vault)
    [job] = steps.examine_approved([approve_the_only_plan(vault)]).jobs
    steps.start_job(job)
    result = await job.executor.execute(job.params, context_for(vault, steps, job))
    finished = steps.record_result(job, dry_run=False, result=result, error=None)
    done_plan = vault.root / finished.final_rel
    copy = vault.folder(Folder.APPROVED) / done_plan.name
    copy.write_bytes(done_plan.read_bytes())
    outcome = steps.examine_approved([copy.name])
    assert outcome.jobs == []
    assert outcome.duplicates == [job.plan_id]
    assert len(events(vault, "plan.executed")) == 1
    assert [line["id"] for line in events(vault, "plan.duplicate_ignored")] == [job.plan_id]


def test_plan_edited_after_approval_goes_back_to_plans(vault: Vault) -> None:
    steps = intake_one(vault)
    name = approve_the_only_plan(vault)
    [job] = steps.examine_approved([name]).jobs
    approved = vault.folder(Folder.APPROVED) / name
    approved.write_text(approved.read_text() + "\nOne more thing: use the blue ribbons.\n")

    assert steps.start_job(job) is False

    assert os.listdir(vault.folder(Folder.APPROVED)) == []
    [returned] = notes(vault.folder(Folder.PLANS))
    assert frontmatter(returned)["status"] == "pending_approval"
    assert "use the blue ribbons" in returned.read_text()
    execution = steps.ledger.execution(job.plan_id)
    assert execution is not None and execution.state == "returned"
    assert [line["id"] for line in events(vault, "approval.revoked")] == [job.plan_id]
    assert events(vault, "plan.executed") == []


def test_plan_returned_after_an_edit_can_be_approved_again(vault: Vault) -> None:
    steps = intake_one(vault)
    name = approve_the_only_plan(vault)
    [job] = steps.examine_approved([name]).jobs
    approved = vault.folder(Folder.APPROVED) / name
    approved.write_text(approved.read_text() + "\nedited\n")
    steps.start_job(job)
    name = approve_the_only_plan(vault)
    [again] = steps.examine_approved([name]).jobs
    assert again.plan_id == job.plan_id
    assert steps.start_job(again) is True


def test_plan_edited_after_approval_while_the_daemon_was_down_goes_back_to_plans(vault: Vault) -> None:
    steps = intake_one(vault)
    name = approve_the_only_plan(vault)
    steps.examine_approved([name])  # approved, then the process stopped before it ran
    approved = vault.folder(Folder.APPROVED) / name
    approved.write_text(approved.read_text().replace("pending_approval", "pending_approval\nnote: edited"))
    later = vault.steps()
    _, to_examine = later.recover()
    assert to_examine == [name]
    outcome = later.examine_approved(to_examine)
    assert outcome.jobs == []
    assert len(outcome.revoked) == 1
    assert len(notes(vault.folder(Folder.PLANS))) == 1


def test_rejected_plan_moved_to_approved_later_is_never_run(vault: Vault) -> None:
    steps = intake_one(vault)
    [plan] = notes(vault.folder(Folder.PLANS))
    rejected = vault.folder(Folder.REJECTED) / plan.name
    os.rename(plan, rejected)
    assert steps.examine_rejected([plan.name]).rejected == [frontmatter(rejected)["id"]]
    os.rename(rejected, vault.folder(Folder.APPROVED) / plan.name)
    outcome = steps.examine_approved([plan.name])
    assert outcome.jobs == []
    [failed] = outcome.finished
    assert failed.status == "failed" and "rejected earlier" in str(failed.error)
    assert (vault.root / failed.final_rel).parent == vault.folder(Folder.FAILED)
    assert events(vault, "plan.executed") == []
    assert not list((vault.root / "Notes").glob("*.md"))  # vault.note never ran


async def test_a_plan_looked_at_twice_before_it_ran_is_recorded_and_logged_once(vault: Vault) -> None:
    """Two looks at one approved plan (the rescan after recovery and the watcher's first rescan, at a
    start after the plan was moved and edited while the daemon was stopped) give two jobs; the
    second result is not recorded again: one `plan.executed`, one announcement."""
    steps = intake_one(vault)
    name = approve_the_only_plan(vault)
    [first] = steps.examine_approved([name]).jobs
    [second] = steps.examine_approved([name]).jobs
    assert second.resumed and second.attempt == first.attempt
    assert steps.start_job(first) and steps.start_job(second)  # both under way before either ended
    results = []
    for job in (first, second):
        result = await job.executor.execute(job.params, context_for(vault, steps, job))
        results.append(steps.record_result(job, dry_run=False, result=result, error=None))
    assert [finished.repeat for finished in results] == [False, True]
    assert len([path for path in notes(vault.folder(Folder.DONE)) if path.name.endswith(" plan.md")]) == 1
    assert [line["id"] for line in events(vault, "plan.executed")] == [first.plan_id]
