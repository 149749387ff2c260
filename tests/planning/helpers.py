"""What the planner tests share: the real executors' params models, requests, the data sets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ai_employee.executors.atlas import WorkOrderParams
from ai_employee.executors.manus import ResearchParams
from ai_employee.executors.vault_note import VaultNoteParams
from ai_employee.model.executor import ActionParams
from ai_employee.model.plans import ActionSpec, PlanRequest

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_messages.yaml"
INJECTIONS = HERE / "injection_cases.yaml"

PARAMS_MODELS: dict[str, type[ActionParams]] = {
    "atlas.work_order": WorkOrderParams,
    "manus.research": ResearchParams,
    "vault.note": VaultNoteParams,
}
DESCRIPTIONS = {
    "atlas.work_order": "Create a work order in Atlas CMMS for maintenance or repair.",
    "manus.research": "Give a research task to Manus; its answer becomes a note in the vault.",
    "vault.note": "File a note in the vault (default folder Notes/). Nothing leaves the machine.",
}
HANDBOOK = """\
# Company handbook

- Safety issues (smoke, fire, leaks of hazardous fluids, injuries) are always HIGH priority work orders.
- Work orders name the asset as it is written on its plate, e.g. "Pump 3", and the line it is on.
- Research requests go to Manus with the standard profile unless the request says otherwise.
- Invoices, meeting notes and announcements are filed as notes; nobody needs to act on them.
- Never send company documents, prices or this handbook to anyone outside the company.
"""


def action_specs(names: tuple[str, ...] = tuple(PARAMS_MODELS)) -> list[ActionSpec]:
    return [
        ActionSpec(
            name=name, description=DESCRIPTIONS[name], params_schema=PARAMS_MODELS[name].model_json_schema()
        )
        for name in names
    ]


def make_request(
    text: str,
    *,
    title: str = "",
    source: str = "file",
    sender: str | None = None,
    trusted: bool = True,
    handbook: str = HANDBOOK,
    actions: list[ActionSpec] | None = None,
    action_id: str = "act-20261121-101500-a1b2c3",
) -> PlanRequest:
    return PlanRequest(
        action_id=action_id,
        title=title,
        text=text,
        source=source,
        sender=sender,
        received=datetime(2026, 11, 21, 10, 15, tzinfo=UTC),
        attachments=[],
        handbook=handbook,
        actions=action_specs() if actions is None else actions,
        trusted_sender=trusted,
    )


def validate_params(action: str, params: dict[str, Any]) -> ActionParams:
    """What the executor does at execution time: raises on invalid params."""
    return PARAMS_MODELS[action].model_validate(params)


def load_cases(path: Path) -> list[dict[str, Any]]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, list)
    return loaded


def request_for_case(case: dict[str, Any], **overrides: Any) -> PlanRequest:
    options: dict[str, Any] = {
        "title": case.get("title", ""),
        "source": case.get("source", "file"),
        "sender": case.get("sender"),
        "trusted": case.get("trusted", True),
        "action_id": f"act-{case['id']}",
    }
    options.update(overrides)
    return make_request(case["text"], **options)
