"""The text of an Inbox file: its title and body, read without loading big or binary files whole."""

from __future__ import annotations

import os
from pathlib import Path

from ai_employee.documents.sniff import document_kind

SNIFF_BYTES = 8192


def describe_file(path: Path, name: str, size: int, *, limit: int) -> tuple[str, str]:
    """(title, body text) of a file; one over `limit` bytes, or binary, is linked, never loaded whole."""
    title, text, _ = describe_or_sniff(path, name, size, limit=limit, documents=False)
    return title, text


def describe_or_sniff(
    path: Path, name: str, size: int, *, limit: int, documents: bool = True
) -> tuple[str, str, str | None]:
    """(title, body text, None) of a text file, (name, text, "empty") of one with nothing in it, or
    (name, "", kind) of a document that needs a reader (`sniff.document_kind`: pdf, image, an Office
    file, ...), from one read of its head."""
    try:
        head = read_head(path, min(size, limit) + 1 if size <= limit else SNIFF_BYTES)
    except OSError as error:
        return name, f"_The file could not be read: {error.strerror}._", None
    if documents and head:
        kind = document_kind(head[:SNIFF_BYTES], name) or ("other" if b"\x00" in head[:SNIFF_BYTES] else None)
        if kind is not None:
            return name, "", kind
    title, text = _describe_head(head, name, size, limit)
    return title, text, "empty" if size == 0 or (size <= limit and not decode_text(head).strip()) else None


def _describe_head(head: bytes, name: str, size: int, limit: int) -> tuple[str, str]:
    if b"\x00" in head[:SNIFF_BYTES]:
        return (
            name,
            f"Binary file `{name}` ({human_size(size)}): kept as the attachment below, not read.",
        )
    if size > limit:
        preview = head[:SNIFF_BYTES].decode("utf-8", "replace").rsplit("\n", 1)[0]
        return (
            first_line(preview) or name,
            f"Large file `{name}` ({human_size(size)}): linked below, not copied. Its beginning:\n\n"
            + _quote(preview),
        )
    text = decode_text(head)
    if not text.strip():
        return name, f"Empty file `{name}` ({human_size(size)}): there is nothing to read."
    title = first_line(text) or name
    return title, without_heading(text, title)


def without_heading(text: str, title: str) -> str:
    """The text without its first line when that line is a Markdown heading saying the title: the
    note shows the title as its own heading already."""
    stripped = text.lstrip()
    line, _, rest = stripped.partition("\n")
    if line.startswith("#") and line.lstrip("#").strip() == title and rest.strip():
        return rest.lstrip("\n")
    return text


def decode_text(data: bytes) -> str:
    """UTF-8, else Windows-1252 (what Windows editors write: real quotes, not control codes), else Latin-1."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def first_line(text: str) -> str:
    """The first line with words in it, without Markdown heading marks, cut to 120 characters."""
    for line in text.splitlines():
        cleaned = line.strip().lstrip("#").strip()
        if cleaned:
            return cleaned[:120]
    return ""


def read_head(path: Path, wanted: int) -> bytes:
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


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines())
