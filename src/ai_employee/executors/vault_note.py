"""vault.note: file the content as a note in the vault. Its effect stays in the vault, so it runs
for real in dry-run mode too."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ai_employee.model.executor import ActionParams, ExecutionContext, ExecutionError, Executor
from ai_employee.model.ids import short_id, slugify
from ai_employee.vault.fs import write_durable
from ai_employee.vault.layout import STATE_DIR, Folder
from ai_employee.vault.notes import render_note

_RESERVED = {folder.value.lower() for folder in Folder if folder != Folder.NOTES} | {STATE_DIR}


class VaultNoteParams(ActionParams):
    title: str = Field(min_length=1, max_length=200)
    content: str = Field("", max_length=200_000)
    folder: str = Field("Notes", max_length=200, description="vault-relative folder for the note")

    @field_validator("folder")
    @classmethod
    def _inside_vault(cls, value: str) -> str:
        parts = [part for part in value.replace("\\", "/").split("/") if part not in ("", ".")]
        if not parts:
            return "Notes"
        if value.startswith(("/", "\\")) or any(part == ".." or part.startswith(".") for part in parts):
            raise ValueError("folder must be a plain folder inside the vault (no '..', no absolute path)")
        if parts[0].lower() in _RESERVED:
            raise ValueError(f"folder must not be one of the daemon's state folders ({parts[0]})")
        if len(parts) > 4:
            raise ValueError("folder may be at most 4 levels deep")
        return "/".join(parts)


class VaultNoteExecutor(Executor):
    name = "vault.note"
    params_model = VaultNoteParams
    description = "File a note in the vault (default folder Notes/). Nothing leaves the machine."
    external = False

    def _target(self, params: VaultNoteParams, ctx: ExecutionContext) -> Path:
        folder = ctx.vault_root / params.folder
        return folder / f"{slugify(params.title)} {short_id(ctx.plan_id)}.md"

    def render_dry_run(self, params: ActionParams, ctx: ExecutionContext) -> dict[str, Any]:
        assert isinstance(params, VaultNoteParams)
        return {
            "writes": ctx.vault_root.name
            + "/"
            + self._target(params, ctx).relative_to(ctx.vault_root).as_posix()
        }

    async def execute(self, params: ActionParams, ctx: ExecutionContext) -> dict[str, Any]:
        assert isinstance(params, VaultNoteParams)
        return await asyncio.to_thread(self._write, params, ctx)

    def _write(self, params: VaultNoteParams, ctx: ExecutionContext) -> dict[str, Any]:
        target = self._target(params, ctx)
        root = ctx.vault_root.resolve()
        folder = target.parent

        def check_inside() -> None:
            # a symlinked folder must not lead the write (or a mkdir) outside the vault
            if not Path(os.path.realpath(folder)).is_relative_to(root):
                raise ExecutionError(f"folder {params.folder} leads outside the vault; nothing was written")

        check_inside()
        folder.mkdir(parents=True, exist_ok=True)
        check_inside()
        properties = {
            "id": f"note-{short_id(ctx.plan_id)}",
            "type": "note",
            "title": params.title,
            "plan_id": ctx.plan_id,
            "action_id": ctx.action_id,
        }
        write_durable(
            target, render_note(properties, f"# {params.title}\n\n{params.content}\n").encode("utf-8")
        )
        relative = target.relative_to(ctx.vault_root).as_posix()
        return {"note": f"[[{relative[:-3]}]]", "path": relative}


def create(settings: Any) -> VaultNoteExecutor:
    return VaultNoteExecutor()
