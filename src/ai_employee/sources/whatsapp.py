"""The WhatsApp source and door, on Meta's official WhatsApp Business Cloud API (docs/whatsapp.md).

Webhooks come in, Graph API calls go out:
- `GET /whatsapp/webhook` answers Meta's subscription check (`hub.challenge` echoed when
  `hub.verify_token` is WHATSAPP_VERIFY_TOKEN, 403 otherwise).
- `POST /whatsapp/webhook` checks `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with
  WHATSAPP_APP_SECRET, constant time) before anything is parsed: 401 otherwise. A verified
  delivery is written durably to the spool (whatsapp_spool) and answered 200 at once, whatever
  the pipeline is doing; a worker then turns it into actions (whatsapp_intake), exactly once per
  message id. A SIGKILL after the 200 leaves the delivery in the spool for the next run; one
  before it makes Meta deliver again.
- Plans of WhatsApp actions go to their sender with Approve / Reject reply buttons
  (whatsapp_decisions); everything sent goes through one queue (whatsapp_outbox), which backs off
  on 429/5xx and keeps to Meta's 24-hour window.

The routes are served on the control port and, when `webhooks.port` is set, on the public webhook
listener (control/webhooks.py), which serves nothing else. Nothing outside holds up the start:
the service is ready at once; its link says whether the Graph API answered (`GET /{phone-number-id}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import hmac
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from ai_employee.clients.link import OutsideLink, describe_target
from ai_employee.clients.retry import RetryPolicy, ServiceError, describe
from ai_employee.clients.whatsapp import WhatsAppGraph
from ai_employee.clients.whisper import Transcriber, build_transcriber
from ai_employee.model.bus import Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.services import HealthReport, LinkStatus, Service, ServiceContext, ServiceState
from ai_employee.sources.whatsapp_decisions import Decisions
from ai_employee.sources.whatsapp_intake import Access, DeliveryIntake
from ai_employee.sources.whatsapp_notes import NoteRemarks
from ai_employee.sources.whatsapp_outbox import Outbox
from ai_employee.sources.whatsapp_spool import Spool
from ai_employee.sources.whatsapp_state import WhatsAppState
from ai_employee.sources.whatsapp_transcription import PendingList, PendingTranscriptions
from ai_employee.sources.whatsapp_wire import SIGNATURE_HEADER, parse_delivery, signature_valid

log = structlog.get_logger("ai_employee.sources.whatsapp")

EVENT_SOURCE = "whatsapp"
WEBHOOK_PATH = "/whatsapp/webhook"
TEMP_FOLDER = Path(".ai-employee") / "whatsapp" / "media"
#: a delivery that fails this often (not a passing outage: our bug, or data we cannot take) is set aside
MAX_DELIVERY_ATTEMPTS = 5
#: how long a stopping service goes on sending what is queued
DRAIN_SECONDS = 5.0


class WhatsAppService(Service):
    name = "whatsapp"
    required = False  # an unreachable Graph API must not make the whole daemon unready

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        retry: RetryPolicy | None = None,
        transcriber_factory: Callable[[], Transcriber | None] | None = None,
        pending_retry_seconds: float = 300.0,
    ) -> None:
        super().__init__()
        settings = ctx.settings.whatsapp
        needed = {
            "WHATSAPP_ACCESS_TOKEN": settings.access_token.get_secret_value()
            if settings.access_token
            else "",
            "WHATSAPP_PHONE_NUMBER_ID": settings.phone_number_id or "",
            "WHATSAPP_APP_SECRET": settings.app_secret.get_secret_value() if settings.app_secret else "",
            "WHATSAPP_VERIFY_TOKEN": settings.verify_token.get_secret_value()
            if settings.verify_token
            else "",
        }
        missing = [name for name, value in needed.items() if not value]
        if missing:
            names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
            raise PluginDisabled(f"{names} {'is' if len(missing) == 1 else 'are'} not set")
        self._ctx = ctx
        self._settings = settings
        self._token = needed["WHATSAPP_ACCESS_TOKEN"]
        self._phone_number_id = needed["WHATSAPP_PHONE_NUMBER_ID"]
        self._app_secret = needed["WHATSAPP_APP_SECRET"].encode("utf-8")
        self._verify_token = needed["WHATSAPP_VERIFY_TOKEN"].encode("utf-8")
        self._services = ctx.settings.services
        self._retry = retry or RetryPolicy.for_services(self._services)
        self._transcriber_factory = transcriber_factory or (
            lambda: build_transcriber(ctx.settings, retry=self._retry, work=ctx.transcription)
        )
        self._temp_dir = ctx.vault_root / TEMP_FOLDER

        self._stop_requested = asyncio.Event()
        self._running = False
        self._graph: WhatsAppGraph | None = None
        self._transcriber: Transcriber | None = None
        self._last_delivery_at: str | None = None
        self._attempts: dict[str, int] = {}
        self._link = OutsideLink(
            name=self.name,
            target=describe_target("WhatsApp Graph API", settings.api_base_url),
            settings=self._services,
            bus=ctx.bus,
        )

        self._spool = Spool(ctx.vault_root)
        self._state = WhatsAppState(ctx.state)
        self._notes = NoteRemarks(ctx.vault_root, self._action_info)
        self._outbox = Outbox(
            graph=lambda: self._graph,
            state=self._state,
            notes=self._notes,
            publish=self._publish,
            template=settings.reply_template,
            template_language=settings.reply_template_language,
        )
        self._access = Access(settings.allowed_numbers, self._publish)
        self._decisions = Decisions(
            state=self._state, outbox=self._outbox, approvals=ctx.approvals, action_info=self._action_info
        )
        pending = PendingList(ctx.state)
        self._transcriptions = PendingTranscriptions(
            pending=pending,
            vault_root=ctx.vault_root,
            temp_dir=self._temp_dir,
            graph=lambda: self._graph,
            transcriber=lambda: self._transcriber,
            action_info=self._action_info,
            outbox=self._outbox,
            publish=self._publish,
            stop_requested=self._stop_requested,
            retry_seconds=pending_retry_seconds,
        )
        self._pending = pending
        self._intake = DeliveryIntake(
            intake=ctx.intake,
            state=self._state,
            graph=lambda: self._graph,
            access=self._access,
            decisions=self._decisions,
            outbox=self._outbox,
            transcriber=lambda: self._transcriber,
            publish=self._publish,
            temp_dir=self._temp_dir,
            pending=pending,
        )
        ctx.routes.add_route("GET", WEBHOOK_PATH, self.handle_verification)
        ctx.routes.add_route("POST", WEBHOOK_PATH, self.handle_delivery)

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Ready at once; the spool is worked through while the Graph API is reached (and again,
        with the link's backoff, until it answers)."""
        self._stop_requested.clear()
        self._running = True
        self.ready.set()
        removed = await asyncio.to_thread(self._spool.clear_temps)
        if removed:
            log.info("whatsapp.spool_temps_removed", count=removed)
        self._clear_media_dir()
        self._graph = WhatsAppGraph(
            base_url=self._settings.api_base_url,
            access_token=self._token,
            phone_number_id=self._phone_number_id,
            connect_timeout=self._services.connect_timeout,
            read_timeout=self._services.read_timeout,
            retry=self._retry,
            link=self._link,
            max_media_bytes=self._settings.max_media_bytes,
        )
        subscriptions: list[Subscription] = []
        tasks: list[asyncio.Task[None]] = []
        try:
            self._transcriber = self._transcriber_factory()
            subscriptions = self._decisions.subscribe(self._ctx.bus)
            tasks = [
                asyncio.create_task(self._outbox.run(), name="whatsapp:outbox"),
                asyncio.create_task(self._connect(), name="whatsapp:connect"),
                asyncio.create_task(self._transcriptions.run(), name="whatsapp:pending-transcriptions"),
            ]
            log.info(
                "whatsapp.started",
                phone_number_id=self._phone_number_id,
                allowed_numbers=len(self._access.allowed),
                transcriber=self._transcriber.engine if self._transcriber else None,
                waiting_deliveries=len(self._spool.pending()),
            )
            if not self._access.allowed:
                log.warning(
                    "whatsapp.no_allowed_numbers",
                    hint="set WHATSAPP_ALLOWED_NUMBERS; every message is ignored until then",
                )
            await self._work_the_spool()
            with contextlib.suppress(TimeoutError):  # what is queued goes out, unless the API is down
                await asyncio.wait_for(self._outbox.drain(), DRAIN_SECONDS)
        finally:
            self._running = False
            for subscription in subscriptions:
                self._ctx.bus.unsubscribe(subscription)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            graph, self._graph = self._graph, None
            if graph is not None:
                await graph.aclose()
            transcriber, self._transcriber = self._transcriber, None
            if transcriber is not None:
                await transcriber.aclose()
            log.info("whatsapp.stopped")

    async def stop(self) -> None:
        """Finish the delivery in hand, send what is queued, stop."""
        self._stop_requested.set()
        self._spool.arrived.set()

    def link(self) -> LinkStatus | None:
        return self._link.status()

    async def health(self) -> HealthReport:
        link = self._link.status()
        data: dict[str, Any] = {
            "phone_number_id": self._phone_number_id,
            "webhook_path": WEBHOOK_PATH,
            "target": link.target,
            "attempts": link.attempts,
            "waiting_deliveries": len(self._spool.pending()),
            "outbox": self._outbox.waiting,
            "sent": self._outbox.sent_count,
            "replies_failed": self._outbox.failed_count,
            "unauthorized_numbers": len(self._access.unauthorized_seen),
            "transcriber": self._transcriber.engine if self._transcriber else None,
            "pending_transcriptions": len(self._pending.items()),
            "last_delivery_at": self._last_delivery_at,
        }
        if link.last_error:
            data["last_error"] = link.last_error
        if not self._running:
            return HealthReport(False, "not running", data)
        if link.state is ServiceState.RETRYING:
            return HealthReport(False, f"retrying: {link.last_error}", data)
        if link.state is not ServiceState.RUNNING:
            return HealthReport(False, f"connecting to {link.target}", data)
        return HealthReport(True, f"phone number {self._phone_number_id}", data)

    async def _connect(self) -> None:
        """`GET /{phone-number-id}` until it answers: the token works and the number is ours."""
        while not self._stop_requested.is_set():
            graph = self._graph
            if graph is None:
                return
            self._link.connecting()
            try:
                number = await graph.check()
            except ServiceError as error:
                delay = self._link.failed(describe(error))
                if await self._link.wait(delay, self._stop_requested):
                    return
                continue
            self._link.connected()
            log.info(
                "whatsapp.connected",
                number=number.get("display_phone_number"),
                name=number.get("verified_name"),
            )
            return

    def _clear_media_dir(self) -> None:
        """Downloads of a run that crashed before handing them to the intake."""
        if self._temp_dir.is_dir():
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    async def transcribe_pending(self) -> int:
        """Transcribe every waiting voice note now; returns how many were done."""
        return await self._transcriptions.transcribe_pending()

    # -- the spool ----------------------------------------------------------------------------

    async def _work_the_spool(self) -> None:
        """Process the stored deliveries, oldest first, until stop(); wait for more."""
        backoff = self._services.initial_backoff
        while not self._stop_requested.is_set():
            self._spool.arrived.clear()
            waiting = self._spool.pending()
            if not waiting:
                await self._spool.arrived.wait()
                continue
            for path in waiting:
                if self._stop_requested.is_set():
                    return
                if await self._process_file(path):
                    backoff = self._services.initial_backoff
                    continue
                # a passing failure: wait, then start over from the oldest
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), backoff)
                backoff = min(backoff * 2, self._services.max_backoff)
                break

    async def _process_file(self, path: Path) -> bool:
        """True when the delivery is done with (processed, or set aside)."""
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return True
        try:
            payload = json.loads(raw)
        except ValueError as error:
            kept = await asyncio.to_thread(self._spool.give_up, path)
            log.error("whatsapp.delivery_not_json", kept=str(kept), error=str(error))
            return True
        try:
            await self._intake.process(parse_delivery(payload))
        except Exception as error:
            attempts = self._attempts.get(path.name, 0) + 1
            self._attempts[path.name] = attempts
            if attempts >= MAX_DELIVERY_ATTEMPTS:
                kept = await asyncio.to_thread(self._spool.give_up, path)
                log.error(
                    "whatsapp.delivery_set_aside", kept=str(kept), attempts=attempts, error=describe(error)
                )
                self._attempts.pop(path.name, None)
                return True
            log.warning(
                "whatsapp.delivery_failed", delivery=path.name, attempts=attempts, error=describe(error)
            )
            return False
        self._attempts.pop(path.name, None)
        await asyncio.to_thread(self._spool.done, path)
        return True

    # -- the webhook --------------------------------------------------------------------------

    async def handle_verification(self, request: web.Request) -> web.StreamResponse:
        """GET /whatsapp/webhook: Meta's subscription check."""
        mode = request.query.get("hub.mode", "")
        given = request.query.get("hub.verify_token", "").encode("utf-8")
        challenge = request.query.get("hub.challenge", "")
        if mode == "subscribe" and hmac.compare_digest(given, self._verify_token):
            log.info("whatsapp.webhook_verified")
            return web.Response(status=200, text=challenge, content_type="text/plain")
        log.warning("whatsapp.webhook_verification_refused", remote=request.remote, mode=mode)
        return web.Response(status=403, text="forbidden")

    async def handle_delivery(self, request: web.Request) -> web.StreamResponse:
        """POST /whatsapp/webhook: the signature first, then the raw body to the spool, then 200."""
        header = request.headers.get(SIGNATURE_HEADER)
        if not header:
            log.warning("whatsapp.webhook_unsigned", remote=request.remote)
            return web.Response(status=401, text="missing signature")
        body = await request.read()
        if not signature_valid(self._app_secret, body, header):
            log.warning("whatsapp.webhook_bad_signature", remote=request.remote)
            return web.Response(status=401, text="bad signature")
        try:
            await self._spool.put(body)
        except OSError as error:
            log.error("whatsapp.webhook_not_stored", error=str(error))
            return web.Response(status=500, text="not stored; deliver it again")
        self._last_delivery_at = dtm.datetime.now(dtm.UTC).isoformat(timespec="seconds")
        return web.Response(status=200, text="ok")

    # -- what the parts share -----------------------------------------------------------------

    def _action_info(self, action_id: str) -> Any:
        try:
            return self._ctx.actions.action_info(action_id)
        except Exception:
            log.exception("whatsapp.action_lookup_failed", action_id=action_id)
            return None

    def _publish(self, event_type: EventType, action_id: str | None, payload: dict[str, Any]) -> None:
        self._ctx.bus.publish(Event(event_type, payload, correlation_id=action_id, source=EVENT_SOURCE))


def create(ctx: ServiceContext) -> WhatsAppService:
    """Entry point `ai_employee.services: whatsapp`. Off (PluginDisabled) without its variables."""
    return WhatsAppService(ctx)
