"""What the Claude and OpenAI planners share: budget, prompt, one call, checked answer, cost.

A subclass only knows its SDK: `_ask` sends the system prompt, the user message and the
`propose_plan` tool, and returns the tool input it got back (or why there is none). Everything
else (what is sent, what is accepted, what it cost) is decided here and in `prompt`, so both
providers keep one contract.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog

from ai_employee.config import PlannerSettings, Settings
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.planners import prompt
from ai_employee.planners.base import Planner
from ai_employee.planners.budget import BudgetStore, DailyBudget, InMemoryBudgetStore, cost_usd
from ai_employee.planners.errors import InvalidAnswer, PlannerError, PlannerUnavailable
from ai_employee.planners.guard import collect_secrets

log = structlog.get_logger(__name__)

#: Enough for a plan whose params copy a long description; a longer answer is refused as cut off.
MAX_OUTPUT_TOKENS = 4096
#: Slack on top of the SDK's own per-request timeouts and retry backoff, for the outer deadline.
DEADLINE_SLACK_SECONDS = 30.0


@dataclass
class ModelAnswer:
    """The tool input a model returned, what the call used, and what was wrong with the answer."""

    arguments: Any = None
    usage: dict[str, int] = field(default_factory=dict)
    problem: str | None = None  # set: the answer is unusable (no tool call, two, not JSON, cut off)


class LLMPlanner(Planner):
    provider: ClassVar[str]

    def __init__(
        self,
        *,
        model: str,
        settings: PlannerSettings,
        budget: DailyBudget,
        secrets: list[str] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.budget = budget
        self.secrets = secrets or []
        self.label = f"{self.provider}:{model}"
        self._calls = asyncio.Semaphore(settings.concurrency)

    async def plan(self, request: PlanRequest) -> PlanProposal:
        self.budget.check()
        system = prompt.system_prompt(request)
        user = prompt.user_message(request, self.settings.max_input_chars)
        tool_schema = prompt.tool_input_schema(request.actions)
        deadline = self.settings.timeout_seconds * (self.settings.max_retries + 1) + DEADLINE_SLACK_SECONDS
        started = time.monotonic()
        async with self._calls:
            try:
                async with asyncio.timeout(deadline):
                    answer = await self._ask(system, user, tool_schema)
            except TimeoutError as error:
                message = f"timeout: {self.label} did not answer within {deadline:g} s"
                raise PlannerUnavailable(message) from error
        cost = cost_usd(self.model, answer.usage)
        spent = self.budget.record(cost)
        log.info(
            "planner call",
            planner=self.label,
            action_id=request.action_id,
            seconds=round(time.monotonic() - started, 3),
            cost_usd=round(cost, 6),
            spent_today_usd=round(spent, 4),
            **answer.usage,
        )
        try:
            if answer.problem:
                raise InvalidAnswer(f"invalid answer: {answer.problem}")
            proposal = prompt.interpret(
                answer.arguments,
                request,
                planner=self.label,
                min_confidence=self.settings.min_confidence,
                secrets=self.secrets,
            )
        except PlannerError as error:
            error.usage, error.cost_usd = answer.usage, cost
            raise
        proposal.usage = answer.usage
        proposal.cost_usd = cost
        return proposal

    @abstractmethod
    async def _ask(self, system: str, user: str, tool_schema: dict[str, Any]) -> ModelAnswer:
        """One model call forced to `propose_plan`. Raises PlannerUnavailable on API errors."""


def planner_options(settings: Settings, model: str, budget_store: BudgetStore | None) -> dict[str, Any]:
    """What every model planner is built with: its model, the planner settings, the day's budget
    (`budget_store` keeps the spend across restarts; without one it is forgotten) and the secrets
    that must never appear in a plan."""
    return {
        "model": model,
        "settings": settings.planner,
        "budget": DailyBudget(budget_store or InMemoryBudgetStore(), settings.planner.daily_budget_usd),
        "secrets": collect_secrets(settings),
    }


def error_mentions(body: object, word: str) -> bool:
    """Whether an API error body talks about `word` (we read it, we never log it)."""
    return word in json.dumps(body, default=str) if body is not None else False


def error_type(body: object) -> str:
    """The API's error type or code ("overloaded_error", "server_error"), never its free text."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            kind = error.get("type") or error.get("code")
            if isinstance(kind, str):
                return f" ({kind[:60]})"
    return ""


@dataclass(frozen=True)
class SdkErrors:
    """An SDK's exception classes for a failed call (anthropic and openai name them alike)."""

    timeout: type[Exception]
    status: type[Exception]
    connection: type[Exception]
    base: type[Exception]


@contextmanager
def call_errors(label: str, timeout_seconds: float, sdk: SdkErrors) -> Iterator[None]:
    """A model call's failures as planner errors: `PlannerUnavailable` (the fallback plans) or
    `InvalidAnswer`. The API's error type is kept, its free text never (it may echo the prompt)."""
    try:
        yield
    except sdk.timeout as error:  # a connection error too: tested first
        raise PlannerUnavailable(f"timeout: {label} did not answer within {timeout_seconds:g} s") from error
    except sdk.status as error:
        status: Any = error
        raise PlannerUnavailable(
            f"API error: {label} answered HTTP {status.status_code}{error_type(status.body)}"
        ) from error
    except json.JSONDecodeError as error:
        raise InvalidAnswer(f"invalid answer: {label} sent a body that is not JSON") from error
    except sdk.connection as error:
        raise PlannerUnavailable(f"API error: cannot reach {label}") from error
    except sdk.base as error:  # e.g. a response the SDK could not parse
        raise PlannerUnavailable(f"API error: {label}: {type(error).__name__}") from error
