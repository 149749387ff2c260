"""Who decided a plan: the stamp (`decided_by`, `decided_via`, `decided_at`) in its note."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai_employee.model.services import DOORS, Decider


def decider_of(properties: Mapping[str, Any]) -> Decider:
    """Who decided a plan, from the stamp the CLI and the buttons write; a bare move is the vault's."""
    door = properties.get("decided_via")
    who = properties.get("decided_by")
    if door in DOORS and isinstance(who, str) and who:
        return Decider(who, door)
    return Decider.vault()


def stamp_hand_decision(properties: dict[str, Any], seen_at: str) -> None:
    """A plan moved by hand carries no stamp: record the vault's door and when it was seen."""
    door = properties.get("decided_via")
    if door in DOORS and door != "vault" and properties.get("decided_by"):
        return
    properties["decided_via"] = "vault"
    properties.pop("decided_by", None)
    if not properties.get("decided_at") or door != "vault":
        properties["decided_at"] = seen_at
