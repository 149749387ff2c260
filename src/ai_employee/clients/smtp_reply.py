"""Replies to the sender of an email over SMTP (aiosmtplib); dry-run by default.

A dry run logs exactly what would be sent and sends nothing. A real send uses implicit TLS
on port 465, STARTTLS wherever the server offers it otherwise, and the IMAP account's
credentials (password or XOAUTH2 token). Every reply carries `Auto-Submitted:
auto-replied` (RFC 3834) so that other robots do not answer it, and In-Reply-To /
References so that mail clients thread it under the original.

Every step has a deadline (services.connect_timeout for connect, TLS, greeting, EHLO and
login; services.read_timeout for each command after), and the whole send, retries
included, one more: an SMTP server that accepts and never answers costs a bounded wait.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

import aiosmtplib
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from ai_employee.observability.timing import timed_operation

log = structlog.get_logger(__name__)

# What may be retried: the message certainly was not accepted yet.
_TRANSIENT = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPConnectTimeoutError,
    aiosmtplib.SMTPServerDisconnected,
    ConnectionError,
)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    oauth2_token: str | None = None
    from_address: str = ""
    connect_timeout: float = 10.0  # connect, TLS handshake, greeting, EHLO, login: each
    timeout: float = 60.0  # each command once connected (MAIL, RCPT, DATA)
    deadline: float = 300.0  # the whole send, retries included
    max_backoff: float = 20.0  # the longest wait between two attempts
    tls_context: ssl.SSLContext | None = None

    def __repr__(self) -> str:  # never show the secrets
        return f"SmtpConfig(host={self.host!r}, port={self.port}, username={self.username!r})"


@dataclass(frozen=True)
class Reply:
    to: str
    subject: str  # the original subject; "Re: " is added once
    body: str
    in_reply_to: str | None = None


def reply_subject(subject: str) -> str:
    subject = subject.strip()
    return subject if subject.lower().startswith("re:") else f"Re: {subject}".strip()


class ReplySender:
    def __init__(self, config: SmtpConfig, *, dry_run: bool = True, attempts: int = 3) -> None:
        self.config = config
        self.dry_run = dry_run
        self._attempts = attempts

    def compose(self, reply: Reply) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.config.from_address
        message["To"] = reply.to
        message["Subject"] = reply_subject(reply.subject)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        domain = self.config.from_address.rpartition("@")[2] or None
        message["Message-ID"] = make_msgid(domain=domain)
        message["Auto-Submitted"] = "auto-replied"
        if reply.in_reply_to:
            message["In-Reply-To"] = reply.in_reply_to
            message["References"] = reply.in_reply_to
        message.set_content(reply.body)
        return message

    @timed_operation("smtp.send")
    async def send(self, reply: Reply) -> Literal["sent", "dry_run"]:
        message = self.compose(reply)
        if self.dry_run:
            log.info("email.reply_dry_run", to=reply.to, subject=str(message["Subject"]), body=reply.body)
            return "dry_run"
        config = self.config
        implicit_tls = config.port == 465

        async def token() -> str:
            assert config.oauth2_token is not None
            return config.oauth2_token

        async with asyncio.timeout(config.deadline):
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(max(1, self._attempts)),
                wait=wait_exponential_jitter(initial=1, max=config.max_backoff),
                retry=retry_if_exception_type(_TRANSIENT),
                reraise=True,
            ):
                with attempt:
                    client = aiosmtplib.SMTP(
                        hostname=config.host,
                        port=config.port,
                        username=config.username if (config.password or config.oauth2_token) else None,
                        password=None if config.oauth2_token else config.password,
                        oauth_token_generator=token if config.oauth2_token else None,
                        use_tls=implicit_tls,
                        start_tls=None if not implicit_tls else False,  # None: STARTTLS when offered
                        tls_context=config.tls_context,
                        timeout=config.connect_timeout,  # connect, TLS, EHLO and login, each
                    )
                    async with client:
                        await client.send_message(message, timeout=config.timeout)
        log.info("email.reply_sent", to=reply.to, subject=str(message["Subject"]))
        return "sent"
