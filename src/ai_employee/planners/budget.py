"""What a model call costs, and the per-day planning budget.

Prices are USD per million tokens, as the providers publish them (checked November 2026);
they live here, in code, because they change with the model, not with the deployment. A model
not in the table is priced at `UNKNOWN_MODEL_PRICE`, deliberately high, so that an unknown model
can only make the budget stop planning too early, never too late. Update the table when a
provider changes its prices (docs/planning.md says how).

The day is the UTC day. Spend must survive restarts, so it lives behind `BudgetStore`, which the
daemon backs with its ledger; `InMemoryBudgetStore` is for tests and one-off commands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from ai_employee.planners.errors import BudgetExceeded

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cache_write_factor: float = 1.25  # Anthropic: writing the prompt cache costs 1.25x input
    cache_read_factor: float = 0.1  # reading it costs 0.1x input


#: Model name prefix -> price. The longest matching prefix wins ("gpt-4.1-mini" before "gpt-4.1"),
#: so dated snapshots ("claude-sonnet-4-5-20250929") are priced like their family.
PRICES: dict[str, Price] = {
    # Anthropic (platform.claude.com model pages)
    "claude-fable-5": Price(10.0, 50.0),
    "claude-mythos-5": Price(10.0, 50.0),
    "claude-opus-5-5": Price(4.0, 20.0),
    "claude-opus-5": Price(5.0, 25.0),
    "claude-sonnet-5-5": Price(2.0, 10.0),
    "claude-sonnet-5": Price(2.0, 10.0),
    "claude-opus-4-8": Price(5.0, 25.0),
    "claude-opus-4-7": Price(5.0, 25.0),
    "claude-opus-4-6": Price(5.0, 25.0),
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4-6": Price(3.0, 15.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "claude-3-haiku": Price(0.25, 1.25),
    # OpenAI (developers.openai.com/api/docs/pricing); cached input is counted at the full price
    "gpt-6-astra": Price(10.0, 50.0),
    "gpt-6.1-sol": Price(2.0, 10.0),
    "gpt-5.6-sol": Price(4.0, 20.0),
    "gpt-5.6-terra": Price(2.0, 12.0),
    "gpt-5.6-luna": Price(0.20, 1.20),
    "gpt-5.5": Price(5.0, 30.0),
    "gpt-5.4-mini": Price(0.75, 4.50),
    "gpt-5.4": Price(2.50, 15.0),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5": Price(1.25, 10.0),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.0),
    "o4-mini": Price(1.10, 4.40),
    "o3": Price(2.0, 8.0),
}
UNKNOWN_MODEL_PRICE = Price(15.0, 75.0)
_BY_LENGTH = sorted(PRICES, key=len, reverse=True)
_warned: set[str] = set()


def price_of(model: str, overrides: Mapping[str, Price] | None = None) -> Price:
    """The price of `model`: the config's table (`costs.models`) first, then the built-in one;
    the longest matching prefix wins in each."""
    if overrides:
        for prefix in sorted(overrides, key=len, reverse=True):
            if model.startswith(prefix):
                return overrides[prefix]
    for prefix in _BY_LENGTH:
        if model.startswith(prefix):
            return PRICES[prefix]
    if model not in _warned:
        _warned.add(model)
        log.warning("no price for model: budgeting at the highest known price", model=model)
    return UNKNOWN_MODEL_PRICE


def cost_usd(model: str, usage: dict[str, int], prices: Mapping[str, Price] | None = None) -> float:
    """The price of one call from its usage: input, output and (Anthropic) prompt-cache tokens."""
    price = price_of(model, prices)
    per_token_in = price.input_per_mtok / 1_000_000
    per_token_out = price.output_per_mtok / 1_000_000
    return (
        usage.get("input_tokens", 0) * per_token_in
        + usage.get("cache_creation_input_tokens", 0) * per_token_in * price.cache_write_factor
        + usage.get("cache_read_input_tokens", 0) * per_token_in * price.cache_read_factor
        + usage.get("output_tokens", 0) * per_token_out
    )


class BudgetStore(Protocol):
    """Planning spend per UTC day ("2026-11-21"), durable when `put` returns."""

    def get(self, day: str) -> float:
        """USD spent on `day` so far; 0.0 when nothing is recorded."""

    def put(self, day: str, spent_usd: float) -> None:
        """Record the new total for `day`."""


class InMemoryBudgetStore:
    """A BudgetStore that forgets on restart: for tests and one-off commands only."""

    def __init__(self) -> None:
        self.days: dict[str, float] = {}

    def get(self, day: str) -> float:
        return self.days.get(day, 0.0)

    def put(self, day: str, spent_usd: float) -> None:
        self.days[day] = spent_usd


def utc_now() -> datetime:
    return datetime.now(UTC)


class DailyBudget:
    """Refuses model calls once today's spend reached the limit; records what each call cost.

    The check happens before a call, so one call may take the day slightly past the limit; the
    next one is refused. A limit of 0 allows no model calls at all.
    """

    def __init__(
        self, store: BudgetStore, limit_usd: float, *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.store = store
        self.limit_usd = limit_usd
        self._clock = clock
        self._lock = threading.Lock()  # get + put must not interleave between threads

    def today(self) -> str:
        return self._clock().astimezone(UTC).date().isoformat()

    def spent_today(self) -> float:
        return self.store.get(self.today())

    def check(self) -> None:
        spent = self.spent_today()
        if spent >= self.limit_usd:
            raise BudgetExceeded(
                f"daily planning budget of ${self.limit_usd:.2f} reached (${spent:.4f} spent today, UTC)"
            )

    def record(self, usd: float) -> float:
        """Add `usd` to today's spend; returns the new total."""
        if usd <= 0:
            return self.spent_today()
        with self._lock:
            day = self.today()
            total = self.store.get(day) + usd
            self.store.put(day, total)
        return total
