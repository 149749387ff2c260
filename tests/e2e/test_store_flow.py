"""The audit store with the real daemon: one execution is one `plan.executed`, `history` while
stopped, `GET /tasks`, a PostgreSQL that is down at start or goes away while running, and a
SIGKILL in the middle of a burst."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DaemonProcess, audit_lines, drop, frontmatter, notes, skip_or_fail, wait_for
from tests.fakes.postgres import PrivatePostgres, postgres_bin

pytestmark = pytest.mark.slow


def _port(daemon: DaemonProcess) -> int:
    info = daemon.info()
    assert info is not None
    return int(info["port"])


def _get(daemon: DaemonProcess, path: str) -> Any:
    return httpx.get(f"http://127.0.0.1:{_port(daemon)}{path}", timeout=10).json()


def _executed_total(daemon: DaemonProcess) -> float:
    text = httpx.get(f"http://127.0.0.1:{_port(daemon)}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aie_plans_executed_total{")
    )


def _only_plan(vault: Path, folder: str = "Plans") -> Path:
    return wait_for(lambda: (found := notes(vault / folder)) and found[0], message=f"a plan in {folder}/")


def test_a_plan_approved_and_edited_while_stopped_runs_and_is_logged_once(
    vault: Path, daemon: DaemonProcess
) -> None:
    daemon.start()
    drop(vault, "badge.txt", "Please file this: the visitor badge printer needs new ribbons.")
    plan = _only_plan(vault)
    assert daemon.terminate() == 0

    approved = vault / "Approved" / plan.name
    os.rename(plan, approved)  # stop -> move to Approved -> edit -> start
    approved.write_text(approved.read_text().replace("ribbons", "blue ribbons"))
    daemon.start()

    done = wait_for(
        lambda: [path for path in notes(vault / "Done") if path.name.endswith(" plan.md")],
        message="the plan in Done/",
    )
    plan_id = frontmatter(done[0])["id"]
    wait_for(
        lambda: any(line["event"] == "plan.executed" for line in audit_lines(vault)), message="the audit"
    )
    assert _executed_total(daemon) == 1

    # GET /tasks and /tasks/{id} while it runs
    wait_for(  # the store writes a fraction of a second behind the vault
        lambda: (
            [task["plan_id"] for task in _get(daemon, "/tasks?status=done&since=1d&limit=5").get("tasks", [])]
            == [plan_id]
        ),
        message="GET /tasks lists the done item",
    )
    one = _get(daemon, f"/tasks/{plan_id}")
    assert one["task"]["status"] == "done"
    assert [item["kind"] for item in one["interventions"]] == ["approve"]
    assert _get(daemon, "/tasks?since=yesterday-ish").get("error")

    # stopped: every in-flight step has finished and the audit log is flushed
    assert daemon.terminate() == 0
    assert [line["id"] for line in audit_lines(vault) if line["event"] == "plan.executed"] == [plan_id]

    # history while the daemon is stopped
    short = plan_id.rsplit("-", 1)[1]
    story = daemon.cli("history", short, "--vault", str(vault), check=True).stdout
    assert "executed" in story and "approved by vault via vault" in story
    as_json = json.loads(
        daemon.cli("history", done[0].name, "--json", "--vault", str(vault), check=True).stdout
    )
    assert as_json["task"]["plan_id"] == plan_id
    listing = daemon.cli(
        "history", "--since", "7d", "--status", "done", "--vault", str(vault), check=True
    ).stdout
    assert short in listing
    missing = daemon.cli("history", "ffffff", "--vault", str(vault))
    assert missing.returncode == 4 and "no item" in missing.stderr


def test_postgresql_unreachable_at_start_is_one_line_and_exit_1(vault: Path, daemon: DaemonProcess) -> None:
    daemon.env["DATABASE_URL"] = "postgresql://aie:hunter2-secret@127.0.0.1:1/aie"
    result = daemon.cli("start", "--vault", str(vault), "--port", "0", timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "connection refused" in lines[0] and "hunter2-secret" not in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (vault / ".ai-employee" / "daemon.json").exists()


@pytest.fixture
def private_postgres() -> Any:
    if postgres_bin() is None:
        skip_or_fail("initdb and pg_ctl are not installed (apt install postgresql)")
    server = PrivatePostgres().init()
    server.start()
    yield server
    server.close()


def _store_rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """The rows, or none while the store has not made its tables yet."""
    import psycopg

    with psycopg.connect(url) as connection:
        try:
            return list(connection.execute(query).fetchall())
        except psycopg.errors.UndefinedTable:
            return []


def test_postgresql_gone_while_running_spools_says_so_and_writes_everything_when_back(
    vault: Path, daemon: DaemonProcess, private_postgres: PrivatePostgres
) -> None:
    daemon.env["DATABASE_URL"] = private_postgres.url
    daemon.start()
    drop(vault, "first.txt", "Please file this: the first note")
    wait_for(
        lambda: _store_rows(private_postgres.url, "SELECT count(*) FROM checkpoints") == [(2,)],
        message="the first item in PostgreSQL",
    )

    private_postgres.stop()
    for number in range(5):
        drop(vault, f"while-down-{number}.txt", f"Please file this: note {number} while the database is down")
    wait_for(lambda: len(notes(vault / "Plans")) == 6, message="six plans: the vault does not wait")

    def spooling() -> bool:
        status = _get(daemon, "/status")
        return status["services"]["store"]["state"] == "retrying" and status["store"]["spooled"] >= 10

    wait_for(spooling, message="status: the store retrying, records in the spool")
    ready = httpx.get(f"http://127.0.0.1:{_port(daemon)}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["detail"]["store"] == "retrying"
    assert "spool" in _get(daemon, "/status")["services"]["store"]["last_error"]

    private_postgres.start()
    wait_for(
        lambda: _get(daemon, "/status")["store"]["state"] == "writing",
        timeout=30,
        message="the store writing again",
    )
    rows = _store_rows(private_postgres.url, "SELECT action_id, step FROM checkpoints ORDER BY id")
    assert len(rows) == 12  # received and planned, for each of the six
    assert len({action for action, _ in rows}) == 6
    planned_before_received = [
        action
        for action, step in rows
        if step == "planned" and (action, "received") not in rows[: rows.index((action, step))]
    ]
    assert planned_before_received == []  # written in order
    assert not (vault / ".ai-employee" / "store-spool.jsonl").exists()


BURST = 400


def test_after_a_sigkill_mid_burst_every_item_has_one_task_its_checkpoints_once_and_who_decided(
    vault: Path, daemon: DaemonProcess
) -> None:
    daemon.start()
    drop(vault, "approve-me.txt", "Please file this: approve me from the command line")
    drop(vault, "move-me.txt", "Please file this: approve me by moving the note")
    wait_for(lambda: len(notes(vault / "Plans")) == 2, message="two plans")
    by_cli, by_move = sorted(notes(vault / "Plans"), key=lambda path: "move-me" in path.read_text())
    daemon.cli("approve", frontmatter(by_cli)["id"], "--vault", str(vault), check=True)
    os.rename(by_move, vault / "Approved" / by_move.name)

    dropper = threading.Thread(
        target=lambda: [
            drop(vault, f"burst-{n:04d}.txt", f"Please file this: burst note {n}") for n in range(BURST)
        ]
    )
    dropper.start()
    wait_for(lambda: len(notes(vault / "Plans")) > 50, message="the burst under way")
    daemon.kill()
    dropper.join()
    daemon.start()
    wait_for(lambda: len(notes(vault / "Plans")) == BURST, timeout=120, message="every burst file planned")
    code = daemon.terminate()  # a graceful stop writes what the store has queued
    assert code == 0, daemon.output()[-4000:]

    db = sqlite3.connect(vault / ".ai-employee" / "store.db")
    tasks = db.execute("SELECT count(*), count(DISTINCT action_id) FROM tasks").fetchone()
    assert tasks == (BURST + 2, BURST + 2)
    per_item = db.execute(
        "SELECT action_id, sum(step = 'received'), sum(step = 'planned') FROM checkpoints GROUP BY action_id"
    ).fetchall()
    assert len(per_item) == BURST + 2
    assert {(received, planned) for _, received, planned in per_item} == {(1, 1)}
    decisions = db.execute("SELECT kind, who, door FROM interventions ORDER BY door").fetchall()
    assert [(kind, door) for kind, _, door in decisions] == [("approve", "cli"), ("approve", "vault")]
    assert all(who for _, who, _ in decisions)
    executed = db.execute("SELECT count(*) FROM checkpoints WHERE step = 'executed'").fetchone()
    assert executed == (2,)
