"""Issue 4 end to end: the real daemon (a subprocess) with Atlas and Manus on loopback fakes.

A message dropped into Inbox/ becomes a plan; approved, it creates one Atlas work order or
one Manus task whose answer lands in Research/. Dry-run sends nothing; a SIGKILL while a
Manus task runs does not start a second task.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, drop, frontmatter, note_result, notes, wait_for
from tests.fakes.atlas_server import threaded_atlas_with_pump
from tests.fakes.manus_server import ManusFake
from tests.fakes.threaded import ThreadedFake

EMAIL = "admin@example.com"
PASSWORD = "s3cret-pass"
MANUS_KEY = "e2e-manus-key"


@pytest.fixture
def atlas() -> Iterator[ThreadedFake]:
    with threaded_atlas_with_pump(EMAIL, PASSWORD) as threaded:
        yield threaded


@pytest.fixture
def manus() -> Iterator[ThreadedFake]:
    threaded = ThreadedFake(ManusFake(MANUS_KEY, auto_finish_after_polls=2, auto_answer="Acme sells seals."))
    threaded.start()
    yield threaded
    threaded.stop()


def service_env(env: dict[str, str], atlas: ThreadedFake, manus: ThreadedFake) -> dict[str, str]:
    return {
        **env,
        "ATLAS_BASE_URL": atlas.fake.base_url,
        "ATLAS_EMAIL": EMAIL,
        "ATLAS_PASSWORD": PASSWORD,
        "MANUS_BASE_URL": manus.fake.base_url,
        "MANUS_API_KEY": MANUS_KEY,
        "AIE_PLANNER": "template",
        "AIE_MANUS__POLL_INITIAL_SECONDS": "0.05",
        "AIE_MANUS__POLL_MAX_SECONDS": "0.2",
    }


def plan_for(vault: Path, text: str) -> Path:
    def found() -> Path | None:
        return next((p for p in notes(vault / "Plans") if text in p.read_text(encoding="utf-8")), None)

    plan: Path = wait_for(found, message=f"a plan mentioning {text!r}")
    return plan


def done_plan(vault: Path, plan_id: str) -> dict[str, object]:
    def found() -> dict[str, object] | None:
        for path in notes(vault / "Done") + notes(vault / "Failed"):
            properties = frontmatter(path)
            if properties.get("id") == plan_id:
                return {**properties, "result": note_result(path)}  # the full result: in the body
        return None

    properties: dict[str, object] = wait_for(found, timeout=60, message=f"{plan_id} executed")
    return properties


def test_live_work_order_and_research_through_the_daemon(
    vault: Path, daemon_env: dict[str, str], atlas: ThreadedFake, manus: ThreadedFake
) -> None:
    daemon = DaemonProcess(vault, service_env(daemon_env, atlas, manus), ["--live"]).start()
    try:
        drop(vault, "pump.txt", "Pump 3 is leaking oil on line 2, please send someone.")
        drop(vault, "seals.txt", "Please research suppliers of mechanical pump seals and compare prices.")
        pump = frontmatter(plan_for(vault, "Pump 3"))
        seals = frontmatter(plan_for(vault, "pump seals"))
        assert (pump["action"], seals["action"]) == ("atlas.work_order", "manus.research")
        for plan in (pump, seals):
            daemon.cli("approve", str(plan["id"]), "--vault", str(vault), check=True)

        work_order = done_plan(vault, str(pump["id"]))
        assert work_order["status"] == "done" and work_order["dry_run"] is False
        result = work_order["result"]
        assert isinstance(result, dict) and result["custom_id"] == "WO000001"
        orders = atlas.call(lambda: list(atlas.fake.work_orders.values()))  # type: ignore[attr-defined]
        assert len(orders) == 1 and orders[0]["asset"] is not None

        research = done_plan(vault, str(seals["id"]))
        assert research["status"] == "done", research.get("error")
        outcome = research["result"]
        assert isinstance(outcome, dict) and outcome["credit_usage"] == 42
        note = vault / (str(outcome["note"])[2:-2] + ".md")
        assert frontmatter(note)["task_id"] == outcome["task_id"]
        assert "Acme sells seals." in note.read_text(encoding="utf-8")
    finally:
        daemon.kill()


def test_dry_run_sends_nothing_to_either_service(
    vault: Path, daemon_env: dict[str, str], atlas: ThreadedFake, manus: ThreadedFake
) -> None:
    daemon = DaemonProcess(vault, service_env(daemon_env, atlas, manus)).start()
    try:
        drop(vault, "pump.txt", "Pump 3 is leaking oil on line 2, please send someone.")
        drop(vault, "seals.txt", "Please research suppliers of mechanical pump seals and compare prices.")
        plans = [frontmatter(plan_for(vault, "Pump 3")), frontmatter(plan_for(vault, "pump seals"))]
        for plan in plans:
            daemon.cli("approve", str(plan["id"]), "--vault", str(vault), check=True)
        for plan in plans:
            executed = done_plan(vault, str(plan["id"]))
            assert executed["dry_run"] is True
            rendered = executed["result"]
            assert isinstance(rendered, dict) and rendered["requests"]
            assert PASSWORD not in str(rendered) and MANUS_KEY not in str(rendered)
        assert atlas.call(lambda: len(atlas.fake.requests)) == 0
        assert manus.call(lambda: len(manus.fake.requests)) == 0
    finally:
        daemon.kill()


def test_sigkill_while_a_manus_task_runs_resumes_it_without_a_second_task(
    vault: Path, daemon_env: dict[str, str], atlas: ThreadedFake, manus: ThreadedFake
) -> None:
    fake: ManusFake = manus.fake  # type: ignore[assignment]
    manus.call(setattr, fake, "auto_finish_after_polls", None)  # the task runs until we say so
    env = service_env(daemon_env, atlas, manus)
    daemon = DaemonProcess(vault, env, ["--live"]).start()
    drop(vault, "seals.txt", "Please research suppliers of mechanical pump seals and compare prices.")
    plan = frontmatter(plan_for(vault, "pump seals"))
    daemon.cli("approve", str(plan["id"]), "--vault", str(vault), check=True)
    wait_for(
        lambda: manus.call(lambda: len(fake.requests_to("GET", "/v1/tasks/.+"))) >= 2,
        message="the daemon polling the Manus task",
    )
    daemon.kill()

    restarted = DaemonProcess(vault, env, ["--live"]).start()
    try:
        task_id = manus.call(lambda: fake.only_task().id)
        manus.call(fake.complete, task_id, "Finished after the restart.", credits=7)
        executed = done_plan(vault, str(plan["id"]))
        assert executed["status"] == "done", executed.get("error")
        result = executed["result"]
        assert isinstance(result, dict) and result["task_id"] == task_id and result["credit_usage"] == 7
        assert manus.call(lambda: fake.created) == 1
    finally:
        restarted.kill()


def test_a_lost_answer_then_a_sigkill_still_make_exactly_one_work_order(
    vault: Path, daemon_env: dict[str, str], atlas: ThreadedFake, manus: ThreadedFake
) -> None:
    # Atlas creates the work order and the connection drops before the answer; the retry's
    # search for the plan's marker hangs, and the daemon is killed right there.
    atlas.call(atlas.fake.inject, "POST", "/work-orders", drop="after")
    atlas.call(atlas.fake.inject, "POST", "/work-orders/search", delay=8)
    daemon = DaemonProcess(vault, service_env(daemon_env, atlas, manus), ["--live"]).start()
    try:
        drop(vault, "pump.txt", "Pump 3 on line 2 is leaking oil, needs fixing today")
        plan = frontmatter(plan_for(vault, "Pump 3"))
        daemon.cli("approve", str(plan["id"]), "--vault", str(vault), check=True)
        wait_for(
            lambda: atlas.call(lambda: atlas.fake.requests_to("POST", "/work-orders/search")),
            message="the marker search after the lost answer",
        )
        assert atlas.call(lambda: len(atlas.fake.work_orders)) == 1
        daemon.kill()
        daemon.start()
        result = done_plan(vault, str(plan["id"]))
        assert result["status"] == "done", result.get("error")
        orders = atlas.call(lambda: list(atlas.fake.work_orders.values()))
        assert len(orders) == 1
        assert isinstance(result["result"], dict) and result["result"]["work_order_id"] == orders[0]["id"]
        assert len(atlas.call(lambda: atlas.fake.requests_to("POST", "/work-orders"))) == 1
    finally:
        daemon.kill()
