"""Which planner plans: config chooses; the template planner is always the fallback."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from ai_employee.config import Settings
from ai_employee.model.plugins import PLANNERS_GROUP, PluginDisabled, load_factory
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.planners.base import Planner
from ai_employee.planners.fallback import FallbackPlanner
from ai_employee.planners.guard import collect_secrets
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
    """Only the chosen planner's module is imported (the SDKs take a second to import)."""
    template_factory = load_factory(PLANNERS_GROUP, "template")
    if template_factory is None:
        raise RuntimeError("the template planner is not installed (pip install -e .)")
    template: Planner = template_factory(settings)
    kind = settings.planner_kind()
    if kind == "template":
        return template
    try:
        factory = load_factory(PLANNERS_GROUP, kind)
    except Exception as error:  # a broken plug-in must not stop the daemon
        log.error("planner failed to load; using the template planner", planner=kind, error=str(error))
        return template
    if factory is None:
        log.error("no such planner; using the template planner", planner=kind)
        return template
    try:
        primary: Planner = factory(settings, budget_store=LedgerBudgetStore(ledger))
    except PluginDisabled as reason:
        log.warning("planner off; using the template planner", planner=kind, reason=str(reason))
        return template
    log.info("planner", planner=kind, fallback="template", day=datetime.now(UTC).strftime("%Y-%m-%d"))
    return FallbackPlanner(primary, template, secrets=collect_secrets(settings))
