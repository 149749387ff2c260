"""A harness for the Slack supervision tests: the real supervisor and Slack service (slack-sdk's
AsyncWebClient and SocketModeClient) against the loopback Slack (tests/fakes/slack.py), the real
bus, and the real approval door (vault.decisions) on a temporary vault.

The intake and the key-value store are small doubles with the contracts of
ai_employee.model.messages / ai_employee.model.services. Imported explicitly by the Slack test
modules.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ai_employee.config import load_settings
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import ServiceContext
from ai_employee.supervision.slack import SlackService
from ai_employee.supervision.supervisor import SupervisorService, build_supervision
from ai_employee.vault.decisions import Decisions
from ai_employee.vault.layout import Folder, VaultLayout
from tests.conftest import eventually
from tests.fakes.common import NoActions
from tests.fakes.slack import (
    ALERT_CHANNEL_NAME,
    CHANNEL_ID,
    CHANNEL_NAME,
    SIGNING_SECRET,
    FakeSlack,
)
from tests.integration.conftest_chat import RecordingIntake, ServiceHarness

ALLOWED = "U0ALLOWED1"
STRANGER = "U0STRANGER"
DEADLINE = 10.0


class RouteTable:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Any] = {}

    def add_route(self, method: str, path: str, handler: Any) -> None:
        self.routes[(method, path)] = handler


@dataclass
class Harness(ServiceHarness):
    slack: FakeSlack
    vault: Path
    intake: RecordingIntake = field(default_factory=lambda: RecordingIntake("20261207"))
    routes: RouteTable = field(default_factory=RouteTable)
    status: dict[str, Any] = field(default_factory=lambda: {"services": {}, "executors": {}})
    status_reads: int = 0  # how many times the supervisor looked at the daemon's status

    @property
    def layout(self) -> VaultLayout:
        return VaultLayout(self.vault)

    def _read_status(self) -> dict[str, Any]:
        self.status_reads += 1
        return self.status

    async def health_checks(self, count: int) -> None:
        """Wait until the supervisor has looked at the status `count` more times."""
        until = self.status_reads + count
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while self.status_reads < until:
            assert asyncio.get_running_loop().time() < deadline, f"fewer than {count} health checks"
            await asyncio.sleep(0.005)

    def context(
        self,
        *,
        socket_mode: bool = True,
        allowed: str | None = ALLOWED,
        token: bool = True,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServiceContext:
        env = {
            "SLACK_CHANNEL": CHANNEL_NAME,
            "SLACK_API_BASE_URL": self.slack.base_url,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_ALERT_CHANNEL": ALERT_CHANNEL_NAME,
        }
        if token:
            env["SLACK_BOT_TOKEN"] = self.slack.bot_token
        if socket_mode:
            env["SLACK_APP_TOKEN"] = self.slack.app_token
        if allowed:
            env["SLACK_ALLOWED_USER_IDS"] = allowed
        env.update(environ or {})
        paths: dict[tuple[str, ...], Any] = {
            ("slack", "min_interval"): 0.0,
            ("services", "initial_backoff"): 0.05,
            ("services", "max_backoff"): 0.2,
            ("supervision", "down_after"): 0.0,
        }
        for key, value in overrides.items():
            section, _, name = key.partition("__")
            paths[(section, name)] = value
        settings = load_settings(environ=env, overrides=paths)
        return self.service_context(
            settings, approvals=Decisions(self.layout), routes=self.routes, actions=NoActions()
        )

    def build(self, **kwargs: Any) -> tuple[SupervisorService, SlackService | None, dict[str, str]]:
        services, off = build_supervision(self.context(**kwargs), self._read_status)
        supervisor = services[0]
        assert isinstance(supervisor, SupervisorService)
        return supervisor, supervisor.slack, off

    async def start(self, **kwargs: Any) -> tuple[SupervisorService, SlackService | None]:
        supervisor, slack, _ = self.build(**kwargs)
        for service in (supervisor, slack):
            if service is None:
                continue
            task = asyncio.create_task(service.run())
            await asyncio.wait_for(service.ready.wait(), DEADLINE)
            self.running.append((service, task))
        if slack is not None:
            await eventually(lambda: connected(slack), DEADLINE, "Slack connected")
        return supervisor, slack

    async def stop_all(self) -> None:
        for service, task in reversed(self.running):
            await service.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, DEADLINE)
        self.running.clear()

    # -- what the pipeline would publish ---------------------------------------------------

    def publish(self, event_type: EventType, action_id: str, **payload: Any) -> None:
        self.bus.publish(
            Event(
                event_type, {"action_id": action_id, **payload}, correlation_id=action_id, source="pipeline"
            )
        )

    def new_item(
        self, number: int, *, title: str = "Pump 3 leaking on line 2", plan: bool = True
    ) -> tuple[str, str]:
        """An action and its plan, as the pipeline announces them; the plan note exists in Plans/."""
        action_id = f"act-20261207-101500-{number:06x}"
        plan_id = "plan-" + action_id.removeprefix("act-")
        self.publish(
            EventType.ACTION_CREATED,
            action_id,
            source="file",
            source_ref=f"pump-{number}.txt",
            title=title,
            note=f"Needs_Action/2026-12-07 pump-{number} {number:06x}.md",
            sender=None,
        )
        if plan:
            self.write_plan(plan_id, action_id)
            self.publish(
                EventType.PLAN_CREATED,
                action_id,
                plan_id=plan_id,
                action="atlas.work_order",
                params={"title": title, "priority": "HIGH"},
                summary="Create a work order for the leak",
                risk="medium",
                planner="template",
                note=f"Plans/2026-12-07 pump-{number} plan {number:06x}.md",
                source="file",
                source_ref=f"pump-{number}.txt",
                cost_usd=0.0012,
            )
        return action_id, plan_id

    def write_plan(self, plan_id: str, action_id: str) -> Path:
        number = plan_id.rsplit("-", 1)[-1]
        path = self.layout.folder(Folder.PLANS) / f"2026-12-07 pump plan {number}.md"
        path.write_text(
            f"---\nid: {plan_id}\ntype: plan\naction_id: {action_id}\naction: atlas.work_order\n"
            f"status: pending_approval\nplanner: template\nrisk: medium\n"
            f"created: {datetime.now(UTC).isoformat(timespec='seconds')}\ntitle: Pump 3\n---\n\n# Plan\n",
            encoding="utf-8",
        )
        return path

    def plan_folder(self, plan_id: str) -> str | None:
        found = Decisions(self.layout).find(plan_id)
        return found[0].value if found else None

    # -- what Slack shows ------------------------------------------------------------------

    def thread_of(self, action_id: str) -> dict[str, Any]:
        """The top message of the item's thread (the one showing its action id)."""
        return next(post for post in self.slack.top_messages() if action_id in _text_of(post))

    async def wait_thread(self, action_id: str) -> dict[str, Any]:
        found: dict[str, Any] = await self.slack.wait_for(
            lambda: next((p for p in self.slack.top_messages() if action_id in _text_of(p)), None), DEADLINE
        )
        return found

    async def wait_reply(self, thread_ts: str, containing: str, channel: str = CHANNEL_ID) -> dict[str, Any]:
        found: dict[str, Any] = await self.slack.wait_for(
            lambda: next(
                (p for p in self.slack.replies(thread_ts, channel) if containing in _text_of(p)), None
            ),
            DEADLINE,
        )
        return found

    async def http(self) -> TestClient[web.Request, web.Application]:
        """The routes the Slack service registered, served as the control port serves them."""
        app = web.Application()
        for (method, path), handler in self.routes.routes.items():
            app.router.add_route(method, path, handler)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        return client


def _text_of(post: Mapping[str, Any]) -> str:
    """Everything a message shows: its text and the text of its blocks."""
    parts = [str(post.get("text") or "")]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    parts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(post.get("attachments"))
    walk(post.get("blocks"))
    return "\n".join(parts)


text_of: Callable[[Mapping[str, Any]], str] = _text_of


def connected(slack: SlackService) -> bool:
    link = slack.link()
    return link is not None and link.state.value == "running"


def buttons_of(post: Mapping[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for attachment in post.get("attachments") or []
        for block in attachment.get("blocks") or []
        if block.get("type") == "actions"
        for element in block.get("elements") or []
    ]


@pytest.fixture(name="harness")
async def harness_fixture(tmp_path: Path) -> AsyncIterator[Harness]:
    slack = FakeSlack()
    await slack.start()
    vault = tmp_path / "vault"
    VaultLayout(vault).create()
    built = Harness(slack=slack, vault=vault)
    await built.bus.start()
    try:
        yield built
    finally:
        await built.stop_all()
        await built.bus.close()
        await slack.stop()
