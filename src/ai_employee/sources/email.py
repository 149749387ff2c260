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
- Connection problems are retried here with exponential backoff and jitter (longer after
  a failed login, so as not to lock the account); anything else is a crash for the
  orchestrator to restart.
- Optional replies to the sender with the outcome (PLAN_EXECUTED / PLAN_FAILED), dry-run
  by default: only to senders on `allowed_senders`, never to automatic mail (RFC 3834).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import logging
import os
import random
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import structlog
from imapclient import IMAPClient, SocketTimeout  # type: ignore[import-untyped]
from imapclient.exceptions import LoginError  # type: ignore[import-untyped]

from ai_employee.clients.smtp_reply import Reply, ReplySender, SmtpConfig
from ai_employee.config import EmailSettings
from ai_employee.model.bus import Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.messages import IncomingAttachment, IncomingMessage
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.services import HealthReport, Service, ServiceContext
from ai_employee.sources.mail_parsing import ParsedMail, parse_mail

log = structlog.get_logger(__name__)

T = TypeVar("T")

STATE_NAMESPACE: Final = "email"
REPLY_NAMESPACE: Final = "email.reply"
REPLIED_NAMESPACE: Final = "email.replied"
SEEN: Final = b"\\Seen"
DELETED: Final = b"\\Deleted"
SPOOL: Final = Path(".ai-employee") / "spool" / "email"
DEGRADE_AFTER_FAILURES: Final = 3
SEARCH_WINDOW: Final = 50_000


class ConnectionLost(ConnectionError):
    """The server closed the connection, or stopped answering, while we were idle."""


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


@dataclass(frozen=True)
class MailboxInfo:
    uidvalidity: int
    idle: bool


@dataclass(frozen=True)
class MessageMeta:
    size: int
    internaldate: datetime | None


class Mailbox:
    """One IMAP connection with the folder selected. Blocking: call it from one worker thread.

    `abort()` is the exception: any thread may call it to break a blocked call at once.
    """

    def __init__(
        self,
        settings: EmailSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 15.0,
        read_timeout: float = 120.0,
        search_window: int = SEARCH_WINDOW,
    ) -> None:
        self._settings = settings
        self._search_window = search_window
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._client: Any = None
        self.can_move = False
        self.can_uidplus = False

    @property
    def port(self) -> int:
        if self._settings.port:
            return self._settings.port
        return 993 if self._settings.ssl else 143

    def open(self) -> MailboxInfo:
        settings = self._settings
        assert settings.host is not None and settings.user is not None
        context = self._ssl_context or ssl.create_default_context()
        client = IMAPClient(
            settings.host,
            port=self.port,
            ssl=settings.ssl,
            ssl_context=context,
            timeout=SocketTimeout(connect=self._connect_timeout, read=self._read_timeout),
        )
        self._client = client
        client.normalise_times = False  # keep INTERNALDATE's zone
        if not settings.ssl and client.has_capability("STARTTLS"):
            client.starttls(context)
        if settings.oauth2_token is not None:
            client.oauth2_login(settings.user, settings.oauth2_token.get_secret_value())
        else:
            assert settings.password is not None
            client.login(settings.user, settings.password.get_secret_value())
        self.can_move = client.has_capability("MOVE")
        self.can_uidplus = client.has_capability("UIDPLUS")
        if settings.after_intake == "move" and not client.folder_exists(settings.move_to_folder):
            with contextlib.suppress(imaplib.IMAP4.error):  # created meanwhile by someone else
                client.create_folder(settings.move_to_folder)
        selected = client.select_folder(settings.folder)
        return MailboxInfo(uidvalidity=int(selected[b"UIDVALIDITY"]), idle=client.has_capability("IDLE"))

    def highest_uid(self) -> int:
        """The UID of the newest message, 0 when the folder is empty."""
        found = self._client.search(["UID", "*"])  # "*" is the highest UID; nothing when empty
        return max((int(uid) for uid in found), default=0)

    def new_uids(self, after: int, limit: int = 500) -> list[int]:
        """Up to `limit` unseen messages with a UID above `after`, oldest first.

        Searched in UID windows: one SEARCH answer is one line, and imaplib refuses lines
        over 1 MB (about 140,000 UIDs), which a first run over a big folder could reach.
        """
        highest = self.highest_uid()
        found: list[int] = []
        start = after + 1
        while start <= highest and len(found) < limit:
            end = min(start + self._search_window - 1, highest)
            uids = self._client.search(["UNSEEN", "UID", f"{start}:{end}"])
            found += sorted(int(uid) for uid in uids if start <= int(uid) <= end)
            start = end + 1
        return found[:limit]

    def meta(self, uid: int) -> MessageMeta | None:
        """Size and arrival time, or None when the message is gone (expunged meanwhile)."""
        data = self._client.fetch([uid], ["RFC822.SIZE", "INTERNALDATE"]).get(uid)
        if not data:
            return None
        when = data.get(b"INTERNALDATE")
        if isinstance(when, datetime) and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return MessageMeta(size=int(data.get(b"RFC822.SIZE", 0)), internaldate=when)

    def download(self, uid: int, target: IO[bytes], chunk: int, stopping: Callable[[], bool]) -> int:
        """Write the raw message into `target` in chunks (BODY.PEEK: it stays unseen)."""
        offset = 0
        while True:
            if stopping():
                raise InterruptedError("stopping")
            data = self._client.fetch([uid], [f"BODY.PEEK[]<{offset}.{chunk}>"]).get(uid, {})
            piece = data.get(f"BODY[]<{offset}>".encode()) or data.get(b"BODY[]") or b""
            if not isinstance(piece, bytes):
                piece = bytes(piece) if piece else b""
            target.write(piece)
            offset += len(piece)
            if len(piece) < chunk or len(piece) > chunk:  # the end, or a server that ignored <>
                return offset

    def download_header(self, uid: int, target: IO[bytes]) -> int:
        data = self._client.fetch([uid], ["BODY.PEEK[HEADER]"]).get(uid, {})
        header = data.get(b"BODY[HEADER]") or b""
        target.write(header)
        return len(header)

    def mark_done(self, uid: int) -> None:
        """\\Seen, or moved to the done folder: the message was handed over."""
        settings = self._settings
        if settings.after_intake == "seen":
            self._client.add_flags([uid], [SEEN], silent=True)
            return
        if self.can_move:
            self._client.move([uid], settings.move_to_folder)
            return
        self._client.copy([uid], settings.move_to_folder)
        self._client.add_flags([uid], [SEEN, DELETED], silent=True)
        if self.can_uidplus:
            self._client.uid_expunge([uid])
        # without UIDPLUS, a plain EXPUNGE would also remove what others marked deleted

    def idle_start(self) -> None:
        self._client.idle()

    def idle_wait(self, timeout: float) -> bool:
        """Wait up to `timeout` for news; True when new mail arrived. Raises when the line died."""
        started = time.monotonic()
        responses = self._client.idle_check(timeout=timeout)
        for response in responses:
            if len(response) >= 1 and response[0] == b"BYE":
                raise ConnectionLost("the server ended the session")
        if not responses and time.monotonic() - started < timeout / 2:
            # readable but no line: IMAPClient swallows EOF in IDLE; verify the line is alive
            raise ConnectionLost("the connection was closed while idle")
        return any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

    def idle_done(self) -> None:
        self._client.idle_done()

    def noop(self) -> None:
        self._client.noop()

    def close(self) -> None:
        """Log out politely; never raises."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()

    def abort(self) -> None:
        """Break any blocked call now (from any thread): the socket is shut down."""
        client = self._client
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.socket().shutdown(socket.SHUT_RDWR)


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
        idle_renew_seconds: float = 600.0,
        chunk_bytes: int = 2 * 1024 * 1024,
        max_message_bytes: int = 64 * 1024 * 1024,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        login_backoff_max: float = 600.0,
        search_window: int = SEARCH_WINDOW,
        batch_size: int = 500,
        reply_sender: ReplySender | None = None,
    ) -> None:
        super().__init__()
        # IMAPClient's DEBUG trace holds whole messages (20 MB bodies, private mail): never log it.
        logging.getLogger("imapclient").setLevel(max(logging.INFO, logging.getLogger("imapclient").level))
        self._ctx = ctx
        self._settings = ctx.settings.email
        self._ssl_context = ssl_context
        self._idle_slice = idle_slice_seconds
        self._idle_renew = idle_renew_seconds
        self._chunk = chunk_bytes
        self._max_message = max_message_bytes
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._login_backoff_max = login_backoff_max
        self._search_window = search_window
        self._batch_size = batch_size
        self._reply_sender = reply_sender or _reply_sender_from(ctx.settings.email)
        self._stopping = asyncio.Event()
        self._spool = ctx.vault_root / SPOOL
        self._executor: ThreadPoolExecutor | None = None
        self._mailbox: Mailbox | None = None
        self._failures = 0
        self._message_failures: dict[str, tuple[int, str]] = {}  # source_ref -> (failures, last error)
        self._subscriptions: list[Subscription] = []
        self._healthy = False
        self._detail = "not connected yet"
        self._mode = ""
        self._activity = "connecting"
        self._taken = 0
        self._last_error: str | None = None
        self._last_uid: int | None = None
        self._uidvalidity: int | None = None

    # -- the Service interface ---------------------------------------------------------------

    async def run(self) -> None:
        self._stopping.clear()
        self._prepare_spool()
        self._subscribe_replies()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-email")
        try:
            while not self._stopping.is_set():
                try:
                    await self._session()
                except Exception as error:
                    if not _is_transient(error):
                        raise
                    if self._stopping.is_set():
                        break
                    await self._after_failure(error)
        finally:
            self._healthy = False
            self._detail = "stopped"
            for subscription in self._subscriptions:
                self._ctx.bus.unsubscribe(subscription)
            self._subscriptions = []
            mailbox, self._mailbox = self._mailbox, None
            if mailbox is not None:
                mailbox.abort()  # a cancelled run may leave the worker blocked on the socket
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def stop(self) -> None:
        self._stopping.set()

    async def health(self) -> HealthReport:
        data: dict[str, Any] = {
            "folder": self._settings.folder,
            "mode": self._mode or None,
            "activity": self._activity,
            "messages_taken": self._taken,
            "uidvalidity": self._uidvalidity,
            "last_uid": self._last_uid,
        }
        if self._last_error:
            data["last_error"] = self._last_error
        return HealthReport(healthy=self._healthy, detail=self._detail, data=data)

    # -- connection lifecycle ----------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(function, *args))

    async def _session(self) -> None:
        """One connection: take what is new, then wait for more, until stopped or broken."""
        mailbox = Mailbox(self._settings, ssl_context=self._ssl_context, search_window=self._search_window)
        self._mailbox = mailbox
        where = f"{self._settings.folder} on {self._settings.host}"
        try:
            info = await self._call(mailbox.open)
            self._uidvalidity = info.uidvalidity
            self._mode = "idle" if info.idle else "poll"
            self._healthy, self._last_error = True, None
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
            self.ready.set()
            while not self._stopping.is_set():
                await self._take_new(mailbox, info.uidvalidity)
                # Caught up: the backoff starts over. Not at login, or a message that fails
                # every time would have us log in again every second.
                self._failures = 0
                if self._stopping.is_set():
                    break
                if info.idle:
                    await self._idle(mailbox)
                else:
                    await self._poll_wait(mailbox)
        finally:
            self._mailbox = None
            if self._executor is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._call(mailbox.close), timeout=5)
            mailbox.abort()

    async def _idle(self, mailbox: Mailbox) -> None:
        """IDLE until new mail, the renew interval (servers drop idlers after 30 min), or stop."""
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

    async def _after_failure(self, error: BaseException) -> None:
        self._failures += 1
        ceiling = self._login_backoff_max if isinstance(error, LoginError) else self._backoff_max
        delay = min(ceiling, self._backoff_initial * 2.0 ** min(self._failures - 1, 30))
        delay = delay / 2 + random.uniform(0, delay / 2)
        reason = _describe(error)
        self._healthy = False
        self._last_error = reason
        prefix = "login failed" if isinstance(error, LoginError) else "connection problem"
        self._detail = f"{prefix}: {reason}; retrying in {delay:.0f} s"
        log.warning(
            "email.retrying",
            error=reason,
            kind=type(error).__name__,
            attempt=self._failures,
            retry_in=round(delay, 2),
        )
        self._ctx.bus.publish(
            Event(
                type=EventType.EMAIL_ERROR,
                source="email",
                payload={"error": reason, "attempt": self._failures, "retry_in": round(delay, 2)},
            )
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    # -- taking messages ---------------------------------------------------------------------

    def _checkpoint_key(self, uidvalidity: int) -> str:
        s = self._settings
        return f"{s.user}@{s.host}/{s.folder}/{uidvalidity}"

    async def _take_new(self, mailbox: Mailbox, uidvalidity: int) -> None:
        key = self._checkpoint_key(uidvalidity)
        stored = self._ctx.state.get(STATE_NAMESPACE, key)
        last = int(stored) if stored and stored.isdigit() else 0
        self._last_uid = last or None
        while uids := await self._call(mailbox.new_uids, last, self._batch_size):
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
            message = self._message(ref, parsed, meta, raw_path, keep_original=headers_only is None)
            try:
                action_id = await self._ctx.intake.submit(message)
            except Exception as error:
                raise IntakeFailed(f"the intake refused email {ref}") from error
            self._message_failures.pop(ref, None)
            self._remember_for_reply(action_id, parsed, message.trusted_sender)
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

    def _message(
        self, ref: str, parsed: ParsedMail, meta: MessageMeta, raw_path: Path, *, keep_original: bool
    ) -> IncomingMessage:
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
            original = IncomingAttachment("original.eml", path=raw_path, content_type="message/rfc822")
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
            trusted_sender=sender_allowed(parsed.sender_address, self._settings.allowed_senders),
        )

    def _prepare_spool(self) -> None:
        """An empty spool: files left by a crash were never handed over, or were copied already."""
        if self._spool.exists():
            shutil.rmtree(self._spool, ignore_errors=True)
        self._spool.mkdir(parents=True, exist_ok=True)

    def _spool_path(self, kind: str, suffix: str) -> Path:
        handle, name = tempfile.mkstemp(prefix=f".email-{kind}-", suffix=suffix, dir=self._spool)
        os.close(handle)
        return Path(name)

    # -- replies -------------------------------------------------------------------------------

    def _subscribe_replies(self) -> None:
        if self._reply_sender is None:
            return
        bus = self._ctx.bus
        for event_type in (EventType.PLAN_EXECUTED, EventType.PLAN_FAILED):
            self._subscriptions.append(bus.subscribe(event_type, self._on_outcome, name="email-reply"))

    def _remember_for_reply(self, action_id: str, parsed: ParsedMail, trusted: bool) -> None:
        if self._reply_sender is None:
            return
        record = {
            "to": parsed.sender_address,  # not Reply-To: the address checked against the allow list
            "subject": parsed.subject or "",
            "message_id": parsed.message_id,
            # Replies go only to senders named in allowed_senders: with an empty list everyone
            # is "trusted", and answering every sender would answer spammers (backscatter).
            "allowed": trusted and bool(self._settings.allowed_senders),
            "automatic": parsed.automatic,
        }
        self._ctx.state.put(REPLY_NAMESPACE, action_id, json.dumps(record))

    async def _on_outcome(self, event: Event) -> None:
        sender = self._reply_sender
        action_id = event.correlation_id
        if sender is None or not action_id:
            return
        stored = self._ctx.state.get(REPLY_NAMESPACE, action_id)
        if stored is None:
            return  # not an email this source took
        record = json.loads(stored)
        plan_id = str(event.payload.get("plan_id") or "")
        done_key = f"{action_id}:{plan_id}:{event.type.value}"
        if self._ctx.state.get(REPLIED_NAMESPACE, done_key) is not None:
            return
        to = record.get("to")
        if not to or not record.get("allowed") or record.get("automatic"):
            log.info(
                "email.reply_skipped",
                action_id=action_id,
                reason="automatic mail" if record.get("automatic") else "sender not in allowed_senders",
            )
            return
        reply = Reply(
            to=str(to),
            subject=str(record.get("subject") or ""),
            body=_outcome_text(event, str(record.get("subject") or ""), action_id),
            in_reply_to=record.get("message_id"),
        )
        try:
            outcome = await sender.send(reply)
        except Exception as error:
            log.warning("email.reply_failed", action_id=action_id, error=_describe(error))
            return
        self._ctx.state.put(REPLIED_NAMESPACE, done_key, outcome)


def _outcome_text(event: Event, subject: str, action_id: str) -> str:
    payload = event.payload
    what = f'your email "{subject}"' if subject else "your email"
    action = payload.get("action") or "the planned action"
    if event.type == EventType.PLAN_EXECUTED:
        dry = " as a dry run: nothing was sent to outside systems" if payload.get("dry_run") else ""
        lines = ["Hello,", "", f"{what} has been handled{dry}.", "", f"Action: {action}"]
        result = payload.get("result")
        if isinstance(result, dict):
            for key, value in list(result.items())[:10]:
                if isinstance(value, str | int | float | bool):
                    lines.append(f"{key}: {str(value)[:200]}")
    else:
        error = str(payload.get("error") or "unknown error")[:500]
        lines = ["Hello,", "", f"{what} could not be handled.", "", f"Action: {action}", f"Reason: {error}"]
    lines += ["", f"Reference: {action_id}", "", "-- ", "AI Employee (automatic reply)"]
    return "\n".join(lines) + "\n"


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


def _reply_sender_from(settings: EmailSettings) -> ReplySender | None:
    if not settings.reply_enabled:
        return None
    from_address = settings.user if settings.user and "@" in settings.user else None
    if from_address is None:
        log.warning("email.reply_off", reason="IMAP_USER is not an email address to send from")
        return None
    if not settings.smtp_host and not settings.reply_dry_run:
        log.warning("email.reply_off", reason="reply_enabled without smtp_host")
        return None
    config = SmtpConfig(
        host=settings.smtp_host or "",
        port=settings.smtp_port,
        username=settings.user,
        password=settings.password.get_secret_value() if settings.password else None,
        oauth2_token=settings.oauth2_token.get_secret_value() if settings.oauth2_token else None,
        from_address=from_address,
    )
    return ReplySender(config, dry_run=settings.reply_dry_run)


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
