"""A real Dovecot IMAP server on loopback, started from a config of its own in a temp folder.

Not a fake of IMAP: the email source is tested against the server people actually run, so
IDLE, UIDVALIDITY, flags, MOVE and odd MIME behave as they do in production. Installs
nothing: `.ci/services.sh` installs `dovecot-imapd`. Without it the tests skip, or fail when
AIE_REQUIRE_SERVICES=1 (CI). See shared/imap-testing.md for why each setting is there.

Any user name logs in with `DovecotServer.password`; each test takes a fresh user, so tests
sharing one server never see each other's mail.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

DOVECOT = "dovecot"
START_TIMEOUT = 15.0


def dovecot_binary() -> str | None:
    return shutil.which(DOVECOT) or next(
        (str(p) for p in (Path("/usr/sbin/dovecot"), Path("/usr/local/sbin/dovecot")) if p.is_file()), None
    )


def require_dovecot() -> str:
    """The dovecot binary, or skip (fail under AIE_REQUIRE_SERVICES=1) with the reason."""
    found = dovecot_binary()
    if found is not None:
        return found
    reason = "dovecot is not installed (apt-get install -y dovecot-imapd, or run .ci/services.sh)"
    if os.environ.get("AIE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"AIE_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@dataclass
class Delivered:
    uidvalidity: int
    uid: int

    @property
    def source_ref(self) -> str:
        return f"{self.uidvalidity}:{self.uid}"


class DovecotServer:
    """One Dovecot instance: `start()`, `stop()`, and small helpers that act as a mail client."""

    password = "test-password"

    def __init__(
        self, *, idle: bool = True, tls: bool = False, oauth2_introspection_url: str | None = None
    ) -> None:
        self.binary = require_dovecot()
        self.idle = idle
        # TLS: IMAPS on `tls_port` and STARTTLS on `port`, with a self-signed certificate for
        # 127.0.0.1 at `cert_file` (trust it with ssl.create_default_context(cafile=...)).
        self.tls = tls
        self.tls_port = 0
        # XOAUTH2: Dovecot asks this URL (RFC 7662 introspection, POST token=...) about each token
        self.oauth2_introspection_url = oauth2_introspection_url
        self.root = Path(tempfile.mkdtemp(prefix="aie-dovecot-"))
        # Mail processes run as nobody and must reach their homes under this folder.
        self.root.chmod(0o755)
        self.home = self.root / "home"
        self.home.mkdir(mode=0o777)
        self.home.chmod(0o777)
        self.config = self.root / "dovecot.conf"
        self.cert_file = self.root / "cert.pem"
        self.key_file = self.root / "key.pem"
        self.log_path = self.root / "dovecot.log"
        self.port = 0
        self.host = "127.0.0.1"

    # -- lifecycle -------------------------------------------------------------------------

    def _write_config(self) -> None:
        base, state = self.root / "run", self.root / "state"
        base.mkdir(exist_ok=True)
        state.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            users = "uid=nobody gid=nogroup"
            service_users = ""
        else:  # an unprivileged run: every process is the current user
            import pwd

            me = pwd.getpwuid(os.geteuid()).pw_name
            users = f"uid={os.geteuid()} gid={os.getegid()}"
            service_users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
        # Without IDLE the source must fall back to polling; Dovecot lets us hide it.
        capability = (
            ""
            if self.idle
            else (
                "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ "
                "UIDPLUS MOVE NAMESPACE\n"
            )
        )
        ssl = "ssl = no"
        if self.tls:
            ssl = f"ssl = yes\nssl_cert = <{self.cert_file}\nssl_key = <{self.key_file}"
        mechanisms = "plain login"
        oauth2 = ""
        if self.oauth2_introspection_url:
            mechanisms += " xoauth2 oauthbearer"
            oauth_config = self.root / "dovecot-oauth2.conf.ext"
            oauth_config.write_text(
                "introspection_mode = post\n"
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "force_introspection = yes\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n",
                encoding="utf-8",
            )
            oauth2 = (
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {oauth_config}\n}}\n"
            )
        self.config.write_text(
            f"""\
base_dir = {base}
state_dir = {state}
log_path = {self.log_path}
info_log_path = {self.log_path}
listen = 127.0.0.1
protocols = imap
{ssl}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
first_valid_uid = 1
# a wrong-password test must not slow down every later login from 127.0.0.1
auth_failure_delay = 0
mail_location = maildir:~/Maildir
{service_users}{capability}
{oauth2}passdb {{
  driver = static
  mechanisms = plain login
  args = password={self.password}
}}
userdb {{
  driver = static
  args = {users} home={self.home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""",
            encoding="utf-8",
        )

    def restart_same_port(self) -> DovecotServer:
        """Start again after stop(), on the port clients already know; the mail is still there."""
        return self.start(port=self.port)

    def start(self, *, port: int | None = None) -> DovecotServer:
        last_error = ""
        if self.tls and not self.cert_file.exists():
            self._make_certificate()
        for _ in range(5 if port is None else 50):  # a free port may be taken between probe and bind
            self.port = port or _free_port()
            if self.tls and (port is None or not self.tls_port):
                self.tls_port = _free_port()
            self._write_config()
            # The daemon keeps inherited pipes open: send its output to a file, never a pipe.
            errors = self.root / "start.err"
            with errors.open("wb") as sink:
                code = subprocess.call(
                    [self.binary, "-c", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=sink,
                    timeout=30,
                )
            if code != 0:
                last_error = errors.read_text(errors="replace").strip()
                self._wait_stopped()
                if port is not None:
                    time.sleep(0.1)  # the old listener may still be closing
                continue
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if _port_open(self.port):
                    return self
                time.sleep(0.02)
            last_error = f"port {self.port} did not open; log: {self.log_tail()}"
            self.stop()
        raise RuntimeError(f"dovecot did not start: {last_error}")

    def _make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl is not installed: no certificate for the TLS tests")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(self.key_file),
                "-out",
                str(self.cert_file),
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "master.pid"

    def stop(self) -> None:
        """Stop the server and drop every client connection, as a crash or restart would.

        Dovecot's master exits at once, but a process serving an IDLE connection can linger
        for seconds; it is killed too, so that clients see the connection close now.
        """
        children: list[psutil.Process] = []
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError, psutil.Error):
            pid = int(self.pid_file.read_text().strip())
            children = psutil.Process(pid).children(recursive=True)
            os.kill(pid, 15)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        # no wait for them: a killed process's sockets close at once, zombie or not
        self._wait_stopped()

    def _wait_stopped(self) -> None:
        deadline = time.monotonic() + 10
        while self.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- a mail client for the tests ---------------------------------------------------------

    def new_user(self, prefix: str = "user") -> str:
        return f"{prefix}-{secrets.token_hex(4)}"

    @contextlib.contextmanager
    def client(self, user: str) -> Iterator[imaplib.IMAP4]:
        conn = imaplib.IMAP4(self.host, self.port, timeout=30)
        try:
            conn.login(user, self.password)
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def deliver(self, user: str, message: bytes, *, folder: str = "INBOX", flags: str = "") -> Delivered:
        """APPEND one message, as an MTA would deliver it; returns its UIDVALIDITY and UID."""
        with self.client(user) as conn:
            if folder != "INBOX":
                conn.create(folder)
            typ, data = conn.append(folder, flags or None, None, message)
            assert typ == "OK", data
            raw = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
            match = re.search(r"APPENDUID (\d+) (\d+)", raw)
            assert match, raw
            return Delivered(int(match.group(1)), int(match.group(2)))

    def deliver_to_maildir(self, user: str, message: bytes) -> Path:
        """Deliver into the user's INBOX as a local delivery agent does, without IMAP: also while
        the server is down. The user must have logged in once (Dovecot made the Maildir then)."""
        maildir = self.home / user / "Maildir"
        assert (maildir / "new").is_dir(), f"no Maildir for {user}: it is made at the first login"
        name = f"{time.time_ns()}.{secrets.token_hex(4)}.aie-test"
        staged = maildir / "tmp" / name
        staged.write_bytes(message)
        staged.chmod(0o644)
        final = maildir / "new" / name
        os.rename(staged, final)
        return final

    def flags(self, user: str, uid: int, folder: str = "INBOX") -> set[str]:
        """The flags of one message, read without changing them."""
        with self.client(user) as conn:
            conn.select(folder, readonly=True)
            typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
            assert typ == "OK", data
            if not data or data[0] is None:
                return set()
            raw = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
            match = re.search(r"FLAGS \(([^)]*)\)", raw)
            return set(match.group(1).split()) if match else set()

    def uids(self, user: str, folder: str = "INBOX") -> list[int]:
        with self.client(user) as conn:
            typ, _ = conn.select(folder, readonly=True)
            if typ != "OK":
                return []
            typ, data = conn.uid("SEARCH", "ALL")
            assert typ == "OK", data
            return [int(x) for x in (data[0] or b"").split()]
