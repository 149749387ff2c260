"""Ids and file names: human readable, unique and sortable (date, slug, short id)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime

from ai_employee.model.tokens import random_hex

_UNSAFE = re.compile(r'[\\/:*?"<>|#^\[\]\x00-\x1f]+')
_NOT_WORD = re.compile(r"[^\w\s-]+")
_SPACES = re.compile(r"[\s_]+")
_DASHES = re.compile(r"-{2,}")


def new_action_id(now: datetime) -> str:
    return f"act-{now:%Y%m%d-%H%M%S}-{random_hex(3)}"


def stable_action_id(received: datetime, dedup_key: str) -> str:
    """The same message (same source and source_ref) always gets the same id: redelivery is harmless."""
    digest = hashlib.sha256(dedup_key.encode("utf-8")).hexdigest()[:6]
    return f"act-{received:%Y%m%d-%H%M%S}-{digest}"


def plan_id_for(action_id: str) -> str:
    return "plan-" + action_id.removeprefix("act-")


def action_id_for(plan_id: str) -> str:
    """The action a plan was made for (a plan's id is its action's, with another prefix)."""
    return "act-" + plan_id.removeprefix("plan-")


def short_id(any_id: str) -> str:
    return any_id.rsplit("-", 1)[-1]


def slugify(text: str, limit: int = 48) -> str:
    normalized = unicodedata.normalize("NFKC", text).strip().lower()
    cleaned = _NOT_WORD.sub(" ", normalized)
    slug = _SPACES.sub("-", cleaned).strip("-.")
    slug = _DASHES.sub("-", slug)
    if len(slug) > limit:
        slug = slug[:limit].rstrip("-.")
    return slug or "untitled"


def safe_file_name(name: str, limit: int = 150) -> str:
    """A name that is safe inside Attachments/: no separators, no leading dot."""
    cleaned = _UNSAFE.sub("_", name).strip()
    cleaned = cleaned.lstrip(".") or "file"
    if len(cleaned.encode("utf-8")) > limit:
        stem, dot, suffix = cleaned.rpartition(".")
        if not dot or len(suffix) > 16:
            stem, suffix = cleaned, ""
        encoded = stem.encode("utf-8")[: limit - len(suffix) - 1]
        cleaned = encoded.decode("utf-8", "ignore") + ("." + suffix if suffix else "")
    return cleaned


def note_stem(action_id: str, title: str) -> str:
    stamp = action_id.removeprefix("act-")[:15]  # YYYYMMDD-HHMMSS
    return f"{stamp} {slugify(title)} {short_id(action_id)}"


def display_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (surrogate escapes) shown as \\xNN."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name
