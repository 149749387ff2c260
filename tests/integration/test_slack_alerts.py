"""Alerts: one post when a condition turns bad and one when it recovers, to Slack's alert channel and
to the Telegram admin chat; never one per health check."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import pytest

from ai_employee.model.events import Event, EventType
from tests.conftest import eventually
from tests.fakes.slack import ALERT_CHANNEL_ID
from tests.fakes.telegram_server import FakeTelegram
from tests.integration.conftest_slack import DEADLINE, Harness, harness_fixture, text_of

__all__ = ["harness_fixture"]
ADMIN_CHAT = 5550001


def alerts(harness: Harness) -> list[str]:
    return [text_of(post) for post in harness.slack.top_messages(ALERT_CHANNEL_ID)]


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    fake.send_text(ADMIN_CHAT, "/start")  # the admin has talked to the bot: the chat exists
    yield fake
    await fake.stop()


async def test_a_service_down_is_one_alert_and_its_recovery_another(harness: Harness) -> None:
    harness.status["services"]["email"] = {
        "state": "retrying",
        "last_error": "IMAP imap.example.com:993: connection refused (nothing is listening)",
        "target": "IMAP imap.example.com:993",
    }
    await harness.start(supervision__check_interval=0.02)

    await harness.slack.wait_for(lambda: alerts(harness), DEADLINE)
    await harness.health_checks(10)
    assert len(alerts(harness)) == 1
    assert "email is retrying" in alerts(harness)[0]
    assert "connection refused" in alerts(harness)[0]

    harness.status["services"]["email"] = {"state": "running"}
    await harness.slack.wait_for(lambda: len(alerts(harness)) == 2, DEADLINE)
    assert "Recovered: email is retrying" in alerts(harness)[1]
    await harness.health_checks(5)
    assert len(alerts(harness)) == 2


async def test_an_unreachable_executor_server_is_an_alert(harness: Harness) -> None:
    harness.status["executors"]["manus.research"] = {
        "state": "degraded",
        "target": "Manus api.manus.ai:443",
        "last_error": "Manus api.manus.ai:443: connection timed out after 10 s",
    }
    await harness.start()

    await harness.slack.wait_for(lambda: alerts(harness), DEADLINE)
    assert "Manus api.manus.ai:443 is unreachable" in alerts(harness)[0]


async def test_a_service_restarting_in_a_loop_is_an_alert(harness: Harness) -> None:
    await harness.start()
    for _ in range(3):
        harness.bus.publish(Event(EventType.SERVICE_RESTARTED, {"service": "email"}, source="orchestrator"))

    await harness.slack.wait_for(lambda: alerts(harness), DEADLINE)
    assert "email is restarting in a loop" in alerts(harness)[0]


async def test_a_high_failure_rate_is_an_alert(harness: Harness) -> None:
    await harness.start()
    for number in range(1, 6):
        action_id = f"act-20261207-101500-{number:06x}"
        harness.publish(EventType.PLAN_FAILED, action_id, plan_id="plan-" + action_id[4:], error="boom")

    await harness.slack.wait_for(lambda: any("failing" in text for text in alerts(harness)), DEADLINE)
    assert "5 of the last 5 failed" in next(text for text in alerts(harness) if "failing" in text)


async def test_a_plan_waiting_too_long_is_an_alert_in_slack_and_telegram(
    harness: Harness, telegram: FakeTelegram
) -> None:
    path = harness.write_plan("plan-20261207-101500-00000a", "act-20261207-101500-00000a")
    old = time.time() - 2 * 3600
    os.utime(path, (old, old))
    await harness.start(
        environ={
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE_URL": telegram.root_url,
            "TELEGRAM_ADMIN_CHAT_ID": str(ADMIN_CHAT),
        },
        supervision__stale_after=3600,
    )

    await harness.slack.wait_for(lambda: alerts(harness), DEADLINE)
    assert "plans waiting for a decision longer than 1 h" in alerts(harness)[0]
    sent = await telegram.wait_for(lambda: telegram.messages_to(ADMIN_CHAT), DEADLINE)
    assert "plans waiting for a decision longer than 1 h" in sent[0]["text"]
    assert path.name in sent[0]["text"]


async def test_alerts_go_to_telegram_when_slack_is_off(harness: Harness, telegram: FakeTelegram) -> None:
    harness.status["services"]["telegram"] = {"state": "failed", "last_error": "crashed: KeyError"}
    supervisor, slack = await harness.start(
        token=False,
        environ={
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE_URL": telegram.root_url,
            "TELEGRAM_ADMIN_CHAT_ID": str(ADMIN_CHAT),
        },
    )
    assert slack is None

    sent = await telegram.wait_for(lambda: telegram.messages_to(ADMIN_CHAT), DEADLINE)
    assert "telegram is failed" in sent[0]["text"]
    await eventually(lambda: supervisor.monitor.sent == 1, DEADLINE)
