"""Unsafe input out of the way: moved unchanged to Quarantine/, with a note saying why."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

import structlog

from ai_employee.model.ids import display_name, safe_file_name
from ai_employee.pipeline.context import StepContext, utcnow
from ai_employee.vault import fs
from ai_employee.vault.audit import audit_record
from ai_employee.vault.layout import Folder
from ai_employee.vault.notes import render_note, wikilink

log = structlog.get_logger(__name__)

#: link() refuses these; the entry is renamed instead
_CANNOT_LINK = (1, 18, 21)  # EPERM, EXDEV, EISDIR


@dataclass
class Quarantined:
    name: str
    reason: str
    note_rel: str


def quarantine(ctx: StepContext, folder: Folder, name: str, reason: str) -> Quarantined | None:
    """Move `folder/name` to Quarantine/ with a note; None when it is gone already."""
    source = ctx.path(folder, name)
    quarantine_dir = ctx.layout.folder(Folder.QUARANTINE)
    stamp = utcnow()
    shown = display_name(name)
    # the stamp, the name (cut to stay under 255 bytes with " (why).md") and nothing else
    target = fs.unique_path(quarantine_dir, f"{stamp:%Y%m%d-%H%M%S} {safe_file_name(shown, limit=200)}", "")
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
        if error.errno in _CANNOT_LINK:
            os.rename(source, target)
            fs.fsync_dir(quarantine_dir)
        else:
            raise
    note_path = fs.unique_path(quarantine_dir, f"{target.name} (why)", ".md")
    quarantine_id = f"q-{stamp:%Y%m%d-%H%M%S}-{hashlib.sha256(shown.encode()).hexdigest()[:6]}"
    properties = {
        "id": quarantine_id,
        "type": "quarantine",
        "file": wikilink(ctx.layout.relative(target)),
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
    ctx.ledger.add_audit(
        [audit_record("input.quarantined", quarantine_id, reason=reason, file=shown, folder=folder.value)]
    )
    ctx.commit_audit()
    log.warning("input quarantined", file=shown, folder=folder.value, reason=reason)
    return Quarantined(name=shown, reason=reason, note_rel=ctx.layout.relative(note_path))
