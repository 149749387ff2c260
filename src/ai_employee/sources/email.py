"""The email source: every new message in an IMAP folder becomes one action, through the intake.

How it works, and why:
- IDLE for push (a new message is taken within a second), polling every
  `poll_interval_seconds` where the server has no IDLE. IMAPClient (a blocking library with
  robust response parsing, XOAUTH2 and IDLE) runs in one worker thread of our own; IDLE
  waits in short slices, so `stop()` takes effect within about a second.
- Identity is UIDVALIDITY:UID. The highest UID handed to the intake is kept per
  UIDVALIDITY in the durable state, so a restart takes nothing twice (and the intake is
  idempotent per source_ref anyway). A message is marked \\Seen (or moved) only after
  `intake.submit` returned, that is once its action note is durable: a crash in between
  means the message is submitted again, which the intake turns into the same action.
- "New" means unseen and above the checkpoint: on the first run that is every unseen
  message in the folder; mail a person already read is left alone.
- The raw message is downloaded in chunks to a spool file and parsed from there
  (`mail_parsing`), so a 20 MB attachment is never held in memory; large attachments are
  handed to the intake as files. Odd mail still becomes an action, with a line saying
  what could not be read, and the original .eml attached.
- Ready as soon as the run starts: the server is reached in the background, and its
  state (connecting, connected, retrying with the reason) is the `OutsideLink`'s, which
  status shows. Every IMAP step has a deadline (`email_mailbox`), so a server that accepts
  and never answers costs `services.connect_timeout` per attempt; attempts are spaced by
  the link's jittered backoff, capped by `services.max_backoff` (a failed login too).
  When the server is back, the next attempt connects and takes the mail that waited.
  A failure once connected that is not the server's or the line's is a crash for the
  orchestrator to restart.
- Optional replies to the sender with the outcome (`email_replies`), dry-run by default:
  only to senders on `allowed_senders`, never to automatic mail (RFC 3834).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from ai_employee.clients.link import OutsideLink
from ai_employee.clients.smtp_reply import ReplySender
from ai_employee.model.events import Event, EventType
from ai_employee.model.messages import IncomingAttachment, IncomingMessage
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.services import HealthReport, LinkStatus, Service, ServiceContext, ServiceState
from ai_employee.sources.email_mailbox import SEARCH_WINDOW, Mailbox, MessageMeta
from ai_employee.sources.email_replies import OutcomeReplies, reply_sender_from
from ai_employee.sources.mail_parsing import ParsedMail, parse_mail

log = structlog.get_logger(__name__)

T = TypeVar("T")

STATE_NAMESPACE: Final = "email"
SPOOL: Final = Path(".ai-employee") / "spool" / "email"
DEGRADE_AFTER_FAILURES: Final = 3
#: IDLE is ended and begun again this often; the answer to DONE is the keepalive
IDLE_RENEW_SECONDS: Final = 300.0


class IntakeFailed(Exception):
    """intake.submit raised: the message stays unseen and is taken again after a backoff."""


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, OSError | imaplib.IMAP4.error | TimeoutError | IntakeFailed)


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, IntakeFailed) and error.__cause__ is not None:
        cause = error.__cause__
        text = f"{text}: {type(cause).__name__}: {cause}"
    return text[:300]


def sender_allowed(address: str | None, allowed: list[str]) -> bool:
    """Whether a sender is trusted: everyone when the list is empty.

    Entries are addresses (`boss@example.com`) or whole domains (`@example.com`).
    The From header can be forged; this marks the action for the planner, it is no proof.
    """
    if not allowed:
        return True
    if not address:
        return False
    address = address.lower()
    domain = address.rpartition("@")[2]
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry.startswith("@") and domain == entry[1:]:
            return True
        if entry == address:
            return True
    return False


class EmailSource(Service):
    """Watches one IMAP folder and hands each new message to the intake."""

    name = "email"
    required = False  # the daemon is useful while the mail server is away

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_slice_seconds: float = 1.0,
        idle_renew_seconds: float = IDLE_RENEW_SECONDS,
        chunk_bytes: int = 2 * 1024 * 1024,
        max_message_bytes: int = 64 * 1024 * 1024,
        search_window: int = SEARCH_WINDOW,
        batch_size: int = 500,
        reply_sender: ReplySender | None = None,
    ) -> None:
        super().__init__()
        # IMAPClient's DEBUG trace holds whole messages (20 MB bodies, private mail): never log it.
        logging.getLogger("imapclient").setLevel(max(logging.INFO, logging.getLogger("imapclient").level))
        self._ctx = ctx
        self._settings = ctx.settings.email
        self._services = ctx.settings.services
        self._ssl_context = ssl_context
        self._idle_slice = idle_slice_seconds
        self._idle_renew = idle_renew_seconds
        self._chunk = chunk_bytes
        self._max_message = max_message_bytes
        self._search_window = search_window
        self._batch_size = batch_size
        self._replies = OutcomeReplies(ctx, reply_sender or reply_sender_from(ctx.settings))
        self._stopping = asyncio.Event()
        self._spool = ctx.vault_root / SPOOL
        self._executor: ThreadPoolExecutor | None = None
        self._mailbox: Mailbox | None = None
        port = self._settings.port or (993 if self._settings.ssl else 143)
        self._link = OutsideLink(
            self.name, f"IMAP {self._settings.host}:{port}", settings=self._services, bus=ctx.bus
        )
        self._intake_failures = 0
        self._intake_trouble: str | None = None  # the server is fine; the vault side refused a message
        self._message_failures: dict[str, tuple[int, str]] = {}  # source_ref -> (failures, last error)
        self._running = False
        self._detail = "not connected yet"
        self._mode = ""
        self._activity = "connecting"
        self._taken = 0
        self._last_uid: int | None = None
        self._uidvalidity: int | None = None

    # -- the Service interface ---------------------------------------------------------------

    async def run(self) -> None:
        """Ready at once: reaching the server is this source's own business, with a deadline on
        every step and the link's backoff between attempts; an unreachable server never ends the
        run."""
        self._stopping.clear()
        self._running = True
        self.ready.set()
        self._prepare_spool()
        self._replies.start()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-email")
        try:
            while not self._stopping.is_set():
                mailbox = Mailbox(
                    self._settings,
                    ssl_context=self._ssl_context,
                    connect_timeout=self._services.connect_timeout,
                    read_timeout=self._services.read_timeout,
                    search_window=self._search_window,
                )
                self._link.connecting()
                self._activity = "connecting"
                try:
                    await self._session(mailbox)
                except Exception as error:
                    if self._stopping.is_set():
                        break
                    if mailbox.opened and not _is_transient(error):
                        raise  # a bug, not the server: the orchestrator restarts the source
                    await self._after_failure(mailbox, error)
        finally:
            self._running = False
            self._activity = "stopped"
            self._replies.stop()
            mailbox_left, self._mailbox = self._mailbox, None
            if mailbox_left is not None:
                mailbox_left.abort()  # a cancelled run may leave the worker blocked on the socket
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def stop(self) -> None:
        """Finish the message in hand; a connect, handshake or login under way is cut off at once
        (it would otherwise hold the stop for up to `services.connect_timeout`)."""
        self._stopping.set()
        mailbox = self._mailbox
        if mailbox is not None and not mailbox.opened:
            mailbox.abort()

    def link(self) -> LinkStatus:
        return self._link.status()

    async def health(self) -> HealthReport:
        link = self._link.status()
        data: dict[str, Any] = {
            "folder": self._settings.folder,
            "mode": self._mode or None,
            "activity": self._activity,
            "messages_taken": self._taken,
            "uidvalidity": self._uidvalidity,
            "last_uid": self._last_uid,
            "target": link.target,
            "attempts": link.attempts,
        }
        connected = link.state is ServiceState.RUNNING
        if not self._running:
            detail = "stopped"
        elif link.state is ServiceState.RETRYING:
            detail = f"retrying: {link.last_error}; next attempt in {_seconds_until(link.next_attempt)}"
        elif not connected:
            detail = f"connecting to {link.target}"
            if link.last_error:
                detail += f" (last error: {link.last_error})"
        elif self._intake_trouble:
            detail = f"connected, but the intake refused a message: {self._intake_trouble}; trying again"
        else:
            detail = self._detail
        last_error = self._intake_trouble if connected else link.last_error
        if last_error:
            data["last_error"] = last_error
        healthy = self._running and connected and self._intake_trouble is None
        return HealthReport(healthy=healthy, detail=detail, data=data)

    # -- connection lifecycle ----------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(function, *args))

    async def _session(self, mailbox: Mailbox) -> None:
        """One connection: take what is new, then wait for more, until stopped or broken."""
        self._mailbox = mailbox
        where = f"{self._settings.folder} on {self._settings.host}"
        try:
            info = await self._call(mailbox.open)
            self._link.connected()
            self._uidvalidity = info.uidvalidity
            self._mode = "idle" if info.idle else "poll"
            self._activity = "working"
            self._detail = (
                f"waiting for mail in {where} (IDLE)"
                if info.idle
                else f"checking {where} every {self._settings.poll_interval_seconds:g} s (no IDLE)"
            )
            log.info(
                "email.connected",
                folder=self._settings.folder,
                host=self._settings.host,
                uidvalidity=info.uidvalidity,
                mode=self._mode,
            )
            while not self._stopping.is_set():
                await self._take_waiting(mailbox, info.uidvalidity)
                if self._stopping.is_set():
                    break
                if info.idle:
                    await self._idle(mailbox)
                else:
                    await self._poll_wait(mailbox)
        except BaseException:
            mailbox.abort()  # no polite logout on a line that failed: it could hang too
            raise
        finally:
            self._mailbox = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._call(mailbox.close), timeout=self._services.connect_timeout)
        mailbox.abort()

    async def _idle(self, mailbox: Mailbox) -> None:
        """IDLE until new mail, stop, or the renew interval: servers drop idlers after 30 min, and
        the answer to DONE, due within `services.read_timeout`, shows that the server is still
        there (a silent one is found within renew + read_timeout)."""
        loop = asyncio.get_running_loop()
        await self._call(mailbox.idle_start)
        renew_at = loop.time() + self._idle_renew
        self._activity = "idle"
        try:
            while not self._stopping.is_set() and loop.time() < renew_at:
                if await self._call(mailbox.idle_wait, self._idle_slice):
                    break
        finally:
            self._activity = "working"
        await self._call(mailbox.idle_done)  # not after an error: the session is over then

    async def _poll_wait(self, mailbox: Mailbox) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=self._settings.poll_interval_seconds)
        if not self._stopping.is_set():
            await self._call(mailbox.noop)

    async def _after_failure(self, mailbox: Mailbox, error: BaseException) -> None:
        """The server could not be reached, refused the login, or the line broke: wait the link's
        backoff (capped by services.max_backoff), then try again."""
        delay = self._link.failed(mailbox.describe(error))
        self._activity = "retrying"
        self._ctx.bus.publish(
            Event(
                type=EventType.EMAIL_ERROR,
                source="email",
                payload={
                    "error": self._link.last_error,
                    "kind": type(error).__name__,
                    "attempt": self._link.status().attempts,
                    "retry_in": round(delay, 2),
                },
            )
        )
        await self._link.wait(delay, self._stopping)

    # -- taking messages ---------------------------------------------------------------------

    def _checkpoint_key(self, uidvalidity: int) -> str:
        s = self._settings
        return f"{s.user}@{s.host}/{s.folder}/{uidvalidity}"

    async def _take_waiting(self, mailbox: Mailbox, uidvalidity: int) -> None:
        """Take what is new. An intake that refuses a message is asked again after a backoff on
        the same connection: the server is fine, so the link stays up."""
        while True:
            try:
                await self._take_new(mailbox, uidvalidity)
            except IntakeFailed as error:
                self._intake_failures += 1
                self._intake_trouble = _describe(error)
                delay = self._link.backoff(self._intake_failures)
                log.warning(
                    "email.intake_failed",
                    error=self._intake_trouble,
                    attempt=self._intake_failures,
                    retry_in=round(delay, 2),
                )
                self._ctx.bus.publish(
                    Event(
                        type=EventType.EMAIL_ERROR,
                        source="email",
                        payload={
                            "error": self._intake_trouble,
                            "kind": "IntakeFailed",
                            "attempt": self._intake_failures,
                            "retry_in": round(delay, 2),
                        },
                    )
                )
                if await self._link.wait(delay, self._stopping):
                    return
                continue
            self._intake_failures, self._intake_trouble = 0, None
            return

    async def _take_new(self, mailbox: Mailbox, uidvalidity: int) -> None:
        key = self._checkpoint_key(uidvalidity)
        stored = self._ctx.state.get(STATE_NAMESPACE, key)
        last = int(stored) if stored and stored.isdigit() else 0
        self._last_uid = last or None
        while True:
            uids = await self._call(mailbox.new_uids, last, self._batch_size)
            if not uids:
                if await self._call(mailbox.arrived):
                    continue  # it landed while we searched: IDLE would not say so again
                return
            for uid in uids:
                if self._stopping.is_set():
                    return
                await self._take_one(mailbox, uidvalidity, uid)
                self._ctx.state.put(STATE_NAMESPACE, key, str(uid))
                self._last_uid = last = uid

    async def _take_one(self, mailbox: Mailbox, uidvalidity: int, uid: int) -> None:
        ref = f"{uidvalidity}:{uid}"
        bound = log.bind(source_ref=ref)
        meta = await self._call(mailbox.meta, uid)
        if meta is None:
            bound.info("email.gone_before_taken")
            return
        # One message that the server will not give or the intake will not take must not
        # block the folder: after a few tries it is taken from its headers alone.
        failures, last_error = self._message_failures.get(ref, (0, ""))
        headers_only: str | None = None
        if failures >= DEGRADE_AFTER_FAILURES:
            headers_only = (
                f"the email could not be taken whole ({last_error}; {failures} tries): only its headers "
                "were read; it stays on the mail server"
            )
        elif meta.size > self._max_message:
            headers_only = (
                f"the email is {_size(meta.size)}, more than the {_size(self._max_message)} limit: "
                "only its headers were read; it stays on the mail server"
            )
        raw_path = self._spool_path("raw", ".eml")
        parsed: ParsedMail | None = None
        try:
            with raw_path.open("wb") as raw:
                if headers_only is None:
                    await self._call(mailbox.download, uid, raw, self._chunk, self._stopping.is_set)
                elif failures < DEGRADE_AFTER_FAILURES + 1:  # past that, not even the headers came
                    await self._call(mailbox.download_header, uid, raw)
            parsed = await self._call(self._parse, raw_path)
            if headers_only is not None:
                parsed.problems.insert(0, headers_only)
            message = incoming_message(
                ref,
                parsed,
                meta,
                raw_path,
                keep_original=headers_only is None,
                allowed_senders=self._settings.allowed_senders,
            )
            try:
                action_id = await self._ctx.intake.submit(message)
            except Exception as error:
                raise IntakeFailed(f"the intake refused email {ref}") from error
            self._message_failures.pop(ref, None)
            self._replies.remember(action_id, parsed, message.trusted_sender)
            try:
                await self._call(mailbox.mark_done, uid)
            except imaplib.IMAP4.abort:
                raise  # taken again after the reconnect; the intake returns the same action
            except imaplib.IMAP4.error as error:
                # A refusal (read-only folder, no such target folder) must not make us take the
                # message again and again: the checkpoint already keeps it from coming back.
                bound.warning(
                    "email.mark_failed", after_intake=self._settings.after_intake, error=_describe(error)
                )
        except (IntakeFailed, imaplib.IMAP4.error) as error:
            if not isinstance(error, imaplib.IMAP4.abort):  # a dead connection is not the message's fault
                self._message_failures[ref] = (failures + 1, _describe(error))
            raise
        finally:
            if parsed is not None:
                parsed.cleanup()
            with contextlib.suppress(FileNotFoundError):
                raw_path.unlink()
        self._taken += 1
        bound.info(
            "email.taken",
            action_id=action_id,
            attachments=len(message.attachments),
            problems=len(parsed.problems),
        )
        self._ctx.bus.publish(
            Event(
                type=EventType.EMAIL_RECEIVED,
                source="email",
                correlation_id=action_id,
                payload={
                    "source_ref": ref,
                    "sender": parsed.sender_address,
                    "subject": parsed.subject,
                    "attachments": len(message.attachments),
                    "problems": list(parsed.problems),
                },
            )
        )

    def _parse(self, raw_path: Path) -> ParsedMail:
        with raw_path.open("rb") as stream:
            return parse_mail(stream, self._spool)

    def _prepare_spool(self) -> None:
        """An empty spool: files left by a crash were never handed over, or were copied already."""
        if self._spool.exists():
            shutil.rmtree(self._spool, ignore_errors=True)
        self._spool.mkdir(parents=True, exist_ok=True)

    def _spool_path(self, kind: str, suffix: str) -> Path:
        handle, name = tempfile.mkstemp(prefix=f".email-{kind}-", suffix=suffix, dir=self._spool)
        os.close(handle)
        return Path(name)


def incoming_message(
    ref: str,
    parsed: ParsedMail,
    meta: MessageMeta,
    raw_path: Path,
    *,
    keep_original: bool,
    allowed_senders: list[str],
) -> IncomingMessage:
    """What the intake is handed for one email; the original .eml goes along when something in it
    could not be read."""
    now = datetime.now(UTC)
    received = parsed.date
    if received is None or received > now + timedelta(days=1):
        received = meta.internaldate or now
    attachments = [
        IncomingAttachment(item.filename, data=item.data, path=item.path, content_type=item.content_type)
        for item in parsed.attachments
    ]
    if parsed.problems and keep_original:
        _fsync(raw_path)
        original = IncomingAttachment(
            "original.eml", path=raw_path, content_type="message/rfc822", extract=False
        )
        attachments.append(original)
    fallback = f"Email from {parsed.sender_address or 'unknown'}"
    title = parsed.subject or _first_line(parsed.text) or fallback
    return IncomingMessage(
        source="email",
        source_ref=ref,
        title=title,
        body=parsed.body(),
        received=received,
        sender=parsed.sender,
        subject=parsed.subject,
        attachments=attachments,
        trusted_sender=sender_allowed(parsed.sender_address, allowed_senders),
    )


def _seconds_until(when: datetime | None) -> str:
    if when is None:
        return "a moment"
    return f"{max(0.0, (when - datetime.now(UTC)).total_seconds()):.0f} s"


def _size(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / 1024 / 1024:.1f} MB"
    return f"{count / 1024:.0f} KB"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip(" #*>\t")
        if line:
            return line[:120]
    return ""


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create(ctx: ServiceContext) -> EmailSource:
    """Entry point `ai_employee.services: email`: off unless host, user and a secret are set."""
    email = ctx.settings.email
    missing = [
        name
        for name, value in (
            ("IMAP_HOST", email.host),
            ("IMAP_USER", email.user),
            ("IMAP_PASSWORD", email.password or email.oauth2_token),
        )
        if not value
    ]
    if len(missing) == 3:
        raise PluginDisabled("IMAP_HOST, IMAP_USER and IMAP_PASSWORD are not set")
    if missing:
        raise PluginDisabled(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set")
    return EmailSource(ctx)
