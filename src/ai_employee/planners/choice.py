"""Which planner plans: config chooses; the template planner is always the fallback."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from importlib.metadata import entry_points

import structlog

from ai_employee.config import Settings
from ai_employee.model.plugins import PLANNERS_GROUP, load_factory
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.planners.base import Planner
from ai_employee.planners.fallback import FallbackPlanner, PendingPlanner, template_planner
from ai_employee.planners.guard import collect_secrets
from ai_employee.vault.ledger import Ledger

log = structlog.get_logger(__name__)

#: `llm.DEADLINE_SLACK_SECONDS`: the slack on a model call's deadline, for the SDK's backoff.
DEADLINE_SLACK_SECONDS = 30.0


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
    """The chosen planner, returned at once: a model planner (its SDK takes a second to import) is
    built in a background thread, and the first plan waits for it; if it cannot be built, the
    template planner plans, with the reason. Only the chosen planner's module is imported."""
    template = template_planner(settings)
    kind = settings.planner_kind()
    if kind == "template":
        return template
    if not entry_points(group=PLANNERS_GROUP, name=kind):  # the metadata only, nothing imported
        log.error("no such planner; using the template planner", planner=kind)
        return template
    primary = PendingPlanner(
        kind, partial(_build_primary, kind, settings, ledger), wait_seconds=build_wait_seconds(settings)
    )
    return FallbackPlanner(primary, template, secrets=collect_secrets(settings))


def _build_primary(kind: str, settings: Settings, ledger: Ledger) -> Planner:
    """In the build thread: import the planner's module (and its SDK), then build it."""
    factory = load_factory(PLANNERS_GROUP, kind)
    if factory is None:
        raise ImportError(f"no entry point {kind!r} in {PLANNERS_GROUP}")
    primary: Planner = factory(settings, budget_store=LedgerBudgetStore(ledger))
    log.info("planner", planner=kind, fallback="template", day=datetime.now(UTC).strftime("%Y-%m-%d"))
    return primary


def build_wait_seconds(settings: Settings) -> float:
    """How long a plan waits for the model planner being built: as long as one call to it may
    take (`LLMPlanner.outer_deadline`, which is not imported here: it brings httpx)."""
    per_attempt = settings.services.connect_timeout + settings.planner.timeout_seconds
    return per_attempt * (settings.planner.max_retries + 1) + DEADLINE_SLACK_SECONDS
