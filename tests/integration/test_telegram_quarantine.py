"""An update the bot fails to take, however often it tries, is quarantined with a note after
`telegram.max_update_attempts` tries instead of being retried for ever; the messages after it get
through."""

from __future__ import annotations

import asyncio

import pytest

from ai_employee.model.events import EventType
from ai_employee.sources.telegram import WEBHOOK_PATH, UpdateFailed
from ai_employee.vault.notes import parse_note
from tests.integration.conftest_telegram import (  # noqa: F401 - harness_fixture registers the fixture
    ALLOWED,
    DEADLINE,
    Harness,
    harness_fixture,
)
from tests.integration.test_telegram_source import control_port


async def test_an_update_that_fails_every_time_is_quarantined_after_the_configured_tries(
    harness: Harness,
) -> None:
    harness.intake.fail_next = 3
    service = harness.service(max_update_attempts=3)
    poison = harness.telegram.send_text(ALLOWED, "the message the vault side refuses")
    for _ in range(2):  # the first tries crash the service, as before: the orchestrator runs it again
        with pytest.raises(UpdateFailed, match="No space left on device"):
            await asyncio.wait_for(asyncio.create_task(service.run()), DEADLINE)

    await harness.start(service)
    await harness.telegram.wait_for(lambda: not harness.telegram.pending_update_ids, DEADLINE)

    [note] = [path for path in (harness.vault / "Quarantine").iterdir() if path.suffix == ".md"]
    properties, body = parse_note(note.read_text(encoding="utf-8"))
    assert properties["type"] == "quarantine"
    assert properties["source"] == "telegram"
    assert properties["attempts"] == 3
    assert properties["source_ref"] == f"{ALLOWED}:{poison['message_id']}"
    assert properties["reason"].startswith("the bot could not take this update after 3 tries")
    assert "No space left on device" in properties["reason"]
    assert "the message the vault side refuses" in body  # the update itself is kept
    [event] = harness.of_type(EventType.INPUT_QUARANTINED)
    assert event.payload["file"] == f"telegram update {properties['update_id']}"


async def test_after_a_quarantined_update_the_next_messages_get_through(harness: Harness) -> None:
    harness.intake.fail_next = 1
    await harness.start(max_update_attempts=1)
    harness.telegram.send_text(ALLOWED, "refused")
    harness.telegram.send_text(ALLOWED, "the next one")

    [stored] = await harness.action_count(1)

    assert stored.message.body == "the next one"
    assert harness.intake.calls == 2


async def test_a_webhook_update_that_fails_every_time_is_quarantined_and_answered_200(
    harness: Harness,
) -> None:
    harness.intake.fail_next = 2
    async with control_port(harness.routes) as base:
        url = base + WEBHOOK_PATH
        await harness.start(
            mode="webhook", webhook_secret="s3cret-webhook-token", webhook_url=url, max_update_attempts=2
        )
        harness.telegram.send_text(ALLOWED, "refused twice over the webhook")
        harness.telegram.send_text(ALLOWED, "the one after it")

        [stored] = await harness.action_count(1)
        await harness.telegram.wait_for(lambda: not harness.telegram.pending_update_ids, DEADLINE)

    assert stored.message.body == "the one after it"
    [note] = [path for path in (harness.vault / "Quarantine").iterdir() if path.suffix == ".md"]
    assert "refused twice over the webhook" in note.read_text(encoding="utf-8")
