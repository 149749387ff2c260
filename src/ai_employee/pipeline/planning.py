"""Which planner plans: config chooses; the template planner is always the fallback."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from ai_employee.config import Settings
from ai_employee.pipeline.registry import ExecutorRegistry
from ai_employee.planners.base import Planner
from ai_employee.planners.fallback import FallbackPlanner
from ai_employee.planners.guard import collect_secrets
from ai_employee.plugins import PLANNERS_GROUP, PluginDisabled, load_factories
from ai_employee.vault.ledger import Ledger

log = structlog.get_logger(__name__)


class LedgerBudgetStore:
    """Today's planning spend, read from the ledger's cost table (which each written plan adds
    to): nothing is counted twice and the budget survives restarts."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def get(self, day: str) -> float:
        return self._ledger.cost(day)

    def put(self, day: str, spent_usd: float) -> None:
        """The pipeline records each plan's cost itself when it writes the plan."""


def build_planner(settings: Settings, registry: ExecutorRegistry, ledger: Ledger) -> Planner:
    factories, broken = load_factories(PLANNERS_GROUP)
    template: Planner = factories["template"](settings)
    kind = settings.planner_kind()
    if kind == "template":
        return template
    if kind in broken or kind not in factories:
        log.error("planner unavailable; using the template planner", planner=kind, reason=broken.get(kind))
        return template
    try:
        primary: Planner = factories[kind](settings, budget_store=LedgerBudgetStore(ledger))
    except PluginDisabled as reason:
        log.warning("planner off; using the template planner", planner=kind, reason=str(reason))
        return template
    log.info("planner", planner=kind, fallback="template", day=datetime.now(UTC).strftime("%Y-%m-%d"))
    return FallbackPlanner(primary, template, secrets=collect_secrets(settings))
