"""Intake of messages from the sources (email, Telegram, WhatsApp, Slack): one message's
attachments kept under Attachments/ and its action note written, claimed in the ledger by a key
derived from (source, source_ref), so that a redelivery after a crash makes no second action.
`IntakeSteps` hands these on (`is_taken`, `read_message_documents`, `intake_message`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

from ai_employee.documents.extraction import Extraction
from ai_employee.documents.markdown import document_markdown, extraction_properties
from ai_employee.model.ids import note_stem, plan_id_for, safe_file_name, short_id, stable_action_id
from ai_employee.model.messages import IncomingMessage
from ai_employee.pipeline.context import StepContext, utcnow
from ai_employee.pipeline.documents import InboxDocuments
from ai_employee.pipeline.renderer import NewAction
from ai_employee.vault import fs
from ai_employee.vault.layout import Folder
from ai_employee.vault.ledger import ActionRow


class MessageIntake:
    """One message from a source becomes an action note (and, with a local planner, its plan)."""

    def __init__(
        self,
        ctx: StepContext,
        documents: InboxDocuments,
        write_actions: Callable[[Sequence[NewAction]], None],
    ) -> None:
        self.ctx = ctx
        #: reads the attachments' documents in worker processes
        self.documents = documents
        #: writes the action notes and records them (`IntakeSteps.write_actions`)
        self.write_actions = write_actions

    def is_taken(self, message: IncomingMessage) -> bool:
        """This message made an action already (a redelivery)."""
        return self.ctx.ledger.action_by_dedup(f"{message.source}:{message.source_ref}") is not None

    def read_message_documents(self, message: IncomingMessage) -> list[Future[Extraction] | None]:
        """Start reading the message's documents in the reading workers (any thread)."""
        return self.documents.read_attachments(message.attachments, self.ctx.temp_dir)

    def intake_message(
        self, message: IncomingMessage, documents: Sequence[Extraction | None] = ()
    ) -> tuple[NewAction | None, str]:
        """Write one message's attachments and action note. (new action or None, action id).
        `documents`: what was read from each attachment (`read_message_documents`), shown in the note.

        The id is derived from (source, source_ref), so a redelivery after a crash rewrites the
        same files instead of making a second action.
        """
        dedup_key = f"{message.source}:{message.source_ref}"
        existing = self.ctx.ledger.action_by_dedup(dedup_key)
        if existing is not None:
            return None, existing.action_id
        received = message.received if message.received.tzinfo else message.received.replace(tzinfo=UTC)
        # another message hashed alike in the same second gets a random id
        stable = stable_action_id(received.astimezone(UTC), dedup_key)
        action_id = self.ctx.issue_action_ids(received.astimezone(UTC), 1, prefer=stable)[0]
        try:
            return self._intake_message(message, dedup_key, received, action_id, documents)
        finally:
            self.ctx.release_action_ids([action_id])

    def _intake_message(
        self,
        message: IncomingMessage,
        dedup_key: str,
        received: datetime,
        action_id: str,
        documents: Sequence[Extraction | None],
    ) -> tuple[NewAction | None, str]:
        title = (message.title or message.subject or "").strip()[:200] or f"{message.source} message"
        stem = note_stem(action_id, title)
        day = received.astimezone(UTC).strftime("%Y-%m-%d")
        directory = self.ctx.attachment_dir(day)
        attachments: list[str] = []
        for number, attachment in enumerate(message.attachments, 1):
            name = f"{short_id(action_id)}-{number}-{safe_file_name(attachment.filename)}"
            target = directory / name
            if attachment.path is not None:
                _copy_durable(attachment.path, target)
            else:
                fs.write_durable(target, attachment.data or b"")
            attachments.append(f"{Folder.ATTACHMENTS.value}/{day}/{name}")
        body, extra = message.body, dict(message.properties)
        read = [
            (attachment.filename, kept, document)
            for attachment, kept, document in zip(message.attachments, attachments, documents, strict=False)
            if document is not None
        ]
        if read:
            sections = [f"## {name}\n\n{document_markdown(document, kept)}" for name, kept, document in read]
            body = "\n\n".join([body.rstrip(), *sections]) if body.strip() else "\n\n".join(sections)
            for key, value in extraction_properties([document for _, _, document in read]).items():
                extra.setdefault(key, value)
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
            extra=extra,
            dedup_key=dedup_key,
            created_at=utcnow().isoformat(timespec="seconds"),
        )
        item = NewAction(
            row=row,
            text=body,
            received=received,
            subject=message.subject,
            trusted=message.trusted_sender,
        )
        # Notes first (same paths on a redelivery), then the ledger row that makes it count.
        self.ctx.ledger.insert_actions([row])
        self.write_actions([item])
        return item, action_id


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
