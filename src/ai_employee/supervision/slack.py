"""The Slack service: the outbox's worker, Socket Mode, the HTTP routes, messages becoming actions.

Off (`disabled`, with the reason in status) without `SLACK_BOT_TOKEN` or `SLACK_CHANNEL`; the
checkpoints then go to the log (supervisor.LogCheckpoints). Nothing outside holds up the start:
the service is ready at once; reaching Slack is its own business, told by its `OutsideLink`
(connecting, connected, retrying with the reason) and retried with the link's backoff. The
orchestrator never restarts it for a lost Slack.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from ai_employee.clients.link import OutsideLink, describe_target
from ai_employee.clients.retry import describe
from ai_employee.clients.slack import build_web_client, describe_slack_failure
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.services import HealthReport, LinkStatus, Service, ServiceContext, ServiceState
from ai_employee.supervision.checkpoints import Checkpoint
from ai_employee.supervision.doors import EVENTS_PATH, INTERACTIONS_PATH, SlackDoors
from ai_employee.supervision.intake import Access, MessageIntake
from ai_employee.supervision.outbox import SlackOutbox
from ai_employee.supervision.state import SupervisionState
from ai_employee.supervision.status import Status

log = structlog.get_logger(__name__)

TEMP_FOLDER = Path(".ai-employee") / "slack"
SOCKET_CHECK_SECONDS = 5.0
MAX_CHANNEL_PAGES = 50
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{6,}")


class SlackService(Service):
    name = "slack"
    required = False  # an unreachable Slack must not make the daemon unready

    def __init__(self, ctx: ServiceContext, *, socket_ping_interval: float = 10.0) -> None:
        super().__init__()
        slack = ctx.settings.slack
        token = slack.bot_token.get_secret_value() if slack.bot_token else ""
        if not token:
            raise PluginDisabled("SLACK_BOT_TOKEN is not set: checkpoints go to the log (slack.checkpoint)")
        if not slack.channel:
            raise PluginDisabled("SLACK_CHANNEL is not set: there is no channel to post to")
        self._ctx = ctx
        self._settings = slack
        self._services = ctx.settings.services
        self._token = token
        self._app_token = slack.app_token.get_secret_value() if slack.app_token else ""
        self._ping_interval = socket_ping_interval
        self._stop_requested = asyncio.Event()
        self._client: AsyncWebClient | None = None
        self._socket: SocketModeClient | None = None
        self._running = False
        self._team: str | None = None
        self._temp_dir = ctx.vault_root / TEMP_FOLDER
        self._link = OutsideLink(
            name=self.name,
            target=describe_target("Slack", slack.api_base_url),
            settings=self._services,
            bus=ctx.bus,
        )
        self.state = SupervisionState(ctx.state)
        allowed = frozenset(slack.allowed_user_ids)
        api_host = (urlsplit(slack.api_base_url).hostname or "").lower()
        self._access = Access(allowed_users=allowed, api_host=api_host)
        self.outbox = SlackOutbox(
            state=self.state,
            channel=slack.channel,
            alert_channel=slack.alert_channel or slack.channel,
            vault_name=ctx.vault_root.name,
            min_interval=slack.min_interval,
            buttons=bool(allowed),
            link=self._link,
        )
        self.intake = MessageIntake(
            intake=ctx.intake,
            state=self.state,
            access=self._access,
            bot_token=token,
            client=lambda: self._client,
            main_channel=slack.channel,
            temp_dir=self._temp_dir,
            max_file_bytes=slack.max_file_bytes,
            read_timeout=self._services.read_timeout,
        )
        signing = slack.signing_secret.get_secret_value() if slack.signing_secret else None
        self.doors = SlackDoors(
            access=self._access,
            approvals=ctx.approvals,
            intake=self.intake,
            client=lambda: self._client,
            signing_secret=signing,
            channel_label=slack.channel,
        )
        if signing:
            ctx.routes.add_route("POST", INTERACTIONS_PATH, self.doors.handle_interactions)
            ctx.routes.add_route("POST", EVENTS_PATH, self.doors.handle_events)
        if not allowed:
            log.warning(
                "slack.no_allowed_users",
                hint="set SLACK_ALLOWED_USER_IDS: no buttons, and no message is heard, until then",
            )

    # -- what the supervisor hands over ---------------------------------------------------

    def add(self, checkpoint: Checkpoint) -> None:
        self.outbox.add(checkpoint)

    def alert(self, title: str, detail: str, status: Status) -> None:
        self.outbox.alert(title, detail, status)

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        self._stop_requested.clear()
        self._running = True
        self.ready.set()
        shutil.rmtree(self._temp_dir, ignore_errors=True)
        client = build_web_client(self._settings, self._services, token=self._token)
        self._client = client
        worker = asyncio.create_task(self.outbox.run(client, self._stop_requested), name="slack:outbox")
        log.info(
            "slack.started",
            channel=self._settings.channel,
            socket_mode=bool(self._app_token),
            http_routes=self._settings.signing_secret is not None,
            allowed_users=len(self._access.allowed_users),
        )
        try:
            if await self._connect(client):
                if self._app_token:
                    await self._run_socket_mode(client)
                else:
                    await self._stop_requested.wait()
        finally:
            self._running = False
            await self.doors.drain()
            socket, self._socket = self._socket, None
            if socket is not None:
                with contextlib.suppress(Exception):
                    await socket.close()  # type: ignore[no-untyped-call]
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            self._client = None
            log.info("slack.stopped", backlog=self.outbox.backlog)

    async def stop(self) -> None:
        self._stop_requested.set()

    def link(self) -> LinkStatus | None:
        return self._link.status()

    async def health(self) -> HealthReport:
        link = self._link.status()
        data: dict[str, Any] = {
            "target": link.target,
            "channel": self._settings.channel,
            "socket_mode": bool(self._app_token),
            "backlog": self.outbox.backlog,
            "posted": self.outbox.posted,
            "dropped": self.outbox.dropped,
            "actions_from_slack": self.intake.created,
            "refused_clicks": self.doors.refused_clicks,
        }
        if link.last_error:
            data["last_error"] = link.last_error
        if not self._running:
            return HealthReport(False, "not running", data)
        if link.state is not ServiceState.RUNNING:
            return HealthReport(False, f"{link.state.value}: {link.last_error or link.target}", data)
        return HealthReport(True, f"posting to {self._settings.channel} (team {self._team or '?'})", data)

    # -- reaching Slack -------------------------------------------------------------------

    async def _connect(self, client: AsyncWebClient) -> bool:
        """auth.test until it answers (the token is good, Slack is there); False when stopped."""
        while not self._stop_requested.is_set():
            self._link.connecting()
            try:
                answer = await asyncio.wait_for(
                    client.auth_test(), timeout=self._services.connect_timeout + 5
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                delay = self._link.failed(describe_slack_failure(error))
                if await self._link.wait(delay, self._stop_requested):
                    return False
                continue
            self._team = str(answer.get("team") or "")
            await self._resolve_channel(client)
            self._link.connected()
            return True
        return False

    async def _resolve_channel(self, client: AsyncWebClient) -> None:
        """The main channel's id, so that its messages are recognised (events name channels by id).
        By name through conversations.list (scope channels:read); failing that, the id is learned
        from the first post."""
        channel = self._settings.channel or ""
        if CHANNEL_ID.fullmatch(channel) or self.state.channel_id(channel):
            return
        name = channel.removeprefix("#")
        cursor = ""
        try:
            for _ in range(MAX_CHANNEL_PAGES):
                answer = await client.conversations_list(
                    types="public_channel,private_channel",
                    exclude_archived=True,
                    limit=200,
                    cursor=cursor or None,
                )
                for item in answer.get("channels") or []:
                    if isinstance(item, dict) and item.get("name") == name and item.get("id"):
                        self.state.remember_channel_id(channel, str(item["id"]))
                        return
                metadata = answer.get("response_metadata") or {}
                cursor = str(metadata.get("next_cursor") or "") if isinstance(metadata, dict) else ""
                if not cursor:
                    break
        except Exception as error:
            log.warning(
                "slack.channel_not_resolved",
                channel=channel,
                error=describe_slack_failure(error),
                hint="give the app the channels:read scope, or set SLACK_CHANNEL to the channel id",
            )

    async def _run_socket_mode(self, client: AsyncWebClient) -> None:
        """Open a Socket Mode connection and keep it: slack-sdk reconnects on `disconnect` and on
        a lost socket; this loop opens a new one when that did not work, with the link's backoff."""
        socket = SocketModeClient(
            app_token=self._app_token,
            web_client=client,
            auto_reconnect_enabled=True,
            ping_interval=self._ping_interval,
        )
        socket.socket_mode_request_listeners.append(self._on_socket_request)
        self._socket = socket
        connected = False
        while not self._stop_requested.is_set():
            try:
                if not connected or not await socket.is_connected():
                    self._link.connecting()
                    await socket.connect_to_new_endpoint()  # a no-op while slack-sdk's own reconnect holds
                    connected = True
                    self._link.connected()
                    log.info("slack.socket_mode_connected")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                connected = False
                delay = self._link.failed(f"Socket Mode: {describe_slack_failure(error)}")
                if await self._link.wait(delay, self._stop_requested):
                    return
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), timeout=SOCKET_CHECK_SECONDS)

    async def _on_socket_request(self, socket: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        envelope = request.envelope_id
        payload = request.payload if isinstance(request.payload, dict) else {}
        if request.type == "events_api":
            try:
                await self.doors.on_events_api(payload)
            except Exception as error:  # not acknowledged: Slack delivers it again
                log.warning("slack.event_failed", error=describe(error), envelope_id=envelope)
                return
            await socket.send_socket_mode_response(SocketModeResponse(envelope_id=envelope))
        elif request.type == "interactive":
            await socket.send_socket_mode_response(SocketModeResponse(envelope_id=envelope))
            self.doors.on_interactive(payload)
        elif request.type == "slash_commands":
            answer = self.doors.on_command(payload)
            await socket.send_socket_mode_response(SocketModeResponse(envelope_id=envelope, payload=answer))
        else:
            await socket.send_socket_mode_response(SocketModeResponse(envelope_id=envelope))


def build_slack(ctx: ServiceContext) -> SlackService:
    """The Slack service; raises PluginDisabled (with the reason) when it stays off."""
    return SlackService(ctx)
