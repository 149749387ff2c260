"""SIGKILL at random moments: every file yields exactly one action and one plan; every approved plan
runs exactly once."""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess, audit_lines, drop, frontmatter, notes, wait_for

pytestmark = pytest.mark.slow

FILES = 300


def _temp_files(vault: Path) -> list[Path]:
    return [path for path in vault.rglob(".aie-tmp-*")]


def test_300_files_survive_5_sigkills_then_300_approvals_survive_2_more(
    vault: Path, daemon: DaemonProcess
) -> None:
    rng = random.Random(int(os.environ.get("AIE_CRASH_SEED", "20261121")))
    daemon.start()

    dropping = threading.Event()
    dropping.set()

    def dropper() -> None:
        for number in range(FILES):
            drop(vault, f"crash-{number:03d}.txt", f"Crash test note {number}: please file this")
            if number % 20 == 19:
                time.sleep(0.05)  # bursts of 20, as a sync tool delivers them
        dropping.clear()

    thread = threading.Thread(target=dropper)
    thread.start()
    kills = 0
    while kills < 5:
        time.sleep(rng.uniform(0.05, 0.4))
        daemon.kill()
        kills += 1
        daemon.start(wait=rng.random() < 0.6)
    thread.join()
    if daemon.process is None or daemon.process.poll() is not None:
        daemon.start()
    wait_for(
        lambda: len(notes(vault / "Plans")) == FILES and len(notes(vault / "Needs_Action")) == FILES,
        timeout=120,
        message="300 actions and 300 plans",
    )
    wait_for(
        lambda: not _temp_files(vault) and not os.listdir(vault / "Inbox"),
        timeout=30,
        message="no temp files and an empty Inbox",
    )

    action_ids = [frontmatter(path)["id"] for path in notes(vault / "Needs_Action")]
    plans = notes(vault / "Plans")
    assert len(set(action_ids)) == FILES
    assert len({frontmatter(path)["id"] for path in plans}) == FILES
    bodies = {
        path.read_text().split("Crash test note ", 1)[1].split(":", 1)[0]
        for path in notes(vault / "Needs_Action")
    }
    assert bodies == {str(number) for number in range(FILES)}
    created = [line["id"] for line in audit_lines(vault) if line["event"] == "action.created"]
    assert sorted(created) == sorted(action_ids)

    # approve all 300 by moving them, with 2 SIGKILLs during execution
    plan_ids = {frontmatter(path)["id"] for path in plans}
    for plan in plans:
        os.rename(plan, vault / "Approved" / plan.name)
    for _ in range(2):
        time.sleep(rng.uniform(0.02, 0.2))
        daemon.kill()
        daemon.start()
    wait_for(
        lambda: len([p for p in notes(vault / "Done") if p.name.endswith(" plan.md")]) == FILES,
        timeout=120,
        message="300 executed plans in Done/",
    )
    wait_for(
        lambda: not os.listdir(vault / "Approved") and not _temp_files(vault),
        timeout=30,
        message="an empty Approved/",
    )

    executed = collections.Counter(
        line["id"] for line in audit_lines(vault) if line["event"] == "plan.executed"
    )
    assert set(executed) == plan_ids
    assert set(executed.values()) == {1}
    wait_for(lambda: len(notes(vault / "Done")) == 2 * FILES, timeout=30, message="action notes in Done/ too")
    assert not notes(vault / "Failed")
    assert len(list((vault / "Notes").glob("*.md"))) == FILES
    assert daemon.terminate() == 0
