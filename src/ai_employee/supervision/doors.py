"""The two ways Slack reaches us, both verified, both answered within Slack's 3 s.

- HTTP on the control port: `POST /slack/interactions` (buttons, slash commands: a form with
  `payload` or `command`) and `POST /slack/events` (Events API, JSON). Each request is checked
  with slack-sdk's `SignatureVerifier` on the raw body before anything is parsed; a bad or
  missing signature or a timestamp more than 5 minutes off answers 401 and reads nothing.
- Socket Mode (`SLACK_APP_TOKEN`): the same payloads in envelopes, acknowledged by envelope id.

A button click is acknowledged at once and decided after: the same move as in Obsidian
(`ApprovalGateway`), so every guarantee of the vault holds. Only users in
`SLACK_ALLOWED_USER_IDS` may decide; anyone else gets an ephemeral "not allowed", the attempt is
logged and nothing moves. A second click (Slack retries, or a plan decided elsewhere) finds the
plan decided and changes nothing. An event is acknowledged once its action is stored, or after
`EVENT_ACK_SECONDS` while it is still being stored (it goes on; a redelivery finds it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import structlog
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from ai_employee.clients.retry import describe
from ai_employee.clients.slack import describe_slack_failure
from ai_employee.model.services import ApprovalGateway, Decider, DecisionResult
from ai_employee.supervision.intake import Access, MessageIntake
from ai_employee.supervision.render import APPROVE_ACTION, REJECT_ACTION

log = structlog.get_logger(__name__)

INTERACTIONS_PATH = "/slack/interactions"
EVENTS_PATH = "/slack/events"
EVENT_ACK_SECONDS = 2.5
MAX_BODY_BYTES = 1024 * 1024


class SlackDoors:
    """What Slack sends us, however it arrives: events, button clicks, slash commands."""

    def __init__(
        self,
        *,
        access: Access,
        approvals: ApprovalGateway,
        intake: MessageIntake,
        client: Callable[[], AsyncWebClient | None],
        signing_secret: str | None,
        channel_label: str,
    ) -> None:
        self._access = access
        self._approvals = approvals
        self._intake = intake
        self._client = client
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self._channel_label = channel_label
        self._deciding = asyncio.Lock()  # one decision at a time: a double click finds it decided
        self._tasks: set[asyncio.Task[Any]] = set()
        self.refused_clicks = 0

    # -- HTTP -------------------------------------------------------------------------------

    def verified(self, body: bytes, headers: Mapping[str, str]) -> bool:
        if self._verifier is None:
            return False
        try:
            return self._verifier.is_valid_request(body, dict(headers))
        except (ValueError, TypeError):  # a timestamp that is no number
            return False

    async def _read_verified(self, request: web.Request) -> bytes | None:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return None
        body = await request.read()
        if len(body) > MAX_BODY_BYTES or not self.verified(body, request.headers):
            log.warning("slack.request_refused", path=request.path, remote=request.remote)
            return None
        return body

    async def handle_events(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events."""
        body = await self._read_verified(request)
        if body is None:
            return web.Response(status=401, text="invalid signature")
        try:
            data = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="the body is not JSON")
        if not isinstance(data, dict):
            return web.Response(status=400, text="the body is not an object")
        if data.get("type") == "url_verification":
            return web.json_response({"challenge": str(data.get("challenge") or "")})
        try:
            await self.on_events_api(data)
        except Exception as error:
            log.warning("slack.event_failed", error=describe(error))
            return web.Response(status=500, text="not stored; deliver it again")
        return web.Response(status=200, text="")

    async def handle_interactions(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/interactions: buttons (`payload`) and slash commands (`command`)."""
        body = await self._read_verified(request)
        if body is None:
            return web.Response(status=401, text="invalid signature")
        form = {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items() if values}
        if "payload" in form:
            try:
                payload = json.loads(form["payload"])
            except ValueError:
                return web.Response(status=400, text="payload is not JSON")
            if isinstance(payload, dict):
                self.on_interactive(payload)
            return web.Response(status=200, text="")
        if "command" in form:
            return web.json_response(self.on_command(form))
        return web.Response(status=400, text="neither a payload nor a command")

    # -- what arrives, by kind (HTTP and Socket Mode alike) --------------------------------

    async def on_events_api(self, body: Mapping[str, Any]) -> None:
        """Store the message's action within EVENT_ACK_SECONDS, or let it go on after the ack."""
        if body.get("type") != "event_callback":
            return
        task = self._spawn(self._intake.on_event(body))
        done, _ = await asyncio.wait({task}, timeout=EVENT_ACK_SECONDS)
        if task in done:
            task.result()  # raises what storing raised: no ack, Slack delivers it again

    def on_interactive(self, payload: Mapping[str, Any]) -> None:
        """A button click: acknowledged at once (the caller answers), decided in a task."""
        if payload.get("type") != "block_actions":
            return
        actions = payload.get("actions")
        if not isinstance(actions, list):
            return
        for action in actions:
            if isinstance(action, Mapping) and action.get("action_id") in (APPROVE_ACTION, REJECT_ACTION):
                self._spawn(self._decide(payload, action))

    def on_command(self, form: Mapping[str, Any]) -> dict[str, Any]:
        """A slash command: the answer is the ack's body; the action is stored after it."""
        user = str(form.get("user_id") or "")
        if not self._access.may(user):
            self._spawn(self._intake.on_command(form))  # logs the refusal
            return {"response_type": "ephemeral", "text": "You are not allowed to ask the AI employee."}
        if not str(form.get("text") or "").strip():
            return {
                "response_type": "ephemeral",
                "text": "Say what needs doing: `/ai-employee pump 3 leaks`.",
            }
        self._spawn(self._command(form))
        return {
            "response_type": "ephemeral",
            "text": f"Received. Its plan will appear in {self._channel_label} for approval.",
        }

    # -- deciding ---------------------------------------------------------------------------

    async def _decide(self, payload: Mapping[str, Any], action: Mapping[str, Any]) -> None:
        user = payload.get("user") if isinstance(payload.get("user"), Mapping) else {}
        assert isinstance(user, Mapping)
        user_id = str(user.get("id") or "")
        channel = _channel_of(payload)
        plan_id = str(action.get("value") or "")
        approve = action.get("action_id") == APPROVE_ACTION
        if not self._access.may(user_id):
            self.refused_clicks += 1
            log.warning("slack.decision_not_allowed", user=user_id, plan_id=plan_id, approve=approve)
            await self._ephemeral(channel, user_id, "You are not allowed to approve or reject plans.")
            return
        if not plan_id:
            return
        who = str(user.get("username") or user.get("name") or user_id)
        decider = Decider(who, "slack")
        try:
            async with self._deciding:
                if approve:
                    result = await asyncio.to_thread(self._approvals.approve, plan_id, decider)
                else:
                    reason = f"rejected in Slack by {who}"
                    result = await asyncio.to_thread(self._approvals.reject, plan_id, reason, decider)
        except Exception as error:
            log.exception("slack.decision_failed", plan_id=plan_id)
            await self._ephemeral(channel, user_id, f"Could not decide {plan_id}: {describe(error)}")
            return
        log.info("slack.decision", plan_id=plan_id, approve=approve, outcome=result.outcome, user=user_id)
        await self._ephemeral(channel, user_id, _decision_answer(result))

    async def _command(self, form: Mapping[str, Any]) -> None:
        try:
            await self._intake.on_command(form)
        except Exception as error:
            log.warning("slack.command_failed", error=describe(error))
            await self._ephemeral(
                str(form.get("channel_id") or ""),
                str(form.get("user_id") or ""),
                f"Not stored: {describe(error)}",
            )

    async def _ephemeral(self, channel: str, user: str, text: str) -> None:
        client = self._client()
        if client is None or not channel or not user:
            return
        try:
            await client.chat_postEphemeral(channel=channel, user=user, text=text)
        except Exception as error:
            log.warning("slack.ephemeral_failed", error=describe_slack_failure(error))

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("slack.task_failed", error=describe(task.exception() or Exception()))

    async def drain(self) -> None:
        """Let the clicks and messages in hand finish (at a stop)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


def _channel_of(payload: Mapping[str, Any]) -> str:
    channel = payload.get("channel")
    if isinstance(channel, Mapping) and channel.get("id"):
        return str(channel["id"])
    container = payload.get("container")
    if isinstance(container, Mapping) and container.get("channel_id"):
        return str(container["channel_id"])
    return ""


def _decision_answer(result: DecisionResult) -> str:
    if result.outcome == "approved":
        return f"Approved {result.plan_id}: {result.detail}."
    if result.outcome == "rejected":
        return f"Rejected {result.plan_id}: {result.detail}."
    if result.outcome == "already_decided":
        return f"{result.plan_id} was already decided ({result.detail}); nothing changed."
    return f"{result.plan_id} was not found; nothing changed."
