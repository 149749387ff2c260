"""A small SMTP server on loopback (RFC 5321 subset) that keeps what it receives.

Enough of the protocol for a real client (aiosmtplib) to send through it unchanged:
EHLO/HELO, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT.
No TLS: it does not advertise STARTTLS, as a relay on a trusted network would not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    auth: tuple[str, str] | None

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class FakeSmtpServer:
    username: str = "sender@example.com"
    password: str = "smtp-secret"
    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> FakeSmtpServer:
        self._server = await asyncio.start_server(self._session, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        sender: str | None = None
        recipients: list[str] = []
        auth: tuple[str, str] | None = None
        reply("220 fake-smtp ready")
        try:
            while line := await reader.readline():
                command, _, argument = line.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
                verb = command.upper()
                if verb == "EHLO":
                    reply("250-fake-smtp")
                    reply("250-AUTH PLAIN LOGIN")
                    reply("250 8BITMIME")
                elif verb == "HELO":
                    reply("250 fake-smtp")
                elif verb == "AUTH":
                    auth = await self._auth(argument, reader, writer)
                    if auth is None:
                        reply("535 5.7.8 authentication failed")
                    else:
                        reply("235 2.7.0 authenticated")
                elif verb == "MAIL":
                    sender = argument.partition(":")[2].strip().split(" ")[0].strip("<>")
                    recipients = []
                    reply("250 ok")
                elif verb == "RCPT":
                    recipients.append(argument.partition(":")[2].strip().split(" ")[0].strip("<>"))
                    reply("250 ok")
                elif verb == "DATA":
                    reply("354 end with <CRLF>.<CRLF>")
                    await writer.drain()
                    lines: list[bytes] = []
                    while (chunk := await reader.readline()) not in (b".\r\n", b".\n", b""):
                        lines.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    self.received.append(Received(sender or "", list(recipients), b"".join(lines), auth))
                    reply("250 queued")
                elif verb in {"RSET", "NOOP"}:
                    reply("250 ok")
                elif verb == "QUIT":
                    reply("221 bye")
                    await writer.drain()
                    break
                else:
                    reply("502 command not implemented")
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _auth(
        self, argument: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, str] | None:
        mechanism, _, initial = argument.partition(" ")

        async def ask(prompt: str) -> str:
            writer.write(f"334 {prompt}\r\n".encode())
            await writer.drain()
            return (await reader.readline()).decode().strip()

        try:
            if mechanism.upper() == "PLAIN":
                encoded = initial or await ask("")
                _, user, password = base64.b64decode(encoded).decode().split("\0")
            elif mechanism.upper() == "LOGIN":
                user = base64.b64decode(await ask(base64.b64encode(b"Username:").decode())).decode()
                password = base64.b64decode(await ask(base64.b64encode(b"Password:").decode())).decode()
            else:
                return None
        except ValueError:
            return None
        if (user, password) != (self.username, self.password):
            return None
        return user, password
