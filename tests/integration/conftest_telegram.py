"""Doubles and a harness for the Telegram source tests: the real python-telegram-bot Application
against the loopback Bot API (tests/fakes/telegram_server.py), Whisper through the real openai SDK
against a loopback transcription endpoint.

The intake, the approval gateway, the ledger lookup and the key-value store are small in-test
doubles with the contracts of ai_employee.model.plugins / ai_employee.model.messages. Imported
explicitly by the Telegram test modules (tests/conftest.py is shared and left alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ai_employee.clients.retry import RetryPolicy
from ai_employee.config import load_settings
from ai_employee.model.services import Decider, DecisionResult, ServiceContext, ServiceState
from ai_employee.sources.telegram import TelegramService
from tests.conftest import eventually
from tests.fakes.openai_transcription import FakeOpenAITranscription
from tests.fakes.telegram_server import FakeTelegram
from tests.integration.conftest_chat import RecordingIntake, ServiceHarness, StoredAction

ALLOWED = 111
GROUP = -1002233
STRANGER = 999
FAST = RetryPolicy(attempts=3, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
DEADLINE = 10.0


# -- doubles -------------------------------------------------------------------------------


class RecordingApprovals:
    """ApprovalGateway: a plan is decided once; later decisions say so."""

    def __init__(self) -> None:
        self.plans: dict[str, str] = {}  # plan id -> pending_approval | approved | rejected
        self.calls: list[tuple[str, str, str | None]] = []

    def approve(self, plan_id: str, decider: Decider | None = None) -> DecisionResult:
        self.calls.append(("approve", plan_id, None))
        return self._decide(plan_id, "approved")

    def reject(
        self, plan_id: str, reason: str | None = None, decider: Decider | None = None
    ) -> DecisionResult:
        self.calls.append(("reject", plan_id, reason))
        return self._decide(plan_id, "rejected")

    def _decide(self, plan_id: str, outcome: Any) -> DecisionResult:
        state = self.plans.get(plan_id)
        if state is None:
            return DecisionResult("not_found", plan_id)
        if state != "pending_approval":
            return DecisionResult("already_decided", plan_id, f"the plan was {state} before")
        self.plans[plan_id] = outcome
        return DecisionResult(outcome, plan_id)


class RouteTable:
    def __init__(self) -> None:
        self.routes: list[tuple[str, str, Any]] = []

    def add_route(self, method: str, path: str, handler: Any) -> None:
        self.routes.append((method, path, handler))


class ActionTable:
    def __init__(self) -> None:
        self.rows: dict[str, Mapping[str, Any]] = {}

    def action_info(self, action_id: str) -> Mapping[str, Any] | None:
        return self.rows.get(action_id)


# -- harness -------------------------------------------------------------------------------


@dataclass
class Harness(ServiceHarness):
    telegram: FakeTelegram
    openai: FakeOpenAITranscription
    vault: Path
    intake: RecordingIntake = field(default_factory=RecordingIntake)
    approvals: RecordingApprovals = field(default_factory=RecordingApprovals)
    routes: RouteTable = field(default_factory=RouteTable)
    actions: ActionTable = field(default_factory=ActionTable)

    def context(
        self,
        *,
        openai_key: bool = True,
        api_root: str | None = None,
        services: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> ServiceContext:
        """`api_root`: where the Bot API is (the fake itself unless given); `services`: the
        `services.*` settings (deadlines, backoff); `overrides`: the `telegram.*` settings."""
        environ = {
            "TELEGRAM_BOT_TOKEN": self.telegram.token,
            "TELEGRAM_ALLOWED_CHAT_IDS": f"{ALLOWED},{GROUP}",
            "TELEGRAM_API_BASE_URL": api_root or self.telegram.root_url,
        }
        if openai_key:
            environ |= {"OPENAI_API_KEY": self.openai.api_key, "OPENAI_BASE_URL": self.openai.base_url}
        paths: dict[tuple[str, ...], Any] = {("telegram", key): value for key, value in overrides.items()}
        paths |= {("services", key): value for key, value in (services or {}).items()}
        settings = load_settings(environ=environ, overrides=paths)
        return self.service_context(
            settings, approvals=self.approvals, routes=self.routes, actions=self.actions
        )

    def service(
        self,
        *,
        openai_key: bool = True,
        webhook_url: str | None = None,
        api_root: str | None = None,
        services: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> TelegramService:
        return TelegramService(
            self.context(openai_key=openai_key, api_root=api_root, services=services, **overrides),
            retry=FAST,
            poll_timeout=5.0,
            webhook_url=webhook_url,
        )

    async def start(
        self, service: TelegramService | None = None, *, connected: bool = True, **kwargs: Any
    ) -> TelegramService:
        """Run a service until it is ready and (unless `connected=False`) has reached the Bot API."""
        service = service or self.service(**kwargs)
        task = asyncio.create_task(service.run())
        ready = asyncio.create_task(service.ready.wait())
        await asyncio.wait({task, ready}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if task.done():
            task.result()  # raise what run() raised
        assert service.ready.is_set(), "the service did not become ready"
        self.running.append((service, task))
        if connected:
            await eventually(lambda: is_connected(service) or task.done(), timeout=DEADLINE)
            if task.done():
                task.result()
        return service

    async def action_count(self, count: int) -> list[StoredAction]:
        await eventually(lambda: len(self.intake.actions) >= count, timeout=DEADLINE)
        return self.intake.actions

    async def reply_to(self, chat_id: int, containing: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.telegram.wait_for(
            lambda: next((m for m in self.telegram.messages_to(chat_id) if containing in m["text"]), None),
            DEADLINE,
        )
        return found


@pytest.fixture(name="harness")
async def harness_fixture(tmp_path: Path) -> AsyncIterator[Harness]:
    telegram = FakeTelegram()
    openai = FakeOpenAITranscription()
    await telegram.start()
    await openai.start()
    built = Harness(telegram=telegram, openai=openai, vault=tmp_path / "vault")
    await built.open()
    try:
        yield built
    finally:
        await built.close()
        await openai.stop()
        await telegram.stop()


def is_connected(service: TelegramService) -> bool:
    link = service.link()
    return link is not None and link.state is ServiceState.RUNNING
