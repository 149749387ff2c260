"""A remark on an action note: a reply that could not be sent is recorded where a human looks.

The note is found through the ledger (its current path: Needs_Action/, Done/...), read, given the
properties `whatsapp_reply: failed` and `whatsapp_reply_error`, and a line at the end of its body,
and written back durably (temp, fsync, rename, fsync dir), the way the pipeline updates a note.
A note that moved in the meantime is looked up again once; one that cannot be found or read is
left alone (the log has the line either way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from ai_employee.vault import fs
from ai_employee.vault.notes import NoteError, parse_note, render_note

log = structlog.get_logger("ai_employee.sources.whatsapp")

ActionInfo = Callable[[str], Mapping[str, Any] | None]


class NoteRemarks:
    def __init__(self, vault_root: Path, action_info: ActionInfo) -> None:
        self._root = vault_root.resolve()
        self._action_info = action_info
        self._lock = asyncio.Lock()

    async def record(self, action_id: str, remark: str) -> bool:
        async with self._lock:
            for _ in range(2):
                info = self._action_info(action_id)
                note = info.get("note") if info else None
                if not isinstance(note, str) or not note:
                    break
                path = (self._root / note).resolve()
                if not path.is_relative_to(self._root):
                    break
                try:
                    done = await asyncio.to_thread(_remark, path, remark)
                except FileNotFoundError:
                    continue  # moved meanwhile: ask the ledger where it is now
                except (OSError, UnicodeDecodeError, NoteError) as error:
                    log.warning("whatsapp.note_not_updated", action_id=action_id, error=str(error))
                    return False
                return done
        log.warning("whatsapp.note_not_found", action_id=action_id)
        return False


def _remark(path: Path, remark: str) -> bool:
    properties, body = parse_note(path.read_text(encoding="utf-8"))
    line = f"WhatsApp: {remark}"
    if line in body:
        return True
    properties["whatsapp_reply"] = "failed"
    properties["whatsapp_reply_error"] = remark[:500]
    body = body.rstrip("\n") + f"\n\n{line}\n"
    if not path.exists():
        raise FileNotFoundError(path)
    fs.write_durable(path, render_note(properties, body).encode("utf-8"))
    return True
