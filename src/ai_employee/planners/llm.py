"""What the Claude and OpenAI planners share: budget, prompt, one call, checked answer, cost.

A subclass only knows its SDK: `_ask` sends the system prompt, the user message and the
`propose_plan` tool, and returns the tool input it got back (or why there is none). Everything
else (what is sent, what is accepted, what it cost) is decided here and in `prompt`, so both
providers keep one contract.

Every call has deadlines: `services.connect_timeout` to reach the API, `planner.timeout_seconds`
for its answer (the SDK's per-request timeouts), and an outer deadline over the SDK's retries.
`link()` says whether the API was reached at the last call, and why not.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import structlog

from ai_employee.clients.link import Deadlines, OutsideLink, describe_failure, describe_target
from ai_employee.config import PlannerSettings, Settings
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.model.services import LinkStatus
from ai_employee.planners import prompt
from ai_employee.planners.base import Planner
from ai_employee.planners.budget import BudgetStore, DailyBudget, InMemoryBudgetStore, Price, cost_usd
from ai_employee.planners.context import context_window, estimate_tokens, input_chars_that_fit
from ai_employee.planners.errors import InvalidAnswer, PlannerError, PlannerUnavailable
from ai_employee.planners.guard import collect_secrets

log = structlog.get_logger(__name__)

#: Enough for a plan whose params copy a long description; a longer answer is refused as cut off.
MAX_OUTPUT_TOKENS = 4096
#: Slack on top of the SDK's own per-request timeouts and retry backoff, for the outer deadline.
DEADLINE_SLACK_SECONDS = 30.0

T = TypeVar("T")


@dataclass
class ModelAnswer:
    """The tool input a model returned, what the call used, and what was wrong with the answer."""

    arguments: Any = None
    usage: dict[str, int] = field(default_factory=dict)
    problem: str | None = None  # set: the answer is unusable (no tool call, two, not JSON, cut off)


@dataclass(frozen=True)
class SdkErrors:
    """An SDK's exception classes for a failed call (anthropic and openai name them alike)."""

    timeout: type[Exception]
    status: type[Exception]
    connection: type[Exception]
    base: type[Exception]


class LLMPlanner(Planner):
    provider: ClassVar[str]
    #: how status names the API: "Claude", "OpenAI"
    service: ClassVar[str]
    sdk_errors: ClassVar[SdkErrors]

    def __init__(
        self,
        *,
        model: str,
        settings: PlannerSettings,
        budget: DailyBudget,
        secrets: list[str] | None = None,
        base_url: str = "",
        deadlines: float | Deadlines | None = None,
        connect_timeout: float = 10.0,
        prices: Mapping[str, Price] | None = None,
        context_windows: Mapping[str, int] | None = None,
    ) -> None:
        self.model = model
        self.prices = dict(prices or {})  # config `costs.models`, over the built-in table
        self.window = context_window(model, context_windows)
        self.settings = settings
        self.budget = budget
        self.secrets = secrets or []
        self.label = f"{self.provider}:{model}"
        self.connect_timeout = connect_timeout
        #: the SDK client's per-request timeouts, to word a timeout with the one that struck
        self.deadlines = deadlines if deadlines is not None else settings.timeout_seconds
        self._calls = asyncio.Semaphore(settings.concurrency)
        self._link = OutsideLink(self.provider, describe_target(self.service, base_url))
        self._called = False

    def link(self) -> LinkStatus | None:
        return self._link.status() if self._called else None

    def outer_deadline(self) -> float:
        """Every attempt the SDK makes may take its connect and its read deadline, plus slack for
        the SDK's backoff between attempts."""
        per_attempt = self.connect_timeout + self.settings.timeout_seconds
        return per_attempt * (self.settings.max_retries + 1) + DEADLINE_SLACK_SECONDS

    async def plan(self, request: PlanRequest) -> PlanProposal:
        self.budget.check()
        system = prompt.system_prompt(request)
        tool_schema = prompt.tool_input_schema(request.actions)
        user, used = self._fit(request, system, tool_schema)
        deadline = self.outer_deadline()
        started = time.monotonic()
        async with self._calls:
            self._called = True
            try:
                async with asyncio.timeout(deadline):
                    answer = await self._ask(system, user, tool_schema)
            except TimeoutError as error:
                self._link.failed(f"no answer within {deadline:g} s", retry=False)
                message = f"timeout: {self.label} did not answer within {deadline:g} s"
                raise PlannerUnavailable(message) from error
            except PlannerError as error:
                self._learn_from(error)
                raise
            self._link.connected()
        cost = cost_usd(self.model, answer.usage, self.prices)
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
        proposal.context_used = used
        return proposal

    def _fit(self, request: PlanRequest, system: str, tool_schema: dict[str, Any]) -> tuple[str, float]:
        """The user message, its input cut (with a marker) when the prompt would not fit the
        model's window; and the share of the window the prompt fills."""
        fixed = estimate_tokens(system, json.dumps(tool_schema)) + estimate_tokens(
            prompt.user_message(replace(request, text=""), self.settings.max_input_chars)
        )
        limit = input_chars_that_fit(fixed, self.window, self.settings.max_input_chars)
        if limit < min(len(request.text), self.settings.max_input_chars):
            log.warning(
                "planner input cut to fit the model's context window",
                planner=self.label,
                action_id=request.action_id,
                chars=len(request.text),
                kept=limit,
            )
        user = prompt.user_message(request, limit)
        return user, round(estimate_tokens(system, json.dumps(tool_schema), user) / self.window, 4)

    def _learn_from(self, error: PlannerError) -> None:
        """What a failed call says about the link: the API was not reached (a refused or timed
        out connection, no answer, a gateway saying it is down), or it answered."""
        cause = error.__cause__
        if isinstance(cause, self.sdk_errors.connection):  # a timeout too
            self._link.failed(cause, timeout=self.deadlines, retry=False)
        elif isinstance(cause, self.sdk_errors.status):
            self._link.answered(int(getattr(cause, "status_code", 0)))
        else:
            self._link.connected()  # it answered, not with a plan

    @abstractmethod
    async def _ask(self, system: str, user: str, tool_schema: dict[str, Any]) -> ModelAnswer:
        """One model call forced to `propose_plan`. Raises PlannerUnavailable on API errors."""

    @contextmanager
    def _call_errors(self) -> Iterator[None]:
        with call_errors(self.label, self.deadlines, self.sdk_errors):
            yield


def planner_options(settings: Settings, model: str, budget_store: BudgetStore | None) -> dict[str, Any]:
    """What every model planner is built with: its model, the planner settings, the day's budget
    (`budget_store` keeps the spend across restarts; without one it is forgotten), the secrets
    that must never appear in a plan, and the connect deadline."""
    return {
        "model": model,
        "settings": settings.planner,
        "budget": DailyBudget(budget_store or InMemoryBudgetStore(), settings.planner.daily_budget_usd),
        "secrets": collect_secrets(settings),
        "connect_timeout": settings.services.connect_timeout,
        "prices": {
            prefix: Price(price.input_per_mtok, price.output_per_mtok)
            for prefix, price in settings.costs.models.items()
        },
        "context_windows": settings.costs.context_windows,
    }


def sdk_timeout(timeout_class: Callable[..., T], settings: Settings) -> T:
    """The SDK client's deadlines, in the SDK's own `Timeout` class: reaching the API
    (`services.connect_timeout`), then each read or write (`planner.timeout_seconds`)."""
    connect, read = settings.services.connect_timeout, settings.planner.timeout_seconds
    return timeout_class(connect=connect, read=read, write=read, pool=connect)


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


@contextmanager
def call_errors(label: str, deadlines: float | Deadlines, sdk: SdkErrors) -> Iterator[None]:
    """A model call's failures as planner errors: `PlannerUnavailable` (the fallback plans) or
    `InvalidAnswer`. The API's error type is kept, its free text never (it may echo the prompt)."""
    try:
        yield
    except sdk.timeout as error:  # a connection error too: tested first
        words = describe_failure(error, timeout=deadlines)
        if words.startswith("connection timed out"):
            raise PlannerUnavailable(f"timeout: cannot reach {label}: {words}") from error
        read = deadlines if isinstance(deadlines, int | float) else deadlines.read
        within = f" within {read:g} s" if read is not None else ""
        raise PlannerUnavailable(f"timeout: {label} did not answer{within}") from error
    except sdk.status as error:
        status: Any = error
        raise PlannerUnavailable(
            f"API error: {label} answered HTTP {status.status_code}{error_type(status.body)}"
        ) from error
    except json.JSONDecodeError as error:
        raise InvalidAnswer(f"invalid answer: {label} sent a body that is not JSON") from error
    except sdk.connection as error:
        words = describe_failure(error, timeout=deadlines)
        raise PlannerUnavailable(f"API error: cannot reach {label}: {words}") from error
    except sdk.base as error:  # e.g. a response the SDK could not parse
        raise PlannerUnavailable(f"API error: {label}: {type(error).__name__}") from error
