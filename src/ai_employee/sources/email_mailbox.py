"""One IMAP connection with the folder selected, where every step has a deadline.

A mail server that accepts and never answers must cost a bounded wait, and `stop()` must not
wait even for that: so the TCP connect, the TLS handshake, the greeting, login and the folder's
selection are each bounded by `connect_timeout`, every read and write after that by
`read_timeout`, and `Mailbox.abort()` can reach the socket from the moment it exists, before it
is connected. IMAPClient creates its socket deep inside its constructor, so `_Client` hands it
a connection of our own (`_Connection`) that reports each socket as soon as it is made.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Final

from imapclient import IMAPClient, SocketTimeout  # type: ignore[import-untyped]
from imapclient.exceptions import LoginError  # type: ignore[import-untyped]
from imapclient.imapclient import _parse_untagged_response  # type: ignore[import-untyped]

from ai_employee.clients.link import describe_failure
from ai_employee.config import EmailSettings

SEEN: Final = b"\\Seen"
DELETED: Final = b"\\Deleted"
SEARCH_WINDOW: Final = 50_000

#: the steps of opening a mailbox, as a failure names them
_STEP_WORDS: Final = {
    "connect": "",
    "tls": "TLS handshake",
    "greeting": "waiting for the greeting",
    "login": "login",
    "select": "selecting the folder",
    "open": "",
}

Progress = Callable[[str, "socket.socket | None"], None]


class ConnectionLost(ConnectionError):
    """The server closed the connection, or stopped answering, while we were idle."""


class Aborted(ConnectionError):
    """`Mailbox.abort()` was called while the mailbox was being opened."""


@dataclass(frozen=True)
class MailboxInfo:
    uidvalidity: int
    idle: bool


@dataclass(frozen=True)
class MessageMeta:
    size: int
    internaldate: datetime | None


class _Connection(imaplib.IMAP4):
    """imaplib's connection, whose sockets are reported (`progress`) before they connect, so that
    another thread can abort a connect, a TLS handshake or a greeting that hangs."""

    def __init__(
        self, host: str, port: int, *, timeout: float, tls: ssl.SSLContext | None, progress: Progress
    ) -> None:
        self._tls = tls
        self._progress = progress
        super().__init__(host, port, timeout)  # connects, then reads the greeting and CAPABILITY

    def _create_socket(self, timeout: float | None) -> socket.socket:
        """socket.create_connection, with each socket reported before it connects."""
        error: OSError | None = None
        addresses = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                self._progress("connect", sock)
                sock.settimeout(timeout)
                sock.connect(address)
                if self._tls is not None:
                    sock = self._tls.wrap_socket(
                        sock, server_hostname=self.host, do_handshake_on_connect=False
                    )
                    self._progress("tls", sock)
                    sock.do_handshake()
                self._progress("greeting", sock)
                return sock
            except OSError as failure:
                sock.close()
                error = failure
                if isinstance(failure, Aborted):
                    break
        raise error or OSError(f"no address found for {self.host}")


class _Client(IMAPClient):  # type: ignore[misc]
    """IMAPClient on a `_Connection`, with one socket deadline we set: `connect_timeout` until the
    folder is selected, `read_timeout` after (IMAPClient puts it back after each IDLE check)."""

    def __init__(
        self, host: str, port: int, *, tls: ssl.SSLContext | None, connect_timeout: float, progress: Progress
    ) -> None:
        self.deadline = connect_timeout
        self._progress = progress
        self._connect_tls = tls
        super().__init__(
            host,
            port=port,
            ssl=tls is not None,
            ssl_context=tls,
            timeout=SocketTimeout(connect=connect_timeout, read=connect_timeout),
        )

    def _create_IMAP4(self) -> imaplib.IMAP4:
        return _Connection(
            self.host, self.port, timeout=self.deadline, tls=self._connect_tls, progress=self._progress
        )

    def _set_read_timeout(self) -> None:
        self.socket().settimeout(self.deadline)

    def set_deadline(self, seconds: float) -> None:
        self.deadline = seconds
        self._set_read_timeout()

    def arrived(self) -> bool:
        """Whether the server said EXISTS since the last call: IMAPClient keeps such untagged news
        of other commands (a SEARCH answered before a message landed, then "* 2 EXISTS") unread."""
        _, data = self._imap.response("EXISTS")
        return bool(data != [None])

    def buffered_responses(self) -> list[Any]:
        """The untagged lines already read off the socket but not yet looked at, parsed as
        `idle_check` parses them.

        Reads are buffered: Dovecot answers IDLE with "+ idling" and, for mail that landed after
        the last SEARCH, "* 2 EXISTS" right behind it, in one segment. Reading "+ idling" takes
        the EXISTS into imaplib's buffer, where `idle_check`, which waits on the socket, would
        never see it: the message would wait for the next IDLE renew."""
        responses = []
        while self._buffered():
            responses.append(_parse_untagged_response(self._imap._get_line()))
        return responses

    def _buffered(self) -> bool:
        """Whether a read would return at once: bytes in imaplib's buffer (or TLS's), without
        waiting for the socket."""
        sock = self.socket()
        deadline = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            return bool(self._imap.file.peek(1))
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        finally:
            sock.settimeout(deadline)


class Mailbox:
    """One IMAP connection with the folder selected. Blocking: call it from one worker thread.

    `abort()` is the exception: any thread may call it to break a blocked call at once, also
    while `open()` is still connecting.
    """

    def __init__(
        self,
        settings: EmailSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        search_window: int = SEARCH_WINDOW,
    ) -> None:
        self._settings = settings
        self._search_window = search_window
        self._ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._client: Any = None
        self._socket: socket.socket | None = None
        self._aborted = False
        self.step = "connect"  # where open() is; "open" once the folder is selected
        self.can_move = False
        self.can_uidplus = False

    @property
    def port(self) -> int:
        if self._settings.port:
            return self._settings.port
        return 993 if self._settings.ssl else 143

    @property
    def opened(self) -> bool:
        return self.step == "open"

    def open(self) -> MailboxInfo:
        settings = self._settings
        assert settings.host is not None and settings.user is not None
        context = self._ssl_context or ssl.create_default_context()
        client = _Client(
            settings.host,
            self.port,
            tls=context if settings.ssl else None,
            connect_timeout=self.connect_timeout,
            progress=self._progress,
        )
        self._client = client
        self._check_aborted()
        client.normalise_times = False  # keep INTERNALDATE's zone
        if not settings.ssl and client.has_capability("STARTTLS"):
            self._progress("tls", None)
            client.starttls(context)
        self._progress("login", None)
        if settings.oauth2_token is not None:
            client.oauth2_login(settings.user, settings.oauth2_token.get_secret_value())
        else:
            assert settings.password is not None
            client.login(settings.user, settings.password.get_secret_value())
        self._progress("select", None)
        self.can_move = client.has_capability("MOVE")
        self.can_uidplus = client.has_capability("UIDPLUS")
        if settings.after_intake == "move" and not client.folder_exists(settings.move_to_folder):
            with contextlib.suppress(imaplib.IMAP4.error):  # created meanwhile by someone else
                client.create_folder(settings.move_to_folder)
        selected = client.select_folder(settings.folder)
        idle = client.has_capability("IDLE")
        client.set_deadline(self.read_timeout)
        self.step = "open"
        return MailboxInfo(uidvalidity=int(selected[b"UIDVALIDITY"]), idle=idle)

    def _progress(self, step: str, sock: socket.socket | None) -> None:
        self.step = step
        if sock is not None:
            self._socket = sock
        self._check_aborted()

    def _check_aborted(self) -> None:
        if self._aborted:
            raise Aborted("the mailbox was closed while it was being opened")

    def describe(self, error: BaseException) -> str:
        """A failure in plain words, with the step of opening it happened at."""
        if isinstance(error, LoginError):
            return f"login failed: {_server_text(error)}"
        timeout = self.read_timeout if self.opened else self.connect_timeout
        if isinstance(error, imaplib.IMAP4.abort) and "EOF" in str(error):
            words = "the server closed the connection"
        elif isinstance(error, ConnectionLost):
            words = str(error)
        elif isinstance(error, imaplib.IMAP4.error):
            words = f"the server answered: {_server_text(error)}"
        elif self.opened and isinstance(error, TimeoutError):
            words = f"no answer after {timeout:g} s"
        else:
            words = describe_failure(error, timeout=timeout)
        where = "" if isinstance(error, ssl.SSLError) else _STEP_WORDS.get(self.step, "")
        return f"{words} ({where})" if where else words

    def highest_uid(self) -> int:
        """The UID of the newest message, 0 when the folder is empty."""
        found = self._client.search(["UID", "*"])  # "*" is the highest UID; nothing when empty
        return max((int(uid) for uid in found), default=0)

    def new_uids(self, after: int, limit: int = 500) -> list[int]:
        """Up to `limit` unseen messages with a UID above `after`, oldest first.

        Searched in UID windows: one SEARCH answer is one line, and imaplib refuses lines
        over 1 MB (about 140,000 UIDs), which a first run over a big folder could reach.
        """
        self._client.arrived()  # what is announced from here on may have come after this search
        highest = self.highest_uid()
        found: list[int] = []
        start = after + 1
        while start <= highest and len(found) < limit:
            end = min(start + self._search_window - 1, highest)
            uids = self._client.search(["UNSEEN", "UID", f"{start}:{end}"])
            found += sorted(int(uid) for uid in uids if start <= int(uid) <= end)
            start = end + 1
        return found[:limit]

    def arrived(self) -> bool:
        """Whether mail came in since the last `new_uids` (the server said EXISTS meanwhile)."""
        return bool(self._client.arrived())

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
        """Wait up to `timeout` for news; True when new mail arrived. Raises when the line died.

        News already read along with an earlier line is taken first (`buffered_responses`):
        waiting on the socket would not see it."""
        responses = self._client.buffered_responses()
        if not responses:
            started = time.monotonic()
            responses = self._client.idle_check(timeout=timeout)
            if not responses and time.monotonic() - started < timeout / 2:
                # readable but no line: IMAPClient swallows EOF in IDLE; verify the line is alive
                raise ConnectionLost("the connection was closed while idle")
        for response in responses:
            if len(response) >= 1 and response[0] == b"BYE":
                raise ConnectionLost("the server ended the session")
        return any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

    def idle_done(self) -> None:
        """End IDLE: the server must answer within `read_timeout`, so this is also the keepalive
        that finds a server gone silent."""
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
        """Break any blocked call now (from any thread), an unfinished open() included: the socket
        is shut down."""
        self._aborted = True
        client = self._client
        sock = self._socket
        if client is not None:
            with contextlib.suppress(Exception):
                sock = client.socket()
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _server_text(error: BaseException) -> str:
    """A server's answer as IMAPClient words it (`b'[AUTHENTICATIONFAILED] ...'`), unwrapped."""
    text = str(error).strip()
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        text = text[2:-1]
    return text[:200] or type(error).__name__
