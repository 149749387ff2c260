"""Which planner plans: config chooses; the template planner is always the fallback."""

from __future__ import annotations

import structlog

from ai_employee.config import Settings
from ai_employee.pipeline.registry import ExecutorRegistry
from ai_employee.planners.base import Planner
from ai_employee.plugins import PLANNERS_GROUP, PluginDisabled, load_factories
from ai_employee.vault.ledger import Ledger

log = structlog.get_logger(__name__)


def build_planner(settings: Settings, registry: ExecutorRegistry, ledger: Ledger) -> Planner:
    factories, broken = load_factories(PLANNERS_GROUP)
    template = factories["template"](settings)
    kind = settings.planner_kind()
    if kind == "template":
        return template  # type: ignore[no-any-return]
    if kind in broken or kind not in factories:
        log.error("planner unavailable; using the template planner", planner=kind, reason=broken.get(kind))
        return template  # type: ignore[no-any-return]
    try:
        planner = factories[kind](settings)
    except PluginDisabled as reason:
        log.warning("planner off; using the template planner", planner=kind, reason=str(reason))
        return template  # type: ignore[no-any-return]
    return planner  # type: ignore[no-any-return]
