"""What a chat message carries (Telegram, WhatsApp), in the terms the intake needs.

Source-neutral: each chat source classifies its own wire objects into a `Content` (text, or a
file to fetch with its caption), and from there the rules are shared: the file's safe name,
the action's title, how a duration reads.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from typing import Literal

ContentKind = Literal["text", "voice", "audio", "photo", "document"]

#: getFile refuses larger files on the public Bot API ("file is too big").
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
TITLE_CHARS = 80

_UNSAFE_NAME = re.compile(r"[^\w.\- ]+", re.UNICODE)


@dataclass(frozen=True)
class MediaRef:
    """A file to fetch: the source's id for it (Telegram file_id, WhatsApp media id) and the
    name to keep it under."""

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


def safe_filename(name: str | None, fallback: str) -> str:
    """A name that is safe as the last part of a path: no folders, no control characters."""
    if not name:
        return fallback
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip(" .")
    return cleaned[:120] or fallback


def extension_for(content_type: str | None, default: str) -> str:
    """A file extension for a MIME type ("audio/ogg; codecs=opus" -> ".ogg"), else `default`."""
    if content_type:
        guessed = mimetypes.guess_extension(content_type.split(";")[0].strip())
        if guessed:
            return ".ogg" if guessed == ".oga" else guessed
    return default


def first_line(text: str, limit: int = TITLE_CHARS) -> str:
    for line in text.splitlines():
        stripped = " ".join(line.split())
        if stripped:
            return stripped if len(stripped) <= limit else stripped[: limit - 1].rstrip() + "…"
    return ""


def make_title(content: Content, body: str, sender: str | None, *, label: str = "Telegram message") -> str:
    """The action's title: the first line of what was said, else what kind of thing arrived.

    `sender` reads "Jane Doe (@jane)" or "Jane Doe (+49...)": the title names the person only."""
    line = first_line(body)
    if line:
        return line
    who = f" from {sender.split(' (')[0]}" if sender else ""
    if content.kind == "voice":
        return f"Voice note{who}"
    if content.kind == "audio":
        return f"Audio{who}"
    if content.kind == "photo":
        return f"Photo{who}"
    if content.kind == "document" and content.media is not None:
        return f"Document {content.media.filename}{who}"
    return f"{label}{who}"


def format_duration(seconds: int) -> str:
    minutes, rest = divmod(max(0, seconds), 60)
    return f"{minutes}:{rest:02d}"
