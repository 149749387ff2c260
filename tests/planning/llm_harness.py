"""Loopback model APIs with the real SDKs behind the planners: what the LLM planner tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_employee.config import Settings, load_settings
from ai_employee.planners import claude as claude_planner
from ai_employee.planners import openai as openai_planner
from ai_employee.planners.budget import InMemoryBudgetStore
from ai_employee.planners.fallback import FallbackPlanner
from ai_employee.planners.guard import collect_secrets
from ai_employee.planners.llm import LLMPlanner
from ai_employee.planners.template import TemplatePlanner
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake


@dataclass
class Harness:
    provider: str
    fake: AnthropicFake | OpenAIFake
    path: str
    config: Path
    environ: dict[str, str]
    store: InMemoryBudgetStore
    extra: dict[tuple[str, ...], Any] | None = None  # more settings overrides

    def settings(self, **planner: Any) -> Settings:
        # claude-sonnet-4-6: the config default (claude-sonnet-4-5) makes the SDK warn of its retirement
        overrides: dict[tuple[str, ...], Any] = {
            ("planner", "max_retries"): 0,
            ("planner", "timeout_seconds"): 0.5,
            ("planner", "claude_model"): "claude-sonnet-4-6",
        }
        overrides.update({("planner", key): value for key, value in planner.items()})
        overrides.update(self.extra or {})
        return load_settings(self.config, environ=self.environ, overrides=overrides)

    def planner(self, **planner: Any) -> LLMPlanner:
        module = claude_planner if self.provider == "claude" else openai_planner
        return module.create(self.settings(**planner), budget_store=self.store)

    def with_fallback(self, **planner: Any) -> FallbackPlanner:
        settings = self.settings(**planner)
        module = claude_planner if self.provider == "claude" else openai_planner
        return FallbackPlanner(
            module.create(settings, budget_store=self.store),
            TemplatePlanner(),
            secrets=collect_secrets(settings),
        )

    def sent(self) -> dict[str, Any]:
        requests = self.fake.requests_to("POST", self.path)
        assert requests, "nothing was sent"
        body = requests[-1].json
        assert isinstance(body, dict)
        return body

    def sent_system(self) -> str:
        body = self.sent()
        if self.provider == "claude":
            return "\n".join(block["text"] for block in body["system"])
        return str(body["messages"][0]["content"])

    def sent_user(self) -> str:
        body = self.sent()
        return str(next(m["content"] for m in body["messages"] if m["role"] == "user"))

    def sent_tools(self) -> tuple[list[dict[str, Any]], Any]:
        body = self.sent()
        if self.provider == "claude":
            tools = [{"name": tool["name"], "schema": tool["input_schema"]} for tool in body["tools"]]
        else:
            tools = [
                {"name": tool["function"]["name"], "schema": tool["function"]["parameters"]}
                for tool in body["tools"]
            ]
        return tools, body["tool_choice"]


@asynccontextmanager
async def running(provider: str, tmp_path: Path) -> AsyncIterator[Harness]:
    config = tmp_path / "config.yaml"
    config.write_text("", encoding="utf-8")
    fake: AnthropicFake | OpenAIFake
    if provider == "claude":
        fake = AnthropicFake(api_key="sk-ant-test-0123456789abcdef")
        await fake.start()
        environ = {"ANTHROPIC_API_KEY": fake.api_key, "ANTHROPIC_BASE_URL": fake.base_url}
        path = "/v1/messages"
    else:
        fake = OpenAIFake(api_key="sk-test-openai-0123456789abcdef")
        await fake.start()
        environ = {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.sdk_base_url}
        path = "/v1/chat/completions"
    try:
        yield Harness(provider, fake, path, config, environ, InMemoryBudgetStore())
    finally:
        await fake.stop()
