"""A loopback Telegram Bot API server, enough for python-telegram-bot's real `Bot` and `Application`.

Wire behaviour it reproduces (core.telegram.org/bots/api), because the source depends on it:
- methods at `{root}/bot{token}/{method}`, GET or POST, parameters as query string,
  form (PTB sends `application/x-www-form-urlencoded` with JSON-encoded non-string values),
  multipart or JSON; answers `{"ok":true,"result":...}` or
  `{"ok":false,"error_code":N,"description":"..."}` (401 for a wrong token, 404 for an
  unknown method, 400 "Bad Request: ...", 409 "Conflict: ..."); files at
  `{root}/file/bot{token}/{file_path}`;
- getUpdates: an update stays until a call carries an `offset` above its id (that is the
  only acknowledgement), long polling up to `timeout` seconds, `limit`, `allowed_updates`
  remembered between calls, 409 while a webhook is set;
- setWebhook / deleteWebhook (`drop_pending_updates`), and, while a webhook is set, delivery
  by POST with the `X-Telegram-Bot-Api-Secret-Token` header, repeated until a 2xx answer;
- getFile ("Bad Request: file is too big" above 20 MB, "invalid file_id"), sendMessage
  ("chat not found", "message text is empty", "message is too long"), editMessageText
  ("message is not modified"), answerCallbackQuery (each query answered once; an unknown or
  answered one is "query is too old ... or query ID is invalid");
- faults injected per method (`fail_next`), and calls that hang (`hang`, `release`);
- going away and coming back on the same port (`go_away`, `come_back`).

The user side is driven by the test: `send_text`, `send_voice`, `send_photo`, ... queue the
update a real client would cause; `press_button` queues a callback query.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.loopback import Listener, wait_on

MAX_GETFILE_BYTES = 20 * 1024 * 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes


@dataclass
class Fault:
    status: int
    description: str
    times: int
    retry_after: int | None = None


@dataclass
class FakeTelegram:
    token: str = "123456789:AAFakeTokenForLoopbackTests_abcdefgh"
    bot_username: str = "aie_test_bot"
    webhook_retry_seconds: float = 0.05

    # what the bot did, for assertions
    sent: list[dict[str, Any]] = field(default_factory=list)  # messages from sendMessage
    edits: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # callback_query_id -> answer
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)  # `offset` of every getUpdates
    webhook: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.bot_id = int(self.token.split(":", 1)[0])
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(500_000_001)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._open_queries: set[str] = set()
        self._query_ids = itertools.count(1)
        self._faults: dict[str, Fault] = {}
        self._hung: dict[str, asyncio.Event] = {}
        self._allowed_updates: list[str] | None = None
        self._changed = asyncio.Condition()
        # handler_cancellation: a long poll ends when its client goes away, as on the real server
        self._listener = Listener(handler_cancellation=True, shutdown_timeout=1.0)
        self._pusher: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self.port = 0

    # -- server ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self._listen(0)

    async def go_away(self) -> None:
        """The server goes down as a real one does: the listener closes and every connection with
        it (a long poll under way ends without an answer). The updates that waited stay."""
        await self._listener.close()

    async def come_back(self) -> None:
        """The server is back on the same port, with what waited."""
        await self._listen(self.port)

    async def _listen(self, port: int) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self.port = await self._listener.listen(app, port)

    async def stop(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()  # end the long polls now
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        if self._session is not None:
            await self._session.close()
        await self._listener.close()

    @property
    def root_url(self) -> str:
        """What TELEGRAM_API_BASE_URL is set to."""
        return f"http://127.0.0.1:{self.port}"

    # -- the user side ---------------------------------------------------------------------

    def user(
        self,
        user_id: int,
        first_name: str = "Jane",
        last_name: str | None = "Doe",
        username: str | None = "jane",
    ) -> dict[str, Any]:
        found: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            found["last_name"] = last_name
        if username:
            found["username"] = username
        return found

    def _chat(self, chat_id: int, user: dict[str, Any]) -> dict[str, Any]:
        if chat_id not in self._chats:
            if chat_id > 0:
                chat = {"id": chat_id, "type": "private", "first_name": user.get("first_name", "")}
                if "username" in user:
                    chat["username"] = user["username"]
            else:
                chat = {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}"}
            self._chats[chat_id] = chat
        return self._chats[chat_id]

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def add_file(self, content: bytes, *, folder: str = "documents", suffix: str = ".bin") -> StoredFile:
        digest = hashlib.sha256(content).hexdigest()
        unique = "AgAD" + digest[:12]
        file_id = f"BQACAgIAAxkBAAI{digest[:24]}"
        number = len(self._files) + 1
        stored = StoredFile(file_id, unique, f"{folder}/file_{number}{suffix}", content)
        self._files[file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    def incoming(
        self, chat_id: int, fields: dict[str, Any], *, user: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Queue a new message from a user; returns the message (with its message_id)."""
        sender = user or self.user(chat_id if chat_id > 0 else 4242)
        message = {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": self._chat(chat_id, sender),
            "from": sender,
            **fields,
        }
        self._messages[(chat_id, message["message_id"])] = message
        self.enqueue({"message": message})
        return message

    def send_text(self, chat_id: int, text: str, **kwargs: Any) -> dict[str, Any]:
        return self.incoming(chat_id, {"text": text}, **kwargs)

    def send_voice(
        self,
        chat_id: int,
        audio: bytes,
        *,
        duration: int,
        mime_type: str = "audio/ogg",
        caption: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        stored = self.add_file(audio, folder="voice", suffix=".oga")
        voice = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "duration": duration,
            "mime_type": mime_type,
            "file_size": len(audio),
        }
        fields: dict[str, Any] = {"voice": voice}
        if caption:
            fields["caption"] = caption
        return self.incoming(chat_id, fields, **kwargs)

    def send_audio(
        self,
        chat_id: int,
        audio: bytes,
        *,
        duration: int,
        file_name: str = "memo.mp3",
        mime_type: str = "audio/mpeg",
        **kwargs: Any,
    ) -> dict[str, Any]:
        stored = self.add_file(audio, folder="music", suffix=".mp3")
        fields = {
            "audio": {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "duration": duration,
                "file_name": file_name,
                "mime_type": mime_type,
                "file_size": len(audio),
            }
        }
        return self.incoming(chat_id, fields, **kwargs)

    def send_photo(
        self, chat_id: int, image: bytes, *, caption: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        small = self.add_file(image[: max(1, len(image) // 4)], folder="photos", suffix=".jpg")
        large = self.add_file(image, folder="photos", suffix=".jpg")
        sizes = [
            {
                "file_id": small.file_id,
                "file_unique_id": small.file_unique_id,
                "width": 90,
                "height": 67,
                "file_size": len(small.content),
            },
            {
                "file_id": large.file_id,
                "file_unique_id": large.file_unique_id,
                "width": 1280,
                "height": 960,
                "file_size": len(image),
            },
        ]
        fields: dict[str, Any] = {"photo": sizes}
        if caption:
            fields["caption"] = caption
        return self.incoming(chat_id, fields, **kwargs)

    def send_document(
        self,
        chat_id: int,
        data: bytes,
        *,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        stored = self.add_file(data, folder="documents", suffix="")
        fields: dict[str, Any] = {
            "document": {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_name": file_name,
                "mime_type": mime_type,
                "file_size": len(data),
            }
        }
        if caption:
            fields["caption"] = caption
        return self.incoming(chat_id, fields, **kwargs)

    def send_sticker(self, chat_id: int, **kwargs: Any) -> dict[str, Any]:
        stored = self.add_file(b"RIFF....WEBP", folder="stickers", suffix=".webp")
        sticker = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "type": "regular",
        }
        return self.incoming(chat_id, {"sticker": sticker}, **kwargs)

    def press_button(self, message: dict[str, Any], data: str, *, user: dict[str, Any]) -> str:
        """Queue a callback query for an inline button on `message` (a message the bot sent)."""
        query_id = str(4_000_000_000 + next(self._query_ids))
        self._open_queries.add(query_id)
        self.enqueue(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "message": self._messages.get((message["chat"]["id"], message["message_id"]), message),
                    "chat_instance": "-" + str(abs(message["chat"]["id"])),
                    "data": data,
                }
            }
        )
        return query_id

    def enqueue(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, **update})
        self._notify()
        return update_id

    @property
    def pending_update_ids(self) -> list[int]:
        return [update["update_id"] for update in self._updates]

    def fail_next(
        self,
        method: str,
        *,
        status: int = 502,
        description: str = "Bad Gateway",
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        self._faults[method] = Fault(status, description, times, retry_after)

    def hang(self, method: str) -> None:
        """Calls of `method` are taken and never answered (a server that hangs), until `release`."""
        self._hung.setdefault(method, asyncio.Event())

    def release(self, method: str) -> None:
        """The hung calls of `method` are answered now, and later ones at once."""
        hung = self._hung.pop(method, None)
        if hung is not None:
            hung.set()

    def messages_to(self, chat_id: int) -> list[dict[str, Any]]:
        return [message for message in self.sent if message["chat"]["id"] == chat_id]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until `predicate()` is truthy (re-checked whenever the bot calls a method)."""
        return await wait_on(self._changed, predicate, timeout)

    def _notify(self, *, push: bool = True) -> None:
        """Wake long polls and `wait_for`; start webhook delivery if a webhook is set."""

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):  # no loop yet: nobody can be waiting
            task = asyncio.get_running_loop().create_task(notify())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if push and self.webhook is not None:
            self._ensure_pusher()

    # -- the Bot API side ------------------------------------------------------------------

    async def _method(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append((method, params))
        self._notify()
        hung = self._hung.get(method)
        if hung is not None:
            await hung.wait()
        fault = self._faults.get(method)
        if fault is not None:
            fault.times -= 1
            if fault.times <= 0:
                del self._faults[method]
            extra = {"retry_after": fault.retry_after} if fault.retry_after is not None else None
            return _error(fault.status, fault.description, parameters=extra)
        handler = getattr(self, f"_api_{method.lower()}", None)
        if handler is None:
            return _error(404, "Not Found")
        try:
            result = await handler(params)
        except _ApiError as error:
            return _error(error.status, error.description)
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None:
            return _error(404, "Not Found")
        return web.Response(body=stored.content, content_type="application/octet-stream")

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "AI Employee",
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _api_getme(self, params: dict[str, Any]) -> Any:
        return self._bot_user()

    async def _api_getupdates(self, params: dict[str, Any]) -> Any:
        if self.webhook is not None:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _int(params.get("offset"))
        self.offsets.append(offset)
        if offset is not None:
            if offset < 0:
                self._updates = self._updates[offset:]
            else:
                self._updates = [update for update in self._updates if update["update_id"] >= offset]
        if "allowed_updates" in params:
            allowed = params["allowed_updates"]
            self._allowed_updates = list(allowed) if allowed else None
        limit = max(1, min(100, _int(params.get("limit")) or 100))
        timeout = float(params.get("timeout") or 0)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            ready = [update for update in self._updates if self._wanted(update)][:limit]
            remaining = deadline - asyncio.get_running_loop().time()
            if ready or remaining <= 0 or self._closing:
                return ready
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    def _wanted(self, update: dict[str, Any]) -> bool:
        if not self._allowed_updates:
            return True
        return any(kind in update for kind in self._allowed_updates)

    async def _api_setwebhook(self, params: dict[str, Any]) -> Any:
        url = params.get("url") or ""
        if not url:
            self.webhook = None
            return True
        if _truthy(params.get("drop_pending_updates")):
            self._updates.clear()
        self.webhook = {
            "url": url,
            "secret_token": params.get("secret_token"),
            "allowed_updates": params.get("allowed_updates"),
        }
        self._ensure_pusher()
        return True

    async def _api_deletewebhook(self, params: dict[str, Any]) -> Any:
        if _truthy(params.get("drop_pending_updates")):
            self._updates.clear()
        self.webhook = None
        return True

    async def _api_getwebhookinfo(self, params: dict[str, Any]) -> Any:
        return {
            "url": (self.webhook or {}).get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    async def _api_getfile(self, params: dict[str, Any]) -> Any:
        stored = self._files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        if len(stored.content) > MAX_GETFILE_BYTES:
            raise _ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": stored.file_path,
        }

    async def _api_sendmessage(self, params: dict[str, Any]) -> Any:
        chat_id = _int(params.get("chat_id"))
        if chat_id is None or chat_id not in self._chats:
            raise _ApiError(400, "Bad Request: chat not found")
        text = str(params.get("text") or "")
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise _ApiError(400, "Bad Request: message is too long")
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": self._chats[chat_id],
            "from": self._bot_user(),
            "text": text,
        }
        reply = params.get("reply_parameters")
        reply_to = (
            reply.get("message_id") if isinstance(reply, dict) else _int(params.get("reply_to_message_id"))
        )
        if reply_to is not None:
            original = self._messages.get((chat_id, int(reply_to)))
            if original is not None:
                message["reply_to_message"] = original
            elif not (isinstance(reply, dict) and reply.get("allow_sending_without_reply")):
                raise _ApiError(400, "Bad Request: message to be replied not found")
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        self._messages[(chat_id, message["message_id"])] = message
        self.sent.append(message)
        return message

    async def _api_editmessagetext(self, params: dict[str, Any]) -> Any:
        chat_id = _int(params.get("chat_id"))
        message_id = _int(params.get("message_id"))
        message = self._messages.get((chat_id or 0, message_id or 0))
        if message is None or message.get("from", {}).get("id") != self.bot_id:
            raise _ApiError(400, "Bad Request: message to edit not found")
        text = str(params.get("text") or "")
        markup = params.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and markup.get("inline_keyboard") else None
        if text == message.get("text") and new_markup == message.get("reply_markup"):
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        message["text"] = text
        message["edit_date"] = int(time.time())
        if new_markup is None:
            message.pop("reply_markup", None)
        else:
            message["reply_markup"] = new_markup
        self.edits.append(
            {"chat_id": chat_id, "message_id": message_id, "text": text, "reply_markup": new_markup}
        )
        return message

    async def _api_answercallbackquery(self, params: dict[str, Any]) -> Any:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._open_queries:
            raise _ApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        self._open_queries.discard(query_id)
        self.answers[query_id] = {"text": params.get("text"), "show_alert": _truthy(params.get("show_alert"))}
        return True

    # -- webhook delivery ------------------------------------------------------------------

    def _ensure_pusher(self) -> None:
        if self._pusher is None or self._pusher.done():
            with contextlib.suppress(RuntimeError):
                self._pusher = asyncio.get_running_loop().create_task(self._push())

    async def _push(self) -> None:
        """Deliver queued updates to the webhook in order, each until it is answered with 2xx."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        while self.webhook is not None and self._updates:
            webhook = self.webhook
            update = self._updates[0]
            headers = {SECRET_HEADER: webhook["secret_token"]} if webhook.get("secret_token") else {}
            try:
                async with self._session.post(webhook["url"], json=update, headers=headers) as response:
                    delivered = 200 <= response.status < 300
            except aiohttp.ClientError:
                delivered = False
            if delivered:
                if self._updates and self._updates[0] is update:
                    self._updates.pop(0)
                self._notify(push=False)
            else:
                await asyncio.sleep(self.webhook_retry_seconds)


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _error(status: int, description: str, *, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)


async def _params(request: web.Request) -> dict[str, Any]:
    """Bot API parameters from wherever the client put them; JSON-encoded values decoded."""
    raw: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        content_type = request.content_type
        if content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                raw.update(body)
                return raw
        elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                raw[key] = value if isinstance(value, str) else value.file.read()
    return {key: _decode(value) for key, value in raw.items()}


def _decode(value: Any) -> Any:
    if (isinstance(value, str) and value[:1] in ("{", "[", '"')) or value in ("true", "false", "null"):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
