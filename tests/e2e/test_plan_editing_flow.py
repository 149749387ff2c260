"""A person's day with a running daemon: list what waits, edit a plan in place as Obsidian does,
see "What will be sent" follow, approve it by its short id, read the decision in Done/."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import DaemonProcess, drop, frontmatter, notes, wait_for


def test_a_plan_edited_in_place_shows_and_runs_its_new_parameters(vault: Path, daemon: DaemonProcess) -> None:
    daemon.start()
    drop(vault, "badges.txt", "Please file this: the visitor badge printer needs new ribbons.")
    plan = wait_for(lambda: next(iter(notes(vault / "Plans")), None), message="a plan")
    short = str(frontmatter(plan)["id"]).rsplit("-", 1)[1]

    listed = daemon.cli("list", "--vault", str(vault), "--json", check=True)
    [waiting] = json.loads(listed.stdout)
    assert (waiting["short_id"], waiting["action"]) == (short, "vault.note")

    # Obsidian's Properties panel: the note written in place (IN_CLOSE_WRITE), the body kept
    text = plan.read_text(encoding="utf-8")
    edited = re.sub(r"(?m)^title: .*$", "title: Badge printer ribbons", text, count=1)
    plan.write_text(edited, encoding="utf-8")
    wait_for(
        lambda: '"title": "Badge printer ribbons"' in plan.read_text(encoding="utf-8"),
        message="'What will be sent' made again from the edited property",
    )
    assert daemon.output().count("What will be sent' made again") == 1  # our write is not an edit

    daemon.cli("approve", short, "--vault", str(vault), check=True)
    done = wait_for(
        lambda: next((n for n in notes(vault / "Done") if n.name.endswith(" plan.md")), None),
        message="the plan in Done/",
    )
    properties = frontmatter(done)
    assert properties["decided_via"] == "cli" and properties["decided_by"]
    assert "result" not in properties and str(properties["result_note"]).startswith("[[Notes/")
    body = done.read_text(encoding="utf-8")
    assert "## Decision\nApproved by **" in body and "## Decide\n" not in body
    note = vault / (str(properties["result_note"])[2:-2] + ".md")
    assert "# Badge printer ribbons" in note.read_text(encoding="utf-8")


def test_a_short_id_that_names_nothing_exits_4(vault: Path, daemon: DaemonProcess) -> None:
    result = daemon.cli("approve", "abcdef", "--vault", str(vault))
    assert result.returncode == 4 and "no plan with the short id abcdef" in result.stderr
