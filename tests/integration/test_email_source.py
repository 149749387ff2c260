"""The email source against a real Dovecot on loopback: mail delivered by IMAP APPEND."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import psutil
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.config import EmailSettings, Settings
from ai_employee.model.events import Event, EventType
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.services import ServiceContext, ServiceState
from ai_employee.sources import email as email_source
from ai_employee.sources.email import EmailSource, sender_allowed
from ai_employee.sources.email_mailbox import Mailbox
from tests.fakes.common import NoActions, NoApprovals
from tests.fakes.dovecot import DovecotServer
from tests.fakes.outage import Mode, OutageProxy
from tests.fakes.smtp_server import FakeSmtpServer
from tests.integration.conftest_email import (  # noqa: F401 - the *_fixture names register fixtures
    EmailHarness,
    MemoryState,
    RecordingIntake,
    _Routes,
    dovecot_fixture,
    eventually,
    harness_fixture,
    running,
    user_fixture,
)

pytestmark = pytest.mark.services

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def mail(
    subject: str, body: str = "Pump 3 is leaking on line 2.", sender: str = "Ops <ops@example.com>"
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "employee@example.com"
    message["Subject"] = subject
    message["Date"] = "Sat, 21 Nov 2026 10:15:00 +0000"
    message["Message-ID"] = f"<{abs(hash(subject))}@example.com>"
    message.set_content(body)
    return message


def html_only() -> EmailMessage:
    message = mail("Leak report")
    message.set_content("<html><body><p>Pump 3 is <b>leaking</b>.</p></body></html>", "html")
    return message


def with_pdf() -> EmailMessage:
    message = mail("Inspection report")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="inspection.pdf")
    return message


def with_big_attachment(blob: bytes) -> EmailMessage:
    message = mail("Camera footage")
    message.add_attachment(blob, maintype="application", subtype="octet-stream", filename="footage.bin")
    return message


async def activity(source: EmailSource) -> str:
    return str((await source.health()).data["activity"])


async def idling(source: EmailSource) -> bool:
    return await activity(source) == "idle"


async def unhealthy(source: EmailSource) -> bool:
    return not (await source.health()).healthy


async def failed(source: EmailSource) -> bool:
    return "last_error" in (await source.health()).data


# -- taking mail -------------------------------------------------------------------------------


async def test_three_emails_become_three_actions_with_their_attachments(harness: EmailHarness) -> None:
    blob = os.urandom(5 * 1024 * 1024)
    refs = [harness.deliver(html_only()), harness.deliver(with_pdf())]
    refs.append(harness.deliver(with_big_attachment(blob)))
    source = harness.source()

    async with running(source):
        await eventually(lambda: len(harness.intake.submitted) == 3, timeout=20, what="three submits")

    html, pdf, big = harness.intake.submitted
    assert harness.intake.refs() == refs
    assert html.message.source == "email" and html.message.title == "Leak report"
    assert html.message.sender == "Ops <ops@example.com>" and html.message.subject == "Leak report"
    assert "Pump 3 is **leaking**." in html.message.body and "<" not in html.message.body
    assert html.files == {}
    assert pdf.files == {"inspection.pdf": PDF}
    assert pdf.message.attachments[0].content_type == "application/pdf"
    assert big.files == {"footage.bin": blob}
    assert big.message.attachments[0].path is not None, "a 5 MB attachment is handed over as a file"
    assert list((harness.vault / email_source.SPOOL).iterdir()) == [], "spool files are removed"


async def test_unseen_mail_is_taken_in_order_across_search_windows_and_batches(harness: EmailHarness) -> None:
    refs = [harness.deliver(mail(f"number {n}"), flags="\\Seen" if n == 2 else "") for n in range(1, 7)]
    source = harness.source(source_options={"search_window": 2, "batch_size": 2})

    async with running(source):
        await eventually(lambda: len(harness.intake.submitted) == 5, what="five submits")

    unread = [ref for n, ref in enumerate(refs, 1) if n != 2]
    assert harness.intake.refs() == unread, "in UID order, and read mail is left alone"


async def test_a_restart_takes_nothing_twice(harness: EmailHarness) -> None:
    refs = [harness.deliver(mail("first")), harness.deliver(mail("second"))]
    async with running(harness.source()):
        await eventually(lambda: harness.intake.refs() == refs, what="both taken")
    # A person marks them unread again: the checkpoint, not only \Seen, keeps them out.
    with harness.dovecot.client(harness.user) as imap:
        imap.select("INBOX")
        imap.uid("STORE", "1:*", "-FLAGS", "(\\Seen)")

    third = harness.deliver(mail("third"))
    async with running(harness.source()):
        await eventually(lambda: len(harness.intake.submitted) == 3, what="the new one taken")
        await asyncio.sleep(0)  # one more turn of the loop: nothing else may come

    assert harness.intake.refs() == [*refs, third]


async def test_message_is_marked_seen_only_after_submit_returned(harness: EmailHarness) -> None:
    ref = harness.deliver(mail("hold on"))
    uid = int(ref.split(":")[1])
    harness.intake.gate = asyncio.Event()

    async with running(harness.source()):
        await asyncio.wait_for(harness.intake.entered.wait(), timeout=10)
        flags_during = await asyncio.to_thread(harness.dovecot.flags, harness.user, uid)
        harness.intake.gate.set()
        await eventually(
            lambda: asyncio.to_thread(lambda: "\\Seen" in harness.dovecot.flags(harness.user, uid)),
            what="\\Seen after submit",
        )

    assert "\\Seen" not in flags_during
    assert harness.intake.refs() == [ref]


async def test_a_failed_submit_leaves_the_message_unseen_and_it_is_taken_again(harness: EmailHarness) -> None:
    ref = harness.deliver(mail("retry me"))
    uid = int(ref.split(":")[1])
    harness.intake.fail_next = 1
    source = harness.source()

    async with running(source):
        await eventually(lambda: harness.intake.refs() == [ref], what="the retry")
        await eventually(
            lambda: asyncio.to_thread(lambda: "\\Seen" in harness.dovecot.flags(harness.user, uid)),
            what="\\Seen after the retry",
        )
        report = await source.health()

    assert report.healthy
    assert report.data["messages_taken"] == 1


async def test_a_message_the_intake_keeps_refusing_is_taken_from_its_headers(harness: EmailHarness) -> None:
    ref = harness.deliver(with_pdf())
    follower = harness.deliver(mail("behind it"))
    harness.intake.fail_next = 3

    async with running(harness.source()):
        await eventually(lambda: harness.intake.refs() == [ref, follower], what="both taken")

    taken = harness.intake.submitted[0]
    assert taken.message.title == "Inspection report" and taken.files == {}
    assert "could not be taken whole (the intake refused email" in taken.message.body
    assert "it stays on the mail server" in taken.message.body


async def test_moved_to_a_folder_when_configured(harness: EmailHarness) -> None:
    harness.deliver(mail("file me"))

    async with running(harness.source(after_intake="move", move_to_folder="Processed")):
        await eventually(
            lambda: asyncio.to_thread(lambda: harness.dovecot.uids(harness.user) == []),
            what="the inbox to be empty",
        )

    assert len(harness.dovecot.uids(harness.user, "Processed")) == 1
    assert len(harness.intake.submitted) == 1


async def test_sender_on_the_allow_list_is_trusted_and_others_are_not(harness: EmailHarness) -> None:
    harness.deliver(mail("from the boss", sender="Boss <Boss@Example.com>"))
    harness.deliver(mail("from a stranger", sender="someone@elsewhere.org"))

    async with running(harness.source(allowed_senders=["boss@example.com"])):
        await eventually(lambda: len(harness.intake.submitted) == 2, what="both taken")

    assert [s.message.trusted_sender for s in harness.intake.submitted] == [True, False]


def test_allow_list_entries_are_addresses_or_domains() -> None:
    assert sender_allowed("a@x.org", [])
    assert sender_allowed("A@X.org".lower(), ["a@x.org"])
    assert sender_allowed("anyone@example.com", ["@example.com"])
    assert not sender_allowed("anyone@badexample.com", ["@example.com"])
    assert not sender_allowed(None, ["a@x.org"])


# -- odd mail ------------------------------------------------------------------------------------


async def test_odd_mail_becomes_actions_that_say_what_could_not_be_read(harness: EmailHarness) -> None:
    broken = (
        b"From: a@example.com\r\nSubject: broken mime\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain\r\n\r\nthe readable part\r\n"
        b"--XX\r\nContent-Type: application/pdf; name=cut.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQK\r\nJVB"
    )
    charset = (
        b"From: a@example.com\r\nSubject: odd charset\r\nContent-Type: text/plain; charset=x-martian\r\n\r\n"
        b"Gr\xc3\xbc\xc3\x9fe\r\n"
    )
    no_body = b"From: a@example.com\r\nSubject: nothing here\r\n\r\n"
    refs = [harness.deliver(broken), harness.deliver(charset), harness.deliver(no_body)]
    normal = harness.deliver(mail("after the odd ones"))

    async with running(harness.source()):
        await eventually(lambda: len(harness.intake.submitted) == 4, what="four actions")

    first, second, third, fourth = harness.intake.submitted
    assert harness.intake.refs() == [*refs, normal]
    assert "the readable part" in first.message.body
    assert "Not everything in this email could be read" in first.message.body
    assert first.files["cut.pdf"].startswith(b"%PDF-1.4")
    assert "original.eml" in first.files and first.files["original.eml"].endswith(b"JVB")
    assert "Grüße" in second.message.body and "x-martian" in second.message.body
    assert third.message.body.startswith("(This email has no text.)")
    assert third.message.title == "nothing here"
    assert fourth.message.body == "Pump 3 is leaking on line 2."


async def test_email_over_the_size_limit_becomes_an_action_from_its_headers(harness: EmailHarness) -> None:
    harness.deliver(with_big_attachment(os.urandom(300_000)))

    async with running(harness.source(source_options={"max_message_bytes": 100_000})):
        await eventually(lambda: len(harness.intake.submitted) == 1, what="the action")

    (taken,) = harness.intake.submitted
    assert taken.message.title == "Camera footage"
    assert "more than the 98 KB limit: only its headers were read" in taken.message.body
    assert "footage.bin" not in taken.files


# -- push, polling, connection -------------------------------------------------------------------


async def test_idle_push_takes_a_new_message_without_waiting_for_the_poll(harness: EmailHarness) -> None:
    source = harness.source(poll_interval_seconds=300)

    async with running(source):
        await eventually(lambda: idling(source), what="IDLE")
        ref = await asyncio.to_thread(harness.deliver, mail("urgent"))
        latency = await eventually(lambda: harness.intake.refs() == [ref], timeout=10, what="the push")

    assert latency < 3.0, f"took {latency:.2f} s"


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["plain", "imaps"])
async def test_mail_that_lands_just_before_idle_begins_is_taken_at_once(
    harness: EmailHarness, monkeypatch: pytest.MonkeyPatch, implicit_tls: bool
) -> None:
    """Mail delivered between the last SEARCH and IDLE: Dovecot answers IDLE with "+ idling" and
    "* 2 EXISTS" together, and the EXISTS must not sit in the read buffer until the IDLE renew."""
    landed: list[str] = []
    idle_start = Mailbox.idle_start

    def deliver_then_idle(mailbox: Mailbox) -> None:
        if not landed:  # the first IDLE, after the first (empty) search
            landed.append(harness.deliver(mail("just before IDLE")))
        idle_start(mailbox)

    monkeypatch.setattr(Mailbox, "idle_start", deliver_then_idle)
    server: DovecotServer | None = None
    email: dict[str, object] = {"poll_interval_seconds": 300}
    options: dict[str, object] = {"idle_renew_seconds": 300}
    if implicit_tls:
        server = await asyncio.to_thread(lambda: DovecotServer(tls=True).start())
        harness.dovecot = server
        email.update(ssl=True, port=server.tls_port)
        options["ssl_context"] = ssl.create_default_context(cafile=str(server.cert_file))
    source = harness.source(source_options=options, **email)
    try:
        async with running(source):
            await eventually(lambda: bool(landed), what="the delivery just before IDLE")
            latency = await eventually(lambda: harness.intake.refs() == landed, timeout=10, what="the mail")
            await eventually(lambda: idling(source), what="IDLE again")
            pushed = await asyncio.to_thread(harness.deliver, mail("while idle"))
            await eventually(lambda: harness.intake.refs() == [*landed, pushed], timeout=10, what="the push")
    finally:
        if server is not None:
            await asyncio.to_thread(server.close)

    assert latency < 3.0, f"took {latency:.2f} s"


async def test_without_idle_the_source_polls(harness: EmailHarness) -> None:
    server = DovecotServer(idle=False).start()
    try:
        harness.dovecot = server
        source = harness.source(poll_interval_seconds=0.3)
        async with running(source):
            ref = await asyncio.to_thread(harness.deliver, mail("polled"))
            await eventually(lambda: harness.intake.refs() == [ref], what="the poll")
            report = await source.health()
    finally:
        server.close()

    assert report.data["mode"] == "poll" and "no IDLE" in report.detail


async def test_stop_while_idle_returns_promptly(harness: EmailHarness) -> None:
    source = harness.source(source_options={"idle_slice_seconds": 1.0})
    task = asyncio.create_task(source.run())
    await asyncio.wait_for(source.ready.wait(), timeout=10)
    await eventually(lambda: idling(source), what="IDLE")

    started = asyncio.get_running_loop().time()
    await source.stop()
    await asyncio.wait_for(task, timeout=5)

    assert asyncio.get_running_loop().time() - started < 2.5


async def test_reconnects_after_the_server_restarts(harness: EmailHarness) -> None:
    server = DovecotServer().start()
    try:
        harness.dovecot = server
        source = harness.source()
        async with running(source):
            first = await asyncio.to_thread(harness.deliver, mail("before"))
            await eventually(lambda: harness.intake.refs() == [first], what="the first")
            await asyncio.to_thread(server.stop)
            await eventually(lambda: unhealthy(source), what="unhealthy while the server is down")
            await asyncio.to_thread(server.restart_same_port)
            second = await asyncio.to_thread(harness.deliver, mail("after"))
            await eventually(lambda: harness.intake.refs() == [first, second], timeout=15, what="reconnect")
            assert (await source.health()).healthy
    finally:
        server.close()


@pytest.mark.parametrize("implicit_tls", [True, False], ids=["imaps", "starttls"])
async def test_connection_is_encrypted_with_tls(harness: EmailHarness, implicit_tls: bool) -> None:
    server = await asyncio.to_thread(lambda: DovecotServer(tls=True).start())
    try:
        harness.dovecot = server
        ref = await asyncio.to_thread(harness.deliver, mail("over TLS"))
        trust = ssl.create_default_context(cafile=str(server.cert_file))
        source = harness.source(
            ssl=implicit_tls,
            port=server.tls_port if implicit_tls else server.port,
            source_options={"ssl_context": trust},
        )
        async with running(source):
            await eventually(lambda: harness.intake.refs() == [ref], what="taken")
        login = f"Login: user=<{harness.user}>"
        logins = [line for line in server.log_tail(200).splitlines() if login in line]
    finally:
        await asyncio.to_thread(server.close)

    assert len(logins) == 2, logins
    assert ", TLS," not in logins[0], "the test's own delivery is plain"
    assert ", TLS," in logins[1], "the source's session is encrypted"


async def test_xoauth2_logs_in_with_the_access_token(harness: EmailHarness) -> None:
    presented: list[str] = []

    async def introspect(request: web.Request) -> web.Response:  # RFC 7662, as Dovecot asks it
        token = str((await request.post()).get("token", ""))
        presented.append(token)
        return web.json_response({"active": token == "access-token-1", "username": harness.user})

    app = web.Application()
    app.router.add_post("/introspect", introspect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = await asyncio.to_thread(
        lambda: DovecotServer(oauth2_introspection_url=f"http://127.0.0.1:{port}/introspect").start()
    )
    try:
        harness.dovecot = server
        ref = await asyncio.to_thread(harness.deliver, mail("signed in with OAuth"))
        source = harness.source(password=None, oauth2_token="access-token-1")
        async with running(source):
            await eventually(lambda: harness.intake.refs() == [ref], what="taken")
    finally:
        await asyncio.to_thread(server.close)
        await runner.cleanup()

    assert presented == ["access-token-1"]


async def test_wrong_password_is_reported_in_health(harness: EmailHarness) -> None:
    source = harness.source(password="wrong")
    task = asyncio.create_task(source.run())
    try:
        await eventually(lambda: failed(source), what="a login failure")
        report = await source.health()
    finally:
        await source.stop()
        await asyncio.wait_for(task, timeout=5)

    assert not report.healthy and report.detail.startswith("retrying: IMAP 127.0.0.1:")
    assert "login failed: [AUTHENTICATIONFAILED]" in report.detail, report.detail
    assert "wrong" not in report.detail


# -- replies -------------------------------------------------------------------------------------


async def test_outcome_reply_is_logged_in_dry_run(harness: EmailHarness) -> None:
    harness.user += "@example.com"  # replies are sent from the account's address
    ref = harness.deliver(mail("please fix", sender="Boss <boss@example.com>"))
    source = harness.source(reply_enabled=True, reply_dry_run=True, allowed_senders=["boss@example.com"])

    with capture_logs() as logs:
        async with running(source):
            await eventually(lambda: harness.intake.refs() == [ref], what="taken")
            action_id = harness.intake.ids[ref]
            harness.bus.publish(
                Event(
                    type=EventType.PLAN_EXECUTED,
                    correlation_id=action_id,
                    source="pipeline",
                    payload={
                        "plan_id": "plan-1",
                        "action": "atlas.work_order",
                        "status": "done",
                        "dry_run": True,
                        "result": {"work_order_id": 42},
                    },
                )
            )
            await harness.bus.drain(timeout=5)

    replies = [entry for entry in logs if entry["event"] == "email.reply_dry_run"]
    assert len(replies) == 1
    assert replies[0]["to"] == "boss@example.com" and replies[0]["subject"] == "Re: please fix"
    assert "has been handled" in replies[0]["body"] and "work_order_id: 42" in replies[0]["body"]


# -- configuration -------------------------------------------------------------------------------


def _context(email: EmailSettings, tmp_path: Path) -> ServiceContext:
    return ServiceContext(
        settings=Settings(email=email),
        bus=InProcessEventBus(),
        intake=RecordingIntake(),
        vault_root=tmp_path,
        state=MemoryState(),
        approvals=NoApprovals(),
        routes=_Routes(),
        actions=NoActions(),
    )


def test_unconfigured_email_stays_off_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(PluginDisabled, match="IMAP_HOST, IMAP_USER and IMAP_PASSWORD are not set"):
        email_source.create(_context(EmailSettings(), tmp_path))


def test_missing_password_is_named(tmp_path: Path) -> None:
    with pytest.raises(PluginDisabled, match="IMAP_PASSWORD is not set"):
        email_source.create(_context(EmailSettings(host="imap.example.com", user="me"), tmp_path))


def test_configured_email_builds_the_service(tmp_path: Path) -> None:
    service = email_source.create(
        _context(EmailSettings(host="imap.example.com", user="me", password="secret"), tmp_path)
    )

    assert service.name == "email" and isinstance(service, EmailSource)


def outcome(action_id: str, event_type: EventType = EventType.PLAN_EXECUTED) -> Event:
    payload = {"plan_id": "plan-1", "action": "atlas.work_order", "status": "done", "dry_run": True}
    if event_type == EventType.PLAN_FAILED:
        payload.update(status="failed", error="Atlas answered 503")
    return Event(type=event_type, correlation_id=action_id, source="pipeline", payload=payload)


async def test_outcome_reply_is_sent_over_smtp_once(harness: EmailHarness) -> None:
    harness.user = f"{harness.user}@example.com"
    smtp = await FakeSmtpServer(username=harness.user, password=harness.dovecot.password).start()
    original = mail("please fix", sender="Boss <boss@example.com>")
    ref = harness.deliver(original)
    source = harness.source(
        reply_enabled=True,
        reply_dry_run=False,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        allowed_senders=["@example.com"],
    )
    try:
        async with running(source):
            await eventually(lambda: harness.intake.refs() == [ref], what="taken")
            for _ in range(2):  # a redelivered event sends nothing more
                harness.bus.publish(outcome(harness.intake.ids[ref], EventType.PLAN_FAILED))
                await harness.bus.drain(timeout=10)
    finally:
        await smtp.close()

    (sent,) = smtp.received
    reply = sent.message
    assert sent.recipients == ["boss@example.com"] and sent.auth == (harness.user, harness.dovecot.password)
    assert reply["From"] == harness.user and reply["Subject"] == "Re: please fix"
    assert reply["In-Reply-To"] == original["Message-ID"] and reply["Auto-Submitted"] == "auto-replied"
    assert "could not be handled" in reply.get_content() and "Atlas answered 503" in reply.get_content()


async def test_a_reply_to_an_smtp_server_that_never_answers_gives_up_within_its_deadline(
    harness: EmailHarness,
) -> None:
    harness.user = f"{harness.user}@example.com"
    harness.services.update(connect_timeout=0.3, grace_seconds=1.0)  # the whole send: the grace
    silent = await asyncio.to_thread(lambda: OutageProxy(harness.dovecot.port, mode="hanging").start())
    ref = harness.deliver(mail("please fix", sender="Boss <boss@example.com>"))
    source = harness.source(
        reply_enabled=True,
        reply_dry_run=False,
        smtp_host="127.0.0.1",
        smtp_port=silent.port,
        allowed_senders=["@example.com"],
    )
    loop = asyncio.get_running_loop()
    try:
        with capture_logs() as logs:
            async with running(source):
                await eventually(lambda: harness.intake.refs() == [ref], what="taken")
                started = loop.time()
                harness.bus.publish(outcome(harness.intake.ids[ref]))
                await harness.bus.drain(timeout=10)
                took = loop.time() - started
                link = source.link()
    finally:
        await asyncio.to_thread(silent.stop)

    assert [entry["event"] for entry in logs if entry["event"].startswith("email.reply")] == [
        "email.reply_failed"
    ]
    assert silent.accepted >= 1 and took < 1.0 + 0.5
    assert link.state is ServiceState.RUNNING, "the mailbox side did not notice"


async def test_no_reply_to_automatic_mail_or_untrusted_senders(harness: EmailHarness) -> None:
    harness.user = f"{harness.user}@example.com"
    robot = mail("Delivery report", sender="mailer-daemon@example.com")
    listed = mail("[list] digest", sender="list@example.com")
    listed["List-Id"] = "<ops.example.com>"
    stranger = mail("hello", sender="stranger@elsewhere.org")
    refs = [harness.deliver(robot), harness.deliver(listed), harness.deliver(stranger)]
    source = harness.source(reply_enabled=True, allowed_senders=["@example.com"])

    with capture_logs() as logs:
        async with running(source):
            await eventually(lambda: harness.intake.refs() == refs, what="taken")
            for ref in refs:
                harness.bus.publish(outcome(harness.intake.ids[ref]))
            await harness.bus.drain(timeout=10)

    assert [entry["event"] for entry in logs if entry["event"].startswith("email.reply")] == [
        "email.reply_skipped"
    ] * 3


# -- an outside server that is down --------------------------------------------------------------

OUTAGE = {"connect_timeout": 1.0, "initial_backoff": 0.5, "max_backoff": 2.0}
#: hanging and slow: the attempt under way when the server returns still costs its deadline
COME_BACK_WITHIN = OUTAGE["connect_timeout"] + OUTAGE["max_backoff"] + 2.0

DOWN: tuple[Mode, ...] = ("refused", "hanging", "slow")
REASONS = {
    "refused": "connection refused (nothing is listening)",
    "hanging": "connection timed out after 1 s (waiting for the greeting)",
    "slow": "connection timed out after 1 s (waiting for the greeting)",
}


@pytest.fixture(name="mode")
def mode_fixture() -> Mode:
    """How the server is down; a test parametrized over `mode` overrides it."""
    return "hanging"


@pytest.fixture(name="outage")
async def outage_fixture(harness: EmailHarness, mode: Mode) -> AsyncIterator[OutageProxy]:
    """The harness's Dovecot behind an OutageProxy, down in the way `mode` says (slow: far
    slower than the connect deadline). Sources reach the server through it."""
    harness.services.update(OUTAGE)
    proxy = await asyncio.to_thread(
        lambda: OutageProxy(harness.dovecot.port, mode=mode, slow_seconds=60).start()
    )
    try:
        yield proxy
    finally:
        await asyncio.to_thread(proxy.stop)


def state_of(source: EmailSource) -> ServiceState:
    return source.link().state


@pytest.mark.parametrize("mode", DOWN)
async def test_with_the_server_down_the_source_is_ready_at_once_and_retrying_with_the_reason(
    harness: EmailHarness, outage: OutageProxy, mode: Mode
) -> None:
    source = harness.source(port=outage.port)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async with running(source, timeout=0.5):
        ready_after = loop.time() - started
        await eventually(
            lambda: state_of(source) is ServiceState.RETRYING,
            timeout=OUTAGE["connect_timeout"] + 1,
            what="retrying",
        )
        link = source.link()
        report = await source.health()

    assert ready_after < 0.5
    assert link.target == f"IMAP 127.0.0.1:{outage.port}"
    assert link.last_error == f"IMAP 127.0.0.1:{outage.port}: {REASONS[mode]}"
    assert link.attempts >= 1 and link.next_attempt is not None
    assert not report.healthy
    assert report.detail.startswith(f"retrying: {link.last_error}; next attempt in ")


@pytest.mark.parametrize("mode", DOWN)
async def test_when_the_server_is_back_the_mail_that_waited_is_taken_once(
    harness: EmailHarness, outage: OutageProxy
) -> None:
    waited = harness.deliver(mail("sent while the server was away"))
    source = harness.source(port=outage.port)

    async with running(source):
        await eventually(lambda: source.link().attempts >= 2, timeout=10, what="two failed attempts")
        await asyncio.to_thread(outage.set_mode, "up")
        back_after = await eventually(
            lambda: harness.intake.refs() == [waited], timeout=COME_BACK_WITHIN, what="the mail that waited"
        )
        later = await asyncio.to_thread(harness.deliver, mail("sent once it was back"))
        await eventually(lambda: len(harness.intake.submitted) == 2, what="the next mail")
        link = source.link()

    assert harness.intake.refs() == [waited, later], "the mail that waited is taken exactly once"
    assert back_after < COME_BACK_WITHIN
    assert link.state is ServiceState.RUNNING and link.attempts == 0


async def test_stop_during_a_hung_connect_does_not_wait_for_the_deadline(
    harness: EmailHarness, outage: OutageProxy
) -> None:
    harness.services["connect_timeout"] = 30.0
    source = harness.source(port=outage.port)
    task = asyncio.create_task(source.run())
    await eventually(
        lambda: outage.accepted >= 1 and state_of(source) is ServiceState.CONNECTING, what="a hung connect"
    )
    loop = asyncio.get_running_loop()

    started = loop.time()
    await source.stop()
    await asyncio.wait_for(task, timeout=5)

    assert loop.time() - started < 1.0


async def test_a_refused_login_is_retried_within_the_backoff_cap(harness: EmailHarness) -> None:
    harness.services.update(initial_backoff=0.05, max_backoff=0.2)
    source = harness.source(password="wrong")

    async with running(source):
        await eventually(lambda: source.link().attempts >= 3, timeout=10, what="three refused logins")
        link = source.link()

    assert link.state is ServiceState.RETRYING
    assert link.next_attempt is not None
    assert (link.next_attempt - datetime.now(UTC)).total_seconds() <= 0.2
    assert "login failed" in (link.last_error or "")


async def test_a_server_gone_silent_during_idle_is_found_and_the_source_connects_again(
    harness: EmailHarness,
) -> None:
    server = await asyncio.to_thread(lambda: DovecotServer().start())
    harness.dovecot = server
    harness.services.update(read_timeout=1.0)
    source = harness.source(source_options={"idle_renew_seconds": 0.5})
    frozen: list[psutil.Process] = []
    try:
        async with running(source):
            await eventually(lambda: idling(source), what="IDLE")
            frozen = serving(server)
            for process in frozen:
                process.suspend()  # the server goes silent: no answer, no close
            silent_for = await eventually(
                lambda: state_of(source) is ServiceState.RETRYING, timeout=5, what="the silence found"
            )
            reason = source.link().last_error
            ref = await asyncio.to_thread(harness.deliver, mail("after the silence"))
            await eventually(lambda: harness.intake.refs() == [ref], timeout=10, what="taken on a new line")
    finally:
        for process in frozen:
            with contextlib.suppress(psutil.Error):
                process.resume()
        await asyncio.to_thread(server.close)

    assert len(frozen) == 1
    assert silent_for < 0.5 + 1.0 + 1.5, "the renew interval, the read deadline, and a slice of IDLE"
    assert reason == f"IMAP 127.0.0.1:{server.port}: no answer after 1 s"


def serving(server: DovecotServer) -> list[psutil.Process]:
    """The Dovecot processes holding a client connection (the source's session)."""
    found = []
    for connection in psutil.net_connections(kind="tcp"):
        if (
            connection.status == psutil.CONN_ESTABLISHED
            and connection.laddr
            and connection.laddr.port == server.port
            and connection.pid not in (None, os.getpid())
        ):
            found.append(psutil.Process(connection.pid))
    return found
