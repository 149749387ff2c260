"""What every source hands to the intake."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

SourceKind = Literal["file", "email", "telegram", "whatsapp", "slack"]


@dataclass
class IncomingAttachment:
    """An original to keep under Attachments/. Exactly one of `data` or `path` is set.

    With `path`, the intake links the file into Attachments/ (same filesystem) or copies it,
    and never loads it whole into memory.
    """

    filename: str
    data: bytes | None = None
    path: Path | None = None
    content_type: str | None = None
    #: read for its text (documents/); False for what is no document of its own (an e-mail's raw .eml)
    extract: bool = True


@dataclass
class IncomingMessage:
    source: SourceKind
    source_ref: str  # the source's own id: IMAP "UIDVALIDITY:UID", Telegram "chat:message"
    title: str
    body: str
    received: datetime
    sender: str | None = None
    subject: str | None = None
    attachments: list[IncomingAttachment] = field(default_factory=list)
    #: extra action-note properties, e.g. transcript_cost_usd, transcription: pending
    properties: dict[str, Any] = field(default_factory=dict)
    trusted_sender: bool = True


class IntakeSink(Protocol):
    async def submit(self, message: IncomingMessage) -> str:
        """Write the message's attachments and action note; return the action id.

        Returns only once the action note is durable. Idempotent per (source, source_ref):
        submitting the same message again returns the first action's id and writes nothing.
        """
        ...
