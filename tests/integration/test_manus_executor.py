"""manus.research against the loopback Manus: dry-run, a live task to a note, resume after a crash."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ai_employee.clients.manus import ManusClient
from ai_employee.clients.retry import RetryPolicy
from ai_employee.config import Settings
from ai_employee.executors.manus import (
    JOURNAL_KEY,
    ManusResearchExecutor,
    ResearchParams,
    create,
    marker_for,
)
from ai_employee.model.executor import ExecutionContext, ExecutionError, ExecutorUnavailable
from ai_employee.vault.notes import parse_note
from tests.fakes.journal import FileJournal
from tests.fakes.manus_server import ManusFake

FAST = RetryPolicy(attempts=4, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
KEY = "test-manus-key"
PLAN = "plan-20261121-101500-a1b2c3"
ACTION = "act-20261121-101500-a1b2c3"
REPORT = ("suppliers.csv", b"name,price\nAcme,10\n", "text/csv")


@pytest.fixture
async def fake() -> AsyncIterator[ManusFake]:
    server = ManusFake(KEY, auto_finish_after_polls=2, auto_answer="Acme sells seals.", auto_files=[REPORT])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    (root / "Attachments").mkdir(parents=True)
    return root


def context(vault: Path, *, live: bool = True, files: list[Path] | None = None) -> ExecutionContext:
    return ExecutionContext(
        plan_id=PLAN,
        action_id=ACTION,
        vault_root=vault,
        live=live,
        journal=FileJournal(vault.parent / "journal.json"),
        action_files=files or [],
    )


def executor_for(fake: ManusFake, **options: Any) -> ManusResearchExecutor:
    settings: dict[str, Any] = {"poll_initial_seconds": 0.001, "poll_max_seconds": 0.01, "retry": FAST}
    settings.update(options)
    return ManusResearchExecutor(KEY, fake.base_url, **settings)


def params(**changes: Any) -> ResearchParams:
    return ResearchParams.model_validate({"prompt": "Find suppliers of pump seals", **changes})


def journal(vault: Path) -> FileJournal:
    return FileJournal(vault.parent / "journal.json")


async def test_dry_run_sends_nothing_and_masks_the_key(fake: ManusFake, vault: Path) -> None:
    rendered = executor_for(fake).render_dry_run(params(profile="max"), context(vault, live=False))
    assert fake.requests == []
    assert KEY not in json.dumps(rendered)
    create_request = rendered["requests"][0]
    assert create_request["headers"]["API_KEY"] == "***"
    assert create_request["json"]["agentProfile"] == "manus-1.6-max"
    assert create_request["json"]["prompt"].endswith(marker_for(PLAN))


async def test_missing_key_makes_it_unavailable_with_a_clear_error(vault: Path) -> None:
    executor = create(Settings())
    assert executor.unavailable_reason() == "MANUS_API_KEY is not set"
    assert (
        executor.render_dry_run(params(), context(vault, live=False))["unavailable"]
        == "MANUS_API_KEY is not set"
    )
    with pytest.raises(ExecutorUnavailable, match=r"manus\.research cannot run: MANUS_API_KEY is not set"):
        await executor.execute(params(), context(vault))


async def test_live_task_becomes_a_research_note_with_its_files_and_credits(
    fake: ManusFake, vault: Path
) -> None:
    executor = executor_for(fake)
    result = await executor.execute(params(), context(vault))
    task = fake.only_task()
    assert (result["task_id"], result["status"], result["credit_usage"]) == (task.id, "completed", 42)
    assert result["task_url"] == f"https://manus.im/app/{task.id}"
    [note] = (vault / "Research").iterdir()
    assert result["note"] == f"[[Research/{note.stem}]]"
    properties, body = parse_note(note.read_text(encoding="utf-8"))
    assert properties["id"] == "research-20261121-101500-a1b2c3"
    assert properties["type"] == "research"
    assert (properties["plan_id"], properties["action_id"], properties["task_id"]) == (PLAN, ACTION, task.id)
    assert (properties["task_url"], properties["credit_usage"]) == (result["task_url"], 42)
    assert "Acme sells seals." in body
    [attachment] = (vault / "Attachments").rglob("*.csv")
    assert attachment.read_bytes() == REPORT[1]
    assert attachment.name == "a1b2c3-suppliers.csv"
    relative = attachment.relative_to(vault).as_posix()
    assert properties["attachments"] == result["files"] == [f"[[{relative}]]"]
    await executor.aclose()


async def test_profile_and_mode_are_sent_as_manus_names(fake: ManusFake, vault: Path) -> None:
    executor = executor_for(fake)
    await executor.execute(params(profile="lite", task_mode="chat"), context(vault))
    sent = fake.requests_to("POST", "/v1/tasks")[0].json
    assert (sent["agentProfile"], sent["taskMode"]) == ("manus-1.6-lite", "chat")
    await executor.aclose()


async def test_default_profile_setting_applies_when_the_plan_names_none(fake: ManusFake, vault: Path) -> None:
    executor = executor_for(fake, default_profile="max")
    await executor.execute(params(), context(vault))
    assert fake.requests_to("POST", "/v1/tasks")[0].json["agentProfile"] == "manus-1.6-max"
    await executor.aclose()


async def test_small_action_files_are_attached_and_large_ones_skipped_with_a_reason(
    fake: ManusFake, vault: Path
) -> None:
    small = vault / "Attachments" / "photo.jpg"
    small.write_bytes(b"\xff\xd8jpeg")
    large = vault / "Attachments" / "video.mp4"
    large.write_bytes(b"0" * 2048)
    executor = executor_for(fake, max_inline_bytes=1024)
    result = await executor.execute(params(), context(vault, files=[small, large]))
    [attachment] = fake.requests_to("POST", "/v1/tasks")[0].json["attachments"]
    assert attachment == {
        "filename": "photo.jpg",
        "fileData": "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8jpeg").decode(),
    }
    [skipped] = result["attachments_skipped"]
    assert skipped["file"] == "Attachments/video.mp4"
    assert "limit" in skipped["reason"]
    await executor.aclose()


async def test_running_the_plan_again_returns_the_recorded_result(fake: ManusFake, vault: Path) -> None:
    first = await executor_for(fake).execute(params(), context(vault))
    before = len(fake.requests)
    second = await executor_for(fake).execute(params(), context(vault))
    assert second == first
    assert len(fake.requests) == before


async def test_restart_mid_task_resumes_polling_and_creates_no_second_task(
    fake: ManusFake, vault: Path
) -> None:
    # The run before the restart created the task and recorded its id.
    earlier = ManusClient(KEY, fake.base_url, retry=FAST)
    created = await earlier.create_task(
        {"prompt": f"Find suppliers\n\n{marker_for(PLAN)}", "agentProfile": "manus-1.6"}
    )
    await earlier.aclose()
    journal(vault).put(
        JOURNAL_KEY,
        {"state": "created", "marker": marker_for(PLAN), "attempt": 1, "task_id": created["task_id"]},
    )
    fresh = executor_for(fake)
    result = await fresh.execute(params(), context(vault))
    assert result["task_id"] == created["task_id"]
    assert fake.created == 1
    assert len(fake.requests_to("POST", "/v1/tasks")) == 1
    await fresh.aclose()


async def test_crash_after_intent_finds_the_task_by_its_marker(fake: ManusFake, vault: Path) -> None:
    earlier = ManusClient(KEY, fake.base_url, retry=FAST)
    created = await earlier.create_task(
        {"prompt": f"Find suppliers\n\n{marker_for(PLAN)}", "agentProfile": "manus-1.6"}
    )
    await earlier.aclose()
    journal(vault).put(JOURNAL_KEY, {"state": "intent", "marker": marker_for(PLAN), "attempt": 1})
    fresh = executor_for(fake)
    result = await fresh.execute(params(), context(vault))
    assert result["task_id"] == created["task_id"]
    assert fake.created == 1
    await fresh.aclose()


async def test_crash_after_intent_with_no_task_at_manus_creates_one(fake: ManusFake, vault: Path) -> None:
    journal(vault).put(JOURNAL_KEY, {"state": "intent", "marker": marker_for(PLAN), "attempt": 1})
    fresh = executor_for(fake)
    await fresh.execute(params(), context(vault))
    assert fake.created == 1
    await fresh.aclose()


async def test_dropped_create_answer_starts_one_task(fake: ManusFake, vault: Path) -> None:
    fake.inject("POST", "/v1/tasks", drop="after")
    executor = executor_for(fake)
    await executor.execute(params(), context(vault))
    assert len(fake.tasks) == 1
    await executor.aclose()


async def test_failed_task_fails_the_plan_and_approving_again_starts_a_fresh_task(vault: Path) -> None:
    fake = ManusFake(KEY)
    await fake.start()
    executor = executor_for(fake)

    def fail_when_created(message: str, data: Any) -> None:
        if message == "waiting for the Manus task":
            fake.fail(data["task_id"], "the site refused access")

    ctx = context(vault)
    ctx.progress = fail_when_created
    with pytest.raises(ExecutionError, match="ended failed: the site refused access"):
        await executor.execute(params(), ctx)
    fake.auto_finish_after_polls = 1
    result = await executor.execute(params(), context(vault))
    assert len(fake.tasks) == 2
    assert fake.tasks[result["task_id"]].prompts[0].endswith(marker_for(PLAN, 2))
    await executor.aclose()
    await fake.stop()


async def test_follow_up_continues_the_named_task(fake: ManusFake, vault: Path) -> None:
    earlier = ManusClient(KEY, fake.base_url, retry=FAST)
    first = await earlier.create_task({"prompt": "Find suppliers", "agentProfile": "manus-1.6"})
    fake.complete(first["task_id"], "Acme.")
    await earlier.aclose()
    executor = executor_for(fake)
    result = await executor.execute(
        params(prompt="And their prices?", continue_task_id=first["task_id"]), context(vault)
    )
    assert result["task_id"] == first["task_id"]
    assert fake.requests_to("POST", "/v1/tasks")[-1].json["taskId"] == first["task_id"]
    assert len(fake.tasks) == 1
    await executor.aclose()


async def test_follow_up_waits_for_its_own_answer_not_the_previous_turns(vault: Path) -> None:
    fake = ManusFake(KEY, keep_status_on_continue=True)
    await fake.start()
    earlier = ManusClient(KEY, fake.base_url, retry=FAST)
    first = await earlier.create_task({"prompt": "Find suppliers", "agentProfile": "manus-1.6"})
    fake.complete(first["task_id"], "first answer")
    await earlier.aclose()

    def answer_once_seen(message: str, data: Any) -> None:
        if message == "Manus task completed" and fake.only_task().status == "completed":
            fake.complete(first["task_id"], "second answer")

    ctx = context(vault)
    ctx.progress = answer_once_seen
    executor = executor_for(fake)
    result = await executor.execute(
        params(prompt="And their prices?", continue_task_id=first["task_id"]), ctx
    )
    note = vault / (result["note"][2:-2] + ".md")
    text = note.read_text(encoding="utf-8")
    assert "second answer" in text
    assert "first answer" not in text
    await executor.aclose()
    await fake.stop()


async def test_task_still_running_at_the_deadline_is_a_retryable_error_and_resumes(
    vault: Path,
) -> None:
    fake = ManusFake(KEY)
    await fake.start()
    executor = executor_for(fake, max_wait_seconds=0.05)
    with pytest.raises(ExecutionError, match="still pending") as failure:
        await executor.execute(params(), context(vault))
    assert failure.value.retryable
    fake.complete(fake.only_task().id, "late answer")
    result = await executor_for(fake).execute(params(), context(vault))
    assert result["status"] == "completed"
    assert fake.created == 1
    await executor.aclose()
    await fake.stop()
