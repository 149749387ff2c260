"""The OpenAI planner: Chat Completions through the openai SDK, plans by forced function calling.

Same contract as the Claude planner: one function, `propose_plan`, forced by `tool_choice`,
its parameters schema built from the actions' params schemas. The schema is not sent in strict
mode because strict mode refuses what pydantic emits (optional fields, defaults, formats); the
answer is validated here instead.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import structlog
from openai.types.chat import ChatCompletion, ChatCompletionToolChoiceOptionParam

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

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Options some models refuse with a 400 naming them; the planner then asks without them.
RELAXABLE = ("parallel_tool_calls", "tool_choice")

log = structlog.get_logger(__name__)


OPENAI_ERRORS = SdkErrors(
    timeout=openai.APITimeoutError,
    status=openai.APIStatusError,
    connection=openai.APIConnectionError,
    base=openai.OpenAIError,
)


class OpenAIPlanner(LLMPlanner):
    name = "openai"
    provider = "openai"
    service = "OpenAI"
    sdk_errors = OPENAI_ERRORS

    def __init__(self, client: openai.AsyncOpenAI, **kwargs: Any) -> None:
        super().__init__(base_url=str(client.base_url), deadlines=client.timeout, **kwargs)
        self._client = client
        self.relaxed: set[str] = set()  # request options this model refused

    async def _ask(self, system: str, user: str, tool_schema: dict[str, Any]) -> ModelAnswer:
        with self._call_errors():
            completion = await self._create_relaxing(system, user, tool_schema)

        usage: dict[str, int] = {}
        if completion.usage is not None:
            usage = {
                "input_tokens": completion.usage.prompt_tokens,
                "output_tokens": completion.usage.completion_tokens,
            }
        if not completion.choices:
            return ModelAnswer(usage=usage, problem="the answer has no choices")
        choice = completion.choices[0]
        if choice.finish_reason == "length":
            return ModelAnswer(usage=usage, problem="the answer was cut off at the token limit")
        calls = choice.message.tool_calls or []
        if len(calls) != 1:
            return ModelAnswer(usage=usage, problem=f"expected one {prompt.TOOL_NAME} call, got {len(calls)}")
        call = calls[0]
        if call.type != "function" or call.function.name != prompt.TOOL_NAME:
            return ModelAnswer(usage=usage, problem="the model called an unknown tool")
        try:
            arguments = json.loads(call.function.arguments)
        except ValueError:
            return ModelAnswer(usage=usage, problem="the tool arguments are not valid JSON")
        return ModelAnswer(arguments=arguments, usage=usage)

    async def _create_relaxing(self, system: str, user: str, tool_schema: dict[str, Any]) -> ChatCompletion:
        """Some models refuse a forced tool_choice or `parallel_tool_calls` (HTTP 400 naming it):
        drop what the model refuses, once, and remember it for the next calls."""
        for _ in range(len(RELAXABLE) + 1):
            try:
                return await self._create(system, user, tool_schema)
            except openai.BadRequestError as error:
                refused = next(
                    (
                        name
                        for name in RELAXABLE
                        if name not in self.relaxed and error_mentions(error.body, name)
                    ),
                    None,
                )
                if refused is None:
                    raise
                self.relaxed.add(refused)
                log.info(
                    "model refuses a request option; asking without it", model=self.model, option=refused
                )
        return await self._create(system, user, tool_schema)

    async def _create(self, system: str, user: str, tool_schema: dict[str, Any]) -> ChatCompletion:
        forced: ChatCompletionToolChoiceOptionParam = {
            "type": "function",
            "function": {"name": prompt.TOOL_NAME},
        }
        return await self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": prompt.TOOL_NAME,
                        "description": prompt.TOOL_DESCRIPTION,
                        "parameters": tool_schema,
                    },
                }
            ],
            tool_choice=openai.omit if "tool_choice" in self.relaxed else forced,
            parallel_tool_calls=openai.omit if "parallel_tool_calls" in self.relaxed else False,
            max_completion_tokens=MAX_OUTPUT_TOKENS,
        )

    async def aclose(self) -> None:
        await self._client.close()


def create(
    settings: Settings,
    *,
    budget_store: BudgetStore | None = None,
    client: openai.AsyncOpenAI | None = None,
) -> OpenAIPlanner:
    """Entry point `openai`. Off (PluginDisabled) without an API key; see claude.create."""
    key = settings.openai.api_key
    if client is None:
        if key is None or not key.get_secret_value():
            raise PluginDisabled("no OpenAI API key (set OPENAI_API_KEY)")
        client = openai.AsyncOpenAI(
            api_key=key.get_secret_value(),
            base_url=settings.openai.base_url or DEFAULT_BASE_URL,
            timeout=sdk_timeout(openai.Timeout, settings),
            max_retries=settings.planner.max_retries,
        )
    return OpenAIPlanner(client, **planner_options(settings, settings.planner.openai_model, budget_store))
