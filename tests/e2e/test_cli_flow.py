"""End to end through the real `ai-employee` CLI as a subprocess on a temporary vault."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

from tests.conftest import DaemonProcess, audit_lines, drop, frontmatter, note_result, notes, wait_for


def _plan_for(vault: Path, text: str) -> Path:
    def found() -> Path | None:
        for plan in notes(vault / "Plans"):
            if text in plan.read_text(encoding="utf-8"):
                return plan
        return None

    result: Path = wait_for(found, message=f"a plan mentioning {text!r}")
    return result


def _move(plan: Path, folder: str) -> Path:
    target = plan.parent.parent / folder / plan.name
    os.rename(plan, target)
    return target


def test_drop_approve_reject_and_stop_through_the_cli(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    drop(vault, "pump.txt", "Pump 3 on line 2 is leaking oil, needs fixing today")
    drop(vault, "idea.md", "Remember to order more coffee filters for the break room")
    drop(vault, "shred.txt", "Please file the old invoices under archive")

    pump = _plan_for(vault, "Pump 3")
    idea = _plan_for(vault, "coffee filters")
    shred = _plan_for(vault, "old invoices")
    assert len(notes(vault / "Needs_Action")) == 3
    assert frontmatter(pump)["status"] == "pending_approval"

    dashboard = vault / "Dashboard.md"
    wait_for(
        lambda: "Pending approvals (3)" in dashboard.read_text(),
        message="three pending approvals on the dashboard",
    )
    assert f"[[Plans/{pump.stem}|" in dashboard.read_text()

    # approve by moving, approve from the CLI, reject by moving
    _move(pump, "Approved")
    approved = daemon.cli("approve", frontmatter(idea)["id"], "--vault", str(vault))
    assert approved.returncode == 0, approved.stderr
    _move(shred, "Rejected")

    done = wait_for(
        lambda: (
            len([n for n in notes(vault / "Done") if n.name.endswith(" plan.md")]) == 2
            and notes(vault / "Done")
        ),
        message="two executed plans in Done/",
    )
    plans_done = [path for path in done if path.name.endswith(" plan.md")]
    for plan in plans_done:
        properties = frontmatter(plan)
        assert properties["status"] == "done"
        assert "executed_at" in properties and "result" not in properties  # the result: in the body
        assert note_result(plan) is not None
    actions_done = [path for path in done if not path.name.endswith(" plan.md")]
    assert {frontmatter(path)["status"] for path in actions_done} == {"done"}

    rejected = wait_for(
        lambda: [
            p
            for p in notes(vault / "Rejected")
            if frontmatter(p).get("status") == "rejected" and frontmatter(p)["type"] == "plan"
        ],
        message="the rejected plan marked rejected",
    )
    assert len(rejected) == 1

    # an invalid plan goes to Failed/
    bad = vault / "Approved" / "broken.md"
    bad.write_text("---\nid: plan-broken\ntype: plan\naction: vault.note\n---\nno params\n")
    wait_for(lambda: notes(vault / "Failed"), message="the invalid plan in Failed/")
    assert "could not" in notes(vault / "Failed")[0].read_text() or "error" in frontmatter(
        notes(vault / "Failed")[0]
    )

    wait_for(
        lambda: [line["event"] for line in audit_lines(vault)].count("plan.failed") == 1,
        message="the audit line of the failed plan",
    )
    events = [line["event"] for line in audit_lines(vault)]
    assert events.count("action.created") == 3
    assert events.count("plan.created") == 3
    assert events.count("approval.granted") == 2
    assert events.count("approval.denied") == 1
    assert events.count("plan.executed") == 2
    assert events.count("plan.failed") == 1
    for line in audit_lines(vault):
        assert {"ts", "event", "id"} <= set(line)

    wait_for(
        lambda: "Pending approvals (0)" in dashboard.read_text(), message="nothing pending on the dashboard"
    )
    board = dashboard.read_text()
    assert frontmatter(plans_done[0])["id"] in board and "| pipeline | running |" in board

    status = daemon.cli("status", "--vault", str(vault), "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["running"] is True and data["dry_run"] is True and isinstance(data["pid"], int)
    assert data["services"]["pipeline"]["state"] == "running"
    assert data["vault"]["Done"] == 4 and data["vault"]["Failed"] == 1

    port = daemon.info()["port"]  # type: ignore[index]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert "aie_plans_executed_total" in metrics

    stopped = daemon.cli("stop", "--vault", str(vault))
    assert stopped.returncode == 0, stopped.stderr
    assert daemon.process is not None and daemon.process.wait(timeout=30) == 0
    after = daemon.cli("status", "--vault", str(vault), "--json")
    assert after.returncode == 3
    assert json.loads(after.stdout)["running"] is False


def test_status_without_a_daemon_says_so_and_exits_3(vault: Path, daemon: DaemonProcess) -> None:
    result = daemon.cli("status", "--vault", str(vault))
    assert result.returncode == 3
    assert "No daemon is running" in result.stdout


def test_files_dropped_while_stopped_are_handled_at_next_start(vault: Path, daemon: DaemonProcess) -> None:
    for number in range(5):
        drop(vault, f"offline-{number}.txt", f"note number {number} written while the daemon was down")
    daemon.start()
    wait_for(lambda: len(notes(vault / "Plans")) == 5, message="five plans")
    assert daemon.terminate() == 0
    daemon.start()
    wait_for(lambda: daemon.cli("status", "--vault", str(vault)).returncode == 0, message="restarted daemon")
    drop(vault, "after-restart.txt", "one more after the restart")
    wait_for(lambda: len(notes(vault / "Plans")) == 6, message="six plans")
    wait_for(lambda: len(notes(vault / "Needs_Action")) == 6, message="six actions")
    wait_for(
        lambda: [line["event"] for line in audit_lines(vault)].count("action.created") == 6,
        message="six action.created lines",
    )


def test_sigterm_stops_gracefully_with_exit_0(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    drop(vault, "one.txt", "a last note before stopping")
    _plan_for(vault, "a last note")
    assert daemon.terminate() == 0
    assert daemon.info() is None


def test_a_second_daemon_on_the_same_vault_is_refused(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    second = daemon.cli("start", "--vault", str(vault), "--port", "0", timeout=30)
    assert second.returncode != 0
    assert "already running" in second.stderr
