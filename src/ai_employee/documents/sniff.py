"""Which kind of document a file is, from its first bytes and its name; cheap, reads nothing itself."""

from __future__ import annotations

IMAGE_MAGIC: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"BM",  # BMP
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp")
_ZIP = b"PK\x03\x04"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


def document_kind(head: bytes, name: str, content_type: str | None = None) -> str | None:
    """pdf, image, zip (an Office or OpenDocument file, or an archive), ole (Outlook .msg, legacy
    Office), rtf, html, eml; None for plain text and unknown binary files."""
    lowered = name.lower()
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head.startswith(_ZIP):
        return "zip"
    if head.startswith(_OLE):
        return "ole"
    if head.lstrip()[:5] == b"{\\rtf":
        return "rtf"
    start = head.lstrip()[:64].lower()
    if lowered.endswith((".html", ".htm")) or start.startswith(_HTML_STARTS):
        return "html"
    if lowered.endswith(".eml") or content_type == "message/rfc822":
        return "eml"
    return None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)
