"""The Telegram source while the Bot API is down, hangs, is slow or goes away: the service is
ready at once, its link says why it cannot reach the server, it comes back by itself when the
server does, and what waited arrives exactly once; stop() never waits for a deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from ai_employee.model.services import LinkStatus, ServiceState
from ai_employee.sources.telegram import TelegramService
from ai_employee.sources.telegram_bot import STOP_GRACE_SECONDS
from tests.conftest import eventually
from tests.fakes.outage import Mode, OutageProxy
from tests.integration.conftest_telegram import (  # noqa: F401 - harness_fixture registers the fixture
    ALLOWED,
    DEADLINE,
    FAST,
    Harness,
    harness_fixture,
    is_connected,
)

OUTAGES: list[Mode] = ["refused", "hanging", "slow"]
CONNECT_TIMEOUT = 0.5
MAX_BACKOFF = 1.0
SERVICES = {
    "connect_timeout": CONNECT_TIMEOUT,
    "read_timeout": 2.0,
    "initial_backoff": 0.2,
    "max_backoff": MAX_BACKOFF,
}
#: from "the server is back" to connected: an attempt still under way (its deadline), the longest
#: backoff, and a margin for a loaded machine
BACK_WITHIN = CONNECT_TIMEOUT + MAX_BACKOFF + 2.0
WRONG_TOKEN = "123456789:AAWrongTokenRevokedByBotFather_xyz"
REASONS = {
    "refused": "connection refused (nothing is listening)",
    "hanging": f"no answer after {CONNECT_TIMEOUT:g} s",
    "slow": f"no answer after {CONNECT_TIMEOUT:g} s",
}


@pytest.fixture(params=OUTAGES)
def mode(request: pytest.FixtureRequest) -> Mode:
    chosen: Mode = request.param
    return chosen


@pytest.fixture
def outage(mode: Mode, harness: Harness) -> Iterator[OutageProxy]:
    """The fake Bot API behind a proxy on a port of its own, down in the way `mode` says (slow:
    30 s, far past every deadline)."""
    proxy = OutageProxy(harness.telegram.port, mode=mode, slow_seconds=30).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def retrying(service: TelegramService) -> LinkStatus | None:
    link = service.link()
    return link if link is not None and link.state is ServiceState.RETRYING and link.last_error else None


async def test_with_the_bot_api_unreachable_the_service_is_ready_at_once_and_retrying_with_the_reason(
    harness: Harness, outage: OutageProxy, mode: Mode
) -> None:
    began = time.monotonic()
    service = await harness.start(harness.service(api_root=outage.url, services=SERVICES), connected=False)
    ready_after = time.monotonic() - began

    link = await eventually(lambda: retrying(service), timeout=DEADLINE, message="the link retrying")
    report = await service.health()

    target = f"Telegram 127.0.0.1:{outage.port}"
    reason = f"{target}: {REASONS[mode]}"
    assert ready_after < 0.5, f"ready after {ready_after:.2f} s"
    assert (link.target, link.last_error) == (target, reason)
    assert link.attempts >= 1 and link.next_attempt is not None
    assert not report.healthy
    assert report.detail.startswith(f"retrying: {reason}; next attempt in ")
    secret = harness.telegram.token.split(":", 1)[1]
    assert secret not in json.dumps(link.to_dict()) + report.detail + json.dumps(report.data, default=str)


async def test_when_the_bot_api_is_back_the_update_that_waited_becomes_exactly_one_action(
    harness: Harness, outage: OutageProxy
) -> None:
    harness.telegram.send_text(ALLOWED, "sent while the Bot API was away")
    service = await harness.start(harness.service(api_root=outage.url, services=SERVICES), connected=False)
    await eventually(lambda: retrying(service), timeout=DEADLINE, message="the link retrying")

    outage.set_mode("up")
    began = time.monotonic()
    await eventually(lambda: is_connected(service), timeout=DEADLINE, message="connected again")
    connected_after = time.monotonic() - began
    [stored] = await harness.action_count(1)
    await harness.reply_to(ALLOWED, stored.action_id)
    harness.telegram.send_text(ALLOWED, "barrier")
    await harness.action_count(2)

    assert connected_after < BACK_WITHIN, f"connected {connected_after:.2f} s after the server came back"
    assert [action.message.body for action in harness.intake.actions] == [
        "sent while the Bot API was away",
        "barrier",
    ]
    assert harness.intake.calls == 2
    assert (await service.health()).healthy


async def test_stop_returns_at_once_while_the_bot_api_is_unreachable(
    harness: Harness, outage: OutageProxy
) -> None:
    patient = {**SERVICES, "connect_timeout": 60.0, "read_timeout": 60.0, "max_backoff": 60.0}
    service = await harness.start(harness.service(api_root=outage.url, services=patient), connected=False)
    # under way: a connect that hangs (hanging, slow), or the wait after a refusal
    await eventually(
        lambda: outage.accepted >= 1 or retrying(service), timeout=DEADLINE, message="an attempt under way"
    )

    began = time.monotonic()
    await harness.stop(service)
    took = time.monotonic() - began

    assert took < 1.0, f"stopped after {took:.2f} s"


async def test_when_polling_loses_the_server_the_link_retries_and_what_waited_arrives_once(
    harness: Harness,
) -> None:
    service = await harness.start(services=SERVICES)
    harness.telegram.send_text(ALLOWED, "before the server went away")
    await harness.action_count(1)

    await harness.telegram.go_away()
    link = await eventually(lambda: retrying(service), timeout=DEADLINE, message="the link retrying")
    harness.telegram.send_text(ALLOWED, "sent while the server was away")
    await harness.telegram.come_back()
    await eventually(lambda: is_connected(service), timeout=BACK_WITHIN, message="connected again")
    harness.telegram.send_text(ALLOWED, "barrier")
    await harness.action_count(3)

    target = f"Telegram 127.0.0.1:{harness.telegram.port}"
    assert link.last_error in (  # the long poll in flight is cut (reset or EOF), or the next is refused
        f"{target}: the server closed the connection",
        f"{target}: the server closed the connection without an answer",
        f"{target}: {REASONS['refused']}",
    )
    assert [action.message.body for action in harness.intake.actions] == [
        "before the server went away",
        "sent while the server was away",
        "barrier",
    ]
    assert harness.intake.calls == 3


async def test_stop_during_a_hung_download_returns_within_the_grace_and_the_message_comes_again(
    harness: Harness,
) -> None:
    patient = {**SERVICES, "read_timeout": 60.0}
    service = await harness.start(services=patient)
    harness.telegram.hang("getFile")
    harness.telegram.send_document(
        ALLOWED, b"%PDF-1.7 manual", file_name="manual.pdf", mime_type="application/pdf"
    )
    await harness.telegram.wait_for(
        lambda: any(method == "getFile" for method, _ in harness.telegram.calls), DEADLINE
    )

    began = time.monotonic()
    await harness.stop(service)
    took = time.monotonic() - began
    harness.telegram.release("getFile")
    await harness.start(services=patient)
    [stored] = await harness.action_count(1)

    assert took < STOP_GRACE_SECONDS + 0.5, f"stopped after {took:.2f} s"
    assert stored.files == {"manual.pdf": b"%PDF-1.7 manual"}
    assert harness.intake.calls == 1


async def test_a_refused_bot_token_leaves_the_service_retrying_without_showing_the_token(
    harness: Harness,
) -> None:
    context = harness.context(services=SERVICES)
    context.settings.telegram.bot_token = SecretStr(WRONG_TOKEN)
    service = await harness.start(TelegramService(context, retry=FAST, poll_timeout=5.0), connected=False)

    link = await eventually(lambda: retrying(service), timeout=DEADLINE, message="the link retrying")
    report = await service.health()

    target = f"Telegram 127.0.0.1:{harness.telegram.port}"
    assert link.last_error == (
        f"{target}: the Bot API refused the bot token: check TELEGRAM_BOT_TOKEN and TELEGRAM_API_BASE_URL"
    )
    assert not any(task.done() for _, task in harness.running), "still running, not crashed"
    secret = WRONG_TOKEN.split(":", 1)[1]
    assert secret not in json.dumps(link.to_dict()) + report.detail
