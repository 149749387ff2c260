"""Group commits of Inbox files, in-process and in the writer child process: the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_employee.helper_process import HelperProcessError
from ai_employee.vault import fs
from ai_employee.vault.writer import (
    ClaimedFile,
    CommitResult,
    Committer,
    GroupCommit,
    InProcessCommitter,
    ProcessCommitter,
    commit,
)
from tests.conftest import wait_for


@pytest.fixture(params=["in-process", "child process"])
def committer(request: pytest.FixtureRequest) -> Iterator[Committer]:
    chosen: Committer = InProcessCommitter() if request.param == "in-process" else ProcessCommitter()
    yield chosen
    chosen.close()


def vault(tmp_path: Path) -> dict[str, Path]:
    folders = {name: tmp_path / name for name in ("Inbox", "Attachments", "Needs_Action", "Plans", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    return folders


def claim(folders: dict[str, Path], name: str) -> ClaimedFile:
    original = folders["Inbox"] / name
    return ClaimedFile(
        original=os.fspath(original),
        keep_as=os.fspath(folders["Attachments"] / f"kept-{name}"),
        inode=original.stat().st_ino if original.exists() else 0,
        writes=[
            (os.fspath(folders["Needs_Action"] / f"{name}.md"), os.fsencode(f"action {name}")),
            (os.fspath(folders["Plans"] / f"{name} plan.md"), os.fsencode(f"plan {name}")),
        ],
    )


def batch_of(folders: dict[str, Path], names: list[str], tmp_path: Path) -> GroupCommit:
    return GroupCommit(
        barrier=os.fspath(tmp_path),
        temp_dir=os.fspath(folders["tmp"]),
        files=[claim(folders, name) for name in names],
    )


def test_group_commit_keeps_each_original_writes_its_notes_and_empties_the_inbox(
    tmp_path: Path, committer: Committer
) -> None:
    folders = vault(tmp_path)
    for name in ("a.txt", "b.txt"):
        (folders["Inbox"] / name).write_text(f"original {name}")

    assert commit(committer, batch_of(folders, ["a.txt", "b.txt"], tmp_path)) == CommitResult()

    assert os.listdir(folders["Inbox"]) == []
    assert (folders["Attachments"] / "kept-a.txt").read_text() == "original a.txt"
    assert (folders["Needs_Action"] / "b.txt.md").read_bytes() == b"action b.txt"
    assert (folders["Plans"] / "a.txt plan.md").read_bytes() == b"plan a.txt"
    assert os.listdir(folders["tmp"]) == []


def test_a_vanished_original_is_reported_and_nothing_of_it_is_written(
    tmp_path: Path, committer: Committer
) -> None:
    folders = vault(tmp_path)
    (folders["Inbox"] / "here.txt").write_text("here")

    vanished = commit(committer, batch_of(folders, ["gone.txt", "here.txt"], tmp_path))

    assert vanished == CommitResult(vanished=[0])
    assert sorted(os.listdir(folders["Needs_Action"])) == ["here.txt.md"]
    assert not (folders["Attachments"] / "kept-gone.txt").exists()


def test_batches_sent_back_to_back_are_answered_in_order(tmp_path: Path, committer: Committer) -> None:
    folders = vault(tmp_path)
    (folders["Inbox"] / "a.txt").write_text("a")
    (folders["Inbox"] / "c.txt").write_text("c")

    committer.send(batch_of(folders, ["a.txt"], tmp_path))
    committer.send(batch_of(folders, ["b.txt", "c.txt"], tmp_path))

    assert committer.receive() == CommitResult()
    assert committer.receive() == CommitResult(vanished=[0])  # b.txt was never there
    assert sorted(os.listdir(folders["Plans"])) == ["a.txt plan.md", "c.txt plan.md"]


def test_a_file_replaced_under_its_name_is_reported_and_nothing_of_it_is_written(
    tmp_path: Path, committer: Committer
) -> None:
    folders = vault(tmp_path)
    (folders["Inbox"] / "a.txt").write_text("read by the daemon")
    batch = batch_of(folders, ["a.txt"], tmp_path)
    newer = tmp_path / "newer.txt"
    newer.write_text("arrived since")
    os.replace(newer, folders["Inbox"] / "a.txt")

    assert commit(committer, batch) == CommitResult(replaced=[0])

    assert (folders["Inbox"] / "a.txt").read_text() == "arrived since"
    assert os.listdir(folders["Attachments"]) == []
    assert os.listdir(folders["Plans"]) == []


def test_non_utf8_names_survive_the_trip_to_the_child(tmp_path: Path, committer: Committer) -> None:
    folders = vault(tmp_path)
    name = os.fsdecode(b"caf\xe9.txt")  # Latin-1 bytes: not valid UTF-8
    (folders["Inbox"] / name).write_bytes(b"x")

    assert commit(committer, batch_of(folders, [name], tmp_path)) == CommitResult()

    assert os.listdir(os.fsencode(folders["Attachments"])) == [b"kept-caf\xe9.txt"]


def test_an_error_in_the_commit_is_raised_with_its_errno(tmp_path: Path, committer: Committer) -> None:
    folders = vault(tmp_path)
    (folders["Inbox"] / "a.txt").write_text("a")
    batch = batch_of(folders, ["a.txt"], tmp_path)
    batch.files[0].writes = [(os.fspath(tmp_path / "no such folder" / "note.md"), b"x")]

    with pytest.raises(OSError) as raised:
        commit(committer, batch)

    assert raised.value.errno == 2
    assert [name for name in os.listdir(folders["tmp"]) if name.startswith(fs.TEMP_PREFIX)] == []


def test_a_writer_that_died_between_commits_is_replaced(tmp_path: Path) -> None:
    folders = vault(tmp_path)
    committer = ProcessCommitter()
    try:
        (folders["Inbox"] / "first.txt").write_text("1")
        commit(committer, batch_of(folders, ["first.txt"], tmp_path))
        child = committer._helper._process
        assert child is not None
        child.kill()
        child.wait()
        (folders["Inbox"] / "second.txt").write_text("2")

        assert commit(committer, batch_of(folders, ["second.txt"], tmp_path)) == CommitResult()

        assert (folders["Plans"] / "second.txt plan.md").exists()
        assert committer._helper._process is not None and committer._helper._process.pid != child.pid
    finally:
        committer.close()


def test_a_writer_that_dies_during_a_commit_raises(tmp_path: Path) -> None:
    """The batch may be half done: the pipeline fails and its recovery finishes it."""
    folders = vault(tmp_path)
    committer = ProcessCommitter()
    try:
        commit(committer, GroupCommit(barrier=os.fspath(tmp_path), temp_dir=os.fspath(folders["tmp"])))
        child = committer._helper._process
        assert child is not None and child.stdout is not None
        child.stdout.close()  # its answer can no longer be read: as if it died before answering
        (folders["Inbox"] / "a.txt").write_text("a")

        with pytest.raises(HelperProcessError):
            commit(committer, batch_of(folders, ["a.txt"], tmp_path))
        assert committer._helper._process is None
    finally:
        committer.close()


def test_every_batch_sent_to_a_writer_that_died_raises(tmp_path: Path) -> None:
    folders = vault(tmp_path)
    committer = ProcessCommitter()
    try:
        empty = GroupCommit(barrier=os.fspath(tmp_path), temp_dir=os.fspath(folders["tmp"]))
        commit(committer, empty)
        child = committer._helper._process
        assert child is not None and child.stdout is not None
        committer.send(empty)
        committer.send(empty)
        child.stdout.close()  # both answers are lost, as when the child dies

        for _ in range(2):
            with pytest.raises(HelperProcessError):
                committer.receive()
        assert commit(committer, empty) == CommitResult()  # and a new child takes the next batch
    finally:
        committer.close()


def test_the_child_exits_when_the_committer_closes(tmp_path: Path) -> None:
    folders = vault(tmp_path)
    committer = ProcessCommitter()
    (folders["Inbox"] / "a.txt").write_text("a")
    commit(committer, batch_of(folders, ["a.txt"], tmp_path))
    child = committer._helper._process
    assert child is not None

    committer.close()

    assert child.returncode == 0


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A SIGKILLed daemon leaves no writer behind to go on writing while the next one recovers."""
    script = (
        "import os, sys\n"
        "from ai_employee.vault.writer import ProcessCommitter, GroupCommit, commit\n"
        "committer = ProcessCommitter()\n"
        f"commit(committer, GroupCommit(barrier={os.fspath(tmp_path)!r}, temp_dir={os.fspath(tmp_path)!r}))\n"
        "print(committer._helper.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())

    parent.send_signal(signal.SIGKILL)
    parent.wait()

    wait_for(lambda: not _alive(child_pid), timeout=10, message="the writer gone with its parent")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
