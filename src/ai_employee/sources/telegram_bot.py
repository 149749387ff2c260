"""The Telegram source's edges: who is heard, how the Bot API is called, how the parts reach the daemon.

Shared by the service and its parts (intake, transcription, decisions), so that the retry
policy, the deadlines, the "answers are courtesy" rule and the allow list each live in one place.

Every Bot API call has deadlines (`bot_requests`): connect and pool within
`services.connect_timeout`, each read or write within `services.read_timeout` (getUpdates adds
its long-poll time to the read). And every call gives way to stop(): a server that accepts and
never answers must not hold a stop for a whole deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
import structlog
from telegram import CallbackQuery, InlineKeyboardMarkup, Message, ReplyParameters, User
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import Application
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from ai_employee.clients.link import describe_failure
from ai_employee.clients.retry import RetryPolicy, ServiceError, ServiceUnavailable
from ai_employee.config import ServicesSettings
from ai_employee.model.events import EventType
from ai_employee.sources.telegram_content import seconds_of
from ai_employee.sources.telegram_replies import truncate

#: Every part of the source logs under the service module's name, as it did when it was one module.
LOGGER_NAME = "ai_employee.sources.telegram"
log = structlog.get_logger(LOGGER_NAME)

T = TypeVar("T")
TelegramApp = Application[Any, Any, Any, Any, Any, Any]

#: How the parts put an event on the bus: (type, the action's id if any, payload).
Publish = Callable[[EventType, str | None, dict[str, Any]], None]
#: The ledger's row for an action (None if unknown or the look-up failed).
ActionInfo = Callable[[str], Mapping[str, Any] | None]


#: how long a Bot API call under way may still finish once stop() is asked (a healthy server
#: answers well within it; a hung one is abandoned)
STOP_GRACE_SECONDS = 1.0


class UpdateFailed(Exception):
    """An update could not be turned into a durable action; it must be fetched again."""


class Stopping(Exception):
    """stop() was asked while an outside call was under way: the call was abandoned."""


def bot_requests(services: ServicesSettings) -> tuple[HTTPXRequest, HTTPXRequest]:
    """The Bot API's HTTP clients, (for every method, for getUpdates), with their deadlines.

    PTB adds getUpdates' long-poll `timeout` to the read deadline of each call, so a long poll
    is given up `services.read_timeout` after the server should have answered.
    """

    def request(pool_size: int) -> HTTPXRequest:
        return HTTPXRequest(
            connection_pool_size=pool_size,
            connect_timeout=services.connect_timeout,
            read_timeout=services.read_timeout,
            write_timeout=services.read_timeout,
            media_write_timeout=services.read_timeout,
            pool_timeout=services.connect_timeout,
        )

    return request(32), request(1)


def connect_deadlines(services: ServicesSettings) -> dict[str, float]:
    """The deadlines of the calls that reach the server (getMe, deleteWebhook, setWebhook): like a
    login, a server that accepts and never answers costs `services.connect_timeout`."""
    seconds = services.connect_timeout
    return {
        "connect_timeout": seconds,
        "read_timeout": seconds,
        "write_timeout": seconds,
        "pool_timeout": seconds,
    }


async def until_stopped(stop_requested: asyncio.Event, work: Awaitable[T], *, grace: float = 0.0) -> T:
    """Await `work`; once stop() is asked, let it finish within `grace` seconds, else abandon it
    (cancelled: its connection is closed) and raise Stopping."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop_requested.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and grace > 0:
            await asyncio.wait({task}, timeout=grace)
    except BaseException:  # our caller was cancelled: the call goes with it
        task.cancel()
        raise
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise Stopping("abandoned: the service is stopping")
    return task.result()


def describe_bot_failure(error: BaseException) -> str:
    """Why the Bot API could not be used, in plain words and without the token: the transport's
    trouble with the deadline that struck ("no answer after 10 s"), or what the server said."""
    if isinstance(error, ServiceUnavailable) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, InvalidToken):  # its message may quote the token: never shown
        return "the Bot API refused the bot token: check TELEGRAM_BOT_TOKEN and TELEGRAM_API_BASE_URL"
    if isinstance(error, Forbidden):
        return f"the Bot API refused: {error.message}"
    if isinstance(error, Conflict):
        return f"another client takes this bot's updates or set a webhook: {error.message}"
    if isinstance(error, BadRequest):
        return f"the Bot API refused the request: {error.message}"
    if isinstance(error, TelegramError) and error.__cause__ is None and error.__context__ is None:
        if isinstance(error, TimedOut):
            return "no answer in time"
        return f"the Bot API answered: {error.message}"  # a 5xx, often from a gateway in front of it
    if isinstance(error, NetworkError | OSError | httpx.HTTPError):
        return describe_failure(error, timeout=_deadlines_of(error))
    if isinstance(error, ServiceError):
        return error.message
    return describe_failure(error)


def is_link_failure(error: BaseException | None) -> bool:
    """The server, not the update, is the trouble: asking again later will do."""
    if isinstance(error, ServiceUnavailable):
        error = error.__cause__
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_error_in(error: BaseException) -> httpx.HTTPError | None:
    return next((cause for cause in _causes(error) if isinstance(cause, httpx.HTTPError)), None)


def _deadlines_of(error: BaseException) -> httpx.Timeout | None:
    """The deadlines the failed request ran with (httpx keeps them in the request's extensions)."""
    found = _http_error_in(error)
    if found is None:
        return None
    try:
        given = found.request.extensions.get("timeout")
    except RuntimeError:  # raised without a request
        return None
    if not isinstance(given, dict):
        return None
    try:
        return httpx.Timeout(**given)
    except (TypeError, ValueError):
        return None


def _is_transient(error: BaseException) -> bool:
    """Worth another try: a dropped or slow connection, a 5xx, flood control. Never a 400."""
    if isinstance(error, BadRequest):
        return False
    return isinstance(error, NetworkError | TimedOut | RetryAfter)


def retry_after_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return float(seconds_of(value))


async def sleep_unless_stopped(stop_requested: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if stop() is asked meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_requested.wait(), timeout=max(0.0, seconds))


class Access:
    """Who is heard: chats in `telegram.allowed_chat_ids`; who may decide: users listed there.

    Anything else creates nothing and is logged (and published) once per chat.
    """

    def __init__(self, allowed: Iterable[int], publish: Publish) -> None:
        self.allowed = frozenset(allowed)
        self.unauthorized_seen: set[int] = set()
        self._publish = publish

    def note_unauthorized(self, chat_id: int, user: User | None, what: str) -> None:
        if chat_id in self.unauthorized_seen:
            return
        self.unauthorized_seen.add(chat_id)
        user_id = user.id if user else None
        log.warning(
            "telegram.unauthorized",
            chat_id=chat_id,
            user_id=user_id,
            what=what,
            hint="add the id to TELEGRAM_ALLOWED_CHAT_IDS to let it in",
        )
        self._publish(
            EventType.TELEGRAM_UNAUTHORIZED, None, {"chat_id": chat_id, "user_id": user_id, "what": what}
        )


class BotClient:
    """The Bot API calls of the running Application (`app` is None while the service is stopped)."""

    def __init__(self, retry: RetryPolicy, stop_requested: asyncio.Event) -> None:
        self.retry = retry
        self.app: TelegramApp | None = None
        self._stop_requested = stop_requested

    def require_app(self) -> TelegramApp:
        if self.app is None:
            raise UpdateFailed("the telegram service is not running")
        return self.app

    async def send(
        self,
        chat_id: int,
        text: str,
        *,
        reply_to: Message | int | None = None,
        reply_markup: InlineKeyboardMarkup | None = None,
    ) -> Message | None:
        """Send a message; a failure is logged, never raised: answers are courtesy, the note is the record."""
        app = self.app
        if app is None:
            return None
        reply_id = reply_to.message_id if isinstance(reply_to, Message) else reply_to
        reply = (
            ReplyParameters(message_id=reply_id, allow_sending_without_reply=True)
            if reply_id is not None
            else None
        )
        return await self.courtesy(
            lambda: app.bot.send_message(
                chat_id=chat_id, text=truncate(text), reply_parameters=reply, reply_markup=reply_markup
            ),
            what="telegram sendMessage",
            chat_id=chat_id,
        )

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        app = self.app
        if app is None:
            return
        await self.courtesy(
            lambda: app.bot.edit_message_text(
                text=text, chat_id=chat_id, message_id=message_id, reply_markup=None
            ),
            what="telegram editMessageText",
            chat_id=chat_id,
        )

    async def answer(self, query: CallbackQuery, text: str) -> None:
        await self.courtesy(
            lambda: query.answer(text=text), what="telegram answerCallbackQuery", chat_id=None
        )

    async def courtesy(self, call: Callable[[], Awaitable[T]], *, what: str, chat_id: int | None) -> T | None:
        try:
            return await self.call(call, what=what)
        except (ServiceError, TelegramError, Stopping) as error:
            reason = describe_bot_failure(error)
            log.warning("telegram.reply_failed", what=what, chat_id=chat_id, error=reason)
            return None

    async def call(self, operation: Callable[[], Awaitable[T]], *, what: str) -> T:
        """The one retry policy around a Bot API call; transient failures only. Once stop() is
        asked the call has `STOP_GRACE_SECONDS` to finish, then it raises Stopping.

        The operation is wrapped in a coroutine function because tenacity awaits only those:
        a lambda returning a coroutine would come back unawaited.
        """

        async def attempt() -> T:
            return await operation()

        return await until_stopped(
            self._stop_requested,
            self.retry.call(attempt, what=what, retry_on=_is_transient),
            grace=STOP_GRACE_SECONDS,
        )
