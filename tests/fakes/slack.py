"""A loopback Slack: the Web API, file downloads and a Socket Mode endpoint, enough for slack-sdk's
real `AsyncWebClient` and `SocketModeClient` (shared/apis.md §5).

Wire behaviour it reproduces:
- methods at `{root}/api/{method}` (`SLACK_API_BASE_URL` = `{root}/api/`), POST, JSON or form
  body, `Authorization: Bearer xoxb-...`; `apps.connections.open` with the `xapp-` token instead.
  Answers HTTP 200 `{ok, error?}` (a wrong token: `invalid_auth`), except a rate limit: HTTP 429,
  `Retry-After: N`, `{ok: false, error: "ratelimited"}`;
- chat.postMessage (`channel_not_found`, `no_text` without text/blocks/attachments, replies by
  `thread_ts`) -> `{ok, channel (the id), ts, message}`; chat.update (`message_not_found`);
  chat.postEphemeral -> `{ok, message_ts}`; chat.getPermalink; auth.test; files.info;
  conversations.info;
- `url_private_download` of shared files: GET with the bot token, 401 without;
- Socket Mode: `apps.connections.open` -> `{ok, url: "ws://.../socket?ticket=N"}`; the socket
  sends `hello`, then the envelopes the test queues (`events_api`, `interactive`,
  `slash_commands`), and records each ack `{envelope_id, payload?}`; `disconnect` on demand;
- faults: `rate_limit(method, times, retry_after)`, `fail_next(method, error)`, and going away
  and coming back on the same port (`go_away`, `come_back`).

The user side (a message, a mention, a click, a slash command) is built by `message_event`,
`block_actions`, `slash_command`; `sign` signs an HTTP body as Slack does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import WSMsgType, web

from tests.fakes.loopback import Listener, wait_on

BOT_TOKEN = "xoxb-1111-2222-fakeBotTokenForLoopbackTests"
APP_TOKEN = "xapp-1-A111-3333-fakeAppTokenForLoopbackTests"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL_ID = "C0MAINT01"
CHANNEL_NAME = "maintenance"
ALERT_CHANNEL_ID = "C0ALERTS1"
ALERT_CHANNEL_NAME = "ops-alerts"


@dataclass
class Fault:
    status: int
    error: str
    times: int
    retry_after: int | None = None


@dataclass
class FakeSlack:
    bot_token: str = BOT_TOKEN
    app_token: str = APP_TOKEN
    team: str = "Maintenance Co"

    posts: list[dict[str, Any]] = field(default_factory=list)  # chat.postMessage, as stored
    updates: list[dict[str, Any]] = field(default_factory=list)  # chat.update calls
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    rate_limited: list[str] = field(default_factory=list)  # methods answered 429
    acks: list[dict[str, Any]] = field(default_factory=list)  # Socket Mode acks
    file_downloads: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.channels = {
            CHANNEL_NAME: CHANNEL_ID,
            f"#{CHANNEL_NAME}": CHANNEL_ID,
            CHANNEL_ID: CHANNEL_ID,
            ALERT_CHANNEL_NAME: ALERT_CHANNEL_ID,
            f"#{ALERT_CHANNEL_NAME}": ALERT_CHANNEL_ID,
            ALERT_CHANNEL_ID: ALERT_CHANNEL_ID,
        }
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._ts = itertools.count(1)
        self._tickets = itertools.count(1)
        self._envelopes = itertools.count(1)
        self._faults: dict[str, Fault] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._changed = asyncio.Condition()
        self._background: set[asyncio.Task[Any]] = set()
        self._listener = Listener(shutdown_timeout=1.0)
        self.connections_opened = 0
        self.sockets_accepted = 0
        self.port = 0

    # -- server -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self._listen(0)

    async def stop(self) -> None:
        for socket in list(self._sockets):
            with contextlib.suppress(Exception):
                await socket.close()
        await self._listener.close()

    async def go_away(self) -> None:
        """Slack is down: the listener and every connection close."""
        for socket in list(self._sockets):
            with contextlib.suppress(Exception):
                await socket.close()
        await self._listener.close()

    async def come_back(self) -> None:
        await self._listen(self.port)

    async def _listen(self, port: int) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._method)  # Slack takes GET or POST
        app.router.add_get("/files/{file_id}/{name}", self._file)
        app.router.add_get("/socket", self._socket)
        self.port = await self._listener.listen(app, port)

    @property
    def base_url(self) -> str:
        """What SLACK_API_BASE_URL is set to."""
        return f"http://127.0.0.1:{self.port}/api/"

    # -- faults -----------------------------------------------------------------------------

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        self._faults[method] = Fault(429, "ratelimited", times, retry_after)

    def fail_next(self, method: str, error: str, *, times: int = 1, status: int = 200) -> None:
        self._faults[method] = Fault(status, error, times)

    # -- what the app did, for assertions -------------------------------------------------

    def top_messages(self, channel: str = CHANNEL_ID) -> list[dict[str, Any]]:
        return [post for post in self.posts if post["channel"] == channel and not post.get("thread_ts")]

    def replies(self, thread_ts: str, channel: str = CHANNEL_ID) -> list[dict[str, Any]]:
        return [
            post for post in self.posts if post["channel"] == channel and post.get("thread_ts") == thread_ts
        ]

    def current(self, channel: str, ts: str) -> dict[str, Any]:
        return self.messages[(channel, ts)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until `predicate()` is truthy (looked at again after every call the app makes)."""
        return await wait_on(self._changed, predicate, timeout)

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(notify())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # -- the user side ----------------------------------------------------------------------

    def next_ts(self) -> str:
        return f"{1_765_000_000 + next(self._ts)}.{next(self._ts):06d}"

    def add_file(
        self, name: str, content: bytes, mimetype: str = "application/octet-stream"
    ) -> dict[str, Any]:
        file_id = f"F{len(self.files) + 1:08d}"
        info = {
            "id": file_id,
            "name": name,
            "mimetype": mimetype,
            "size": len(content),
            "url_private": f"http://127.0.0.1:{self.port}/files/{file_id}/{name}",
            "url_private_download": f"http://127.0.0.1:{self.port}/files/{file_id}/{name}?download=1",
        }
        self.files[file_id] = (info, content)
        return info

    def message_event(
        self,
        user: str,
        text: str,
        *,
        channel: str = CHANNEL_ID,
        channel_type: str = "channel",
        kind: str = "message",
        ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        event_id: str | None = None,
        bot_id: str | None = None,
    ) -> dict[str, Any]:
        """An Events API `event_callback` body, as Slack sends it."""
        ts = ts or self.next_ts()
        event: dict[str, Any] = {"type": kind, "user": user, "text": text, "ts": ts, "channel": channel}
        if kind == "message":
            event["channel_type"] = channel_type
        if files:
            event["files"] = files
            event["subtype"] = "file_share"
        if bot_id:
            event["bot_id"] = bot_id
        return {
            "token": "verification-token-unused",
            "team_id": "T0TEAM001",
            "api_app_id": "A111",
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._envelopes):08d}",
            "event_time": int(time.time()),
            "event": event,
        }

    def block_actions(
        self, user: str, message: dict[str, Any], action_id: str, *, username: str = "jane"
    ) -> dict[str, Any]:
        """A click on a button of `message` (a message the app posted)."""
        buttons = [
            element
            for attachment in message.get("attachments") or []
            for block in attachment.get("blocks") or []
            if block.get("type") == "actions"
            for element in block.get("elements") or []
        ] + [
            element
            for block in message.get("blocks") or []
            if block.get("type") == "actions"
            for element in block.get("elements") or []
        ]
        button = next(element for element in buttons if element.get("action_id") == action_id)
        return {
            "type": "block_actions",
            "user": {"id": user, "username": username, "team_id": "T0TEAM001"},
            "api_app_id": "A111",
            "trigger_id": f"trig-{next(self._envelopes)}",
            "response_url": f"http://127.0.0.1:{self.port}/api/response",
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": message["channel"]},
            "channel": {"id": message["channel"], "name": CHANNEL_NAME},
            "message": {"ts": message["ts"], "blocks": message.get("blocks") or []},
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "aie_decision",
                    "value": button["value"],
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def slash_command(self, user: str, text: str, *, channel: str = CHANNEL_ID) -> dict[str, str]:
        return {
            "command": "/ai-employee",
            "text": text,
            "user_id": user,
            "user_name": "jane",
            "channel_id": channel,
            "team_id": "T0TEAM001",
            "response_url": f"http://127.0.0.1:{self.port}/api/response",
            "trigger_id": f"trig-{next(self._envelopes)}",
        }

    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0, wait_for_socket: float = 10.0
    ) -> str:
        """Push an envelope to the connected Socket Mode client; returns its envelope id."""
        await self.wait_for(lambda: self._sockets, timeout=wait_for_socket)
        envelope_id = f"env-{next(self._envelopes)}"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind == "slash_commands",
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = "timeout" if retry_attempt else ""
        await self._sockets[-1].send_str(json.dumps(envelope))
        return envelope_id

    def ack_of(self, envelope_id: str) -> dict[str, Any] | None:
        return next((ack for ack in self.acks if ack.get("envelope_id") == envelope_id), None)

    async def disconnect_sockets(self, reason: str = "refresh_requested") -> None:
        for socket in list(self._sockets):
            await socket.send_str(json.dumps({"type": "disconnect", "reason": reason}))

    @property
    def socket_count(self) -> int:
        return len(self._sockets)

    # -- the Web API side -------------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params))
        self._notify()
        fault = self._faults.get(method)
        if fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self._faults[method]
            if fault.status == 429:
                self.rate_limited.append(method)
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(fault.retry_after or 1)},
                )
            return web.json_response({"ok": False, "error": fault.error}, status=fault.status)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        answer: dict[str, Any] = handler(params)
        return web.json_response(answer)

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://maintenance-co.slack.com/",
            "team": self.team,
            "user": "ai_employee",
            "team_id": "T0TEAM001",
            "user_id": "U0BOT0001",
            "bot_id": "B0BOT0001",
        }

    def _channel(self, params: dict[str, Any]) -> str | None:
        name = str(params.get("channel") or "")
        if name.startswith("D"):  # a DM with the bot
            return name
        return self.channels.get(name)

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            return {"ok": False, "error": "no_text"}
        if len(str(params.get("text") or "")) > 40_000:
            return {"ok": False, "error": "msg_too_long"}
        ts = self.next_ts()
        message = {
            "channel": channel,
            "ts": ts,
            "text": params.get("text") or "",
            "blocks": _json_field(params.get("blocks")),
            "attachments": _json_field(params.get("attachments")),
        }
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        self.messages[(channel, ts)] = message
        self.posts.append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": message["text"], "ts": ts}}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        ts = str(params.get("ts") or "")
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        message = self.messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        for key in ("text", "blocks", "attachments"):
            if key in params:
                message[key] = _json_field(params[key]) if key != "text" else params[key]
        self.updates.append(
            {"channel": channel, "ts": ts, **{key: message[key] for key in ("text", "attachments")}}
        )
        return {"ok": True, "channel": channel, "ts": ts, "text": message["text"]}

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        self.ephemerals.append({"channel": channel, "user": params.get("user"), "text": params.get("text")})
        return {"ok": True, "message_ts": self.next_ts()}

    def _api_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        ts = str(params.get("message_ts") or "")
        if channel is None or (channel, ts) not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        return {
            "ok": True,
            "channel": channel,
            "permalink": f"https://maintenance-co.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _api_files_info(self, params: dict[str, Any]) -> dict[str, Any]:
        found = self.files.get(str(params.get("file") or ""))
        if found is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": found[0]}

    def _api_conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(params)
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        name = next(
            key for key, value in self.channels.items() if value == channel and not key.startswith(("#", "C"))
        )
        return {"ok": True, "channel": {"id": channel, "name": name, "is_member": True}}

    def _api_conversations_list(self, params: dict[str, Any]) -> dict[str, Any]:
        """One channel per page, so that the caller has to follow `next_cursor`."""
        names = sorted(
            {(value, key) for key, value in self.channels.items() if not key.startswith(("#", "C"))}
        )
        start = int(params.get("cursor") or 0)
        page = [
            {"id": channel, "name": name, "is_member": True} for channel, name in names[start : start + 1]
        ]
        cursor = str(start + 1) if start + 1 < len(names) else ""
        return {"ok": True, "channels": page, "response_metadata": {"next_cursor": cursor}}

    def _api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        self.connections_opened += 1
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket?ticket={next(self._tickets)}"}

    async def _file(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token != self.bot_token:
            return web.Response(status=401, text="not_authed")
        found = self.files.get(request.match_info["file_id"])
        if found is None:
            return web.Response(status=404, text="file_not_found")
        self.file_downloads.append(request.match_info["file_id"])
        return web.Response(body=found[1], content_type=found[0]["mimetype"])

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        socket = web.WebSocketResponse(heartbeat=None)
        await socket.prepare(request)
        self._sockets.append(socket)
        self.sockets_accepted += 1
        await socket.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": "A111"},
                }
            )
        )
        self._notify()
        try:
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    with contextlib.suppress(ValueError):
                        data = json.loads(message.data)
                        if isinstance(data, dict) and "envelope_id" in data:
                            self.acks.append(data)
                            self._notify()
        finally:
            if socket in self._sockets:
                self._sockets.remove(socket)
            self._notify()
        return socket


def sign(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request: `v0=` HMAC-SHA256 of `v0:{timestamp}:{body}`."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    body = (await request.read()).decode("utf-8")
    params: dict[str, Any] = {key: values[0] for key, values in parse_qs(body).items()}
    params.update({key: value for key, value in request.query.items()})
    return params


def _json_field(value: Any) -> Any:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value
