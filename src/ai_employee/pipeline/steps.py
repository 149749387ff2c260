"""The state machine's steps: blocking, idempotent, keyed by stable ids, run on one worker thread.

Each step moves items between folders with atomic renames (or link+unlink out of watched
folders), writes notes durably, and records its progress in the ledger so that a crash at
any point is finished or redone on restart without a duplicate. The async service in
`pipeline.service` calls these in batches and turns their outcomes into events.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from ai_employee.config import Settings
from ai_employee.executors.base import ActionParams, Executor
from ai_employee.observability.audit import AuditLog, audit_record
from ai_employee.pipeline import rendering
from ai_employee.pipeline.ids import (
    new_action_id,
    note_stem,
    plan_id_for,
    safe_file_name,
    short_id,
    stable_action_id,
)
from ai_employee.pipeline.registry import ExecutorRegistry
from ai_employee.pipeline.renderer import (
    ActionRenderer,
    IntakeRenderer,
    NewAction,
    RenderedAction,
    plan_audit,
    plan_request,
)
from ai_employee.planners.base import ActionSpec, Planner, PlanProposal, PlanRequest
from ai_employee.sources.base import IncomingMessage
from ai_employee.vault import fs
from ai_employee.vault.layout import Folder, VaultLayout, is_ignored_name, unsafe_reason
from ai_employee.vault.ledger import ActionRow, AuditRecord, ExecutionRow, Ledger
from ai_employee.vault.note_models import PlanNote, describe_validation, read_plan
from ai_employee.vault.notes import NoteError, parse_note, render_note, wikilink
from ai_employee.vault.writer import ClaimedFile, Committer, GroupCommit, InProcessCommitter, commit

log = structlog.get_logger(__name__)

SNIFF_BYTES = 8192
MAX_PLAN_BYTES = 1024 * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- outcomes the async service turns into events ---------------------------------------


@dataclass
class Quarantined:
    name: str
    reason: str
    note_rel: str


@dataclass
class IntakeOutcome:
    actions: list[NewAction] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    deferred: list[tuple[str, float]] = field(default_factory=list)  # (name, seconds until settled)


@dataclass
class PreparedFile:
    name: str  # as in Inbox/ (may not be valid UTF-8)
    rendered: RenderedAction


@dataclass
class PreparedIntake:
    """A batch of Inbox files read, planned and rendered, not yet written."""

    reading: list[tuple[str, NewAction]] = field(default_factory=list)  # (name, action): read, not rendered
    files: list[PreparedFile] = field(default_factory=list)  # rendered
    unsafe: list[tuple[str, str]] = field(default_factory=list)  # (name, reason): to quarantine
    outcome: IntakeOutcome = field(default_factory=IntakeOutcome)

    def action_ids(self) -> list[str]:
        return [item.row.action_id for _, item in self.reading]


@dataclass
class BegunIntake:
    """A prepared batch claimed in the ledger, its group commit handed to the committer."""

    prepared: PreparedIntake
    sent: bool = False


@dataclass
class ExecutionJob:
    plan_id: str
    action_id: str
    name: str  # file name in Approved/
    digest: str
    properties: dict[str, Any]
    body: str
    executor: Executor
    params: ActionParams
    attempt: int
    action_title: str = ""
    attachments: list[str] = field(default_factory=list)
    resumed: bool = False


@dataclass
class DecisionOutcome:
    jobs: list[ExecutionJob] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # plan ids
    granted: list[tuple[str, str]] = field(default_factory=list)  # (plan id, action id)
    revoked: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    deferred: list[tuple[str, float]] = field(default_factory=list)  # (name, seconds until settled)


@dataclass
class Finished:
    plan_id: str
    action_id: str
    action: str
    status: str  # done | failed
    dry_run: bool | None
    result: dict[str, Any] | None
    error: str | None
    final_rel: str


class VaultSteps:
    def __init__(
        self,
        layout: VaultLayout,
        ledger: Ledger,
        audit: AuditLog,
        settings: Settings,
        registry: ExecutorRegistry,
        planner: Planner,
        committer: Committer | None = None,
        intake_renderer: IntakeRenderer | None = None,
    ) -> None:
        self.layout = layout
        self.renderer = ActionRenderer(layout.root, planner)
        #: renders Inbox batches (in a helper process in the daemon)
        self.intake_renderer: IntakeRenderer = intake_renderer or self.renderer
        #: writes the group commits of Inbox files (in a child process in the daemon)
        self.committer = committer or InProcessCommitter()
        self.ledger = ledger
        self.audit = audit
        self.settings = settings
        self.registry = registry
        self.planner = planner
        self._handbook: tuple[float, str] = (-1.0, "")
        #: temp files of group commits: outside the note folders, so that a watcher of the vault
        #: (ours, Obsidian's, a sync tool's) sees one arrival per note, not create/write/close/move
        self.temp_dir = layout.state_dir / "tmp"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.audit_dirty = False
        self._made_dirs: set[str] = set()
        self._issued: set[str] = set()  # action ids of prepared batches not yet in the ledger
        self._issued_lock = threading.Lock()

    # --- shared helpers ------------------------------------------------------------------

    def path(self, folder: Folder, name: str) -> Path:
        return self.layout.folder(folder) / name

    def handbook(self) -> str:
        try:
            mtime = self.layout.handbook.stat().st_mtime
        except FileNotFoundError:
            return ""
        if mtime != self._handbook[0]:
            text = self.layout.handbook.read_text(encoding="utf-8", errors="replace")[:50_000]
            self._handbook = (mtime, text)
        return self._handbook[1]

    def _attachment_dir(self, day: str) -> Path:
        directory = self.layout.folder(Folder.ATTACHMENTS) / day
        if day not in self._made_dirs:
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
                fs.fsync_dir(directory.parent)
            self._made_dirs.add(day)
        return directory

    def _commit_audit(self) -> None:
        """Audit lines are durable in the ledger's outbox already; appending them to the log is
        batched: the service calls `flush_audit` when its queue drains (or at least every second)."""
        self.audit_dirty = True

    def flush_audit(self) -> None:
        self.audit_dirty = False
        try:
            self.audit.flush()
        except OSError as error:  # the outbox keeps the lines; the next flush retries
            self.audit_dirty = True
            log.error("audit log write failed", error=str(error))

    # --- intake: Inbox files -------------------------------------------------------------

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
        prepared = PreparedIntake()
        inbox = self.layout.folder(Folder.INBOX)
        settle = self.settings.vault.settle_seconds
        claims = self.ledger.claimed_inbox_names()
        now = utcnow()
        wall = now.timestamp()
        ready: list[tuple[str, os.stat_result]] = []
        for name in dict.fromkeys(names):
            if is_ignored_name(name):
                continue
            try:
                info = os.lstat(f"{inbox}/{name}")
            except FileNotFoundError:
                continue
            reason = unsafe_reason(name, info.st_mode)
            if reason is not None:
                prepared.unsafe.append((name, reason))
                continue
            if claims.get(display_name(name)) == info.st_ino:
                continue  # a crash interrupted this one; recovery finishes it
            if name not in renamed and settle > 0:
                age = wall - max(info.st_mtime, info.st_ctime)
                if age < settle:
                    prepared.outcome.deferred.append((name, settle - age))
                    continue
            ready.append((name, info))
        if not ready:
            return prepared

        day = now.strftime("%Y-%m-%d")
        created_at = now.isoformat(timespec="seconds")
        action_ids = self._issue_action_ids(now, len(ready))
        for (name, info), action_id in zip(ready, action_ids, strict=True):
            shown = display_name(name)
            title, text = self._describe_file(inbox / name, shown, info.st_size)
            stem = note_stem(action_id, title)
            row = ActionRow(
                action_id=action_id,
                source="file",
                source_ref=shown,
                state="claimed",
                note_rel=f"{Folder.NEEDS_ACTION.value}/{stem}.md",
                plan_id=plan_id_for(action_id),
                plan_rel=f"{Folder.PLANS.value}/{stem} plan.md",
                attachments=[
                    f"{Folder.ATTACHMENTS.value}/{day}/{short_id(action_id)}-{safe_file_name(shown)}"
                ],
                inbox_name=shown,
                inbox_dev=info.st_dev,
                inbox_ino=info.st_ino,
                title=title,
                created_at=created_at,
            )
            prepared.reading.append((name, NewAction(row=row, text=text, received=now)))
        return prepared

    def start_render(self, prepared: PreparedIntake) -> None:
        """Hand the batch's notes to the intake renderer (a helper process in the daemon)."""
        if prepared.reading:
            try:
                self.intake_renderer.send([item for _, item in prepared.reading], *self._planning_context())
            except BaseException:
                self._release_action_ids(prepared.action_ids())
                raise

    def finish_render(self, prepared: PreparedIntake) -> PreparedIntake:
        """Wait for the batch's notes: the batch is ready to be written."""
        if prepared.reading:
            try:
                rendered = self.intake_renderer.receive()
            except BaseException:
                self._release_action_ids(prepared.action_ids())
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
        begun = BegunIntake(prepared)
        try:
            self._quarantine_unsafe(prepared)
            if not prepared.files:
                return begun
            self.ledger.insert_actions([file.rendered.item.row for file in prepared.files])
            # Each original is linked into Attachments/; the group commit's first barrier makes the
            # claims and links durable before the originals are unlinked from Inbox/.
            inbox = self.layout.folder(Folder.INBOX)
            batch = GroupCommit(barrier=os.fspath(self.layout.root), temp_dir=os.fspath(self.temp_dir))
            for file in prepared.files:
                row = file.rendered.item.row
                keep_as = self.layout.resolve(row.attachments[0])
                self._attachment_dir(keep_as.parent.name)
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
            self._release_action_ids(prepared.action_ids())
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
                self.ledger.drop_claims(
                    [prepared.files[index].rendered.item.row.action_id for index in skipped]
                )
            written = [file.rendered for index, file in enumerate(prepared.files) if index not in skipped]
            if written:
                self._record_actions(written)
                outcome.actions.extend(action.item for action in written)
        finally:
            self._release_action_ids(prepared.action_ids())
        return outcome

    def _quarantine_unsafe(self, prepared: PreparedIntake) -> None:
        for name, reason in prepared.unsafe:
            try:
                quarantined = self.quarantine(Folder.INBOX, name, reason)
            except OSError as error:  # one bad entry must never stop the others
                log.error("could not quarantine an inbox entry", file=display_name(name), error=str(error))
                continue
            if quarantined:
                prepared.outcome.quarantined.append(quarantined)

    def helper_pids(self) -> dict[str, int | None]:
        """The renderer's and the writer's process ids (None: in the daemon, or not started yet)."""
        return {
            "renderer": self.intake_renderer.pid,
            "writer": self.committer.pid,
        }

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
            commit(
                self.committer,
                GroupCommit(barrier=os.fspath(self.layout.root), temp_dir=os.fspath(self.temp_dir)),
            )
        except OSError as error:
            log.error("the vault writer process did not start; writing in the daemon", error=str(error))
            self.committer.close()
            self.committer = InProcessCommitter()

    def _issue_action_ids(self, now: datetime, count: int, *, prefer: str | None = None) -> list[str]:
        """`count` new ids, none in the ledger nor issued to a batch still being written: the short
        random part repeats by chance in a burst. `prefer`: the first candidate for a single id.
        Release them once they are in the ledger (or given up)."""
        with self._issued_lock:
            chosen: list[str] = []
            while len(chosen) < count:
                if prefer is not None:
                    candidates, prefer = {prefer}, None
                else:
                    candidates = {new_action_id(now) for _ in range(count - len(chosen))}
                candidates -= self._issued
                candidates -= set(chosen)
                chosen.extend(sorted(candidates - self.ledger.taken_action_ids(sorted(candidates))))
            self._issued.update(chosen)
            return chosen

    def _release_action_ids(self, action_ids: Sequence[str]) -> None:
        """Written (the ledger holds them now) or given up."""
        with self._issued_lock:
            self._issued.difference_update(action_ids)

    def _describe_file(self, path: Path, name: str, size: int) -> tuple[str, str]:
        """(title, body text) of an inbox file; big or binary files are linked, never loaded whole."""
        limit = self.settings.vault.max_body_bytes
        try:
            head = _read_head(path, min(size, limit) + 1 if size <= limit else SNIFF_BYTES)
        except OSError as error:
            return name, f"_The file could not be read: {error.strerror}._"
        if b"\x00" in head[:SNIFF_BYTES]:
            return (
                name,
                f"Binary file `{name}` ({_human_size(size)}): kept as the attachment below, not read.",
            )
        if size > limit:
            preview = head[:SNIFF_BYTES].decode("utf-8", "replace").rsplit("\n", 1)[0]
            return (
                _first_line(preview) or name,
                f"Large file `{name}` ({_human_size(size)}): linked below, not copied. Its beginning:\n\n"
                + _quote(preview),
            )
        text = _decode_text(head)
        if not text.strip():
            return name, f"Empty file `{name}` ({_human_size(size)})."
        return _first_line(text) or name, text

    def _write_actions(self, actions: Sequence[NewAction]) -> None:
        """Write action notes (and, for a local planner, plan notes) and record them in the ledger."""
        self._commit_actions(self._render_actions(actions))

    def _render_actions(self, actions: Sequence[NewAction]) -> list[RenderedAction]:
        """Notes as bytes and audit lines, nothing written; a local planner plans here."""
        return self.renderer.render_now(actions, *self._planning_context())

    def _planning_context(self) -> tuple[str, list[ActionSpec]]:
        """The handbook and the actions on offer, for a planner that plans inline."""
        if not self.planner.local:
            return "", []
        return self.handbook(), self.registry.specs()

    def _commit_actions(self, rendered: Sequence[RenderedAction]) -> None:
        """One group commit of the notes, then their state in the ledger."""
        fs.write_durable_batch(
            [write for action in rendered for write in action.writes],
            barrier=self.layout.root,
            temp_dir=self.temp_dir,
        )
        self._record_actions(rendered)

    def _record_actions(self, rendered: Sequence[RenderedAction]) -> None:
        states = [
            (action.item, "planned" if action.item.planned is not None else "noted") for action in rendered
        ]
        self.ledger.set_action_state(
            [(item.row.action_id, state, None) for item, state in states],
            [record for action in rendered for record in action.audit],
        )
        for item, state in states:
            item.row.state = state
        self._commit_audit()

    def _action_text(self, item: NewAction, *, status: str) -> str:
        return self.renderer.action_text(item, status=status)

    def plan_request(self, item: NewAction) -> PlanRequest:
        return plan_request(item, self.handbook(), self.registry.specs())

    def apply_transcript(
        self, action_id: str, transcript: str, properties: dict[str, Any]
    ) -> NewAction | None:
        """A late transcript (a voice note first saved as `transcription: pending`): it becomes the
        action note's body, and the plan is made again while nobody has decided on it yet.

        Returns the action to plan again, or None when it is decided already (or unknown)."""
        row = self.ledger.action(action_id)
        if row is None:
            log.warning("transcript for an unknown action", action_id=action_id)
            return None
        row.extra.update({key: value for key, value in properties.items() if value is not None})
        self.ledger.update_action_extra(action_id, row.extra)
        item = NewAction(row=row, text=transcript, received=_received_of(row))
        execution = self.ledger.execution(row.plan_id)
        plan_pending = self.layout.resolve(row.plan_rel).exists() and (
            execution is None or execution.state == "returned"
        )
        if not plan_pending and row.state != "noted":
            # decided already: keep the transcript with the action, leave the plan alone
            note = self.layout.resolve(row.note_rel)
            fs.write_durable(note, self._action_text(item, status=row.state).encode("utf-8"))
            return None
        self.ledger.add_audit([audit_record("action.updated", action_id, reason="transcript arrived")])
        self._commit_audit()
        return item

    def write_plans(self, planned: Sequence[tuple[NewAction, PlanProposal]]) -> None:
        """Plans from an async planner: plan note, then the action note marked planned."""
        writes: list[tuple[str | Path, bytes]] = []
        audit: list[AuditRecord] = []
        today = utcnow().strftime("%Y-%m-%d")
        for item, proposal in planned:
            item.planned = proposal
            writes.append(self.renderer.plan_write(item.row, proposal))
            writes.append(
                (self.layout.resolve(item.row.note_rel), self._action_text(item, status="planned").encode())
            )
            audit.append(plan_audit(item.row, proposal))
            if proposal.cost_usd:
                self.ledger.add_cost(today, proposal.planner, proposal.cost_usd)
        fs.write_durable_batch(writes, barrier=self.layout.root, temp_dir=self.temp_dir)
        self.ledger.set_action_state([(item.row.action_id, "planned", None) for item, _ in planned], audit)
        self._commit_audit()

    # --- intake: messages from sources ---------------------------------------------------

    def intake_message(self, message: IncomingMessage) -> tuple[NewAction | None, str]:
        """Write one message's attachments and action note. (new action or None, action id).

        The id is derived from (source, source_ref), so a redelivery after a crash rewrites the
        same files instead of making a second action.
        """
        dedup_key = f"{message.source}:{message.source_ref}"
        existing = self.ledger.action_by_dedup(dedup_key)
        if existing is not None:
            return None, existing.action_id
        received = message.received if message.received.tzinfo else message.received.replace(tzinfo=UTC)
        # another message hashed alike in the same second gets a random id
        stable = stable_action_id(received.astimezone(UTC), dedup_key)
        action_id = self._issue_action_ids(received.astimezone(UTC), 1, prefer=stable)[0]
        try:
            return self._intake_message(message, dedup_key, received, action_id)
        finally:
            self._release_action_ids([action_id])

    def _intake_message(
        self, message: IncomingMessage, dedup_key: str, received: datetime, action_id: str
    ) -> tuple[NewAction | None, str]:
        title = (message.title or message.subject or "").strip()[:200] or f"{message.source} message"
        stem = note_stem(action_id, title)
        day = received.astimezone(UTC).strftime("%Y-%m-%d")
        directory = self._attachment_dir(day)
        attachments: list[str] = []
        for number, attachment in enumerate(message.attachments, 1):
            name = f"{short_id(action_id)}-{number}-{safe_file_name(attachment.filename)}"
            target = directory / name
            if attachment.path is not None:
                _copy_durable(attachment.path, target)
            else:
                fs.write_durable(target, attachment.data or b"")
            attachments.append(f"{Folder.ATTACHMENTS.value}/{day}/{name}")
        row = ActionRow(
            action_id=action_id,
            source=message.source,
            source_ref=message.source_ref,
            state="claimed",
            note_rel=f"{Folder.NEEDS_ACTION.value}/{stem}.md",
            plan_id=plan_id_for(action_id),
            plan_rel=f"{Folder.PLANS.value}/{stem} plan.md",
            attachments=attachments,
            title=title,
            sender=message.sender,
            extra=dict(message.properties),
            dedup_key=dedup_key,
            created_at=utcnow().isoformat(timespec="seconds"),
        )
        item = NewAction(
            row=row,
            text=message.body,
            received=received,
            subject=message.subject,
            trusted=message.trusted_sender,
        )
        # Notes first (same paths on a redelivery), then the ledger row that makes it count.
        self.ledger.insert_actions([row])
        self._write_actions([item])
        return item, action_id

    # --- quarantine ----------------------------------------------------------------------

    def quarantine(self, folder: Folder, name: str, reason: str) -> Quarantined | None:
        source = self.path(folder, name)
        quarantine_dir = self.layout.folder(Folder.QUARANTINE)
        stamp = utcnow()
        shown = display_name(name)
        # the stamp, the name (cut to stay under 255 bytes with " (why).md") and nothing else
        target = fs.unique_path(
            quarantine_dir, f"{stamp:%Y%m%d-%H%M%S} {safe_file_name(shown, limit=200)}", ""
        )
        try:
            # rename moves a symlink or FIFO itself, never what it points to
            fs.move(
                source,
                target,
                source_watched=folder in (Folder.INBOX, Folder.APPROVED, Folder.REJECTED)
                and stat.S_ISREG(os.lstat(source).st_mode),
            )
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno in (1, 18, 21):  # EPERM/EXDEV/EISDIR on link(): fall back to rename
                os.rename(source, target)
                fs.fsync_dir(quarantine_dir)
            else:
                raise
        note_path = fs.unique_path(quarantine_dir, f"{target.name} (why)", ".md")
        quarantine_id = f"q-{stamp:%Y%m%d-%H%M%S}-{hashlib.sha256(shown.encode()).hexdigest()[:6]}"
        properties = {
            "id": quarantine_id,
            "type": "quarantine",
            "file": wikilink(self.layout.relative(target)),
            "original_name": shown,
            "from": folder.value,
            "reason": reason,
            "quarantined": stamp.isoformat(timespec="seconds"),
        }
        body = (
            f"# Quarantined: {shown}\n\n{reason}.\n\nThe file was moved here unchanged from `{folder.value}/`"
            " and was not processed. Nothing is deleted.\n"
        )
        fs.write_durable(note_path, render_note(properties, body).encode("utf-8"))
        self.ledger.add_audit(
            [audit_record("input.quarantined", quarantine_id, reason=reason, file=shown, folder=folder.value)]
        )
        self._commit_audit()
        log.warning("input quarantined", file=shown, folder=folder.value, reason=reason)
        return Quarantined(name=shown, reason=reason, note_rel=self.layout.relative(note_path))

    # --- decisions: Approved/ and Rejected/ --------------------------------------------------

    def examine_approved(self, names: Sequence[str]) -> DecisionOutcome:
        outcome = DecisionOutcome()
        for name in dict.fromkeys(names):
            try:
                self._examine_approved(name, outcome)
            except OSError as error:
                log.error("could not examine an approved note", file=name, error=str(error))
        self._commit_audit()
        return outcome

    def _examine_approved(self, name: str, outcome: DecisionOutcome) -> None:
        if is_ignored_name(name):
            return
        path = self.path(Folder.APPROVED, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        reason = unsafe_reason(name, info.st_mode)
        if reason is None and not name.endswith(".md"):
            reason = "not a plan note: only .md plan notes are executed"
        if reason is None and info.st_size > MAX_PLAN_BYTES:
            reason = f"larger than {MAX_PLAN_BYTES // 1024} KiB: not a plan note"
        if reason is not None:
            found = self.quarantine(Folder.APPROVED, name, reason)
            if found:
                outcome.quarantined.append(found)
            return
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        text = data.decode("utf-8", errors="replace")
        try:
            plan, properties, body = read_plan(text)
        except NoteError as error:
            age = time.time() - max(info.st_mtime, info.st_ctime)
            settle = self.settings.vault.settle_seconds
            if age < settle:  # perhaps still being written in place: look again once it is still
                outcome.deferred.append((name, settle - age))
                return
            outcome.finished.append(self._fail_unreadable(name, text, str(error)))
            return
        if plan.type != "plan":
            return
        previous = self.ledger.execution(plan.id)
        if previous is not None and previous.state == "done":
            # our own finalize never leaves a copy behind once the ledger says done (see _leave_approved)
            self._ignore_duplicate(name, plan, previous, outcome)
            return
        if previous is not None and previous.state == "rejected":
            outcome.finished.append(
                self._fail(
                    name,
                    plan,
                    properties,
                    body,
                    digest,
                    "this plan was rejected earlier; rejected plans are never"
                    " executed. Ask for a new plan instead.",
                    previous,
                )
            )
            return
        if previous is not None and previous.state in ("executed", "failing"):
            outcome.finished.append(self._finalize(name, plan.id, properties, body, previous))
            return
        if (
            previous is not None
            and previous.state in ("approved", "running")
            and previous.content_hash != digest
        ):
            outcome.revoked.append(self._revoke(name, plan, properties, body, previous))
            return
        resumed = previous is not None and previous.state in ("approved", "running")
        executor = self.registry.get(plan.action)
        if executor is None:
            known = ", ".join(self.registry.names()) or "none"
            outcome.finished.append(
                self._fail(
                    name,
                    plan,
                    properties,
                    body,
                    digest,
                    f"unknown action '{plan.action}' (known: {known})",
                    previous,
                )
            )
            return
        try:
            params = executor.validate(plan.params)
        except ValidationError as error:
            outcome.finished.append(
                self._fail(
                    name,
                    plan,
                    properties,
                    body,
                    digest,
                    f"invalid params for {plan.action}: {describe_validation(error)}",
                    previous,
                )
            )
            return
        action = self.ledger.action(plan.action_id)
        attempt = (previous.attempts if previous else 0) + (0 if resumed else 1)
        if not resumed:
            self.ledger.upsert_execution(
                ExecutionRow(
                    plan_id=plan.id,
                    action_id=plan.action_id,
                    state="approved",
                    content_hash=digest,
                    attempts=attempt,
                    action=plan.action,
                    note_rel=f"{Folder.APPROVED.value}/{name}",
                ),
                [
                    audit_record(
                        "approval.granted",
                        plan.id,
                        action_id=plan.action_id,
                        action=plan.action,
                        attempt=attempt,
                    )
                ],
                durable=False,  # nothing leaves the machine before `running`, which is durable
            )
            outcome.granted.append((plan.id, plan.action_id))
        outcome.jobs.append(
            ExecutionJob(
                plan_id=plan.id,
                action_id=plan.action_id,
                name=name,
                digest=digest,
                properties=properties,
                body=body,
                executor=executor,
                params=params,
                attempt=attempt,
                action_title=action.title if action else "",
                attachments=action.attachments if action else [],
                resumed=resumed,
            )
        )

    def start_job(self, job: ExecutionJob, *, leaves_machine: bool = True) -> bool:
        """Last check before running: the note must still be exactly what was approved.

        `leaves_machine`: the run has an outside effect, so `running` must be durable before it."""
        path = self.path(Folder.APPROVED, job.name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            log.warning("approved plan vanished before it ran", plan_id=job.plan_id)
            return False
        if hashlib.sha256(data).hexdigest() != job.digest:
            try:
                plan, properties, body = read_plan(data.decode("utf-8", errors="replace"))
            except NoteError as error:
                self._fail_unreadable(job.name, data.decode("utf-8", "replace"), str(error))
                return False
            previous = self.ledger.execution(job.plan_id)
            assert previous is not None
            self._revoke(job.name, plan, properties, body, previous)
            return False
        self.ledger.upsert_execution(
            ExecutionRow(
                plan_id=job.plan_id,
                action_id=job.action_id,
                state="running",
                content_hash=job.digest,
                attempts=job.attempt,
                action=job.executor.name,
                note_rel=f"{Folder.APPROVED.value}/{job.name}",
            ),
            durable=leaves_machine,
        )
        return True

    def record_result(
        self, job: ExecutionJob, *, dry_run: bool, result: dict[str, Any] | None, error: str | None
    ) -> Finished:
        """The exactly-once point: `executed` (or `failed`) and its audit line in one transaction."""
        row = ExecutionRow(
            plan_id=job.plan_id,
            action_id=job.action_id,
            state="executed" if error is None else "failing",
            content_hash=job.digest,
            attempts=job.attempt,
            action=job.executor.name,
            dry_run=dry_run,
            result=result,
            error=error,
            note_rel=f"{Folder.APPROVED.value}/{job.name}",
        )
        if error is None:
            audit = [
                audit_record(
                    "plan.executed",
                    job.plan_id,
                    action_id=job.action_id,
                    action=job.executor.name,
                    dry_run=dry_run,
                    attempt=job.attempt,
                    result=_audit_result(result),
                )
            ]
        else:
            audit = [
                audit_record(
                    "plan.failed",
                    job.plan_id,
                    action_id=job.action_id,
                    action=job.executor.name,
                    dry_run=dry_run,
                    attempt=job.attempt,
                    error=error,
                )
            ]
        self.ledger.upsert_execution(row, audit)
        finished = self._finalize(job.name, job.plan_id, job.properties, job.body, row)
        self._commit_audit()
        return finished

    def _finalize(
        self, name: str, plan_id: str, properties: dict[str, Any], body: str, row: ExecutionRow
    ) -> Finished:
        """Write the outcome into the plan note, move it to Done/ or Failed/, update the action note."""
        failed = row.error is not None
        status = "failed" if failed else "done"
        when = utcnow()
        updated = dict(properties)
        updated["status"] = status
        updated["executed_at"] = when.isoformat(timespec="seconds")
        if row.dry_run is not None:
            updated["dry_run"] = row.dry_run
        updated.pop("error", None)
        updated.pop("result", None)
        if failed:
            updated["error"] = row.error
        else:
            updated["result"] = row.result or {}
        new_body = _strip_outcome(body) + rendering.outcome_section(
            status=status, dry_run=row.dry_run, result=row.result, error=row.error, when=when
        )
        target_folder = Folder.FAILED if failed else Folder.DONE
        target = self._leave_approved(name, target_folder, plan_id, render_note(updated, new_body))
        final_rel = self.layout.relative(target)
        self.ledger.upsert_execution(
            ExecutionRow(
                plan_id=plan_id,
                action_id=row.action_id,
                state="failed" if failed else "done",
                content_hash=row.content_hash,
                attempts=row.attempts,
                action=row.action,
                dry_run=row.dry_run,
                result=row.result,
                error=row.error,
                note_rel=final_rel,
                final_rel=final_rel,
            ),
            durable=False,  # recovery finds the note in its folder if this is lost
        )
        action_id = row.action_id or str(properties.get("action_id", ""))
        self._update_action_note(action_id, status)
        return Finished(
            plan_id=plan_id,
            action_id=action_id,
            action=str(row.action or properties.get("action", "")),
            status=status,
            dry_run=row.dry_run,
            result=row.result,
            error=row.error,
            final_rel=final_rel,
        )

    def _leave_approved(self, name: str, folder: Folder, plan_id: str, text: str) -> Path:
        """Write a plan's new text straight into `folder` (not watched), then drop it from Approved/.

        Never a rename inside Approved/: watchdog holds a "moved from" event half a second and every
        approval behind it waits. A crash between the write and the unlink leaves both; the next look
        at Approved/ finds the same plan id at the target and finishes the same way."""
        target = self._target_for(folder, Path(name).stem, plan_id)
        fs.write_durable(target, text.encode("utf-8"))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(Folder.APPROVED, name))
        fs.fsync_dir(self.layout.folder(Folder.APPROVED))
        return target

    def _target_for(self, folder: Folder, stem: str, plan_id: str) -> Path:
        """`folder/stem.md`, unless another note holds that name (then a numbered one)."""
        candidate = self.layout.folder(folder) / f"{stem}.md"
        if candidate.exists():
            try:
                same = parse_note(candidate.read_text(encoding="utf-8"))[0].get("id") == plan_id
            except (OSError, NoteError):
                same = False
            if not same:
                return fs.unique_path(self.layout.folder(folder), stem, ".md")
        return candidate

    def _update_action_note(self, action_id: str, status: str) -> None:
        """Mark the action note; an executed or rejected action's note joins its plan."""
        action = self.ledger.action(action_id) if action_id else None
        if action is None:
            return
        source = self.layout.resolve(action.note_rel)
        destination = {"done": Folder.DONE, "rejected": Folder.REJECTED}.get(status)
        moved_to = self.layout.folder(destination) / source.name if destination is not None else None
        if not source.exists() and moved_to is not None and moved_to.exists():
            # a crash came between our move and the ledger's record of it
            self.ledger.set_action_state([(action_id, status, self.layout.relative(moved_to))])
            return
        try:
            properties, body = parse_note(source.read_text(encoding="utf-8"))
        except (OSError, NoteError) as error:
            log.warning("action note not updated", action_id=action_id, error=str(error))
            self.ledger.set_action_state([(action_id, status, None)])
            return
        if properties.get("status") != status:
            properties["status"] = status
            fs.write_durable(source, render_note(properties, body).encode("utf-8"))
        note_rel = None
        if destination is not None and not action.note_rel.startswith(destination.value + "/"):
            target = fs.unique_path(self.layout.folder(destination), source.stem, ".md")
            fs.move(source, target, source_watched=False)
            note_rel = self.layout.relative(target)
        self.ledger.set_action_state([(action_id, status, note_rel)])

    def _fail(
        self,
        name: str,
        plan: PlanNote,
        properties: dict[str, Any],
        body: str,
        digest: str,
        error: str,
        previous: ExecutionRow | None,
    ) -> Finished:
        row = ExecutionRow(
            plan_id=plan.id,
            action_id=plan.action_id,
            state="failing",
            content_hash=digest,
            attempts=(previous.attempts if previous else 0) + 1,
            action=plan.action,
            error=error,
            note_rel=f"{Folder.APPROVED.value}/{name}",
        )
        self.ledger.upsert_execution(
            row,
            [audit_record("plan.failed", plan.id, action_id=plan.action_id, action=plan.action, error=error)],
        )
        log.warning("plan failed validation", plan_id=plan.id, error=error)
        return self._finalize(name, plan.id, properties, body, row)

    def _fail_unreadable(self, name: str, text: str, error: str) -> Finished:
        """A note whose frontmatter cannot be read: keep it as it is, add the reason, move it to Failed/."""
        match = re.search(r"^id:\s*['\"]?([A-Za-z0-9_.:-]{1,128})", text, re.MULTILINE)
        subject = match.group(1) if match else name
        annotated = text.rstrip("\n") + f"\n\n> [!error] ai-employee could not run this plan\n> {error}\n"
        target = self._leave_approved(name, Folder.FAILED, subject, annotated)
        self.ledger.add_audit([audit_record("plan.failed", subject, error=error, file=name)])
        log.warning("unreadable plan moved to Failed", file=name, error=error)
        return Finished(
            plan_id=subject,
            action_id="",
            action="",
            status="failed",
            dry_run=None,
            result=None,
            error=error,
            final_rel=self.layout.relative(target),
        )

    def _ignore_duplicate(
        self, name: str, plan: PlanNote, previous: ExecutionRow, outcome: DecisionOutcome
    ) -> None:
        reason = (
            f"plan {plan.id} was already executed ({previous.updated_at}); a copy that reappears in Approved/"
            " is never executed again"
        )
        self.ledger.add_audit(
            [audit_record("plan.duplicate_ignored", plan.id, file=name, executed=previous.final_rel)]
        )
        found = self.quarantine(Folder.APPROVED, name, reason)
        if found:
            outcome.quarantined.append(found)
        outcome.duplicates.append(plan.id)

    def _revoke(
        self, name: str, plan: PlanNote, properties: dict[str, Any], body: str, previous: ExecutionRow
    ) -> str:
        """Changed after approval: back to Plans/ for a fresh approval."""
        updated = dict(properties)
        updated["status"] = "pending_approval"
        target = self._leave_approved(name, Folder.PLANS, plan.id, render_note(updated, body))
        self.ledger.upsert_execution(
            ExecutionRow(
                plan_id=plan.id,
                action_id=plan.action_id,
                state="returned",
                attempts=previous.attempts,
                action=plan.action,
                note_rel=self.layout.relative(target),
            ),
            [
                audit_record(
                    "approval.revoked",
                    plan.id,
                    action_id=plan.action_id,
                    reason="the note changed after it was approved; approve it again",
                )
            ],
        )
        log.warning("plan changed after approval; returned to Plans", plan_id=plan.id)
        return plan.id

    def examine_rejected(self, names: Sequence[str]) -> DecisionOutcome:
        outcome = DecisionOutcome()
        for name in dict.fromkeys(names):
            if is_ignored_name(name) or not name.endswith(".md"):
                continue
            path = self.path(Folder.REJECTED, name)
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
                plan, properties, body = read_plan(text)
            except FileNotFoundError:
                continue
            except NoteError:
                continue  # not a plan we can read; a rejected note is never executed anyway
            if properties.get("type") != "plan":
                continue
            previous = self.ledger.execution(plan.id)
            if previous is not None and previous.state in ("rejected", "done", "running", "executed"):
                if previous.state != "rejected":
                    log.warning("plan moved to Rejected after it ran; nothing to undo", plan_id=plan.id)
                continue
            reason = properties.get("rejection_reason")
            self.ledger.upsert_execution(
                ExecutionRow(
                    plan_id=plan.id,
                    action_id=plan.action_id,
                    state="rejected",
                    attempts=previous.attempts if previous else 0,
                    action=plan.action,
                    note_rel=f"{Folder.REJECTED.value}/{name}",
                ),
                [
                    audit_record(
                        "approval.denied",
                        plan.id,
                        action_id=plan.action_id,
                        reason=str(reason) if reason else None,
                    )
                ],
            )
            if properties.get("status") != "rejected":
                updated = dict(properties)
                updated["status"] = "rejected"
                fs.write_durable(
                    path, render_note(updated, body).encode("utf-8"), temp_dir=self.layout.state_dir
                )
            self._update_action_note(plan.action_id, "rejected")
            outcome.rejected.append(plan.id)
        self._commit_audit()
        return outcome

    # --- recovery ----------------------------------------------------------------------------

    def recover(self) -> tuple[list[NewAction], list[str]]:
        """Finish what a crash interrupted. Returns (actions still to plan, approved names to re-examine)."""
        attachments = self.layout.folder(Folder.ATTACHMENTS)
        folders = [self.layout.folder(folder) for folder in Folder if folder != Folder.ATTACHMENTS]
        folders += [entry for entry in attachments.iterdir() if entry.is_dir() and not entry.is_symlink()]
        folders += [self.layout.root, self.layout.state_dir, self.temp_dir]
        for directory in folders:
            if directory.is_dir():
                fs.remove_stale_temps(directory)
        self.flush_audit()
        to_plan: list[NewAction] = []
        for row in self.ledger.unfinished_actions():
            item = self._recover_action(row)
            if item is not None:
                to_plan.append(item)
        approved: list[str] = []
        for execution in self.ledger.open_executions():
            if not execution.note_rel or not execution.note_rel.startswith(Folder.APPROVED.value + "/"):
                continue
            name = execution.note_rel.split("/", 1)[1]
            if self.path(Folder.APPROVED, name).exists():
                approved.append(name)
            elif execution.state in ("executed", "failing"):
                self._recover_moved_plan(execution, name)
        for action_id, state in self.ledger.actions_behind_executions():
            self._update_action_note(action_id, state)
        return to_plan, approved

    def _recover_moved_plan(self, execution: ExecutionRow, name: str) -> None:
        """The plan reached Done/ or Failed/ but the crash came before the ledger said so."""
        folder = Folder.FAILED if execution.state == "failing" else Folder.DONE
        target = self.path(folder, name)
        if not target.exists():
            log.error("an executed plan is missing", folder=folder.value, plan_id=execution.plan_id)
            return
        final_rel = self.layout.relative(target)
        execution.state = "failed" if execution.state == "failing" else "done"
        execution.note_rel = execution.final_rel = final_rel
        self.ledger.upsert_execution(execution)

    def _recover_action(self, row: ActionRow) -> NewAction | None:
        received = datetime.fromisoformat(row.created_at) if row.created_at else utcnow()
        if row.state == "claimed" and row.inbox_name is not None:
            attachment = self.layout.resolve(row.attachments[0])
            inbox_path = self.path(Folder.INBOX, row.inbox_name)
            if not attachment.exists():
                try:
                    info = os.lstat(inbox_path)
                except FileNotFoundError:
                    info = None
                if info is None or info.st_ino != row.inbox_ino:
                    log.error("claimed inbox file is gone; the action is abandoned", action_id=row.action_id)
                    self.ledger.set_action_state([(row.action_id, "abandoned", None)])
                    return None
                self._attachment_dir(attachment.parent.name)
                os.link(inbox_path, attachment)
                fs.fsync_dir(attachment.parent)
            fs.finish_move(inbox_path, attachment)
            _, text = self._describe_file(attachment, row.inbox_name, attachment.stat().st_size)
            item = NewAction(row=row, text=text, received=received)
            self._write_actions([item])
            log.info("recovered an interrupted intake", action_id=row.action_id)
            return None if item.planned else item
        note = self.layout.resolve(row.note_rel)
        try:
            properties, body = parse_note(note.read_text(encoding="utf-8"))
        except (OSError, NoteError):
            if row.state == "claimed":
                # a message whose note never became durable: its source will deliver it again
                self.ledger.set_action_state([(row.action_id, "abandoned", None)])
                with self.ledger.transaction() as db:
                    db.execute("UPDATE actions SET dedup_key = NULL WHERE action_id = ?", (row.action_id,))
            return None
        item = NewAction(
            row=row, text=_body_text(body), received=received, subject=properties.get("subject"), trusted=True
        )
        if row.state == "claimed":
            self._write_actions([item])
            return None if item.planned else item
        return item


def _received_of(row: ActionRow) -> datetime:
    try:
        return datetime.fromisoformat(row.created_at)
    except ValueError:
        return utcnow()


def _copy_durable(source: Path, target: Path) -> None:
    """Link when possible (same filesystem, no copy); otherwise copy in chunks and fsync."""
    try:
        os.link(source, target)
    except FileExistsError:
        return
    except OSError:
        temp = fs.temp_path_for(target)
        with source.open("rb") as reader, temp.open("wb") as writer:
            shutil.copyfileobj(reader, writer, 1024 * 1024)
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(temp, target)
    fs.fsync_dir(target.parent)


def _decode_text(data: bytes) -> str:
    """UTF-8, else Windows-1252 (what Windows editors write: real quotes, not control codes), else Latin-1."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def display_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (surrogate escapes) shown as \\xNN."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def _first_line(text: str) -> str:
    for line in text.splitlines():
        cleaned = line.strip().lstrip("#").strip()
        if cleaned:
            return cleaned[:120]
    return ""


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines())


def _read_head(path: Path, wanted: int) -> bytes:
    """Up to `wanted` bytes from the start of a file, never through a symlink.

    Plain `os` calls: a buffered file object makes three more syscalls per file, and in a burst
    each one is a hand-off of the GIL."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        while wanted > 0:
            chunk = os.read(fd, wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


def _body_text(body: str) -> str:
    """The message text from an action note's body (drop the title line and the attachment list)."""
    lines = body.strip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    text = "\n".join(lines)
    return text.split("\n## Attachments\n", 1)[0].strip()


_OUTCOME = re.compile(r"\n## (Result|Error|Outcome)\n_\d{4}-.*", re.DOTALL)


def _strip_outcome(body: str) -> str:
    """A retried plan keeps one outcome section, the latest."""
    return _OUTCOME.sub("", body).rstrip("\n") + "\n"


def _audit_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result's scalar facts (ids, credits) for the audit line; requests stay in the note."""
    if not result:
        return None
    return {key: value for key, value in result.items() if isinstance(value, (str, int, float, bool))}
