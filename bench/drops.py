"""What the bench drops, and how: files staged in a dot-folder of the vault, then renamed into
Inbox/ (how browsers, mail clients and sync tools deliver), each drop stamped on the bench clock.

Every dropped file carries a key, `k000123k`, in its name and on its first line. Our daemon puts
the first line into the plan's file name; another program usually keeps the input's name. So an
output is matched to its input by that key, and latency is per file, not per count.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from bench.inotify import now_ns
from bench.raw import syncfs

log = structlog.get_logger(__name__)

FOLDERS = (
    "Inbox",
    "Needs_Action",
    "Plans",
    "Approved",
    "Rejected",
    "Done",
    "Failed",
    "Quarantine",
    "Attachments",
    "Logs",
)
STAGING = ".bench-staging"
KEY = re.compile(r"k(\d{6})k")

# Three kinds of message, so that the template planner takes each of its main paths.
_TEXTS = (
    "Reminder {key}: order more coffee filters for the break room before Friday.\n\n"
    "Also check whether the kitchen needs new mugs.\n",
    "Pump 3 on line 2 is leaking oil {key}\n\nNoticed during the morning round; the drip tray is"
    " half full. Needs fixing today.\n",
    "Please research {key} suppliers of food-grade conveyor belts in Europe and compare prices.\n",
)
NOTE_TEXT = _TEXTS[0]  # planned as vault.note: the approval scenario executes these


def key_of(index: int) -> str:
    return f"k{index:06d}k"


def index_of(name: str) -> int | None:
    """The key in an output's name, or None when the program names its outputs otherwise."""
    found = KEY.search(name)
    return int(found.group(1)) if found else None


def make_vault(root: Path, *, handbook: bool = True) -> Path:
    root.mkdir(parents=True)
    for folder in FOLDERS:
        (root / folder).mkdir()
    if handbook:
        (root / "Company_Handbook.md").write_text("# Handbook\n\nSafety first.\n", encoding="utf-8")
    return root


@dataclass
class Dropped:
    index: int
    name: str
    at_ns: int


class Dropper:
    """Stages inputs (not timed) and renames them into the watched folder (timed)."""

    def __init__(self, vault: Path, inbox: Path | None = None) -> None:
        self.vault = vault
        self.inbox = inbox or vault / "Inbox"
        self.staging = vault / STAGING
        self.staging.mkdir(exist_ok=True)

    @staticmethod
    def name(index: int) -> str:
        return f"msg {key_of(index)}.txt"

    def stage(self, indexes: Iterable[int], *, text: str | None = None) -> list[int]:
        staged: list[int] = []
        for index in indexes:
            template = text if text is not None else _TEXTS[index % len(_TEXTS)]
            content = template.format(key=key_of(index)).encode("utf-8")
            fd = os.open(self.staging / self.name(index), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            staged.append(index)
        return staged

    def settle_disk(self) -> None:
        """Flush the staged files before timing, as the raw loop flushes its own before it starts."""
        syncfs(self.vault)

    def drop(self, index: int) -> Dropped:
        name = self.name(index)
        stamp = now_ns()
        os.rename(self.staging / name, self.inbox / name)
        return Dropped(index, name, stamp)

    def drop_all(self, indexes: Sequence[int]) -> list[Dropped]:
        """As fast as one process can rename: a burst."""
        staging, inbox = self.staging, self.inbox
        dropped: list[Dropped] = []
        for index in indexes:
            name = self.name(index)
            stamp = now_ns()
            os.rename(staging / name, inbox / name)
            dropped.append(Dropped(index, name, stamp))
        return dropped

    def drop_paced(self, indexes: Sequence[int], interval: float) -> list[Dropped]:
        """One file every `interval` seconds, on a fixed schedule (a late drop does not shift the rest)."""
        dropped: list[Dropped] = []
        start = time.monotonic()
        for number, index in enumerate(indexes):
            delay = start + number * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            dropped.append(self.drop(index))
        return dropped


def fill_done(vault: Path, notes: int, *, ledger_rows: bool = True) -> None:
    """A vault with a history: `notes` notes in Done/ (plan + action pairs), written fast (no fsync).

    With `ledger_rows`, the ledger also holds the rows such a history leaves (one action and one
    execution per pair), so that anything that reads the ledger per event shows up as well.
    """
    done = vault / "Done"
    base = datetime(2025, 1, 1, tzinfo=UTC)
    pairs = notes // 2
    actions: list[tuple[object, ...]] = []
    executions: list[tuple[object, ...]] = []
    for number in range(pairs):
        when = base + timedelta(seconds=number * 37)
        stamp = f"{when:%Y%m%d-%H%M%S}"
        short = f"{number:06x}"
        action_id = f"act-{stamp}-{short}"
        plan_id = f"plan-{stamp}-{short}"
        stem = f"{stamp} old-message-{number} {short}"
        iso = when.isoformat(timespec="seconds")
        _write(
            done / f"{stem}.md",
            f"---\nid: {action_id}\ntype: action\nsource: file\nreceived: '{iso}'\n"
            f"title: Old message {number}\nstatus: done\nattachments: ['[[Attachments/x/{short}.txt]]']\n"
            f"---\n# Old message {number}\n\nSomething that was handled long ago.\n",
        )
        _write(
            done / f"{stem} plan.md",
            f"---\nid: {plan_id}\ntype: plan\naction_id: {action_id}\naction: vault.note\n"
            f"params:\n  title: Old message {number}\n  content: handled\n  folder: Notes\n"
            f"status: done\nplanner: template\nrisk: low\ncreated: '{iso}'\nexecuted_at: '{iso}'\n"
            f"dry_run: false\nresult:\n  writes: Notes/old-{short}.md\n---\n# Plan\n\nFile it.\n",
        )
        if ledger_rows:
            actions.append(
                (
                    action_id,
                    "file",
                    f"old {number}.txt",
                    "done",
                    f"old {number}.txt",
                    f'["Attachments/x/{short}.txt"]',
                    f"Done/{stem}.md",
                    plan_id,
                    f"Done/{stem} plan.md",
                    f"Old message {number}",
                    iso,
                    iso,
                )
            )
            executions.append(
                (
                    plan_id,
                    action_id,
                    "done",
                    1,
                    "vault.note",
                    0,
                    '{"writes": "Notes/x.md"}',
                    f"Done/{stem} plan.md",
                    f"Done/{stem} plan.md",
                    iso,
                )
            )
    if notes % 2:
        _write(done / "odd note.md", "---\nid: odd\ntype: note\n---\nodd\n")
    if ledger_rows:
        _fill_ledger(vault, actions, executions)


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _fill_ledger(
    vault: Path, actions: list[tuple[object, ...]], executions: list[tuple[object, ...]]
) -> None:
    from ai_employee.vault.ledger import Ledger

    state = vault / ".ai-employee"
    state.mkdir(exist_ok=True)
    path = state / "state.db"
    Ledger(path).close()  # the daemon's own schema
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany(
                "INSERT INTO actions (action_id, source, source_ref, state, inbox_name, attachments,"
                " note_rel, plan_id, plan_rel, title, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                actions,
            )
            db.executemany(
                "INSERT INTO executions (plan_id, action_id, state, attempts, action, dry_run, result,"
                " note_rel, final_rel, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                executions,
            )
    except sqlite3.Error as error:  # the schema moved on: the notes alone still make the scenario
        log.warning(
            "could not fill the ledger; the large vault has notes but no ledger history", error=str(error)
        )
    finally:
        db.close()
