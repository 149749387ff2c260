"""What a person may type to name a plan, and the plans that wait for a decision.

`resolve_plan(layout, ref)` is the one resolver the command line uses (`approve`, `reject`,
`history`): `ref` is a plan's full id, the 6-character short id in its file name, an action's id
(its plan is meant), or a note's file name or path (a plan note, or an action note: its plan).
It reads only the folders a plan can be in, by name first; Done/ by name alone, so it stays fast
however many plans were executed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ai_employee.model.ids import plan_id_for, short_id
from ai_employee.vault.layout import Folder, VaultLayout, is_ignored_name
from ai_employee.vault.notes import NoteError, parse_note
from ai_employee.vault.plan_format import params_of

#: Where a plan note can be, in the order a person most likely means.
PLAN_FOLDERS = (Folder.PLANS, Folder.FAILED, Folder.APPROVED, Folder.REJECTED, Folder.DONE)
#: Where an action note can be.
ACTION_FOLDERS = (Folder.NEEDS_ACTION, Folder.DONE, Folder.REJECTED)
#: Folders small enough to read every note's frontmatter when no name matches (renamed notes).
_READ_ALL = (Folder.PLANS, Folder.FAILED, Folder.APPROVED)
_SHORT = re.compile(r"[0-9a-f]{6}")
_FULL = re.compile(r"(plan|act)-\d{8}-\d{6}-[0-9a-f]{6}")
_HEAD_BYTES = 70 * 1024


class PlanRefError(LookupError):
    """`ref` names no plan, or more than one; the message says which, for the person."""

    def __init__(self, message: str, candidates: list[PlanRef] | None = None) -> None:
        super().__init__(message)
        self.candidates = candidates or []


@dataclass(frozen=True)
class PlanRef:
    plan_id: str
    folder: Folder
    path: Path  # absolute


def resolve_plan(layout: VaultLayout, ref: str, folders: tuple[Folder, ...] = PLAN_FOLDERS) -> PlanRef:
    """The plan `ref` names. Raises PlanRefError (not found, or an ambiguous short id)."""
    text = ref.strip()
    if not text:
        raise PlanRefError("no plan named: give its id, its 6-character short id or its note's file name")
    by_path = _by_path(layout, text, folders)
    if by_path is not None:
        return by_path
    if _FULL.fullmatch(text):
        plan_id = plan_id_for(text.removeprefix("act-")) if text.startswith("act-") else text
        found = find_plan(layout, plan_id, folders)
        if found is None:
            raise PlanRefError(f"no plan with id {plan_id} in {_names(folders)}")
        return found
    short = text.lower()
    if _SHORT.fullmatch(short):
        return _by_short_id(layout, short, folders)
    found = find_plan(layout, text, folders)  # an id of another shape (a plan written by hand)
    if found is None:
        raise PlanRefError(
            f"no plan named {text!r}: give its id (plan-...), its 6-character short id"
            " or its note's file name"
        )
    return found


def _by_path(layout: VaultLayout, text: str, folders: tuple[Folder, ...]) -> PlanRef | None:
    """`text` as a note's path (absolute, vault-relative or from here) or file name, with or without .md."""
    names = [text] if text.endswith(".md") else [text, text + ".md"]
    candidates: list[Path] = []
    for name in names:
        path = Path(name)
        candidates += [path, layout.root / path] if not path.is_absolute() else [path]
        if "/" not in name:
            candidates += [layout.folder(folder) / name for folder in (*folders, *ACTION_FOLDERS)]
    for path in candidates:
        if path.is_file() and path.suffix == ".md":
            properties = _properties_of(path)
            if properties is None:
                raise PlanRefError(f"{path} is not a note ai-employee can read")
            ident = str(properties.get("id") or "")
            if properties.get("type") == "action" and ident:
                plan_id = str(properties.get("plan_id") or plan_id_for(ident.removeprefix("act-")))
                found = find_plan(layout, plan_id, folders)
                if found is None:
                    raise PlanRefError(f"the action {ident} has no plan in {_names(folders)}")
                return found
            if properties.get("type") != "plan" or not ident:
                raise PlanRefError(f"{path} is not a plan note")
            folder = _folder_of(layout, path)
            if folder is not None:
                return PlanRef(ident, folder, path.resolve())
            found = find_plan(layout, ident, folders)  # a copy elsewhere: the vault's note is meant
            if found is None:
                raise PlanRefError(f"the plan {ident} ({path}) is not in {_names(folders)} of {layout.root}")
            return found
    return None


def _folder_of(layout: VaultLayout, path: Path) -> Folder | None:
    parent = path.resolve().parent
    for folder in Folder:
        if layout.folder(folder).resolve() == parent:
            return folder
    return None


def _by_short_id(layout: VaultLayout, short: str, folders: tuple[Folder, ...]) -> PlanRef:
    found: dict[str, PlanRef] = {}
    for folder in folders:
        for name in _note_names(layout, folder):
            if f" {short} " in name or name.endswith(f" {short}.md"):
                path = layout.folder(folder) / name
                properties = _properties_of(path)
                ident = str(properties.get("id") or "") if properties else ""
                if properties and properties.get("type") == "plan" and short_id(ident) == short:
                    found.setdefault(ident, PlanRef(ident, folder, path))
    if not found:
        for folder in (folder for folder in folders if folder in _READ_ALL):
            for name in _note_names(layout, folder):
                path = layout.folder(folder) / name
                properties = _properties_of(path)
                ident = str(properties.get("id") or "") if properties else ""
                if properties and properties.get("type") == "plan" and short_id(ident) == short:
                    found.setdefault(ident, PlanRef(ident, folder, path))
    if not found:
        raise PlanRefError(f"no plan with the short id {short} in {_names(folders)}")
    if len(found) > 1:
        candidates = sorted(found.values(), key=lambda ref: ref.plan_id)
        listed = "; ".join(f"{ref.plan_id} ({layout.relative(ref.path)})" for ref in candidates)
        raise PlanRefError(
            f"the short id {short} names {len(found)} plans: {listed}. Give the full id.", candidates
        )
    return next(iter(found.values()))


def find_plan(
    layout: VaultLayout, plan_id: str, folders: tuple[Folder, ...] = PLAN_FOLDERS
) -> PlanRef | None:
    """A plan by its exact id: names holding its short id first, then every note of the small
    folders (a note renamed in Obsidian keeps its id); Done/ and Rejected/ by name alone."""
    short = short_id(plan_id)
    for folder in folders:
        names = _note_names(layout, folder)
        likely = [name for name in names if short in name]
        for name in likely:
            path = layout.folder(folder) / name
            properties = _properties_of(path)
            if properties is not None and str(properties.get("id")) == plan_id:
                return PlanRef(plan_id, folder, path)
        if folder in _READ_ALL:
            for name in names:
                if name in likely:
                    continue
                path = layout.folder(folder) / name
                properties = _properties_of(path)
                if properties is not None and str(properties.get("id")) == plan_id:
                    return PlanRef(plan_id, folder, path)
    return None


def _note_names(layout: VaultLayout, folder: Folder) -> list[str]:
    try:
        with os.scandir(layout.folder(folder)) as entries:
            return sorted(
                entry.name
                for entry in entries
                if entry.name.endswith(".md") and not is_ignored_name(entry.name) and entry.is_file()
            )
    except FileNotFoundError:
        return []


def _properties_of(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            head = handle.read(_HEAD_BYTES)
        properties, _ = parse_note(head)
    except (OSError, NoteError):
        return None
    return properties


def _names(folders: tuple[Folder, ...]) -> str:
    return ", ".join(f"{folder.value}/" for folder in folders)


# --- what waits for a decision ------------------------------------------------------------------


@dataclass(frozen=True)
class WaitingPlan:
    plan_id: str
    folder: Folder  # Plans/ (to decide) or Failed/ (to retry or leave)
    path: Path
    action: str
    title: str
    risk: str
    created: datetime | None

    @property
    def short_id(self) -> str:
        return short_id(self.plan_id)

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.created is None else max(0.0, (now - self.created).total_seconds())

    def as_json(self, layout: VaultLayout, now: datetime) -> dict[str, Any]:
        return {
            "id": self.plan_id,
            "short_id": self.short_id,
            "folder": self.folder.value,
            "note": layout.relative(self.path),
            "action": self.action,
            "title": self.title,
            "risk": self.risk,
            "created": self.created.isoformat() if self.created else None,
            "age_seconds": None if self.created is None else round(self.age_seconds(now) or 0.0),
        }


def waiting_plans(layout: VaultLayout, *, failed: bool = True) -> list[WaitingPlan]:
    """The plans in Plans/ (and Failed/, which a person may retry), oldest first. Reads those
    folders only, never the rest of the vault."""
    waiting: list[WaitingPlan] = []
    for folder in (Folder.PLANS, Folder.FAILED) if failed else (Folder.PLANS,):
        for name in _note_names(layout, folder):
            path = layout.folder(folder) / name
            try:
                with path.open("r", encoding="utf-8", errors="replace") as handle:
                    head = handle.read(_HEAD_BYTES)
                properties, body = parse_note(head)
            except (OSError, NoteError):
                continue
            if properties.get("type") != "plan" or not properties.get("id"):
                continue
            waiting.append(
                WaitingPlan(
                    plan_id=str(properties["id"]),
                    folder=folder,
                    path=path,
                    action=str(properties.get("action") or ""),
                    title=_title(properties, body, path),
                    risk=str(properties.get("risk") or ""),
                    created=_when(properties.get("created")),
                )
            )
    return sorted(waiting, key=lambda plan: (plan.created or datetime.max.replace(tzinfo=UTC), plan.plan_id))


def _title(properties: dict[str, Any], body: str, path: Path) -> str:
    params = params_of(properties)
    for key in ("title", "prompt", "subject"):
        value = params.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().splitlines()[0]
    match = re.search(r"^# (?:Plan: )?(.+)$", body, re.MULTILINE)
    return match.group(1).strip() if match else path.stem


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
