"""Issue 19 end to end for email: the real daemon, a real Dovecot behind an `OutageProxy` on one
fixed port, the mail server down in each way (refused, hanging, slow).

In every case the daemon is visible and ready within 2 s; a dropped file is planned; `status
--json` shows email connecting or retrying with the reason; when the server is back on the same
port, the email that waited becomes exactly one action within the backoff cap; `stop` ends the
daemon within the grace. And once, the real Dovecot stops and starts while the daemon runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, drop, frontmatter, notes, wait_for
from tests.fakes.dovecot import DovecotServer
from tests.fakes.outage import Mode, OutageProxy

pytestmark = pytest.mark.services

STARTUP_SECONDS = 2.0
CONNECT_TIMEOUT = 1.0
MAX_BACKOFF = 2.0
GRACE_SECONDS = 10.0
#: from "the server is back" to the action note: an attempt still hanging (its deadline), the
#: longest backoff, and the daemon's own work (take, intake, note)
BACK_WITHIN = CONNECT_TIMEOUT + MAX_BACKOFF + 3.0
REASONS = {
    "refused": "connection refused (nothing is listening)",
    "hanging": f"connection timed out after {CONNECT_TIMEOUT:g} s (waiting for the greeting)",
    "slow": f"connection timed out after {CONNECT_TIMEOUT:g} s (waiting for the greeting)",
}


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_outage(dovecot: DovecotServer, mode: Mode) -> Iterator[OutageProxy]:
    """Dovecot behind a proxy that is down in the way `mode` says (slow: 60 s, far past the
    connect deadline)."""
    proxy = OutageProxy(dovecot.port, mode=mode, slow_seconds=60).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _env(daemon_env: dict[str, str], user: str, password: str, port: int) -> dict[str, str]:
    env = dict(daemon_env)
    env.update(
        {
            "IMAP_HOST": "127.0.0.1",
            "IMAP_PORT": str(port),
            "IMAP_USER": user,
            "IMAP_PASSWORD": password,
            "IMAP_SSL": "false",
            "AIE_SERVICES__CONNECT_TIMEOUT": f"{CONNECT_TIMEOUT:g}",
            "AIE_SERVICES__INITIAL_BACKOFF": "0.5",
            "AIE_SERVICES__MAX_BACKOFF": f"{MAX_BACKOFF:g}",
            "AIE_SERVICES__GRACE_SECONDS": f"{GRACE_SECONDS:g}",
        }
    )
    return env


@pytest.fixture
def user(dovecot: DovecotServer) -> str:
    return dovecot.new_user()


@pytest.fixture
def mail_daemon(
    vault: Path, daemon_env: dict[str, str], dovecot: DovecotServer, user: str, imap_outage: OutageProxy
) -> Iterator[DaemonProcess]:
    process = DaemonProcess(vault, _env(daemon_env, user, dovecot.password, imap_outage.port))
    yield process
    process.kill()


def _message(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Lead Hand <lead@plant.example>"
    message["To"] = "ai@plant.example"
    message["Subject"] = subject
    message.set_content(f"{subject}: please have a look.")
    return bytes(message)


def _email_actions(vault: Path) -> list[str]:
    """The source_ref of every email action note, one entry per note."""
    return [
        str(properties["source_ref"])
        for note in notes(vault / "Needs_Action") + notes(vault / "Done")
        if (properties := frontmatter(note)).get("type") == "action" and properties.get("source") == "email"
    ]


def _email_listed(daemon: DaemonProcess) -> dict[str, Any] | None:
    """The email service in `status --json`, or None while the daemon has not registered it yet
    (it builds the optional services after /readyz answers: seconds later on a loaded machine)."""
    result = daemon.cli("status", "--vault", str(daemon.vault), "--json", check=True, timeout=10)
    email: dict[str, Any] | None = json.loads(result.stdout)["services"].get("email")
    return email


def _email_status(daemon: DaemonProcess) -> dict[str, Any]:
    """The email service's status, once the daemon lists it (waited for, with a deadline)."""
    found: list[dict[str, Any]] = []

    def listed() -> bool:
        email = _email_listed(daemon)
        if email is not None:
            found.append(email)
        return email is not None

    wait_for(listed, timeout=30, message="status --json lists the email service")
    return found[-1]


def _retrying(daemon: DaemonProcess) -> dict[str, Any] | None:
    email = _email_listed(daemon)
    return email if email is not None and email["state"] == "retrying" and email.get("last_error") else None


def _failed_once(daemon: DaemonProcess) -> dict[str, Any] | None:
    """Email with a failed attempt and its reason: stable while the server is down, unlike
    `retrying`, which takes turns with `connecting` (for a whole connect deadline per attempt)."""
    email = _email_listed(daemon)
    return email if email is not None and email["attempts"] >= 1 and email.get("last_error") else None


def test_the_daemon_is_visible_and_ready_within_2_s_while_the_mail_server_is_down(
    mail_daemon: DaemonProcess,
) -> None:
    began = time.monotonic()
    mail_daemon.start(wait=False)
    wait_for(lambda: mail_daemon.info() is not None, timeout=30, message="daemon.json")
    visible = time.monotonic() - began
    wait_for(mail_daemon.ready, timeout=30, message="/readyz 200")
    ready = time.monotonic() - began

    assert visible < STARTUP_SECONDS, f"daemon.json after {visible:.2f} s"
    assert ready < STARTUP_SECONDS, f"/readyz 200 after {ready:.2f} s"


def test_a_dropped_file_is_planned_while_the_mail_server_is_down(
    mail_daemon: DaemonProcess, vault: Path
) -> None:
    mail_daemon.start()

    drop(vault, "pump.txt", "Pump 3 on line 2 is leaking oil\n")

    wait_for(lambda: len(notes(vault / "Plans")) == 1, timeout=30, message="the plan of the dropped file")


def test_status_shows_email_retrying_with_the_reason_while_the_mail_server_is_down(
    mail_daemon: DaemonProcess, imap_outage: OutageProxy, mode: Mode, dovecot: DovecotServer
) -> None:
    mail_daemon.start()
    early = _email_status(mail_daemon)

    email = wait_for(lambda: _retrying(mail_daemon), timeout=15, message="email retrying with a reason")

    assert early["state"] in ("connecting", "retrying")
    target = f"IMAP 127.0.0.1:{imap_outage.port}"
    assert email["target"] == target
    assert email["last_error"] == f"{target}: {REASONS[mode]}"
    assert email["attempts"] >= 1 and email["next_attempt"]
    assert dovecot.password not in json.dumps(email)
    text = mail_daemon.cli("status", "--vault", str(mail_daemon.vault), check=True, timeout=10).stdout
    assert REASONS[mode] in text


def test_when_the_mail_server_is_back_the_email_that_waited_becomes_exactly_one_action(
    mail_daemon: DaemonProcess, imap_outage: OutageProxy, dovecot: DovecotServer, user: str, vault: Path
) -> None:
    waited = dovecot.deliver(user, _message("Sent while the mail server was away")).source_ref
    mail_daemon.start()
    wait_for(lambda: _failed_once(mail_daemon), timeout=15, message="a failed attempt")

    imap_outage.set_mode("up")
    began = time.monotonic()
    wait_for(lambda: _email_actions(vault), timeout=30, message="the action of the email that waited")
    back_after = time.monotonic() - began
    later = dovecot.deliver(user, _message("Sent once it was back")).source_ref
    wait_for(lambda: len(_email_actions(vault)) == 2, timeout=30, message="the next email's action")

    assert back_after < BACK_WITHIN, f"taken {back_after:.2f} s after the server came back"
    assert sorted(_email_actions(vault)) == sorted([waited, later]), "each email exactly once"
    assert _email_status(mail_daemon)["state"] == "running"


def test_stop_ends_the_daemon_within_the_grace_while_the_mail_server_is_down(
    mail_daemon: DaemonProcess, vault: Path
) -> None:
    mail_daemon.start()
    wait_for(lambda: _failed_once(mail_daemon), timeout=15, message="a failed attempt")

    began = time.monotonic()
    result = mail_daemon.cli("stop", "--vault", str(vault), timeout=30)
    assert mail_daemon.process is not None
    code = mail_daemon.process.wait(timeout=GRACE_SECONDS + 5)
    took = time.monotonic() - began

    assert result.returncode == 0, result.stderr
    assert code == 0
    assert took < GRACE_SECONDS, f"stopped after {took:.2f} s"


# -- the real server stops and starts while the daemon runs --------------------------------------


@pytest.fixture
def own_dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer().start()
    try:
        yield server
    finally:
        server.close()


def test_mail_delivered_while_dovecot_was_down_arrives_once_after_it_is_back(
    vault: Path, daemon_env: dict[str, str], own_dovecot: DovecotServer
) -> None:
    server = own_dovecot
    user = server.new_user()
    daemon = DaemonProcess(vault, _env(daemon_env, user, server.password, server.port))
    try:
        daemon.start()
        before = server.deliver(user, _message("Before the mail server stopped")).source_ref
        wait_for(lambda: _email_actions(vault) == [before], timeout=30, message="the first email's action")

        server.stop()
        # the first attempt may meet Dovecot on its way down (accepted, then closed): the reason
        # settles on "refused" at the next one
        down = wait_for(
            lambda: (entry := _retrying(daemon)) and REASONS["refused"] in entry["last_error"] and entry,
            timeout=15,
            message="email retrying, refused, while Dovecot is down",
        )
        server.deliver_to_maildir(user, _message("Delivered while the mail server was down"))
        server.restart_same_port()
        began = time.monotonic()
        wait_for(lambda: len(_email_actions(vault)) == 2, timeout=30, message="the email that waited")
        back_after = time.monotonic() - began
        email = wait_for(
            lambda: (status := _email_status(daemon))["state"] == "running" and status,
            timeout=10,
            message="email running again",
        )
        assert daemon.terminate() == 0
    finally:
        daemon.kill()

    assert down["last_error"] == f"IMAP 127.0.0.1:{server.port}: {REASONS['refused']}"
    assert back_after < BACK_WITHIN, f"taken {back_after:.2f} s after Dovecot was back"
    actions = _email_actions(vault)
    assert len(actions) == len(set(actions)) == 2 and before in actions, actions
    assert email["attempts"] == 0
