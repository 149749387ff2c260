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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from ai_employee.vault.layout import Folder
from bench.inotify import now_ns
from bench.raw import syncfs

log = structlog.get_logger(__name__)

FOLDERS = tuple(folder.value for folder in Folder if folder != Folder.NOTES)
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
    for history in _history(notes):
        _write(done / f"{history.stem}.md", history.action_note())
        _write(done / f"{history.stem} plan.md", history.plan_note())
    if notes % 2:
        _write(done / "odd note.md", "---\nid: odd\ntype: note\n---\nodd\n")
    if ledger_rows:
        fill_ledger_only(vault, notes)


def fill_ledger_only(vault: Path, notes: int) -> None:
    """The ledger rows of `fill_done`'s history, into a fresh state database."""
    histories = list(_history(notes))
    _fill_ledger(
        vault,
        [history.action_row() for history in histories],
        [history.execution_row() for history in histories],
    )


@dataclass(frozen=True)
class _Past:
    """One handled message of the history: its action note, plan note and ledger rows."""

    number: int
    when: datetime

    @property
    def short(self) -> str:
        return f"{self.number:06x}"

    @property
    def stamp(self) -> str:
        return f"{self.when:%Y%m%d-%H%M%S}"

    @property
    def stem(self) -> str:
        return f"{self.stamp} old-message-{self.number} {self.short}"

    @property
    def iso(self) -> str:
        return self.when.isoformat(timespec="seconds")

    def action_note(self) -> str:
        return (
            f"---\nid: act-{self.stamp}-{self.short}\ntype: action\nsource: file\nreceived: '{self.iso}'\n"
            f"title: Old message {self.number}\nstatus: done\n"
            f"attachments: ['[[Attachments/x/{self.short}.txt]]']\n"
            f"---\n# Old message {self.number}\n\nSomething that was handled long ago.\n"
        )

    def plan_note(self) -> str:
        return (
            f"---\nid: plan-{self.stamp}-{self.short}\ntype: plan\naction_id: act-{self.stamp}-{self.short}\n"
            f"action: vault.note\nparams:\n  title: Old message {self.number}\n  content: handled\n"
            f"  folder: Notes\nstatus: done\nplanner: template\nrisk: low\ncreated: '{self.iso}'\n"
            f"executed_at: '{self.iso}'\ndry_run: false\nresult:\n  writes: Notes/old-{self.short}.md\n"
            "---\n# Plan\n\nFile it.\n"
        )

    def action_row(self) -> tuple[object, ...]:
        return (
            f"act-{self.stamp}-{self.short}", "file", f"old {self.number}.txt", "done",
            f"old {self.number}.txt",
            f'["Attachments/x/{self.short}.txt"]', f"Done/{self.stem}.md", f"plan-{self.stamp}-{self.short}",
            f"Done/{self.stem} plan.md", f"Old message {self.number}", self.iso, self.iso,
        )  # fmt: skip

    def execution_row(self) -> tuple[object, ...]:
        return (
            f"plan-{self.stamp}-{self.short}", f"act-{self.stamp}-{self.short}", "done", 1, "vault.note", 0,
            '{"writes": "Notes/x.md"}', f"Done/{self.stem} plan.md", f"Done/{self.stem} plan.md", self.iso,
        )  # fmt: skip


def _history(notes: int) -> Iterator[_Past]:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for number in range(notes // 2):
        yield _Past(number, base + timedelta(seconds=number * 37))


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
