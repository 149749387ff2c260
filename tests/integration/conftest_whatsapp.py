"""A harness for the WhatsApp source tests: the real service behind the real control server (its
webhook routes served over HTTP), the loopback Graph API (tests/fakes/whatsapp.py) delivering
signed webhooks to it, Whisper through the real openai SDK against a loopback endpoint.

The intake, the approval gateway, the ledger look-up and the key-value store are the in-test
doubles of the Telegram tests (conftest_telegram), with a pause for the intake and a record of
who decided.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ai_employee.config import load_settings
from ai_employee.control.server import ControlServer
from ai_employee.model.events import Event, EventType
from ai_employee.model.messages import IncomingMessage
from ai_employee.model.services import Decider, DecisionResult, ServiceContext, ServiceState
from ai_employee.observability.metrics import Metrics
from ai_employee.sources.whatsapp import WEBHOOK_PATH, WhatsAppService
from tests.conftest import eventually
from tests.fakes.common import ReadyHooks
from tests.fakes.openai_transcription import FakeOpenAITranscription
from tests.fakes.whatsapp import FakeWhatsApp
from tests.integration.conftest_chat import RecordingIntake, ServiceHarness
from tests.integration.conftest_telegram import FAST, ActionTable, RecordingApprovals

ALLOWED = "4915112345678"
STRANGER = "4915199999999"
DEADLINE = 10.0


class PausableIntake(RecordingIntake):
    """The intake, which can be made to wait (a pipeline under load)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def submit(self, message: IncomingMessage) -> str:
        await self.gate.wait()
        return await super().submit(message)


class DecidingApprovals(RecordingApprovals):
    def __init__(self) -> None:
        super().__init__()
        self.deciders: list[Decider | None] = []

    def approve(self, plan_id: str, decider: Decider | None = None) -> DecisionResult:
        self.deciders.append(decider)
        return super().approve(plan_id, decider)

    def reject(
        self, plan_id: str, reason: str | None = None, decider: Decider | None = None
    ) -> DecisionResult:
        self.deciders.append(decider)
        return super().reject(plan_id, reason, decider)


@dataclass
class Harness(ServiceHarness):
    graph: FakeWhatsApp
    openai: FakeOpenAITranscription
    vault: Path
    control: ControlServer
    intake: PausableIntake = field(default_factory=PausableIntake)
    approvals: DecidingApprovals = field(default_factory=DecidingApprovals)
    actions: ActionTable = field(default_factory=ActionTable)

    def context(self, *, openai_key: bool = True, **overrides: Any) -> ServiceContext:
        environ = {
            "WHATSAPP_ACCESS_TOKEN": self.graph.token,
            "WHATSAPP_PHONE_NUMBER_ID": self.graph.phone_number_id,
            "WHATSAPP_APP_SECRET": self.graph.app_secret,
            "WHATSAPP_VERIFY_TOKEN": self.graph.verify_token,
            "WHATSAPP_ALLOWED_NUMBERS": f"+{ALLOWED}",
            "WHATSAPP_API_BASE_URL": self.graph.base_url,
        }
        if openai_key:
            environ |= {"OPENAI_API_KEY": self.openai.api_key, "OPENAI_BASE_URL": self.openai.base_url}
        paths: dict[tuple[str, ...], Any] = {("whatsapp", key): value for key, value in overrides.items()}
        paths[("services", "initial_backoff")] = 0.05
        settings = load_settings(environ=environ, overrides=paths)
        return self.service_context(
            settings, approvals=self.approvals, routes=self.control, actions=self.actions
        )

    def service(self, **overrides: Any) -> WhatsAppService:
        return WhatsAppService(self.context(**overrides), retry=FAST)

    async def start(self, service: WhatsAppService | None = None, **overrides: Any) -> WhatsAppService:
        service = service or self.service(**overrides)
        task = asyncio.create_task(service.run())
        await eventually(lambda: service.ready.is_set() or task.done(), timeout=DEADLINE)
        if task.done():
            task.result()
        self.running.append((service, task))
        await eventually(lambda: _connected(service), timeout=DEADLINE, message="the Graph API reached")
        return service

    async def action_count(self, count: int) -> list[Any]:
        await eventually(
            lambda: len(self.intake.actions) >= count, timeout=DEADLINE, message=f"{count} actions"
        )
        return self.intake.actions

    async def sent_to(self, wa_id: str, containing: str, kind: str | None = None) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for message in self.graph.messages_to(wa_id):
                text = _text_of(message)
                if containing in text and (kind is None or message.get("type") == kind):
                    return message
            return None

        found: dict[str, Any] = await eventually(
            find, timeout=DEADLINE, message=f"a message with {containing!r}"
        )
        return found

    def plan_event(self, action_id: str, plan_id: str, source_ref: str, **payload: Any) -> Event:
        return Event(
            EventType.PLAN_CREATED,
            {
                "plan_id": plan_id,
                "action_id": action_id,
                "action": "atlas.work_order",
                "params": {"title": "Fix pump 3", "priority": "high"},
                "summary": "Create a work order for the leaking pump",
                "risk": "medium",
                "source": "whatsapp",
                "source_ref": source_ref,
                **payload,
            },
            correlation_id=action_id,
            source="pipeline",
        )


def _text_of(message: Mapping[str, Any]) -> str:
    kind = message.get("type")
    if kind == "text":
        return str(message["text"]["body"])
    if kind == "interactive":
        return str(message["interactive"]["body"]["text"])
    if kind == "template":
        parameters = message["template"]["components"][0]["parameters"]
        return " ".join(str(parameter.get("text", "")) for parameter in parameters)
    return ""


def _connected(service: WhatsAppService) -> bool:
    link = service.link()
    return link is not None and link.state is ServiceState.RUNNING


@pytest.fixture(name="harness")
async def harness_fixture(tmp_path: Path) -> AsyncIterator[Harness]:
    graph = FakeWhatsApp()
    openai = FakeOpenAITranscription()
    await graph.start()
    await openai.start()
    control = ControlServer(
        ReadyHooks({"running": True, "secret": "only on the control port"}),
        Metrics(),
        port=0,
        token="control-token",
    )
    port = await control.start()
    graph.webhook_url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    built = Harness(graph=graph, openai=openai, vault=tmp_path / "vault", control=control)
    await built.open()
    try:
        yield built
    finally:
        built.intake.gate.set()
        graph.release_media()
        await built.close()
        await control.stop()
        await openai.stop()
        await graph.stop()
