"""The Telegram source: messages to a bot become actions; the bot answers with the plan and its outcome.

How it keeps "nothing lost, nothing twice":
- PTB's `Updater` confirms updates to Telegram (the next getUpdates carries a higher offset)
  as soon as it has queued them, before any handler ran. A crash then loses them. So this
  service drives getUpdates itself with PTB's `Bot` and feeds each update to the
  `Application` in order; the offset moves (in the durable store, then on the wire) only
  after the update's action note is durable. After a crash Telegram hands the update over
  again and the intake, idempotent per source_ref ("chat:message"), returns the same action.
- In webhook mode the route answers 200 only after the note is durable; any failure answers
  500 and Telegram delivers the update again.

Who is heard: messages from chats in `telegram.allowed_chat_ids` (a private chat's id is the
user's id). Who may press Approve / Reject: users whose own id is listed, so a listed group
can report problems while deciding stays with named people. Anything else creates nothing
and is logged once per chat.

Nothing outside holds up the start: the service is ready as soon as its run is under way, and
reaching the Bot API is its own business (docs/services.md). Its `OutsideLink` says how that
goes: connecting, connected once getMe answered, retrying with the reason in plain words. Every
call has deadlines, a failure waits the link's jittered backoff (capped by
`services.max_backoff`) and tries again by itself, while starting and when polling loses the
server: a crash would make the orchestrator restart it, reset the backoff and hammer the server.
Updates that waited arrive once it is back, exactly once (the offset logic above). stop() never
waits for a deadline: a connect or a long poll is cut off at once, a call within an update after
`STOP_GRACE_SECONDS`.

The service runs the bot (polling or webhook) and wires its parts together: the Bot API and
the allow list (telegram_bot), messages becoming actions (telegram_intake), voice notes
transcribed later (telegram_transcription), and plans decided with buttons (telegram_decisions).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import hmac
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from telegram import Update
from telegram.error import RetryAfter, TelegramError
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from ai_employee.clients.link import OutsideLink, describe_target
from ai_employee.clients.retry import RetryPolicy, describe
from ai_employee.clients.whisper import Transcriber, build_transcriber
from ai_employee.model.bus import Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.services import HealthReport, LinkStatus, Service, ServiceContext, ServiceState
from ai_employee.sources.telegram_bot import (
    Access,
    BotClient,
    Stopping,
    TelegramApp,
    UpdateFailed,
    bot_requests,
    connect_deadlines,
    describe_bot_failure,
    is_link_failure,
    retry_after_seconds,
    sleep_unless_stopped,
    until_stopped,
)
from ai_employee.sources.telegram_decisions import Decisions
from ai_employee.sources.telegram_intake import MessageIntake
from ai_employee.sources.telegram_quarantine import UpdateQuarantine
from ai_employee.sources.telegram_state import TelegramState
from ai_employee.sources.telegram_transcription import PendingTranscriptions

log = structlog.get_logger(__name__)

EVENT_SOURCE = "telegram"
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
ALLOWED_UPDATES = ("message", "callback_query")
TEMP_FOLDER = Path(".ai-employee") / "telegram"


class TelegramService(Service):
    """Polls (or receives by webhook) a bot's updates and turns them into actions."""

    name = "telegram"
    required = False  # an unreachable Telegram must not make the whole daemon unready

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        transcriber_factory: Callable[[], Transcriber | None] | None = None,
        retry: RetryPolicy | None = None,
        poll_timeout: float = 25.0,
        pending_retry_seconds: float = 300.0,
        webhook_url: str | None = None,
        webhook_path: str = WEBHOOK_PATH,
    ) -> None:
        super().__init__()
        settings = ctx.settings.telegram
        if settings.bot_token is None or not settings.bot_token.get_secret_value():
            raise PluginDisabled("TELEGRAM_BOT_TOKEN is not set")
        self._ctx = ctx
        self._token = settings.bot_token.get_secret_value()
        self._root = settings.api_base_url.rstrip("/")
        self._mode = settings.mode
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        self._webhook_secret = secret.encode("utf-8")
        self._webhook_url = webhook_url
        self._services = ctx.settings.services
        self._retry = retry or RetryPolicy.for_services(self._services)
        self._transcriber_factory = transcriber_factory or (
            lambda: build_transcriber(ctx.settings, retry=self._retry, work=ctx.transcription)
        )
        self._poll_timeout = poll_timeout
        self._state = TelegramState(ctx.state, bot_id=self._token.split(":", 1)[0])
        self._quarantine = UpdateQuarantine(
            ctx.state, self._token.split(":", 1)[0], ctx.vault_root, settings.max_update_attempts
        )
        self._temp_dir = ctx.vault_root / TEMP_FOLDER

        self._stop_requested = asyncio.Event()
        self._lock = asyncio.Lock()  # one update at a time, in order, polling or webhook
        self._transcriber: Transcriber | None = None
        self._handler_errors: dict[int, BaseException] = {}
        self._username: str | None = None
        self._last_update_at: str | None = None
        self._running = False
        # the target names host and port only: the API's URLs carry the token in their path
        self._link = OutsideLink(
            name=self.name,
            target=describe_target("Telegram", self._root),
            settings=self._services,
            bus=ctx.bus,
        )

        # The parts; `self._bot.app` is the connected Application (None until then, and once stopped).
        self._bot = BotClient(self._retry, self._stop_requested)
        self._access = Access(settings.allowed_chat_ids, self._publish)
        self._decisions = Decisions(
            state=self._state,
            bot=self._bot,
            access=self._access,
            approvals=ctx.approvals,
            action_info=self._action_info,
        )
        self._transcriptions = PendingTranscriptions(
            state=self._state,
            bot=self._bot,
            vault_root=ctx.vault_root,
            transcriber=lambda: self._transcriber,
            action_info=self._action_info,
            publish=self._publish,
            stop_requested=self._stop_requested,
            retry_seconds=pending_retry_seconds,
        )
        self._intake = MessageIntake(
            intake=ctx.intake,
            state=self._state,
            bot=self._bot,
            access=self._access,
            decisions=self._decisions,
            transcriber=lambda: self._transcriber,
            publish=self._publish,
            temp_dir=self._temp_dir,
        )

        if self._mode == "webhook":
            if not self._webhook_secret:
                raise PluginDisabled("telegram.mode is webhook but telegram.webhook_secret is not set")
            ctx.routes.add_route("POST", webhook_path, self.handle_webhook)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Ready at once; then reach the Bot API (again and again, with the link's backoff, until
        it answers) and poll. An unreachable or lost server never ends the run."""
        self._stop_requested.clear()
        self._running = True
        self.ready.set()
        self._clear_temp_dir()
        requests = bot_requests(self._services)
        app = self._build_application(*requests)
        subscriptions: list[Subscription] = []
        pending_task: asyncio.Task[None] | None = None
        try:
            self._transcriber = self._transcriber_factory()
            if not await self._connect(app):
                return
            self._bot.app = app
            self._username = app.bot.username
            subscriptions = self._decisions.subscribe(self._ctx.bus)
            pending_task = asyncio.create_task(
                self._transcriptions.run(), name="telegram:pending-transcriptions"
            )
            log.info(
                "telegram.started",
                bot=self._username,
                mode=self._mode,
                allowed_chats=len(self._access.allowed),
                transcriber=self._transcriber.engine if self._transcriber else None,
            )
            if not self._access.allowed:
                log.warning(
                    "telegram.no_allowed_chats",
                    hint="set TELEGRAM_ALLOWED_CHAT_IDS; every message is ignored until then",
                )
            if self._mode == "webhook":
                await self._stop_requested.wait()
            else:
                await self._poll(app)
        finally:
            self._running = False
            for subscription in subscriptions:
                self._ctx.bus.unsubscribe(subscription)
            if pending_task is not None:
                pending_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending_task
            async with self._lock:  # let an in-flight webhook update finish
                self._bot.app = None
            transcriber, self._transcriber = self._transcriber, None
            if transcriber is not None:
                await transcriber.aclose()
            await app.shutdown()
            for request in requests:  # also when initialize() never got through
                await request.shutdown()
            log.info("telegram.stopped", bot=self._username)

    async def stop(self) -> None:
        """Finish the update in hand; a call to the Bot API that hangs is cut off (a connect or
        a long poll at once, a call within an update after `STOP_GRACE_SECONDS`)."""
        self._stop_requested.set()

    def link(self) -> LinkStatus | None:
        return self._link.status()

    async def health(self) -> HealthReport:
        link = self._link.status()
        data: dict[str, Any] = {
            "mode": self._mode,
            "bot": self._username,
            "target": link.target,
            "attempts": link.attempts,
            "offset": self._state.offset(),
            "pending_transcriptions": len(self._state.pending_transcriptions()),
            "transcriber": self._transcriber.engine if self._transcriber else None,
            "unauthorized_chats": len(self._access.unauthorized_seen),
            "last_update_at": self._last_update_at,
        }
        if link.last_error:
            data["last_error"] = link.last_error
        if not self._running:
            return HealthReport(False, "not running", data)
        if link.state is ServiceState.RETRYING:
            detail = f"retrying: {link.last_error}; next attempt in {_seconds_until(link.next_attempt)}"
            return HealthReport(False, detail, data)
        if link.state is not ServiceState.RUNNING:
            detail = f"connecting to {link.target}"
            if link.last_error:
                detail += f" (last error: {link.last_error})"
            return HealthReport(False, detail, data)
        return HealthReport(True, f"@{self._username} ({self._mode})", data)

    def _build_application(self, request: HTTPXRequest, get_updates_request: HTTPXRequest) -> TelegramApp:
        application: TelegramApp = (
            ApplicationBuilder()
            .token(self._token)
            .base_url(f"{self._root}/bot")
            .base_file_url(f"{self._root}/file/bot")
            .request(request)
            .get_updates_request(get_updates_request)
            .updater(None)  # we fetch updates ourselves; see the module docstring
            .job_queue(None)
            .build()
        )
        application.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._intake.on_message))
        application.add_handler(CallbackQueryHandler(self._decisions.on_callback))
        application.add_error_handler(self._on_handler_error)
        return application

    # -- reaching the Bot API ---------------------------------------------------------------

    async def _connect(self, app: TelegramApp) -> bool:
        """Until the Bot API answers: getMe (the server is there and the token good), then the
        webhook set or removed. False when stop() came first."""
        while not self._stop_requested.is_set():
            self._link.connecting()
            try:
                await until_stopped(self._stop_requested, self._handshake(app))
            except Stopping:
                return False
            except (TelegramError, OSError) as error:
                if await self._wait_after(error):
                    return False
                continue
            self._link.connected()
            return True
        return False

    async def _handshake(self, app: TelegramApp) -> None:
        deadlines = connect_deadlines(self._services)
        await app.bot.get_me(**deadlines)  # within the connect deadline, unlike initialize()'s own
        await app.initialize()
        if self._mode == "webhook":
            await self._register_webhook(app, deadlines)
        else:
            # getUpdates answers 409 while a webhook is set; keep its queue (no drop).
            await app.bot.delete_webhook(drop_pending_updates=False, **deadlines)

    async def _wait_after(self, error: BaseException) -> bool:
        """The server could not be reached or lost: wait the link's backoff. True: stop() came."""
        delay = self._link.failed(describe_bot_failure(error))
        return await self._link.wait(delay, self._stop_requested)

    async def _register_webhook(self, app: TelegramApp, deadlines: Mapping[str, float]) -> None:
        if not self._webhook_url:
            log.info(
                "telegram.webhook_not_registered",
                path=WEBHOOK_PATH,
                hint="no public URL is configured: call setWebhook with this path and the secret yourself",
            )
            return
        secret = self._webhook_secret.decode("utf-8")
        url = self._webhook_url
        await app.bot.set_webhook(
            url=url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES), **deadlines
        )

    def _clear_temp_dir(self) -> None:
        """Downloads of a run that crashed before handing them to the intake."""
        if self._temp_dir.is_dir():
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    # -- fetching updates -------------------------------------------------------------------

    async def _poll(self, app: TelegramApp) -> None:
        """getUpdates in a loop; a lost server is the link's trouble: wait its backoff, ask again
        from the same offset. The first call after a loss does not long-poll, so that the link
        knows at once that the server is back."""
        offset = self._state.offset()
        while not self._stop_requested.is_set():
            connected = self._link.is_up
            if not connected:
                self._link.connecting()
            try:
                updates = await until_stopped(
                    self._stop_requested,
                    app.bot.get_updates(
                        offset=offset,
                        timeout=self._poll_timeout if connected else 0,
                        limit=100,
                        allowed_updates=list(ALLOWED_UPDATES),
                    ),
                )
            except Stopping:
                return
            except RetryAfter as error:  # flood control: the server is there, and asks for patience
                self._link.connected()
                await self._sleep(retry_after_seconds(error))
                continue
            except (TelegramError, OSError) as error:
                if await self._wait_after(error):
                    return
                continue
            self._link.connected()
            for update in updates:
                if offset is not None and update.update_id < offset:
                    continue
                try:
                    await self.take_update(update)
                except UpdateFailed as error:
                    if self._stop_requested.is_set():
                        return  # abandoned by stop(): Telegram hands it over again next time
                    if not is_link_failure(error.__cause__):
                        raise  # the vault side refused it: a crash, and the update comes again
                    if await self._wait_after(error.__cause__ or error):
                        return
                    break  # ask again from this update on
                offset = update.update_id + 1
                self._state.set_offset(offset)  # durable: a restart starts after this update
                if self._stop_requested.is_set():
                    return

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less if stop() is asked meanwhile."""
        await sleep_unless_stopped(self._stop_requested, seconds)

    async def take_update(self, update: Update) -> None:
        """`process_update`, counting the failures of the vault side: at the
        `telegram.max_update_attempts`-th the update is set aside in Quarantine/ and this returns
        as if it had been taken (the offset moves on). A lost link is not counted."""
        if self._quarantine.exhausted(update.update_id):
            self._set_aside(update)
            return
        try:
            await self.process_update(update)
        except UpdateFailed as error:
            if self._stop_requested.is_set() or is_link_failure(error.__cause__):
                raise
            if self._quarantine.failed(update.update_id, str(error)) < self._quarantine.max_attempts:
                raise
            self._set_aside(update)
            return
        self._quarantine.succeeded(update.update_id)

    def _set_aside(self, update: Update) -> None:
        aside = self._quarantine.set_aside(update)
        name = f"telegram update {aside.update_id}"
        self._publish(EventType.INPUT_QUARANTINED, None, {"file": name, "reason": aside.reason})

    async def process_update(self, update: Update) -> None:
        """Hand one update to the Application; raise UpdateFailed if it did not become durable."""
        async with self._lock:
            app = self._bot.app
            if app is None:
                raise UpdateFailed(f"update {update.update_id}: the service is not running")
            self._handler_errors.pop(update.update_id, None)
            await app.process_update(update)
            error = self._handler_errors.pop(update.update_id, None)
        self._last_update_at = dtm.datetime.now(dtm.UTC).isoformat(timespec="seconds")
        if error is not None:
            raise UpdateFailed(f"update {update.update_id}: {describe(error)}") from error

    async def _on_handler_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if isinstance(update, Update) and context.error is not None:
            self._handler_errors[update.update_id] = context.error

    async def handle_webhook(self, request: web.Request) -> web.StreamResponse:
        """POST /telegram/webhook: the secret is checked before the body is read."""
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8")
        if not self._webhook_secret or not hmac.compare_digest(given, self._webhook_secret):
            log.warning("telegram.webhook_forbidden", remote=request.remote)
            return web.Response(status=403, text="forbidden")
        app = self._bot.app
        if app is None:
            return web.Response(status=503, text="the telegram service is not running")
        try:
            data = await request.json()
        except ValueError:
            return web.Response(status=400, text="the body is not JSON")
        update = Update.de_json(data, app.bot) if isinstance(data, dict) else None
        if update is None:
            return web.Response(status=400, text="the body is not an update")
        try:
            await self.take_update(update)
        except Exception as error:
            log.warning("telegram.webhook_update_failed", update_id=update.update_id, error=describe(error))
            return web.Response(status=500, text="not stored; deliver it again")
        return web.Response(status=200, text="ok")

    # -- voice notes waiting for a transcript -----------------------------------------------

    async def transcribe_pending(self) -> int:
        """Transcribe every pending voice note now; returns how many were done."""
        return await self._transcriptions.transcribe_pending()

    # -- what the parts share ---------------------------------------------------------------

    def _action_info(self, action_id: str) -> Mapping[str, Any] | None:
        try:
            return self._ctx.actions.action_info(action_id)
        except Exception:
            log.exception("telegram.action_lookup_failed", action_id=action_id)
            return None

    def _publish(self, event_type: EventType, action_id: str | None, payload: dict[str, Any]) -> None:
        self._ctx.bus.publish(Event(event_type, payload, correlation_id=action_id, source=EVENT_SOURCE))


def _seconds_until(when: dtm.datetime | None) -> str:
    if when is None:
        return "a moment"
    return f"{max(0.0, (when - dtm.datetime.now(dtm.UTC)).total_seconds()):.0f} s"


def create(ctx: ServiceContext) -> TelegramService:
    """Entry point `ai_employee.services: telegram`. Off (PluginDisabled) without a bot token.

    In webhook mode the public URL to register comes from `telegram.webhook_url` once the
    settings have it; until then the webhook is registered by hand (see the log at start).
    """
    webhook_url = getattr(ctx.settings.telegram, "webhook_url", None)
    return TelegramService(ctx, webhook_url=webhook_url if isinstance(webhook_url, str) else None)
