"""What the chat sources (Telegram, WhatsApp) share on the way in: a message being prepared for
the intake, its voice note transcribed (Whisper, with the cost record), and the note's body when
nothing was said.

A voice note that cannot be transcribed still becomes an action: the audio is kept under
Attachments/ and the note says why there is no transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ai_employee.clients.retry import ServiceError
from ai_employee.clients.whisper import AudioFile, Transcriber, Transcript, TranscriptionError
from ai_employee.model.messages import IncomingAttachment, IncomingMessage, IntakeSink
from ai_employee.sources.chat_content import Content, MediaRef, format_duration, make_title
from ai_employee.sources.chat_replies import arrival_text
from ai_employee.vault.notes import NoteError, parse_note

log = structlog.get_logger(__name__)


@dataclass
class Prepared:
    """An IncomingMessage ready for the intake, plus what the reply and the records need."""

    message: IncomingMessage
    content: Content
    transcript: Transcript | None = None
    pending_reason: str | None = None
    transcription_error: str | None = None
    attachment_error: str | None = None
    temp_files: list[Path] = field(default_factory=list)

    async def submit(self, intake: IntakeSink) -> str:
        """Hand the message to the intake (durable when it returns); returns the action id. The
        downloaded temp files go either way: the intake has moved what it keeps."""
        try:
            return await intake.submit(self.message)
        finally:
            self.cleanup()

    def arrival_text(self, action_id: str) -> str:
        """The reply that says the message became action `action_id` (and what went wrong)."""
        return arrival_text(
            action_id,
            self.content,
            transcript=self.transcript,
            pending_reason=self.pending_reason,
            transcription_error=self.transcription_error,
            attachment_error=self.attachment_error,
        )

    def cleanup(self) -> None:
        for path in self.temp_files:
            with contextlib.suppress(OSError):
                path.unlink()


async def transcribe_speech(
    transcriber: Transcriber | None, media: MediaRef, path: Path | None, prepared: Prepared
) -> str:
    """Transcribe a fresh voice note into `prepared` (transcript, cost, duration properties);
    returns what was said, else the caption. On any failure the action is still created:
    `pending_reason` says a later try may work, `transcription_error` that it never will."""
    source = prepared.message.source
    properties = prepared.message.properties
    properties["duration_seconds"] = media.duration_seconds
    if path is None:
        properties["transcription"] = "failed"
        return prepared.content.text
    if transcriber is None:
        prepared.pending_reason = "no OpenAI API key is configured"
    else:
        data = await asyncio.to_thread(path.read_bytes)
        audio = AudioFile(media.filename, data, media.content_type, media.duration_seconds)
        try:
            prepared.transcript = await transcriber.transcribe(audio)
        except TranscriptionError as error:  # this audio will never go through: say so, keep it
            prepared.transcription_error = error.message
            properties["transcription"] = "failed"
            properties["transcription_error"] = error.message
            log.warning(
                f"{source}.transcription_refused",
                source_ref=prepared.message.source_ref,
                error=error.message,
            )
            return prepared.content.text
        except ServiceError as error:  # the service is down or the key is wrong: try again later
            prepared.pending_reason = f"transcription failed: {error.message}"
            log.warning(
                f"{source}.transcription_failed",
                source_ref=prepared.message.source_ref,
                engine=transcriber.engine,
                error=error.message,
            )
    if prepared.transcript is None:
        properties["transcription"] = "pending"
        return prepared.content.text
    properties.update(transcript_properties(prepared.transcript, media.duration_seconds))
    return prepared.transcript.text


async def fill_in(
    prepared: Prepared,
    sender: str | None,
    *,
    download: Callable[[MediaRef, Prepared], Awaitable[Path | None]],
    transcriber: Callable[[], Transcriber | None],
    label: str,
) -> Prepared:
    """Complete a chat message's action: its file downloaded and attached (`download` returns
    None when the file could not be had), a voice note transcribed, then its body and title."""
    content = prepared.content
    said = content.text
    media = content.media
    if media is not None:
        path = await download(media, prepared)
        if path is not None:
            prepared.message.attachments.append(
                IncomingAttachment(filename=media.filename, path=path, content_type=media.content_type)
            )
        if content.is_speech:
            said = await transcribe_speech(transcriber(), media, path, prepared)
    prepared.message.body = compose_body(content, said, prepared)
    prepared.message.title = make_title(content, said, sender, label=label)
    return prepared


def compose_body(content: Content, said: str, prepared: Prepared) -> str:
    """The note's body: what was said (a transcript keeps its caption), else what arrived."""
    body = said
    if content.is_speech and prepared.transcript is not None and content.text:
        body = f"{prepared.transcript.text}\n\nCaption: {content.text}"
    return body or placeholder_body(content, prepared)


def placeholder_body(content: Content, prepared: Prepared) -> str:
    """The note's body when nothing was said: what arrived, and why there is no transcript."""
    media = content.media
    if content.is_speech and media is not None:
        kind = "Voice note" if content.kind == "voice" else "Audio"
        reason = (
            prepared.pending_reason
            or prepared.transcription_error
            or prepared.attachment_error
            or "no speech was recognised"
        )
        return f"{kind} ({format_duration(media.duration_seconds)}) without a transcript: {reason}."
    if content.kind == "photo":
        return "A photo sent without a caption."
    if content.kind == "document" and media is not None:
        return f"The document {media.filename}, sent without a caption."
    return ""


def transcript_properties(transcript: Transcript, fallback_seconds: int) -> dict[str, Any]:
    """The action's properties for a transcript, whether it came with the note or later."""
    seconds = round(transcript.duration_seconds) or fallback_seconds
    return {
        "transcription": "done",
        "duration_seconds": int(seconds),
        "transcript_cost_usd": transcript.cost_usd,
        "transcribed_by": transcript.engine,
    }


def kept_audio(vault_root: Path, info: Mapping[str, Any] | None, filename: str) -> bytes | None:
    """A voice note's kept original, for a transcription tried again: among the ledger's
    attachment paths of the action (`info`), else the action note's `attachments`, the one with
    the same suffix first. None when it cannot be found inside the vault."""
    if not info:
        return None
    root = vault_root.resolve()
    entries = info.get("attachments")
    if not isinstance(entries, list | tuple):
        entries = _note_attachments(root, info.get("note"))
    suffix = Path(filename).suffix.lower()
    candidates: list[Path] = []
    for entry in entries:
        name = str(entry).strip().removeprefix("[[").removesuffix("]]").split("|", 1)[0]
        path = (root / name).resolve() if name else root
        if path != root and path.is_relative_to(root) and path.is_file():
            candidates.append(path)
    candidates.sort(key=lambda path: path.suffix.lower() != suffix)
    for path in candidates:
        with contextlib.suppress(OSError):
            return path.read_bytes()
    return None


def _note_attachments(root: Path, note: Any) -> list[str]:
    """The `attachments` property of an action note (vault-relative path), or [] if unreadable."""
    if not isinstance(note, str) or not note:
        return []
    path = (root / note).resolve()
    if not path.is_relative_to(root):
        return []
    try:
        properties, _ = parse_note(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, NoteError):
        return []
    found = properties.get("attachments")
    return [str(entry) for entry in found] if isinstance(found, list) else []
