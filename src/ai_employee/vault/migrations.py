"""Migrations of the notes' format: a list of steps, each rewriting notes written before a change.

The daemon runs them at start over the folders where a note may still be acted on (Plans/,
Approved/, Failed/); `ai-employee migrate [--dry-run]` shows or does the same by hand. Each step
is idempotent (a migrated note is left alone) and every rewrite is a durable write of the whole
note. A note the daemon is running (or about to) is skipped: rewriting it would change what
was approved.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ai_employee.vault import fs
from ai_employee.vault.layout import Folder, VaultLayout, is_ignored_name
from ai_employee.vault.notes import NoteError, json_block, parse_note, render_note
from ai_employee.vault.plan_format import (
    SENT_HEADING,
    params_of,
    replace_section,
    result_summary,
    sent_section,
    with_params,
)

log = structlog.get_logger(__name__)

#: The folders whose notes may still be acted on.
MIGRATED_FOLDERS = (Folder.PLANS, Folder.APPROVED, Folder.FAILED)
#: A note larger than this is not a plan note (the pipeline refuses to run it anyway).
MAX_NOTE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Migration:
    """One change of the notes' format. `changes` says what `apply` would do (nothing: it does not
    apply); `apply` returns the note's new properties and body."""

    name: str
    decision: str  # where the change is recorded (docs/decisions/)
    changes: Callable[[Mapping[str, Any], str], list[str]]
    apply: Callable[[dict[str, Any], str], tuple[dict[str, Any], str]]
    #: bytes that every note this step applies to holds (a cheap filter before parsing)
    marker: tuple[bytes, ...] = ()


# --- 0009: flat plan properties ---------------------------------------------------------------


def _flat_plan_changes(properties: Mapping[str, Any], body: str) -> list[str]:
    if properties.get("type") != "plan":
        return []
    changes = []
    params = properties.get("params")
    if isinstance(params, Mapping):
        names = ", ".join(str(name) for name in params) or "none"
        changes.append(f"params -> flat properties ({names})")
    result = properties.get("result")
    if isinstance(result, Mapping):
        summary = ", ".join(result_summary(result)) or "none"
        changes.append(f"result -> the body, summary properties ({summary})")
    if isinstance(properties.get("planner_usage"), Mapping):
        changes.append("planner_usage -> planner_input_tokens, planner_output_tokens")
    return changes


def _flat_plan_apply(properties: dict[str, Any], body: str) -> tuple[dict[str, Any], str]:
    updated = dict(properties)
    nested_params = isinstance(properties.get("params"), Mapping)
    if nested_params:
        updated = with_params(updated, params_of(properties))
    result = properties.get("result")
    if isinstance(result, Mapping):
        updated.pop("result", None)
        for name, value in result_summary(result).items():
            updated.setdefault(name, value)
        if "## Result" not in body:
            body = body.rstrip("\n") + "\n\n## Result\n\n" + json_block(dict(result)) + "\n"
    usage = properties.get("planner_usage")
    if isinstance(usage, Mapping):
        rebuilt: dict[str, Any] = {}
        for name, value in updated.items():
            if name == "planner_usage":
                rebuilt.update({f"planner_{key}": count for key, count in usage.items()})
            else:
                rebuilt[name] = value
        updated = rebuilt
    if nested_params and properties.get("status") in ("pending_approval", "approved", "failed"):
        body = replace_section(body, SENT_HEADING, sent_section(params_of(updated)), before="## Decide")
    return updated, body


FLAT_PLAN_PROPERTIES = Migration(
    name="flat-plan-properties",
    decision="docs/decisions/0009-plan-parameters-as-flat-properties.md",
    changes=_flat_plan_changes,
    apply=_flat_plan_apply,
    marker=(b"\nparams:", b"\nresult:", b"\nplanner_usage:"),
)

#: Every migration, oldest first. Add new steps at the end.
MIGRATIONS: tuple[Migration, ...] = (FLAT_PLAN_PROPERTIES,)


# --- running them -----------------------------------------------------------------------------


def upgrade(
    properties: dict[str, Any], body: str, migrations: tuple[Migration, ...] = MIGRATIONS
) -> tuple[dict[str, Any], str, list[str]]:
    """A note's properties and body in the current format, and what changed (in memory only)."""
    changed: list[str] = []
    for migration in migrations:
        changes = migration.changes(properties, body)
        if changes:
            properties, body = migration.apply(properties, body)
            changed += [f"{migration.name}: {change}" for change in changes]
    return properties, body, changed


@dataclass
class MigratedNote:
    path: str  # vault-relative
    changes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why it was left as it is


def migrate_vault(
    layout: VaultLayout,
    *,
    dry_run: bool = False,
    in_flight: Callable[[str], bool] | None = None,
    folders: tuple[Folder, ...] = MIGRATED_FOLDERS,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[MigratedNote]:
    """Bring the notes of `folders` to the current format. `in_flight(plan_id)`: the plan is being
    run (its note must not change). Returns the notes that needed a change (done unless dry_run)."""
    markers = tuple(marker for migration in migrations for marker in migration.marker)
    migrated: list[MigratedNote] = []
    for folder in folders:
        directory = layout.folder(folder)
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(directory)
                if entry.name.endswith(".md") and not is_ignored_name(entry.name) and entry.is_file()
            )
        except FileNotFoundError:
            continue
        for name in names:
            note = _migrate_one(
                layout, directory / name, markers, migrations, dry_run=dry_run, in_flight=in_flight
            )
            if note is not None:
                migrated.append(note)
    return migrated


def _migrate_one(
    layout: VaultLayout,
    path: Path,
    markers: tuple[bytes, ...],
    migrations: tuple[Migration, ...],
    *,
    dry_run: bool,
    in_flight: Callable[[str], bool] | None,
) -> MigratedNote | None:
    try:
        if path.is_symlink() or path.stat().st_size > MAX_NOTE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if markers and not any(marker in data for marker in markers):
        return None
    try:
        properties, body = parse_note(data.decode("utf-8"))
    except (NoteError, UnicodeDecodeError):
        return None  # the pipeline says what is wrong with it when it is acted on
    new_properties, new_body, changes = upgrade(properties, body, migrations)
    if not changes:
        return None
    note = MigratedNote(layout.relative(path), changes)
    plan_id = properties.get("id")
    if in_flight is not None and isinstance(plan_id, str) and in_flight(plan_id):
        note.skipped = "being run; rewritten when it finishes"
        return note
    if dry_run:
        return note
    try:
        if path.read_bytes() != data:  # changed under us (a person editing it): next time
            note.skipped = "changed while it was read; run again"
            return note
        temp_dir = layout.state_dir if layout.state_dir.is_dir() else None
        fs.write_durable(path, render_note(new_properties, new_body).encode("utf-8"), temp_dir=temp_dir)
    except OSError as error:
        note.skipped = f"could not write it: {error}"
        log.warning("note not migrated", note=note.path, error=str(error))
    return note
