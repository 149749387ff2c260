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
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import hmac
import shutil
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
from aiohttp import web
from telegram import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
    User,
)
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
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.warnings import PTBDeprecationWarning

from ai_employee.clients.retry import RetryPolicy, ServiceAuthError, ServiceError, describe
from ai_employee.clients.whisper import (
    AudioFile,
    Transcriber,
    Transcript,
    TranscriptionError,
    build_transcriber,
)
from ai_employee.model.bus import Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.messages import IncomingAttachment, IncomingMessage
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.services import DecisionResult, HealthReport, Service, ServiceContext
from ai_employee.sources.telegram_content import (
    Content,
    MediaRef,
    classify,
    describe_sender,
    format_duration,
    make_title,
    seconds_of,
)
from ai_employee.sources.telegram_replies import (
    arrival_text,
    callback_answer,
    decided_suffix,
    decision_keyboard,
    executed_text,
    failed_text,
    parse_callback,
    plan_text,
    plan_text_without_buttons,
    transcribed_text,
    truncate,
    unsupported_text,
)
from ai_employee.sources.telegram_state import ActionLink, PendingTranscription, PlanMessage, TelegramState
from ai_employee.vault.notes import NoteError, parse_note

log = structlog.get_logger(__name__)

T = TypeVar("T")
TelegramApp = Application[Any, Any, Any, Any, Any, Any]

EVENT_SOURCE = "telegram"
WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
ALLOWED_UPDATES = ("message", "callback_query")
TEMP_FOLDER = Path(".ai-employee") / "telegram"
_UNHEALTHY_AFTER_FAILURES = 3


class UpdateFailed(Exception):
    """An update could not be turned into a durable action; it must be fetched again."""


class _Stopped(Exception):
    """stop() was asked while waiting."""


def _is_transient(error: BaseException) -> bool:
    """Worth another try: a dropped or slow connection, a 5xx, flood control. Never a 400."""
    if isinstance(error, BadRequest):
        return False
    return isinstance(error, NetworkError | TimedOut | RetryAfter)


def _retry_after_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return float(seconds_of(value))


@dataclass
class _Prepared:
    """An IncomingMessage ready for the intake, plus what the reply and the records need."""

    message: IncomingMessage
    content: Content
    transcript: Transcript | None = None
    pending_reason: str | None = None
    transcription_error: str | None = None
    attachment_error: str | None = None
    temp_files: list[Path] = field(default_factory=list)

    def cleanup(self) -> None:
        for path in self.temp_files:
            with contextlib.suppress(OSError):
                path.unlink()


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
        error_backoff_max: float = 30.0,
    ) -> None:
        super().__init__()
        settings = ctx.settings.telegram
        if settings.bot_token is None or not settings.bot_token.get_secret_value():
            raise PluginDisabled("TELEGRAM_BOT_TOKEN is not set")
        self._ctx = ctx
        self._token = settings.bot_token.get_secret_value()
        self._root = settings.api_base_url.rstrip("/")
        self._mode = settings.mode
        self._allowed = frozenset(settings.allowed_chat_ids)
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        self._webhook_secret = secret.encode("utf-8")
        self._webhook_url = webhook_url
        self._retry = retry or RetryPolicy(attempts=5, initial_seconds=1.0, max_seconds=30.0)
        self._transcriber_factory = transcriber_factory or (
            lambda: build_transcriber(ctx.settings, retry=self._retry)
        )
        self._poll_timeout = poll_timeout
        self._pending_retry_seconds = pending_retry_seconds
        self._error_backoff_max = error_backoff_max
        self._state = TelegramState(ctx.state, bot_id=self._token.split(":", 1)[0])
        self._temp_dir = ctx.vault_root / TEMP_FOLDER

        self._stop_requested = asyncio.Event()
        self._lock = asyncio.Lock()  # one update at a time, in order, polling or webhook
        self._app: TelegramApp | None = None
        self._transcriber: Transcriber | None = None
        self._handler_errors: dict[int, BaseException] = {}
        self._unauthorized_seen: set[int] = set()
        self._submitting = 0
        self._held: deque[Event] = deque(maxlen=64)  # plan events that beat their action's record
        self._announcing: set[str] = set()
        self._deciding: set[str] = set()  # plans whose button press is being handled
        self._seen_outcomes: deque[str] = deque(maxlen=1024)
        self._username: str | None = None
        self._poll_failures = 0
        self._last_error: str | None = None
        self._last_update_at: str | None = None

        if self._mode == "webhook":
            if not self._webhook_secret:
                raise PluginDisabled("telegram.mode is webhook but telegram.webhook_secret is not set")
            ctx.routes.add_route("POST", webhook_path, self.handle_webhook)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        self._stop_requested.clear()
        self._clear_temp_dir()
        app = self._build_application()
        await app.initialize()  # getMe: a wrong token fails here, and the orchestrator retries
        self._app = app
        self._username = app.bot.username
        subscriptions: list[Subscription] = []
        pending_task: asyncio.Task[None] | None = None
        try:
            self._transcriber = self._transcriber_factory()
            subscriptions = self._subscribe()
            if self._mode == "webhook":
                await self._register_webhook(app)
            else:
                # getUpdates answers 409 while a webhook is set; keep its queue (no drop).
                await self._call(
                    lambda: app.bot.delete_webhook(drop_pending_updates=False), what="telegram deleteWebhook"
                )
            pending_task = asyncio.create_task(self._pending_loop(), name="telegram:pending-transcriptions")
            log.info(
                "telegram.started",
                bot=self._username,
                mode=self._mode,
                allowed_chats=len(self._allowed),
                transcriber=self._transcriber.engine if self._transcriber else None,
            )
            if not self._allowed:
                log.warning(
                    "telegram.no_allowed_chats",
                    hint="set TELEGRAM_ALLOWED_CHAT_IDS; every message is ignored until then",
                )
            self.ready.set()
            if self._mode == "webhook":
                await self._stop_requested.wait()
            else:
                await self._poll(app)
        finally:
            for subscription in subscriptions:
                self._ctx.bus.unsubscribe(subscription)
            if pending_task is not None:
                pending_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending_task
            async with self._lock:  # let an in-flight webhook update finish
                self._app = None
            transcriber, self._transcriber = self._transcriber, None
            if transcriber is not None:
                await transcriber.aclose()
            await app.shutdown()
            log.info("telegram.stopped", bot=self._username)

    async def stop(self) -> None:
        self._stop_requested.set()

    async def health(self) -> HealthReport:
        data: dict[str, Any] = {
            "mode": self._mode,
            "bot": self._username,
            "offset": self._state.offset(),
            "pending_transcriptions": len(self._state.pending_transcriptions()),
            "transcriber": self._transcriber.engine if self._transcriber else None,
            "unauthorized_chats": len(self._unauthorized_seen),
            "last_update_at": self._last_update_at,
        }
        if self._app is None:
            return HealthReport(False, "not running", data)
        if self._poll_failures >= _UNHEALTHY_AFTER_FAILURES:
            return HealthReport(False, f"getUpdates failing: {self._last_error}", data)
        return HealthReport(True, f"@{self._username} ({self._mode})", data)

    def _build_application(self) -> TelegramApp:
        application: TelegramApp = (
            ApplicationBuilder()
            .token(self._token)
            .base_url(f"{self._root}/bot")
            .base_file_url(f"{self._root}/file/bot")
            .updater(None)  # we fetch updates ourselves; see the module docstring
            .job_queue(None)
            .build()
        )
        application.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._on_message))
        application.add_handler(CallbackQueryHandler(self._on_callback))
        application.add_error_handler(self._on_handler_error)
        return application

    def _subscribe(self) -> list[Subscription]:
        bus = self._ctx.bus
        return [
            bus.subscribe(EventType.PLAN_CREATED, self._on_plan_created, name="telegram.plan_created"),
            bus.subscribe(EventType.PLAN_EXECUTED, self._on_plan_outcome, name="telegram.plan_executed"),
            bus.subscribe(EventType.PLAN_FAILED, self._on_plan_outcome, name="telegram.plan_failed"),
            bus.subscribe(EventType.APPROVAL_GRANTED, self._on_decided_elsewhere, name="telegram.approved"),
            bus.subscribe(EventType.APPROVAL_DENIED, self._on_decided_elsewhere, name="telegram.rejected"),
        ]

    async def _register_webhook(self, app: TelegramApp) -> None:
        if not self._webhook_url:
            log.info(
                "telegram.webhook_not_registered",
                path=WEBHOOK_PATH,
                hint="no public URL is configured: call setWebhook with this path and the secret yourself",
            )
            return
        secret = self._webhook_secret.decode("utf-8")
        url = self._webhook_url
        await self._call(
            lambda: app.bot.set_webhook(url=url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES)),
            what="telegram setWebhook",
        )

    def _clear_temp_dir(self) -> None:
        """Downloads of a run that crashed before handing them to the intake."""
        if self._temp_dir.is_dir():
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    # -- fetching updates -------------------------------------------------------------------

    async def _poll(self, app: TelegramApp) -> None:
        offset = self._state.offset()
        while not self._stop_requested.is_set():
            try:
                updates = await self._until_stopped(
                    app.bot.get_updates(
                        offset=offset,
                        timeout=self._poll_timeout,
                        limit=100,
                        allowed_updates=list(ALLOWED_UPDATES),
                    )
                )
            except _Stopped:
                return
            except (InvalidToken, Forbidden):
                raise  # the token is wrong or revoked: a crash, reported and retried with backoff
            except RetryAfter as error:
                self._last_error = str(error)
                await self._sleep(_retry_after_seconds(error))
                continue
            except (TelegramError, OSError) as error:
                # Conflict: another process polls this bot; NetworkError/TimedOut: the link.
                level = "warning" if isinstance(error, Conflict | NetworkError) else "error"
                self._poll_failures += 1
                delay = min(self._error_backoff_max, 0.5 * 2 ** min(self._poll_failures, 10))
                self._last_error = describe(error)
                getattr(log, level)("telegram.poll_failed", error=self._last_error, retry_in=delay)
                await self._sleep(delay)
                continue
            self._poll_failures = 0
            for update in updates:
                if offset is not None and update.update_id < offset:
                    continue
                await self.process_update(update)
                offset = update.update_id + 1
                self._state.set_offset(offset)  # durable: a restart starts after this update
                if self._stop_requested.is_set():
                    return

    async def _until_stopped(self, work: Coroutine[Any, Any, T]) -> T:
        task: asyncio.Task[T] = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise _Stopped
        return task.result()

    async def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less if stop() is asked meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), timeout=max(0.0, seconds))

    async def process_update(self, update: Update) -> None:
        """Hand one update to the Application; raise UpdateFailed if it did not become durable."""
        async with self._lock:
            app = self._app
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
        app = self._app
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
            await self.process_update(update)
        except Exception as error:
            log.warning("telegram.webhook_update_failed", update_id=update.update_id, error=describe(error))
            return web.Response(status=500, text="not stored; deliver it again")
        return web.Response(status=200, text="ok")

    # -- messages ---------------------------------------------------------------------------

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None:
            return
        chat_id = message.chat_id
        user = message.from_user
        if chat_id not in self._allowed:
            self._note_unauthorized(chat_id, user, "message")
            return
        source_ref = f"{chat_id}:{message.message_id}"
        known = self._state.action_for_ref(source_ref)
        if known is not None:
            # Handled before (a crash before the offset moved, or a webhook retry): no second action.
            log.info("telegram.duplicate_message", source_ref=source_ref, action_id=known.action_id)
            if not known.acknowledged:
                await self._send(chat_id, f"Received. Saved as action {known.action_id}.", reply_to=message)
                self._state.mark_acknowledged(known)
            return
        content = classify(message)
        if content is None:
            await self._send(chat_id, unsupported_text(), reply_to=message)
            return
        self._submitting += 1
        try:
            prepared = await self._prepare(message, content, source_ref)
            try:
                action_id = await self._ctx.intake.submit(prepared.message)
            finally:
                prepared.cleanup()
            if prepared.pending_reason is not None and content.media is not None:
                # Before the link: once the link exists a redelivery is skipped, so the
                # pending record must already be there.
                self._state.add_pending(
                    PendingTranscription(
                        action_id=action_id,
                        source_ref=source_ref,
                        chat_id=chat_id,
                        message_id=message.message_id,
                        file_id=content.media.file_id,
                        filename=content.media.filename,
                        content_type=content.media.content_type,
                        duration_seconds=content.media.duration_seconds,
                        last_error=prepared.pending_reason,
                    )
                )
            link = ActionLink(action_id=action_id, chat_id=chat_id, message_id=message.message_id)
            self._state.remember_link(link, source_ref)
        finally:
            self._submitting -= 1
        log.info(
            "telegram.action_created",
            action_id=action_id,
            source_ref=source_ref,
            kind=content.kind,
            transcription="pending" if prepared.pending_reason else None,
        )
        self._publish(
            EventType.TELEGRAM_MESSAGE,
            action_id,
            {"action_id": action_id, "source_ref": source_ref, "chat_id": chat_id, "kind": content.kind},
        )
        if prepared.pending_reason is not None:
            self._publish(
                EventType.TRANSCRIPTION_PENDING,
                action_id,
                {"action_id": action_id, "source_ref": source_ref, "reason": prepared.pending_reason},
            )
        await self._send(
            chat_id,
            arrival_text(
                action_id,
                content,
                transcript=prepared.transcript,
                pending_reason=prepared.pending_reason,
                transcription_error=prepared.transcription_error,
                attachment_error=prepared.attachment_error,
            ),
            reply_to=message,
        )
        self._state.mark_acknowledged(link)
        await self._release_held(action_id)

    async def _prepare(self, message: Message, content: Content, source_ref: str) -> _Prepared:
        sender = describe_sender(message.from_user, message.chat.title)
        received = message.date if message.date.tzinfo else message.date.replace(tzinfo=dtm.UTC)
        prepared = _Prepared(
            IncomingMessage(
                source="telegram",
                source_ref=source_ref,
                title="",
                body="",
                received=received,
                sender=sender,
            ),
            content,
        )
        said = content.text
        media = content.media
        if media is not None:
            path = await self._download(media, prepared)
            if path is not None:
                prepared.message.attachments.append(
                    IncomingAttachment(filename=media.filename, path=path, content_type=media.content_type)
                )
            if content.is_speech:
                said = await self._transcribe_new(media, path, prepared)
        body = said
        if content.is_speech and prepared.transcript is not None and content.text:
            body = f"{prepared.transcript.text}\n\nCaption: {content.text}"
        if not body:
            body = self._placeholder_body(content, prepared)
        prepared.message.body = body
        prepared.message.title = make_title(content, said, sender)
        return prepared

    def _placeholder_body(self, content: Content, prepared: _Prepared) -> str:
        media = content.media
        if content.is_speech and media is not None:
            kind = "Voice note" if content.kind == "voice" else "Audio"
            reason = (
                prepared.pending_reason
                or prepared.transcription_error
                or prepared.attachment_error
                or "no speech was recognised"
            )
            return f"{kind} ({format_duration(media.duration_seconds)}) without a transcript: {reason}."
        if content.kind == "photo":
            return "A photo sent without a caption."
        if content.kind == "document" and media is not None:
            return f"The document {media.filename}, sent without a caption."
        return ""

    async def _download(self, media: MediaRef, prepared: _Prepared) -> Path | None:
        """Fetch a file into the vault's private temp folder (same filesystem as Attachments/).

        Transient failures are retried and then raised (the update is fetched again later);
        a refusal (too big, unknown file) is recorded on the action instead: nothing is lost,
        the human sees why the file is missing.
        """
        app = self._require_app()
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        target = self._temp_dir / f"{prepared.message.source_ref.replace(':', '_')}-{media.filename}"
        prepared.temp_files.append(target)

        async def fetch() -> Path:
            telegram_file = await app.bot.get_file(media.file_id)
            saved: Path = await telegram_file.download_to_drive(custom_path=target)
            return saved

        try:
            return await self._call(fetch, what="telegram file download")
        except BadRequest as error:  # "file is too big", "wrong file_id": asking again will not help
            prepared.attachment_error = error.message[:300]
            prepared.message.properties["attachment_error"] = prepared.attachment_error
            log.warning("telegram.file_refused", source_ref=prepared.message.source_ref, error=error.message)
            return None

    async def _transcribe_new(self, media: MediaRef, path: Path | None, prepared: _Prepared) -> str:
        """Transcribe a fresh voice note; on any failure the action is still created, marked pending."""
        properties = prepared.message.properties
        properties["duration_seconds"] = media.duration_seconds
        if path is None:
            properties["transcription"] = "failed"
            return prepared.content.text
        transcriber = self._transcriber
        if transcriber is None:
            prepared.pending_reason = "no OpenAI API key is configured"
        else:
            data = await asyncio.to_thread(path.read_bytes)
            audio = AudioFile(media.filename, data, media.content_type, media.duration_seconds)
            try:
                prepared.transcript = await transcriber.transcribe(audio)
            except TranscriptionError as error:  # this audio will never go through: say so, keep it
                prepared.transcription_error = error.message
                properties["transcription"] = "failed"
                properties["transcription_error"] = error.message
                log.warning(
                    "telegram.transcription_refused",
                    source_ref=prepared.message.source_ref,
                    error=error.message,
                )
                return prepared.content.text
            except ServiceError as error:  # the service is down or the key is wrong: try again later
                prepared.pending_reason = f"transcription failed: {error.message}"
                log.warning(
                    "telegram.transcription_failed",
                    source_ref=prepared.message.source_ref,
                    engine=transcriber.engine,
                    error=error.message,
                )
        if prepared.transcript is None:
            properties["transcription"] = "pending"
            return prepared.content.text
        properties.update(_transcript_properties(prepared.transcript, media.duration_seconds))
        return prepared.transcript.text

    def _note_unauthorized(self, chat_id: int, user: User | None, what: str) -> None:
        if chat_id in self._unauthorized_seen:
            return
        self._unauthorized_seen.add(chat_id)
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

    # -- buttons ----------------------------------------------------------------------------

    async def _on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        user = query.from_user
        parsed = parse_callback(query.data)
        if parsed is None:
            await self._answer(query, "This button is not for me.")
            return
        if user.id not in self._allowed:
            chat_id = query.message.chat.id if query.message is not None else user.id
            self._note_unauthorized(chat_id, user, "button")
            await self._answer(query, "You are not allowed to approve or reject plans.")
            return
        decision, plan_id = parsed
        who = describe_sender(user) or str(user.id)
        self._deciding.add(plan_id)  # the bus's approval event must not edit the message first
        try:
            try:
                if decision == "approve":
                    result = self._ctx.approvals.approve(plan_id)
                else:
                    result = self._ctx.approvals.reject(plan_id, f"rejected in Telegram by {who}")
            except Exception as error:
                log.exception("telegram.decision_failed", plan_id=plan_id, decision=decision)
                await self._answer(query, truncate(f"Could not {decision} {plan_id}: {describe(error)}", 200))
                return
            log.info(
                "telegram.decision",
                plan_id=plan_id,
                decision=decision,
                outcome=result.outcome,
                user_id=user.id,
            )
            await self._answer(query, callback_answer(result))
            if result.outcome != "not_found":
                await self._close_plan_message(plan_id, query, result, who)
        finally:
            self._deciding.discard(plan_id)

    async def _close_plan_message(
        self, plan_id: str, query: CallbackQuery, result: DecisionResult, who: str
    ) -> None:
        """Take the buttons away and say what was decided, on the message that carried them."""
        record = self._state.plan_message(plan_id)
        if record is not None and record.decided:
            return
        message = query.message
        if record is not None:
            chat_id, message_id, text = record.chat_id, record.message_id, record.text
        elif isinstance(message, Message):
            chat_id, message_id, text = message.chat_id, message.message_id, message.text or ""
        else:
            return
        await self._edit(chat_id, message_id, truncate(text + decided_suffix(result, who)))
        if record is not None:
            record.decided = True
            self._state.remember_plan_message(record)

    # -- plans and outcomes from the bus ----------------------------------------------------

    async def _on_plan_created(self, event: Event) -> None:
        plan_id = str(event.payload.get("plan_id") or "")
        action_id = event.correlation_id or str(event.payload.get("action_id") or "")
        if not plan_id or not action_id or self._app is None:
            return
        link = self._state.link(action_id)
        if link is None:
            hinted = _link_from(action_id, event.payload)
            if self._submitting and (hinted is not None or not event.payload.get("source")):
                # A fast pipeline planned before submit() returned: answer "received" first.
                self._held.append(event)
                return
            link = hinted or self._find_link(action_id)
        if link is not None:
            await self._announce_plan(link, plan_id, event.payload)

    async def _release_held(self, action_id: str) -> None:
        """Announce the plans held back while an action was being stored."""
        ready = [event for event in self._held if event.correlation_id == action_id or not self._submitting]
        for event in ready:
            self._held.remove(event)
        for event in ready:
            await self._on_plan_created(event)

    async def _announce_plan(self, link: ActionLink, plan_id: str, payload: Mapping[str, Any]) -> None:
        if plan_id in self._announcing or self._state.plan_message(plan_id) is not None:
            return
        self._announcing.add(plan_id)
        try:
            status = payload.get("status")
            if isinstance(status, str) and status not in ("", "pending_approval"):
                text = truncate(f"Plan {plan_id} was created ({status}); no decision is needed.")
                await self._send(link.chat_id, text, reply_to=link.message_id)
                return
            keyboard = decision_keyboard(plan_id)
            text = plan_text(plan_id, payload) if keyboard else plan_text_without_buttons(plan_id, payload)
            sent = await self._send(link.chat_id, text, reply_to=link.message_id, reply_markup=keyboard)
            if sent is not None:
                self._state.remember_plan_message(
                    PlanMessage(plan_id, link.action_id, link.chat_id, sent.message_id, text)
                )
        finally:
            self._announcing.discard(plan_id)

    async def _on_plan_outcome(self, event: Event) -> None:
        if event.id in self._seen_outcomes or self._app is None:
            return
        self._seen_outcomes.append(event.id)
        plan_id = str(event.payload.get("plan_id") or "")
        action_id = event.correlation_id or str(event.payload.get("action_id") or "")
        link = self._find_link(action_id) if action_id else None
        if link is None or not plan_id:
            return
        if event.type == EventType.PLAN_EXECUTED:
            text = executed_text(plan_id, event.payload)
        else:
            text = failed_text(plan_id, event.payload)
        await self._send(link.chat_id, text, reply_to=link.message_id)
        await self._retire_buttons(plan_id, "Approved outside Telegram.")

    async def _on_decided_elsewhere(self, event: Event) -> None:
        """A plan decided in Obsidian, the CLI, Slack or by auto-approval: its buttons go."""
        plan_id = str(event.payload.get("plan_id") or "")
        if not plan_id or plan_id in self._deciding or self._app is None:
            return
        granted = event.type == EventType.APPROVAL_GRANTED
        await self._retire_buttons(
            plan_id, "Approved outside Telegram." if granted else "Rejected outside Telegram."
        )

    async def _retire_buttons(self, plan_id: str, note: str) -> None:
        record = self._state.plan_message(plan_id)
        if record is None or record.decided:
            return
        record.decided = True
        self._state.remember_plan_message(record)
        await self._edit(record.chat_id, record.message_id, truncate(f"{record.text}\n\n{note}"))

    def _find_link(self, action_id: str) -> ActionLink | None:
        """The chat of an action: our own record, else the ledger's source_ref for Telegram actions."""
        link = self._state.link(action_id)
        if link is not None:
            return link
        return _link_from(action_id, self._action_info(action_id))

    def _action_info(self, action_id: str) -> Mapping[str, Any] | None:
        try:
            return self._ctx.actions.action_info(action_id)
        except Exception:
            log.exception("telegram.action_lookup_failed", action_id=action_id)
            return None

    # -- voice notes waiting for a transcript -----------------------------------------------

    async def _pending_loop(self) -> None:
        """Transcribe what waited: at start, then every `pending_retry_seconds` while any remain.

        Without a transcriber there is nothing to retry until the daemon is restarted with a
        key (settings are read once), so the loop says how many wait and ends.
        """
        while not self._stop_requested.is_set():
            try:
                await self.transcribe_pending()
            except Exception:
                log.exception("telegram.pending_transcriptions_failed")
            if self._transcriber is None:
                return
            await self._sleep(self._pending_retry_seconds)

    async def transcribe_pending(self) -> int:
        """Transcribe every pending voice note now; returns how many were done."""
        pending = self._state.pending_transcriptions()
        transcriber = self._transcriber
        if not pending:
            return 0
        if transcriber is None:
            log.info(
                "telegram.transcriptions_waiting",
                count=len(pending),
                hint="set OPENAI_API_KEY (or telegram.local_whisper_model) to transcribe them",
            )
            return 0
        done = 0
        for item in pending:
            if self._stop_requested.is_set():
                break
            try:
                audio = await self._pending_audio(item)
                transcript = await transcriber.transcribe(audio)
            except (TranscriptionError, BadRequest) as error:  # refused for good: say so, stop trying
                log.warning(
                    "telegram.pending_transcription_refused", action_id=item.action_id, error=error.message
                )
                self._state.remove_pending(item.action_id)
                await self._send(
                    item.chat_id,
                    truncate(f"Your voice note ({item.action_id}) could not be transcribed: {error.message}"),
                    reply_to=item.message_id,
                )
                continue
            except (ServiceError, TelegramError, OSError) as error:
                item.attempts += 1
                item.last_error = describe(error)
                self._state.update_pending(item)
                log.warning(
                    "telegram.pending_transcription_failed", action_id=item.action_id, error=item.last_error
                )
                if isinstance(error, ServiceAuthError):
                    break
                continue
            self._publish_transcript(item, transcript)
            done += 1
            await self._send(item.chat_id, transcribed_text(transcript), reply_to=item.message_id)
        return done

    async def _pending_audio(self, item: PendingTranscription) -> AudioFile:
        """The original from the vault when the ledger says where it is, else from Telegram again."""
        data = self._audio_from_vault(item)
        if data is None:
            app = self._require_app()

            async def fetch() -> bytes:
                telegram_file = await app.bot.get_file(item.file_id)
                return bytes(await telegram_file.download_as_bytearray())

            data = await self._call(fetch, what="telegram file download")
        return AudioFile(item.filename, data, item.content_type, item.duration_seconds)

    def _audio_from_vault(self, item: PendingTranscription) -> bytes | None:
        """The kept original: the ledger's attachment paths, else the action note's `attachments`."""
        info = self._action_info(item.action_id)
        if not info:
            return None
        root = self._ctx.vault_root.resolve()
        entries = info.get("attachments")
        if not isinstance(entries, list | tuple):
            entries = _note_attachments(root, info.get("note"))
        suffix = Path(item.filename).suffix.lower()
        candidates: list[Path] = []
        for entry in entries:
            name = str(entry).strip().removeprefix("[[").removesuffix("]]").split("|", 1)[0]
            path = (root / name).resolve() if name else root
            if path != root and path.is_relative_to(root) and path.is_file():
                candidates.append(path)
        candidates.sort(key=lambda path: path.suffix.lower() != suffix)
        for path in candidates:
            with contextlib.suppress(OSError):
                return path.read_bytes()
        return None

    def _publish_transcript(self, item: PendingTranscription, transcript: Transcript) -> None:
        """TRANSCRIPTION_COMPLETED: an action stored as pending now has its transcript.

        Only for late transcripts: a note written with its transcript needs no event. The
        pipeline updates the note (body, cost, duration) and plans again. Events are hints,
        so the payload is first kept in the state store (`telegram` / `transcript:<action id>`),
        then the item leaves the pending list, then the event goes out.
        """
        payload: dict[str, Any] = {
            "action_id": item.action_id,
            "source": "telegram",
            "source_ref": item.source_ref,
            "transcript": transcript.text,
            **_transcript_properties(transcript, item.duration_seconds),
        }
        self._state.save_transcript(item.action_id, payload)
        self._state.remove_pending(item.action_id)
        self._publish(EventType.TRANSCRIPTION_COMPLETED, item.action_id, payload)

    # -- talking to Telegram ----------------------------------------------------------------

    def _require_app(self) -> TelegramApp:
        if self._app is None:
            raise UpdateFailed("the telegram service is not running")
        return self._app

    async def _send(
        self,
        chat_id: int,
        text: str,
        *,
        reply_to: Message | int | None = None,
        reply_markup: InlineKeyboardMarkup | None = None,
    ) -> Message | None:
        """Send a message; a failure is logged, never raised: answers are courtesy, the note is the record."""
        app = self._app
        if app is None:
            return None
        reply_id = reply_to.message_id if isinstance(reply_to, Message) else reply_to
        reply = (
            ReplyParameters(message_id=reply_id, allow_sending_without_reply=True)
            if reply_id is not None
            else None
        )
        return await self._courtesy(
            lambda: app.bot.send_message(
                chat_id=chat_id, text=truncate(text), reply_parameters=reply, reply_markup=reply_markup
            ),
            what="telegram sendMessage",
            chat_id=chat_id,
        )

    async def _edit(self, chat_id: int, message_id: int, text: str) -> None:
        app = self._app
        if app is None:
            return
        await self._courtesy(
            lambda: app.bot.edit_message_text(
                text=text, chat_id=chat_id, message_id=message_id, reply_markup=None
            ),
            what="telegram editMessageText",
            chat_id=chat_id,
        )

    async def _answer(self, query: CallbackQuery, text: str) -> None:
        await self._courtesy(
            lambda: query.answer(text=text), what="telegram answerCallbackQuery", chat_id=None
        )

    async def _courtesy(
        self, call: Callable[[], Awaitable[T]], *, what: str, chat_id: int | None
    ) -> T | None:
        try:
            return await self._call(call, what=what)
        except (ServiceError, TelegramError) as error:
            log.warning("telegram.reply_failed", what=what, chat_id=chat_id, error=describe(error))
            return None

    async def _call(self, operation: Callable[[], Awaitable[T]], *, what: str) -> T:
        """The one retry policy around a Bot API call; transient failures only.

        The operation is wrapped in a coroutine function because tenacity awaits only those:
        a lambda returning a coroutine would come back unawaited.
        """

        async def attempt() -> T:
            return await operation()

        return await self._retry.call(attempt, what=what, retry_on=_is_transient)

    def _publish(self, event_type: EventType, action_id: str | None, payload: dict[str, Any]) -> None:
        self._ctx.bus.publish(Event(event_type, payload, correlation_id=action_id, source=EVENT_SOURCE))


def _link_from(action_id: str, info: Mapping[str, Any] | None) -> ActionLink | None:
    """An action's chat from a ledger row or an event payload that names its Telegram source_ref."""
    if not info or info.get("source") != "telegram":
        return None
    chat, _, message = str(info.get("source_ref") or "").partition(":")
    try:
        return ActionLink(action_id, int(chat), int(message), acknowledged=True)
    except ValueError:
        return None


def _note_attachments(root: Path, note: Any) -> list[str]:
    """The `attachments` property of an action note (vault-relative path), or [] if unreadable."""
    if not isinstance(note, str) or not note:
        return []
    path = (root / note).resolve()
    if not path.is_relative_to(root):
        return []
    try:
        properties, _ = parse_note(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, NoteError):
        return []
    found = properties.get("attachments")
    return [str(entry) for entry in found] if isinstance(found, list) else []


def _transcript_properties(transcript: Transcript, fallback_seconds: int) -> dict[str, Any]:
    seconds = round(transcript.duration_seconds) or fallback_seconds
    return {
        "transcription": "done",
        "duration_seconds": int(seconds),
        "transcript_cost_usd": transcript.cost_usd,
        "transcribed_by": transcript.engine,
    }


def create(ctx: ServiceContext) -> TelegramService:
    """Entry point `ai_employee.services: telegram`. Off (PluginDisabled) without a bot token.

    In webhook mode the public URL to register comes from `telegram.webhook_url` once the
    settings have it; until then the webhook is registered by hand (see the log at start).
    """
    webhook_url = getattr(ctx.settings.telegram, "webhook_url", None)
    return TelegramService(ctx, webhook_url=webhook_url if isinstance(webhook_url, str) else None)
