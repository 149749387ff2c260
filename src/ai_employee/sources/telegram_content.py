"""What a Telegram message carries, in the terms the intake needs.

Kept apart from the service so that the rules (which file, what name, what title) read in
one place and are tested without a bot.
"""

from __future__ import annotations

import datetime as dtm
import mimetypes
import re
import warnings
from dataclasses import dataclass
from typing import Literal

from telegram import Message, User
from telegram.warnings import PTBDeprecationWarning

ContentKind = Literal["text", "voice", "audio", "photo", "document"]

#: getFile refuses larger files on the public Bot API ("file is too big").
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
TITLE_CHARS = 80

_UNSAFE_NAME = re.compile(r"[^\w.\- ]+", re.UNICODE)


@dataclass(frozen=True)
class MediaRef:
    """A file to fetch with getFile: Telegram's id for it and the name to keep it under."""

    file_id: str
    filename: str
    content_type: str | None
    size: int | None
    duration_seconds: int = 0


@dataclass(frozen=True)
class Content:
    kind: ContentKind
    text: str  # the message text or the caption; "" when there is none
    media: MediaRef | None = None

    @property
    def is_speech(self) -> bool:
        return self.kind in ("voice", "audio")


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


def safe_filename(name: str | None, fallback: str) -> str:
    """A name that is safe as the last part of a path: no folders, no control characters."""
    if not name:
        return fallback
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip(" .")
    return cleaned[:120] or fallback


def _extension(content_type: str | None, default: str) -> str:
    if content_type:
        guessed = mimetypes.guess_extension(content_type.split(";")[0].strip())
        if guessed:
            return ".ogg" if guessed == ".oga" else guessed
    return default


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


def first_line(text: str, limit: int = TITLE_CHARS) -> str:
    for line in text.splitlines():
        stripped = " ".join(line.split())
        if stripped:
            return stripped if len(stripped) <= limit else stripped[: limit - 1].rstrip() + "…"
    return ""


def make_title(content: Content, body: str, sender: str | None) -> str:
    """The action's title: the first line of what was said, else what kind of thing arrived."""
    line = first_line(body)
    if line:
        return line
    who = f" from {sender.split(' (@')[0]}" if sender else ""
    if content.kind == "voice":
        return f"Voice note{who}"
    if content.kind == "audio":
        return f"Audio{who}"
    if content.kind == "photo":
        return f"Photo{who}"
    if content.kind == "document" and content.media is not None:
        return f"Document {content.media.filename}{who}"
    return f"Telegram message{who}"


def format_duration(seconds: int) -> str:
    minutes, rest = divmod(max(0, seconds), 60)
    return f"{minutes}:{rest:02d}"
