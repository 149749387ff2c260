"""Group commits of new Inbox files, done in a small child process.

The daemon's Python work for a burst (reading, planning, rendering notes) and the kernel's work
of writing the notes (creates, renames, two `syncfs` barriers per batch) each take about half a
file's time. In one process they take turns on the GIL: every syscall releases it and waits to
get it back. A child process that only does the file operations runs them on the other core
while the daemon prepares the next batch (docs/performance.md, decision 0007).

The child changes nothing about what is durable when: it runs the same group commit
(`fs.write_durable_batch`) in the same order, and the daemon writes the ledger before and after
it exactly as with the in-process committer. It dies with the daemon (`PR_SET_PDEATHSIG`) and
exits when its pipe closes; if it dies first, the commit raises and the pipeline's recovery
finishes the batch as after any crash.

The child is an `ai_employee.helper_process` helper.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ai_employee.helper_process import HelperProcess, serve
from ai_employee.vault import fs


@dataclass
class ClaimedFile:
    """One Inbox file: its original is linked to `keep_as` (in Attachments/), its notes written,
    then the original unlinked. If the original is gone before the link, or another file
    (`inode` differs) took its name since it was read, nothing of it is written."""

    original: str
    keep_as: str
    inode: int
    writes: list[tuple[str, bytes]]


@dataclass
class CommitResult:
    """Indexes (in the batch) of files of which nothing was written."""

    vanished: list[int] = field(default_factory=list)  # the original was gone
    replaced: list[int] = field(default_factory=list)  # another file was under its name


@dataclass
class GroupCommit:
    barrier: str  # any path on the vault's filesystem
    temp_dir: str
    files: list[ClaimedFile] = field(default_factory=list)


class Committer(Protocol):
    """Applies group commits in the order they are sent; one thread sends and receives.

    `receive` answers the oldest batch sent and not yet received, or raises its error."""

    def send(self, batch: GroupCommit) -> None: ...

    def receive(self) -> CommitResult: ...

    def close(self) -> None: ...

    @property
    def pid(self) -> int | None:
        """The helper process writing, if any."""


def commit(committer: Committer, batch: GroupCommit) -> CommitResult:
    """Send one batch and wait for it."""
    committer.send(batch)
    return committer.receive()


def apply_group_commit(batch: GroupCommit) -> CommitResult:
    """Links, every temp, one barrier, renames, unlink the originals, one more barrier."""
    result = CommitResult()
    writes: list[tuple[Path, bytes]] = []
    linked: list[str] = []
    for index, claimed in enumerate(batch.files):
        try:
            os.link(claimed.original, claimed.keep_as)
        except FileNotFoundError:
            result.vanished.append(index)
            continue
        if os.lstat(claimed.keep_as).st_ino != claimed.inode:  # checked after the link: no race
            os.unlink(claimed.keep_as)
            result.replaced.append(index)
            continue
        linked.append(claimed.original)
        writes.extend((Path(target), data) for target, data in claimed.writes)

    def unlink_originals() -> None:
        for original in linked:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(original)

    if linked:
        fs.write_durable_batch(
            writes,
            barrier=Path(batch.barrier),
            before_last_barrier=unlink_originals,
            temp_dir=Path(batch.temp_dir),
        )
    return result


class InProcessCommitter:
    """The same commits on the calling thread, at `send` (tests, and where the child cannot start)."""

    def __init__(self) -> None:
        self._results: deque[CommitResult | OSError] = deque()

    def send(self, batch: GroupCommit) -> None:
        try:
            self._results.append(apply_group_commit(batch))
        except OSError as error:
            self._results.append(error)

    def receive(self) -> CommitResult:
        result = self._results.popleft()
        if isinstance(result, OSError):
            raise result
        return result

    def close(self) -> None:
        self._results.clear()

    @property
    def pid(self) -> int | None:
        return None


class ProcessCommitter:
    """Sends each batch to the writer process; `receive` waits for its answer (the GIL is free
    meanwhile). Batches sent to a writer that died raise `HelperProcessError`."""

    def __init__(self) -> None:
        self._helper = HelperProcess(__name__, "vault writer process")

    def send(self, batch: GroupCommit) -> None:
        self._helper.send(
            (
                os.fsencode(batch.barrier),
                os.fsencode(batch.temp_dir),
                [
                    (
                        os.fsencode(claimed.original),
                        os.fsencode(claimed.keep_as),
                        claimed.inode,
                        [(os.fsencode(target), data) for target, data in claimed.writes],
                    )
                    for claimed in batch.files
                ],
            )
        )

    @property
    def pid(self) -> int | None:
        return self._helper.pid

    def receive(self) -> CommitResult:
        vanished, replaced = self._helper.receive()
        return CommitResult(vanished=list(vanished), replaced=list(replaced))

    def close(self) -> None:
        self._helper.close()


def start_committer() -> Committer:
    """The child-process committer where the platform allows it, else in-process."""
    if sys.platform.startswith("linux"):
        return ProcessCommitter()
    return InProcessCommitter()  # pragma: no cover - the daemon runs on Linux


def _apply(
    request: tuple[bytes, bytes, list[tuple[bytes, bytes, int, list[tuple[bytes, bytes]]]]],
) -> tuple[list[int], list[int]]:
    """The writer process: one group commit per request."""
    barrier, temp_dir, files = request
    result = apply_group_commit(
        GroupCommit(
            barrier=os.fsdecode(barrier),
            temp_dir=os.fsdecode(temp_dir),
            files=[
                ClaimedFile(
                    original=os.fsdecode(original),
                    keep_as=os.fsdecode(keep_as),
                    inode=inode,
                    writes=[(os.fsdecode(target), data) for target, data in writes],
                )
                for original, keep_as, inode, writes in files
            ],
        )
    )
    return result.vanished, result.replaced


if __name__ == "__main__":
    serve(_apply)
