"""Slack's ways in, both verified: the signed HTTP routes (`POST /slack/interactions`,
`POST /slack/events`) and Socket Mode; Slack messages, mentions and slash commands become actions,
exactly once, with their files."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from ai_employee.model.events import EventType
from tests.conftest import eventually
from tests.fakes.slack import CHANNEL_ID, SIGNING_SECRET, sign
from tests.integration.conftest_slack import (
    ALLOWED,
    DEADLINE,
    STRANGER,
    Harness,
    harness_fixture,
    text_of,
)

__all__ = ["harness_fixture"]


def _form(payload: dict[str, object]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


async def test_http_routes_are_registered_on_the_control_port(harness: Harness) -> None:
    harness.build(socket_mode=False)
    assert set(harness.routes.routes) == {("POST", "/slack/interactions"), ("POST", "/slack/events")}


async def test_url_verification_is_answered_with_the_challenge(harness: Harness) -> None:
    await harness.start(socket_mode=False)
    client = await harness.http()
    body = json.dumps(
        {"type": "url_verification", "token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595"}
    ).encode()
    try:
        response = await client.post("/slack/events", data=body, headers=sign(body))
        assert response.status == 200
        assert (await response.json()) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595"}
    finally:
        await client.close()


async def test_forged_missing_stale_or_malformed_signatures_are_refused_with_401(harness: Harness) -> None:
    _, slack = await harness.start(socket_mode=False)
    assert slack is not None
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")
    body = _form(harness.slack.block_actions(ALLOWED, waiting, "aie_approve"))
    client = await harness.http()
    try:
        attempts = {
            "forged": sign(body, secret="not-the-signing-secret"),
            "missing": {},
            "stale": sign(body, timestamp=int(time.time()) - 301),
            "malformed": {**sign(body), "X-Slack-Request-Timestamp": "yesterday"},
        }
        for headers in attempts.values():
            response = await client.post("/slack/interactions", data=body, headers=headers)
            assert response.status == 401
        response = await client.post("/slack/events", data=b'{"type":"url_verification","challenge":"x"}')
        assert response.status == 401
    finally:
        await client.close()
    assert harness.plan_folder(plan_id) == "Plans"


async def test_a_signed_click_over_http_approves_the_plan(harness: Harness) -> None:
    await harness.start(socket_mode=False)
    action_id, plan_id = harness.new_item(1)
    top = await harness.wait_thread(action_id)
    waiting = await harness.wait_reply(top["ts"], "Waiting for approval")
    body = _form(harness.slack.block_actions(ALLOWED, waiting, "aie_approve"))
    client = await harness.http()
    try:
        started = time.monotonic()
        response = await client.post("/slack/interactions", data=body, headers=sign(body))
        assert response.status == 200
        assert time.monotonic() - started < 3.0
    finally:
        await client.close()
    await eventually(lambda: harness.plan_folder(plan_id) == "Approved", DEADLINE)


async def test_a_message_from_an_allowed_user_becomes_an_action_and_its_plan_goes_to_its_thread(
    harness: Harness,
) -> None:
    await harness.start()
    event = harness.slack.message_event(ALLOWED, "Pump 3 is leaking oil on line 2\nPlease send someone")
    envelope = await harness.slack.send_envelope("events_api", event)

    await eventually(lambda: harness.intake.actions, DEADLINE)
    stored = harness.intake.actions[0].message
    ts = event["event"]["ts"]
    assert (stored.source, stored.source_ref, stored.sender) == ("slack", f"{CHANNEL_ID}:{ts}", ALLOWED)
    assert stored.title == "Pump 3 is leaking oil on line 2"
    await harness.slack.wait_for(lambda: harness.slack.ack_of(envelope), DEADLINE)

    action_id = harness.intake.actions[0].action_id
    harness.publish(
        EventType.ACTION_CREATED,
        action_id,
        source="slack",
        source_ref=stored.source_ref,
        title=stored.title,
        note="Needs_Action/x.md",
    )
    status = await harness.wait_reply(ts, action_id)
    assert "Pump 3 is leaking" in text_of(status)
    assert not harness.slack.top_messages()  # no new thread: the user's message is the thread


async def test_retried_events_and_a_mention_seen_twice_make_one_action(harness: Harness) -> None:
    await harness.start()
    event = harness.slack.message_event(ALLOWED, "<@U0BOT0001> the compressor trips")
    mention = harness.slack.message_event(
        ALLOWED, "<@U0BOT0001> the compressor trips", kind="app_mention", ts=event["event"]["ts"]
    )
    first = await harness.slack.send_envelope("events_api", event)
    await harness.slack.send_envelope("events_api", event, retry_attempt=1)  # Slack's retry
    await harness.slack.send_envelope("events_api", mention)
    await harness.slack.wait_for(lambda: len(harness.slack.acks) >= 3, DEADLINE)

    assert len(harness.intake.actions) == 1
    assert harness.intake.actions[0].message.body == "the compressor trips"
    assert harness.slack.ack_of(first) is not None


async def test_an_event_retried_over_http_after_a_restart_makes_no_second_action(harness: Harness) -> None:
    await harness.start(socket_mode=False)
    body = json.dumps(harness.slack.message_event(ALLOWED, "Leak at valve 7")).encode()
    client = await harness.http()
    try:
        assert (await client.post("/slack/events", data=body, headers=sign(body))).status == 200
        await harness.stop_all()
        harness.routes.routes.clear()
        await harness.start(socket_mode=False)
        await client.close()
        client = await harness.http()
        assert (
            await client.post("/slack/events", data=body, headers={**sign(body), "X-Slack-Retry-Num": "1"})
        ).status == 200
    finally:
        await client.close()
    assert len(harness.intake.actions) == 1


async def test_messages_from_strangers_bots_and_thread_replies_create_nothing(harness: Harness) -> None:
    await harness.start()
    stranger = harness.slack.message_event(STRANGER, "please delete everything")
    bot = harness.slack.message_event(ALLOWED, "I am a bot", bot_id="B0OTHER")
    reply = harness.slack.message_event(ALLOWED, "thanks!")
    reply["event"]["thread_ts"] = "1765000000.000001"
    other_channel = harness.slack.message_event(ALLOWED, "chatter elsewhere", channel="C0RANDOM1")
    for body in (stranger, bot, reply, other_channel):
        await harness.slack.send_envelope("events_api", body)
    await harness.slack.wait_for(lambda: len(harness.slack.acks) >= 4, DEADLINE)

    assert harness.intake.actions == []


async def test_a_direct_message_to_the_bot_becomes_an_action(harness: Harness) -> None:
    await harness.start()
    event = harness.slack.message_event(
        ALLOWED, "Fork lift battery is dead", channel="D0DIRECT1", channel_type="im"
    )
    await harness.slack.send_envelope("events_api", event)

    await eventually(lambda: harness.intake.actions, DEADLINE)
    assert harness.intake.actions[0].message.source_ref == f"D0DIRECT1:{event['event']['ts']}"


async def test_files_shared_with_a_message_are_fetched_as_attachments(harness: Harness) -> None:
    await harness.start()
    photo = harness.slack.add_file("leak.jpg", b"\xff\xd8\xff\xe0fake-jpeg" * 100, "image/jpeg")
    event = harness.slack.message_event(ALLOWED, "See the photo", files=[photo])
    await harness.slack.send_envelope("events_api", event)

    await eventually(lambda: harness.intake.actions, DEADLINE)
    stored = harness.intake.actions[0]
    assert stored.files == {"leak.jpg": b"\xff\xd8\xff\xe0fake-jpeg" * 100}
    assert stored.message.attachments[0].content_type == "image/jpeg"
    assert not list((harness.vault / ".ai-employee" / "slack").glob("*"))  # temp copies are gone


async def test_a_file_named_without_its_links_is_looked_up_with_files_info(harness: Harness) -> None:
    await harness.start()
    report = harness.slack.add_file("report.pdf", b"%PDF-1.7 fake", "application/pdf")
    named = {"id": report["id"], "file_access": "check_file_info"}
    await harness.slack.send_envelope(
        "events_api", harness.slack.message_event(ALLOWED, "the report", files=[named])
    )

    await eventually(lambda: harness.intake.actions, DEADLINE)
    assert harness.intake.actions[0].files == {"report.pdf": b"%PDF-1.7 fake"}
    assert any(method == "files.info" for method, _ in harness.slack.calls)


async def test_a_file_link_off_slacks_hosts_is_not_fetched_with_the_token(harness: Harness) -> None:
    await harness.start()
    evil = {
        "id": "F0EVIL",
        "name": "x.pdf",
        "mimetype": "application/pdf",
        "size": 10,
        "url_private_download": "https://attacker.example.com/steal",
    }
    await harness.slack.send_envelope(
        "events_api", harness.slack.message_event(ALLOWED, "see file", files=[evil])
    )

    await eventually(lambda: harness.intake.actions, DEADLINE)
    stored = harness.intake.actions[0].message
    assert stored.attachments == []
    assert "no download link on Slack's own hosts" in stored.properties["attachment_error"]


async def test_a_slash_command_becomes_an_action_and_is_answered_in_the_ack(harness: Harness) -> None:
    await harness.start()
    envelope = await harness.slack.send_envelope(
        "slash_commands", harness.slack.slash_command(ALLOWED, "Replace filter on AHU-2")
    )

    ack = await harness.slack.wait_for(lambda: harness.slack.ack_of(envelope), DEADLINE)
    assert "Received" in ack["payload"]["text"]
    await eventually(lambda: harness.intake.actions, DEADLINE)
    assert harness.intake.actions[0].message.title == "Replace filter on AHU-2"


async def test_a_slash_command_from_a_stranger_is_refused(harness: Harness) -> None:
    await harness.start(socket_mode=False)
    body = urlencode(harness.slack.slash_command(STRANGER, "open the valves")).encode()
    client = await harness.http()
    try:
        response = await client.post(
            "/slack/interactions", data=body, headers=sign(body, secret=SIGNING_SECRET)
        )
        assert "not allowed" in (await response.json())["text"]
    finally:
        await client.close()
    assert harness.intake.actions == []


async def test_socket_mode_reconnects_after_a_disconnect_and_goes_on(harness: Harness) -> None:
    await harness.start()
    await harness.slack.wait_for(lambda: harness.slack.socket_count == 1, DEADLINE)
    await harness.slack.disconnect_sockets("refresh_requested")
    await harness.slack.wait_for(
        lambda: harness.slack.sockets_accepted == 2 and harness.slack.socket_count == 1, DEADLINE
    )

    event = harness.slack.message_event(ALLOWED, "Lights out in hall B")
    envelope = await harness.slack.send_envelope("events_api", event)
    await harness.slack.wait_for(lambda: harness.slack.ack_of(envelope), DEADLINE)
    assert [action.message.title for action in harness.intake.actions] == ["Lights out in hall B"]
