"""What a Telegram message carries, in the terms the intake needs.

Kept apart from the service so that the rules (which file, what name, what title) read in
one place and are tested without a bot. The source-neutral part (Content, names, titles) is
shared with WhatsApp in chat_content.
"""

from __future__ import annotations

import datetime as dtm
import warnings

from telegram import Message, User
from telegram.warnings import PTBDeprecationWarning

from ai_employee.sources.chat_content import (
    MAX_DOWNLOAD_BYTES,
    TITLE_CHARS,
    Content,
    ContentKind,
    MediaRef,
    first_line,
    format_duration,
    make_title,
    safe_filename,
)
from ai_employee.sources.chat_content import extension_for as _extension

__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "TITLE_CHARS",
    "Content",
    "ContentKind",
    "MediaRef",
    "classify",
    "describe_sender",
    "first_line",
    "format_duration",
    "make_title",
    "safe_filename",
    "seconds_of",
]


def seconds_of(value: int | float | dtm.timedelta | None) -> int:
    """PTB 22 returns durations as int or timedelta depending on PTB_TIMEDELTA: accept both."""
    if value is None:
        return 0
    if isinstance(value, dtm.timedelta):
        return int(value.total_seconds())
    return int(value)


def _duration(media: object) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        return seconds_of(getattr(media, "duration", None))


def classify(message: Message) -> Content | None:
    """The content the source takes, or None for what it does not (stickers, locations, ...)."""
    stem = f"{message.chat_id}-{message.message_id}".lstrip("-")  # group ids are negative
    caption = message.caption or ""
    if message.voice is not None:
        voice = message.voice
        content_type = voice.mime_type or "audio/ogg"
        return Content(
            "voice",
            caption,
            MediaRef(
                voice.file_id,
                f"voice-{stem}{_extension(content_type, '.ogg')}",
                content_type,
                voice.file_size,
                _duration(voice),
            ),
        )
    if message.audio is not None:
        audio = message.audio
        content_type = audio.mime_type or "audio/mpeg"
        fallback = f"audio-{stem}{_extension(content_type, '.mp3')}"
        return Content(
            "audio",
            caption,
            MediaRef(
                audio.file_id,
                safe_filename(audio.file_name, fallback),
                content_type,
                audio.file_size,
                _duration(audio),
            ),
        )
    if message.photo:
        largest = max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))
        return Content(
            "photo",
            caption,
            MediaRef(largest.file_id, f"photo-{stem}.jpg", "image/jpeg", largest.file_size),
        )
    if message.document is not None:
        document = message.document
        fallback = f"document-{stem}{_extension(document.mime_type, '.bin')}"
        return Content(
            "document",
            caption,
            MediaRef(
                document.file_id,
                safe_filename(document.file_name, fallback),
                document.mime_type,
                document.file_size,
            ),
        )
    if message.text:
        return Content("text", message.text)
    return None


def describe_sender(user: User | None, chat_title: str | None = None) -> str | None:
    """ "Jane Doe (@jane)": what a human recognises; the numeric id is in source_ref already."""
    if user is None:
        return chat_title
    name = user.full_name.strip() or str(user.id)
    return f"{name} (@{user.username})" if user.username else name
