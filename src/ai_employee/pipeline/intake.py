"""Intake: Inbox files and messages from the sources become action notes (and, with a local
planner, their plans), each claimed in the ledger so that a crash never makes a second one.

A burst of Inbox files goes through as a pipeline (decision 0007): `read_intake` (what to take,
its text: the work, writing nothing) → `start_render`/`finish_render` (notes as bytes, in the
renderer helper) → `begin_intake` (claims, the group commit handed to the writer helper) →
`finish_intake` (states and audit lines: the commit). A message goes through `intake_message`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from ai_employee.documents.markdown import document_markdown, extraction_properties
from ai_employee.documents.text import describe_or_sniff
from ai_employee.model.ids import (
    display_name,
    note_stem,
    plan_id_for,
    safe_file_name,
    short_id,
)
from ai_employee.pipeline.context import StepContext, utcnow
from ai_employee.pipeline.documents import CONTENT_FINGERPRINT, Described, InboxDocuments
from ai_employee.pipeline.folders import FolderSteps, ReadyFolder
from ai_employee.pipeline.message_intake import MessageIntake
from ai_employee.pipeline.quarantine import Quarantined, quarantine
from ai_employee.pipeline.renderer import ActionRenderer, IntakeRenderer, NewAction, RenderedAction
from ai_employee.vault import fs
from ai_employee.vault.layout import Folder, is_ignored_name, unsafe_reason
from ai_employee.vault.ledger import ActionRow
from ai_employee.vault.writer import ClaimedFile, Committer, GroupCommit, InProcessCommitter, commit
from ai_employee.vault.writes import OpenWrites

log = structlog.get_logger(__name__)

LATE_WARNING = (
    "This file was still open for writing after {waited} (`vault.max_write_wait`): it was taken as it"
    " was then and may be incomplete."
)


@dataclass
class IntakeOutcome:
    actions: list[NewAction] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    deferred: list[tuple[str, float]] = field(default_factory=list)  # (name, seconds until settled)
    reading: list[str] = field(default_factory=list)  # documents a worker is reading: hinted when read


@dataclass
class PreparedFile:
    name: str  # as in Inbox/ (may not be valid UTF-8)
    rendered: RenderedAction


@dataclass
class PreparedIntake:
    """A batch of Inbox files read, planned and rendered, not yet written."""

    reading: list[tuple[str, NewAction]] = field(default_factory=list)  # (name, action): read, not rendered
    files: list[PreparedFile] = field(default_factory=list)  # rendered
    ready_folders: list[tuple[str, os.stat_result, ReadyFolder]] = field(default_factory=list)
    folders: list[tuple[str, NewAction]] = field(
        default_factory=list
    )  # (name, action): written by the worker
    unsafe: list[tuple[str, str]] = field(default_factory=list)  # (name, reason): to quarantine
    outcome: IntakeOutcome = field(default_factory=IntakeOutcome)

    def action_ids(self) -> list[str]:
        return [item.row.action_id for _, item in [*self.reading, *self.folders]]


@dataclass
class BegunIntake:
    """A prepared batch claimed in the ledger, its group commit handed to the committer."""

    prepared: PreparedIntake
    sent: bool = False


class IntakeSteps:
    def __init__(
        self,
        ctx: StepContext,
        committer: Committer | None = None,
        intake_renderer: IntakeRenderer | None = None,
    ) -> None:
        self.ctx = ctx
        self.renderer = ActionRenderer(ctx.layout.root, ctx.planner)
        #: renders Inbox batches (in a helper process in the daemon)
        self.intake_renderer: IntakeRenderer = intake_renderer or self.renderer
        #: writes the group commits of Inbox files (in a child process in the daemon)
        self.committer = committer or InProcessCommitter()
        #: Inbox files created and not yet closed by their writer (marked by the watcher)
        self.writes = OpenWrites()
        #: reads documents (PDF, images, Office files) in worker processes, off the intake's path
        self.documents = InboxDocuments(ctx.settings.vault.max_body_bytes, ctx.settings.documents)
        #: folders dropped into Inbox/
        self.folders = FolderSteps(ctx, self.documents, self.write_actions)
        #: messages from the sources
        self.messages = MessageIntake(ctx, self.documents, self.write_actions)
        self.is_taken = self.messages.is_taken
        self.read_message_documents = self.messages.read_message_documents
        self.intake_message = self.messages.intake_message

    # --- Inbox files ---------------------------------------------------------------------

    def intake_files(self, names: Sequence[str], renamed: set[str]) -> IntakeOutcome:
        return self.commit_intake(self.prepare_intake(names, renamed))

    def prepare_intake(self, names: Sequence[str], renamed: set[str]) -> PreparedIntake:
        """Read and render a batch of Inbox files; write nothing (the pipeline's first stage)."""
        prepared = self.read_intake(names, renamed)
        self.start_render(prepared)
        return self.finish_render(prepared)

    def read_intake(self, names: Sequence[str], renamed: set[str]) -> PreparedIntake:
        """Which names are files to take now, with their ids and text; nothing written.

        Only reads (the folder, the files, the ledger), so it can run on its own thread while
        `begin_intake` writes the batch before it. What it decides is checked again when the
        batch is written: a file may have been claimed, replaced or removed in between."""
        ctx = self.ctx
        prepared = PreparedIntake()
        inbox = ctx.layout.folder(Folder.INBOX)
        settle = ctx.settings.vault.settle_seconds
        max_write_wait = ctx.settings.vault.max_write_wait
        claims = ctx.ledger.claimed_inbox_names()
        now = utcnow()
        wall = now.timestamp()
        ready: list[tuple[str, os.stat_result]] = []
        late: set[str] = set()  # still open for writing after vault.max_write_wait: taken with a warning
        for name in dict.fromkeys(names):
            if is_ignored_name(name):
                continue
            try:
                info = os.lstat(f"{inbox}/{name}")
            except FileNotFoundError:
                continue
            if claims.get(display_name(name)) == info.st_ino:
                continue  # a crash interrupted this one; recovery finishes it
            if stat.S_ISDIR(info.st_mode):
                self.folders.look(name, info, prepared)
                continue
            reason = unsafe_reason(name, info.st_mode)
            if reason is not None:
                prepared.unsafe.append((name, reason))
                continue
            if name not in renamed and settle > 0:
                age = wall - max(info.st_mtime, info.st_ctime)
                if age < settle:
                    prepared.outcome.deferred.append((name, settle - age))
                    continue
            if name not in renamed and self.writes.is_open(name):
                wait, overdue = self.writes.check(
                    f"{inbox}/{name}", name, settle=settle, max_wait=max_write_wait
                )
                if wait is not None:
                    prepared.outcome.deferred.append((name, wait))
                    continue
                if overdue:
                    log.warning("inbox file still open for writing; taken as it is", file=display_name(name))
                    late.add(name)
            ready.append((name, info))
        if not ready and not prepared.ready_folders:
            return prepared

        described: list[tuple[str, os.stat_result, Described]] = []
        for name, info in ready:
            description = self.documents.describe(inbox / name, name, info)
            if description is None:
                prepared.outcome.reading.append(name)  # a worker reads it; it comes back as a hint
            else:
                described.append((name, info, description))
        if not described and not prepared.ready_folders:
            return prepared

        day = now.strftime("%Y-%m-%d")
        waited = f"{max_write_wait / 60:g} min" if max_write_wait >= 120 else f"{max_write_wait:g} s"
        action_ids = ctx.issue_action_ids(now, len(described) + len(prepared.ready_folders))
        for (name, info, ready_folder), action_id in zip(
            prepared.ready_folders, action_ids[len(described) :], strict=True
        ):
            kept_in = (
                f"{Folder.ATTACHMENTS.value}/{day}/{short_id(action_id)}-{safe_file_name(ready_folder.title)}"
            )
            row = self._inbox_row(action_id, name, info, ready_folder.title, now)
            row.attachments = [f"{kept_in}/{relative}" for relative in ready_folder.files]
            row.extra.update(ready_folder.properties())
            row.extra["kept_in"] = kept_in
            row.extra[CONTENT_FINGERPRINT] = ready_folder.newest_mtime_ns
            if ready_folder.empty:
                row.extra["empty"] = True
            prepared.folders.append((name, NewAction(row=row, text=ready_folder.text(kept_in), received=now)))
        for (name, info, (title, text, document, empty)), action_id in zip(
            described, action_ids[: len(described)], strict=True
        ):
            shown = display_name(name)
            row = self._inbox_row(action_id, name, info, title, now)
            row.attachments = [
                f"{Folder.ATTACHMENTS.value}/{day}/{short_id(action_id)}-{safe_file_name(shown)}"
            ]
            if empty:
                row.extra["empty"] = True
            row.extra[CONTENT_FINGERPRINT] = info.st_mtime_ns
            text = self.note_text(Described(title, text, document, empty), row)
            if name in late:
                text = f"> [!warning] {LATE_WARNING.format(waited=waited)}\n\n{text}"
                row.extra["write_warning"] = LATE_WARNING.format(waited=waited)
            prepared.reading.append((name, NewAction(row=row, text=text, received=now)))
        return prepared

    def note_text(self, described: Described, row: ActionRow) -> str:
        """The note's text for one Inbox file (a document's as the reader gave it); a document's
        extraction properties go into the row."""
        if described.document is None:
            return described.text
        row.extra.update(extraction_properties([described.document]))
        return document_markdown(described.document, row.attachments[0])

    def _inbox_row(
        self, action_id: str, name: str, info: os.stat_result, title: str, now: datetime
    ) -> ActionRow:
        stem = note_stem(action_id, title)
        shown = display_name(name)
        return ActionRow(
            action_id=action_id,
            source="file",
            source_ref=shown,
            state="claimed",
            note_rel=f"{Folder.NEEDS_ACTION.value}/{stem}.md",
            plan_id=plan_id_for(action_id),
            plan_rel=f"{Folder.PLANS.value}/{stem} plan.md",
            inbox_name=shown,
            inbox_dev=info.st_dev,
            inbox_ino=info.st_ino,
            title=title,
            created_at=now.isoformat(timespec="seconds"),
        )

    def describe_file(self, path: Path, name: str, size: int) -> tuple[str, str]:
        """(title, body) of a file already kept under Attachments/ (recovery): a document is read
        now, in a worker, while the caller waits."""
        title, text, kind = describe_or_sniff(path, name, size, limit=self.ctx.settings.vault.max_body_bytes)
        if kind in (None, "empty"):
            return title, text
        attachment = self.ctx.layout.relative(path) if path.is_relative_to(self.ctx.layout.root) else None
        return title, document_markdown(self.documents.reader.read(path, name), attachment)

    def start_render(self, prepared: PreparedIntake) -> None:
        """Hand the batch's notes to the intake renderer (a helper process in the daemon)."""
        if prepared.reading:
            try:
                items = [item for _, item in prepared.reading]
                self.intake_renderer.send(items, *self.ctx.planning_context())
            except BaseException:
                self.ctx.release_action_ids(prepared.action_ids())
                raise

    def finish_render(self, prepared: PreparedIntake) -> PreparedIntake:
        """Wait for the batch's notes: the batch is ready to be written."""
        if prepared.reading:
            try:
                rendered = self.intake_renderer.receive()
            except BaseException:
                self.ctx.release_action_ids(prepared.action_ids())
                raise
            prepared.files = [
                PreparedFile(name, done) for (name, _), done in zip(prepared.reading, rendered, strict=True)
            ]
        return prepared

    def commit_intake(self, prepared: PreparedIntake) -> IntakeOutcome:
        """Write a prepared batch: claim rows, originals linked into Attachments/, notes, states."""
        return self.finish_intake(self.begin_intake(prepared))

    def begin_intake(self, prepared: PreparedIntake) -> BegunIntake:
        """Quarantine what is unsafe, claim the rest in the ledger and hand its group commit (two
        barriers for the whole batch) to the committer. `finish_intake` waits for it; in between
        the caller may begin the next batch, so that the ledger work of one batch overlaps the
        disk work of the other.

        A file that changed since it was read (another inode under its name) goes back as a
        hint; one that is gone was taken by an earlier batch or removed by the user. The
        committer checks both right at the link, so the claim rows are written for all."""
        ctx = self.ctx
        begun = BegunIntake(prepared)
        try:
            self._quarantine_unsafe(prepared)
            self.folders.take(prepared)
            if not prepared.files:
                return begun
            ctx.ledger.insert_actions([file.rendered.item.row for file in prepared.files])
            # Each original is linked into Attachments/; the group commit's first barrier makes the
            # claims and links durable before the originals are unlinked from Inbox/.
            inbox = ctx.layout.folder(Folder.INBOX)
            batch = self._group_commit()
            for file in prepared.files:
                row = file.rendered.item.row
                keep_as = ctx.layout.resolve(row.attachments[0])
                ctx.attachment_dir(keep_as.parent.name)
                batch.files.append(
                    ClaimedFile(
                        original=f"{inbox}/{file.name}",
                        keep_as=os.fspath(keep_as),
                        inode=row.inbox_ino or 0,
                        writes=[(os.fspath(target), data) for target, data in file.rendered.writes],
                    )
                )
            self.committer.send(batch)
            begun.sent = True
        except BaseException:
            ctx.release_action_ids(prepared.action_ids())
            raise
        return begun

    def finish_intake(self, begun: BegunIntake) -> IntakeOutcome:
        """Wait for the batch's group commit, then record what it wrote."""
        prepared = begun.prepared
        outcome = prepared.outcome
        try:
            if not begun.sent:
                return outcome
            result = self.committer.receive()
            for index in result.vanished:
                log.info(
                    "inbox file gone before it was claimed",
                    file=prepared.files[index].rendered.item.row.inbox_name,
                )
            for index in result.replaced:
                outcome.deferred.append((prepared.files[index].name, 0.0))  # read the new file
            skipped = {*result.vanished, *result.replaced}
            if skipped:  # nothing of these was linked or written: their claims never took effect
                self.ctx.ledger.drop_claims(
                    [prepared.files[index].rendered.item.row.action_id for index in skipped]
                )
            written = [file.rendered for index, file in enumerate(prepared.files) if index not in skipped]
            if written:
                self.record_actions(written)
                outcome.actions.extend(action.item for action in written)
        finally:
            self.ctx.release_action_ids(prepared.action_ids())
        return outcome

    def _quarantine_unsafe(self, prepared: PreparedIntake) -> None:
        for name, reason in prepared.unsafe:
            try:
                quarantined = quarantine(self.ctx, Folder.INBOX, name, reason)
            except OSError as error:  # one bad entry must never stop the others
                log.error("could not quarantine an inbox entry", file=display_name(name), error=str(error))
                continue
            if quarantined:
                prepared.outcome.quarantined.append(quarantined)

    def _group_commit(self) -> GroupCommit:
        return GroupCommit(barrier=os.fspath(self.ctx.layout.root), temp_dir=os.fspath(self.ctx.temp_dir))

    # --- the helper processes ------------------------------------------------------------

    def helper_pids(self) -> dict[str, int | None]:
        """The renderer's and the writer's process ids (None: in the daemon, or not started yet)."""
        return {"renderer": self.intake_renderer.pid, "writer": self.committer.pid}

    def start_intake_renderer(self) -> None:
        """Start the renderer helper now, from the thread that will use it (the preparer). If it
        cannot start, batches are rendered in the daemon: slower, never stuck."""
        if self.intake_renderer is self.renderer:
            return
        try:
            self.intake_renderer.send([], "", [])
            self.intake_renderer.receive()
        except OSError as error:
            log.error("the note renderer process did not start; rendering in the daemon", error=str(error))
            self.intake_renderer.close()
            self.intake_renderer = self.renderer

    def start_committer(self) -> None:
        """Start the writer helper now, from the thread that will use it (the worker). If it cannot
        start, batches are written by the daemon: slower, never stuck."""
        if isinstance(self.committer, InProcessCommitter):
            return
        try:
            commit(self.committer, self._group_commit())
        except OSError as error:
            log.error("the vault writer process did not start; writing in the daemon", error=str(error))
            self.committer.close()
            self.committer = InProcessCommitter()

    # --- notes of single actions (messages, recovery) ------------------------------------

    def write_actions(self, actions: Sequence[NewAction]) -> None:
        """Write action notes (and, for a local planner, plan notes) and record them in the ledger.
        A local planner plans here, while the notes are rendered."""
        rendered = self.renderer.render_now(actions, *self.ctx.planning_context())
        fs.write_durable_batch(
            [write for action in rendered for write in action.writes],
            barrier=self.ctx.layout.root,
            temp_dir=self.ctx.temp_dir,
        )
        self.record_actions(rendered)

    def record_actions(self, rendered: Sequence[RenderedAction]) -> None:
        states = [(action.item, _state_after_intake(action.item)) for action in rendered]
        self.ctx.ledger.set_action_state(
            [(item.row.action_id, state, None) for item, state in states],
            [record for action in rendered for record in action.audit],
        )
        for item, state in states:
            item.row.state = state
        self.ctx.commit_audit()


def _state_after_intake(item: NewAction) -> str:
    """planned; noted (a plan is still to be made); empty (nothing to plan: no approval needed)."""
    if item.planned is not None:
        return "planned"
    return "empty" if item.row.extra.get("empty") is True else "noted"
