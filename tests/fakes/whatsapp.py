"""A loopback WhatsApp Business Cloud API (Meta's Graph API), per shared/apis.md section 4.

The Graph side, at `{root}/v27.0` (`base_url`):
- every call needs `Authorization: Bearer <token>`; otherwise 401 `OAuthException` code 190;
- `GET /{phone-number-id}`: the number's record;
- `POST /{phone-number-id}/messages`: text (body ≤ 4096), interactive reply buttons (1 to 3, unique
  titles ≤ 20, ids ≤ 256, body ≤ 1024), templates, read receipts; 400 code 100 for a bad one;
  outside a user's 24-hour window a free-form or interactive message fails with 131047: as a
  `failed` status webhook after a 200 (`window_failure="status"`, Meta's usual way) or as an
  HTTP 400 (`"sync"`, as some relays do); templates pass;
- `GET /{media-id}` → `{url, mime_type, sha256, file_size (string), id}`; the url is on another
  path of this server (`/lookaside/...`, standing in for lookaside.fbsbx.com), needs the same
  Bearer, and can be made to have expired (404) once (`expire_next_url`); it can stall (`hold_media`);
- faults: `fail_next(status, times)` answers the next message sends with 429 (code 130429) or 5xx.

The user side, driven by the test: `text`, `voice`, `image`, `document`, `tap`, `status` build
the `messages` webhook a real user's action causes; `deliver` POSTs it to the daemon's webhook,
compact JSON escaped like Meta's (non-ASCII and `/`), signed with `X-Hub-Signature-256`
(HMAC-SHA256 of the raw body with the app secret), and, like Meta, delivers it again until it is
answered 200 (`redeliver`). Every answer to a delivery is recorded in `deliveries`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.loopback import Listener

VERSION = "v27.0"
WINDOW_SECONDS = 24 * 3600
WINDOW_DETAILS = (
    "Message failed to send because more than 24 hours have passed since the customer last replied "
    "to this number."
)


@dataclass
class StoredMedia:
    media_id: str
    content: bytes
    mime_type: str


@dataclass
class DeliveryAnswer:
    status: int
    seconds: float
    body: str


@dataclass
class FakeWhatsApp:
    token: str = "EAAG-fake-permanent-token-for-loopback-tests"
    app_secret: str = "fake-app-secret-0123456789"
    verify_token: str = "fake-verify-token"
    phone_number_id: str = "106540352242922"
    display_phone_number: str = "+1 555 0100"
    window_failure: str = "status"  # how 131047 comes: "status" (a later webhook) or "sync" (HTTP 400)
    send_receipts: bool = True  # a `sent` status webhook after each message, as Meta does

    webhook_url: str | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)  # accepted message sends
    refused: list[dict[str, Any]] = field(default_factory=list)  # sends answered 4xx
    deliveries: list[DeliveryAnswer] = field(default_factory=list)
    media_requests: list[str] = field(default_factory=list)  # "lookup:<id>", "download:<id>"
    unauthorized: int = 0

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._media: dict[str, StoredMedia] = {}
        self._urls: dict[str, tuple[str, float]] = {}  # url key -> (media id, expires at)
        self._last_inbound: dict[str, float] = {}
        self._faults: list[int] = []
        self._expire_next_url = 0
        self._media_gate = asyncio.Event()
        self._media_gate.set()
        self._listener = Listener()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get(f"/{VERSION}/{{node}}", self._get_node)
        app.router.add_post(f"/{VERSION}/{{node}}/messages", self._post_message)
        app.router.add_get("/lookaside/{key}", self._download)
        self.port = await self._listener.listen(app)
        self._session = aiohttp.ClientSession()
        return self.base_url

    async def stop(self) -> None:
        self._media_gate.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
        await self._listener.close()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/{VERSION}"

    # -- test controls ------------------------------------------------------------------------

    def add_media(self, content: bytes, mime_type: str) -> str:
        media_id = str(900_000_000_000 + next(self._ids))
        self._media[media_id] = StoredMedia(media_id, content, mime_type)
        return media_id

    def expire_next_url(self, times: int = 1) -> None:
        self._expire_next_url += times

    def hold_media(self) -> None:
        """Media downloads stall until `release_media`."""
        self._media_gate.clear()

    def release_media(self) -> None:
        self._media_gate.set()

    def fail_next(self, status: int = 429, *, times: int = 1) -> None:
        self._faults.extend([status] * times)

    def close_window(self, wa_id: str) -> None:
        """The user's last message is now more than 24 hours old (as Meta sees it)."""
        self._last_inbound[wa_id] = time.time() - WINDOW_SECONDS - 60

    def messages_to(self, wa_id: str) -> list[dict[str, Any]]:
        return [message for message in self.sent if message.get("to") == wa_id]

    # -- the user side ------------------------------------------------------------------------

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        value = {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100", "phone_number_id": self.phone_number_id},
            **value,
        }
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
        }

    def _message(
        self,
        wa_id: str,
        name: str,
        kind: str,
        part: dict[str, Any],
        *,
        timestamp: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        message_id = (
            "wamid.HBgL" + base64.b64encode(f"in-{next(self._ids)}-{time.time_ns()}".encode()).decode()
        )
        when = time.time() if timestamp is None else timestamp
        self._last_inbound[wa_id] = max(self._last_inbound.get(wa_id, 0.0), when)
        message = {
            "from": wa_id,
            "id": message_id,
            "timestamp": str(int(when)),
            "type": kind,
            kind: part,
            **extra,
        }
        return self._envelope(
            {"contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": [message]}
        )

    def text(
        self, wa_id: str, body: str, *, name: str = "Jane Doe", timestamp: float | None = None
    ) -> dict[str, Any]:
        return self._message(wa_id, name, "text", {"body": body}, timestamp=timestamp)

    def voice(self, wa_id: str, audio: bytes, *, name: str = "Jane Doe") -> dict[str, Any]:
        media_id = self.add_media(audio, "audio/ogg; codecs=opus")
        sha = base64.b64encode(hashlib.sha256(audio).digest()).decode()
        part = {"id": media_id, "mime_type": "audio/ogg; codecs=opus", "sha256": sha, "voice": True}
        return self._message(wa_id, name, "audio", part)

    def image(
        self, wa_id: str, data: bytes, *, caption: str | None = None, name: str = "Jane Doe"
    ) -> dict[str, Any]:
        media_id = self.add_media(data, "image/jpeg")
        part: dict[str, Any] = {
            "id": media_id,
            "mime_type": "image/jpeg",
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if caption is not None:
            part["caption"] = caption
        return self._message(wa_id, name, "image", part)

    def document(
        self, wa_id: str, data: bytes, filename: str, mime_type: str, *, name: str = "Jane Doe"
    ) -> dict[str, Any]:
        media_id = self.add_media(data, mime_type)
        part = {
            "id": media_id,
            "filename": filename,
            "mime_type": mime_type,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        return self._message(wa_id, name, "document", part)

    def tap(
        self, wa_id: str, buttons_message_id: str, button_id: str, title: str, *, name: str = "Jane Doe"
    ) -> dict[str, Any]:
        part = {"type": "button_reply", "button_reply": {"id": button_id, "title": title}}
        return self._message(
            wa_id, name, "interactive", part, context={"from": "15550100", "id": buttons_message_id}
        )

    def status(
        self, wamid: str, wa_id: str, status: str, errors: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": wamid,
            "status": status,
            "timestamp": str(int(time.time())),
            "recipient_id": wa_id,
        }
        if errors:
            item["errors"] = errors
        return self._envelope({"statuses": [item]})

    @staticmethod
    def message_id(payload: dict[str, Any]) -> str:
        return str(payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"])

    @staticmethod
    def encode(payload: dict[str, Any]) -> bytes:
        """Compact JSON escaped the way Meta sends it: non-ASCII as \\uXXXX, `/` as `\\/`."""
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()

    def signature(self, body: bytes, secret: str | None = None) -> str:
        key = (secret if secret is not None else self.app_secret).encode()
        return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    async def post(
        self, body: bytes, *, signature: str | None = "auto", url: str | None = None
    ) -> DeliveryAnswer:
        """One POST of a delivery; `signature=None` sends none, "auto" the right one."""
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if signature == "auto":
            headers["X-Hub-Signature-256"] = self.signature(body)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        target = url or self.webhook_url
        assert target, "set webhook_url first"
        started = time.monotonic()
        async with self._session.post(target, data=body, headers=headers) as response:
            answer = DeliveryAnswer(response.status, time.monotonic() - started, await response.text())
        self.deliveries.append(answer)
        return answer

    async def deliver(
        self, payload: dict[str, Any], *, redeliver: bool = True, attempts: int = 20
    ) -> DeliveryAnswer:
        """Deliver like Meta: again, with backoff, until answered 200 (or `attempts` run out)."""
        body = self.encode(payload)
        delay = 0.05
        answer = DeliveryAnswer(0, 0.0, "")
        for _ in range(attempts):
            try:
                answer = await self.post(body)
            except aiohttp.ClientError:
                answer = DeliveryAnswer(0, 0.0, "connection failed")
            if answer.status == 200 or not redeliver:
                return answer
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        return answer

    def _deliver_later(self, payload: dict[str, Any]) -> None:
        if not self.webhook_url:
            return
        task = asyncio.get_running_loop().create_task(self._quietly(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, payload: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # the daemon may be gone: a receipt is best effort
            await self.deliver(payload)

    # -- the Graph side -----------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        ok = hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())
        if not ok:
            self.unauthorized += 1
        return ok

    @staticmethod
    def _error(
        status: int, message: str, code: int, *, kind: str = "OAuthException", details: str | None = None
    ) -> web.Response:
        error: dict[str, Any] = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEf123"}
        if details:
            error["error_data"] = {"messaging_product": "whatsapp", "details": details}
        return web.json_response({"error": error}, status=status)

    def _auth_error(self) -> web.Response:
        return self._error(401, "Error validating access token: Session has expired", 190)

    async def _get_node(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        node = request.match_info["node"]
        if node == self.phone_number_id:
            return web.json_response(
                {
                    "display_phone_number": self.display_phone_number,
                    "verified_name": "Plant Support",
                    "id": node,
                }
            )
        media = self._media.get(node)
        if media is None:
            return self._error(
                400, "Unsupported get request. Object does not exist", 100, kind="GraphMethodException"
            )
        self.media_requests.append(f"lookup:{node}")
        key = hashlib.sha256(f"{node}-{time.time_ns()}".encode()).hexdigest()[:24]
        self._urls[key] = (node, time.time() + 300)
        if self._expire_next_url:
            self._expire_next_url -= 1
            self._urls[key] = (node, 0.0)
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.root_url}/lookaside/{key}?ext=1&hash=ARx",
                "mime_type": media.mime_type,
                "sha256": hashlib.sha256(media.content).hexdigest(),
                "file_size": str(len(media.content)),
                "id": node,
            }
        )

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.Response(status=401, text="unauthorized")
        found = self._urls.get(request.match_info["key"])
        if found is None or found[1] < time.time():
            return web.Response(status=404, text="URL signature expired")
        media = self._media[found[0]]
        self.media_requests.append(f"download:{media.media_id}")
        await self._media_gate.wait()
        return web.Response(body=media.content, content_type=media.mime_type.split(";")[0])

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._auth_error()
        if request.match_info["node"] != self.phone_number_id:
            return self._error(400, "Invalid parameter", 100)
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Invalid JSON", 100)
        if self._faults:
            status = self._faults.pop(0)
            if status == 429:
                return self._error(429, "(#130429) Rate limit hit", 130429, kind="OAuthException")
            return self._error(status, "An unknown error occurred", 1, kind="OAuthException")
        if body.get("messaging_product") != "whatsapp":
            return self._error(400, "(#100) The parameter messaging_product is required.", 100)
        if body.get("status") == "read":
            return web.json_response({"success": True})
        problem = _invalid(body)
        if problem:
            self.refused.append(body)
            return self._error(400, f"(#100) {problem}", 100)
        to = str(body.get("to") or "")
        kind = body.get("type")
        outside = time.time() - self._last_inbound.get(to, 0.0) > WINDOW_SECONDS
        if kind != "template" and outside and self.window_failure == "sync":
            self.refused.append(body)
            return self._error(
                400,
                "(#131047) Re-engagement message",
                131047,
                details=WINDOW_DETAILS,
            )
        wamid = "wamid.HBgL" + base64.b64encode(f"out-{next(self._ids)}".encode()).decode()
        self.sent.append({**body, "id": wamid})
        if kind != "template" and outside:
            errors = [
                {
                    "code": 131047,
                    "title": "Re-engagement message",
                    "message": "Re-engagement message",
                    "error_data": {"details": WINDOW_DETAILS},
                }
            ]
            self._deliver_later(self.status(wamid, to, "failed", errors))
        elif self.send_receipts:
            self._deliver_later(self.status(wamid, to, "sent"))
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}],
            }
        )


def _invalid(body: dict[str, Any]) -> str | None:
    """Meta's checks of a message send that matter here; None when it is good."""
    if not body.get("to"):
        return "The parameter to is required."
    kind = body.get("type", "text")
    if kind == "text":
        text = body.get("text")
        if not isinstance(text, dict) or not text.get("body"):
            return "The parameter text['body'] is required."
        if len(text["body"]) > 4096:
            return "Param text['body'] must be at most 4096 characters long."
        return None
    if kind == "interactive":
        interactive = body.get("interactive") or {}
        if interactive.get("type") != "button":
            return "Only reply buttons are expected here."
        text = (interactive.get("body") or {}).get("text") or ""
        if not text or len(text) > 1024:
            return "Param interactive['body']['text'] must be 1 to 1024 characters long."
        buttons = (interactive.get("action") or {}).get("buttons") or []
        if not 1 <= len(buttons) <= 3:
            return "Param interactive['action']['buttons'] must have 1 to 3 elements."
        titles = [button.get("reply", {}).get("title", "") for button in buttons]
        ids = [button.get("reply", {}).get("id", "") for button in buttons]
        if len(set(titles)) != len(titles) or any(not title or len(title) > 20 for title in titles):
            return "Button titles must be unique and 1 to 20 characters long."
        if any(not button_id or len(button_id.encode()) > 256 for button_id in ids):
            return "Button ids must be 1 to 256 characters long."
        return None
    if kind == "template":
        template = body.get("template") or {}
        if not template.get("name") or not (template.get("language") or {}).get("code"):
            return "The parameter template['name'] and template['language'] are required."
        for component in template.get("components") or []:
            for parameter in component.get("parameters") or []:
                text = parameter.get("text", "")
                if "\n" in text or "\t" in text or "     " in text:
                    return "(#132018) Param text cannot have new-lines, tabs or more than 4 spaces in a row"
        return None
    return f"Unsupported message type {kind}"
