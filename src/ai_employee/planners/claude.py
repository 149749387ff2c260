"""The Claude planner: the Messages API through the anthropic SDK, plans by forced tool use.

The model gets one tool, `propose_plan`, and `tool_choice` forces it, so the answer is a JSON
object shaped by the actions' params schemas; nothing in that tool changes anything.
"""

from __future__ import annotations

from typing import Any

import anthropic
import structlog

from ai_employee.config import Settings
from ai_employee.model.plugins import PluginDisabled
from ai_employee.planners import prompt
from ai_employee.planners.budget import BudgetStore
from ai_employee.planners.llm import (
    MAX_OUTPUT_TOKENS,
    LLMPlanner,
    ModelAnswer,
    SdkErrors,
    error_mentions,
    planner_options,
    sdk_timeout,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"

log = structlog.get_logger(__name__)


#: Models that answer a forced `tool_choice` with HTTP 400 (Anthropic's migration guides for
#: Sonnet 5.5, Opus 5.5 and Fable 5.1). They are asked with `tool_choice: auto`; the prompt says
#: to call `propose_plan` once, and an answer without exactly one call is refused all the same.
NO_FORCED_TOOL_CHOICE = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-1")


ANTHROPIC_ERRORS = SdkErrors(
    timeout=anthropic.APITimeoutError,
    status=anthropic.APIStatusError,
    connection=anthropic.APIConnectionError,
    base=anthropic.APIError,
)


class ClaudePlanner(LLMPlanner):
    name = "claude"
    provider = "claude"
    service = "Claude"
    sdk_errors = ANTHROPIC_ERRORS

    def __init__(self, client: anthropic.AsyncAnthropic, **kwargs: Any) -> None:
        super().__init__(base_url=str(client.base_url), deadlines=client.timeout, **kwargs)
        self._client = client
        self.force_tool_choice = not self.model.startswith(NO_FORCED_TOOL_CHOICE)

    async def _ask(self, system: str, user: str, tool_schema: dict[str, Any]) -> ModelAnswer:
        with self._call_errors():
            try:
                message = await self._create(system, user, tool_schema)
            except anthropic.BadRequestError as error:
                # A model newer than NO_FORCED_TOOL_CHOICE may refuse forcing too: learn it once.
                if not (self.force_tool_choice and error_mentions(error.body, "tool_choice")):
                    raise
                self.force_tool_choice = False
                log.info("model refuses a forced tool_choice; asking with tool_choice auto", model=self.model)
                message = await self._create(system, user, tool_schema)

        usage = {"input_tokens": message.usage.input_tokens, "output_tokens": message.usage.output_tokens}
        if message.usage.cache_creation_input_tokens:
            usage["cache_creation_input_tokens"] = message.usage.cache_creation_input_tokens
        if message.usage.cache_read_input_tokens:
            usage["cache_read_input_tokens"] = message.usage.cache_read_input_tokens
        calls = [block for block in message.content if block.type == "tool_use"]
        if message.stop_reason == "max_tokens":
            return ModelAnswer(usage=usage, problem="the answer was cut off at the token limit")
        if len(calls) != 1:
            return ModelAnswer(usage=usage, problem=f"expected one {prompt.TOOL_NAME} call, got {len(calls)}")
        call = calls[0]
        if call.name != prompt.TOOL_NAME:
            return ModelAnswer(usage=usage, problem=f"the model called an unknown tool {call.name[:40]!r}")
        return ModelAnswer(arguments=call.input, usage=usage)

    async def _create(self, system: str, user: str, tool_schema: dict[str, Any]) -> anthropic.types.Message:
        tool_choice: anthropic.types.ToolChoiceParam = (
            {"type": "tool", "name": prompt.TOOL_NAME, "disable_parallel_tool_use": True}
            if self.force_tool_choice
            else {"type": "auto", "disable_parallel_tool_use": True}
        )
        return await self._client.messages.create(
            model=self.model,
            max_tokens=MAX_OUTPUT_TOKENS,
            # the handbook and rules repeat from call to call: let the API cache them
            system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": user}],
            tools=[
                {
                    "name": prompt.TOOL_NAME,
                    "description": prompt.TOOL_DESCRIPTION,
                    "input_schema": tool_schema,
                }
            ],
            tool_choice=tool_choice,
        )

    async def aclose(self) -> None:
        await self._client.close()


def create(
    settings: Settings,
    *,
    budget_store: BudgetStore | None = None,
    client: anthropic.AsyncAnthropic | None = None,
) -> ClaudePlanner:
    """Entry point `claude`. Off (PluginDisabled) without an API key.

    `budget_store` keeps the day's spend across restarts (the daemon passes its ledger); without
    one the spend is forgotten on restart. `client` is for tests that need other SDK options.
    """
    key = settings.anthropic.api_key
    if client is None:
        if key is None or not key.get_secret_value():
            raise PluginDisabled("no Anthropic API key (set ANTHROPIC_API_KEY or CLAUDE_API_KEY)")
        client = anthropic.AsyncAnthropic(
            api_key=key.get_secret_value(),
            base_url=settings.anthropic.base_url or DEFAULT_BASE_URL,
            timeout=sdk_timeout(anthropic.Timeout, settings),
            max_retries=settings.planner.max_retries,
        )
    return ClaudePlanner(client, **planner_options(settings, settings.planner.claude_model, budget_store))
