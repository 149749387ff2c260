"""Plans that wait: when a person edits one in Plans/, its "What will be sent" section is made
again from what would run (the parameters as the action validates them), with the reason when
it would fail. The section is for reading: the properties are what runs (decision 0009).

Driven by the watcher's hints for Plans/ (in-place writes and moves in, not our own writes) and
by the rescans at start: a note is read only when its size, mtime or inode changed since it was
last looked at, and written only when the section really changes, so our own write is a fixed
point, never a loop.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from pydantic import ValidationError

from ai_employee.pipeline.context import StepContext
from ai_employee.vault import fs
from ai_employee.vault.layout import Folder, is_ignored_name
from ai_employee.vault.migrations import upgrade
from ai_employee.vault.note_models import describe_validation
from ai_employee.vault.notes import FENCE, NoteError, parse_note, render_note, split_note
from ai_employee.vault.plan_format import (
    DECIDE_HEADING,
    SENT_HEADING,
    params_of,
    replace_section,
    sent_section,
)

log = structlog.get_logger(__name__)

MAX_PLAN_BYTES = 1024 * 1024
#: names remembered with the state they were last seen in; bounded (Plans/ is a human's backlog)
_SEEN_MAX = 100_000


class PlanRefresh:
    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self._seen: dict[str, tuple[int, int, int]] = {}

    def refresh_plans(self, names: Sequence[str]) -> int:
        """Look at each of `names` in Plans/; returns how many notes were rewritten."""
        rewritten = 0
        for name in dict.fromkeys(names):
            try:
                rewritten += self._refresh(name)
            except OSError as error:
                log.warning("could not refresh a plan note", file=name, error=str(error))
        return rewritten

    def sent_body(self, properties: Mapping[str, Any], body: str) -> str:
        """`body` with its "What will be sent" section made from what would run."""
        params = params_of(properties)
        shown: Mapping[str, Any] = params
        problem: str | None = None
        action = str(properties.get("action") or "")
        executor = self.ctx.registry.get(action)
        if executor is None:
            known = ", ".join(self.ctx.registry.names()) or "none"
            problem = f"unknown action '{action}' (known: {known})"
        else:
            try:
                shown = executor.validate(params).model_dump(mode="json", exclude_unset=True)
            except ValidationError as invalid:
                problem = f"invalid params for {action}: {describe_validation(invalid)}"
        return replace_section(body, SENT_HEADING, sent_section(shown, problem), before=DECIDE_HEADING)

    def _refresh(self, name: str) -> int:
        if is_ignored_name(name) or not name.endswith(".md"):
            return 0
        path = self.ctx.path(Folder.PLANS, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            self._seen.pop(name, None)
            return 0
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_PLAN_BYTES or self._seen.get(name) == key:
            return 0
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        try:
            properties, body = parse_note(text)
        except NoteError:
            self._remember(name, key)  # perhaps half-typed: its error is told when it is approved
            return 0
        if properties.get("type") != "plan":
            self._remember(name, key)
            return 0
        upgraded, new_body, changes = upgrade(properties, body)
        new_body = self.sent_body(upgraded, new_body)
        if changes:
            new_text = render_note(upgraded, new_body)
        else:  # the person's frontmatter kept byte for byte: only the section is ours
            frontmatter, _ = split_note(text)
            new_text = f"{FENCE}\n{frontmatter}{FENCE}\n{new_body}"
        if new_text == text:
            self._remember(name, key)
            return 0
        if path.read_bytes() != data:  # edited again meanwhile: its own hint follows
            return 0
        written = new_text.encode("utf-8")
        fs.write_durable(path, written, temp_dir=self.ctx.layout.state_dir)
        if self._decided_meanwhile(name, written):
            return 0
        after = os.lstat(path)
        self._remember(name, (after.st_ino, after.st_mtime_ns, after.st_size))
        log.info("plan note's 'What will be sent' made again", file=name, plan_id=properties.get("id"))
        return 1

    def _decided_meanwhile(self, name: str, written: bytes) -> bool:
        """The note was moved to Approved/ or Rejected/ between our last read and our write: our
        write made a stale copy in Plans/, which goes (the decided note is the person's)."""
        layout = self.ctx.layout
        if not any((layout.folder(folder) / name).exists() for folder in (Folder.APPROVED, Folder.REJECTED)):
            return False
        path = self.ctx.path(Folder.PLANS, name)
        if path.read_bytes() == written:
            path.unlink()
            fs.fsync_dir(layout.folder(Folder.PLANS))
            log.info("plan decided while its note was refreshed; the stale copy removed", file=name)
        self._seen.pop(name, None)
        return True

    def _remember(self, name: str, key: tuple[int, int, int]) -> None:
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()
        self._seen[name] = key
