"""Email end to end: a real Dovecot on loopback, the real daemon, three messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from bench import sample_documents
from tests.conftest import DaemonProcess, frontmatter, notes, wait_for
from tests.fakes.dovecot import DovecotServer

PDF = sample_documents.text_pdf(["Invoice 4471", "Total due: 1,250.00 EUR"])
BIG = bytes(range(256)) * (5 * 1024 * 1024 // 256)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer().start()
    try:
        yield server
    finally:
        server.close()


def _message(
    subject: str,
    *,
    html: str | None = None,
    text: str | None = None,
    attachment: tuple[str, bytes, str] | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = "Lead Hand <lead@plant.example>"
    message["To"] = "ai@plant.example"
    message["Subject"] = subject
    if text is not None:
        message.set_content(text)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    if attachment is not None:
        name, data, mime = attachment
        main, sub = mime.split("/")
        message.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return bytes(message)


def _email_actions(vault: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for note in notes(vault / "Needs_Action") + notes(vault / "Done"):
        properties = frontmatter(note)
        if properties.get("type") == "action" and properties.get("source") == "email":
            found[str(properties["source_ref"])] = note
    return found


@pytest.fixture
def mail_daemon(
    vault: Path, daemon_env: dict[str, str], dovecot: DovecotServer
) -> Iterator[tuple[DaemonProcess, str]]:
    user = dovecot.new_user()
    env = dict(daemon_env)
    env.update(
        {
            "IMAP_HOST": dovecot.host,
            "IMAP_PORT": str(dovecot.port),
            "IMAP_USER": user,
            "IMAP_PASSWORD": dovecot.password,
            "IMAP_SSL": "false",
        }
    )
    process = DaemonProcess(vault, env)
    yield process, user
    process.kill()


def test_three_emails_become_three_actions_seen_only_after_their_notes_and_never_twice(
    vault: Path, mail_daemon: tuple[DaemonProcess, str], dovecot: DovecotServer
) -> None:
    daemon, user = mail_daemon
    delivered = [
        dovecot.deliver(
            user, _message("Conveyor 2 belt noise", html="<p>The <b>conveyor 2</b> belt is squealing.</p>")
        ),
        dovecot.deliver(
            user,
            _message(
                "Invoice 4471", text="Invoice attached.", attachment=("invoice.pdf", PDF, "application/pdf")
            ),
        ),
        dovecot.deliver(
            user,
            _message(
                "Scan of the manual",
                text="The scanned manual.",
                attachment=("manual.bin", BIG, "application/octet-stream"),
            ),
        ),
    ]
    refs = {f"{item.uidvalidity}:{item.uid}": item.uid for item in delivered}
    daemon.start()

    def all_seen_with_notes() -> bool:
        seen = {ref for ref, uid in refs.items() if "\\Seen" in dovecot.flags(user, uid)}
        actions = _email_actions(vault)  # read after the flags: a seen message must have its note by now
        assert seen <= set(actions), "a message was marked seen before its action note existed"
        return seen == set(refs)

    wait_for(all_seen_with_notes, timeout=60, message="three messages seen, each with its note")
    actions = _email_actions(vault)
    assert set(actions) == set(refs)
    by_subject = {frontmatter(path)["subject"]: path for path in actions.values()}
    html = by_subject["Conveyor 2 belt noise"].read_text()
    assert "conveyor 2" in html.lower() and "<b>" not in html
    for subject, name, size in (
        ("Invoice 4471", "invoice.pdf", len(PDF)),
        ("Scan of the manual", "manual.bin", len(BIG)),
    ):
        links = frontmatter(by_subject[subject])["attachments"]
        target = next(link for link in links if name in link)
        path = vault / (target[2:-2])
        assert path.stat().st_size == size
    invoice = by_subject["Invoice 4471"]
    assert "## invoice.pdf" in invoice.read_text() and "Total due: 1,250.00 EUR" in invoice.read_text()
    assert frontmatter(invoice)["extracted"] == "pdf-text"
    assert frontmatter(by_subject["Scan of the manual"])["extracted"] == "none"  # kept, not read
    wait_for(lambda: len(notes(vault / "Plans")) == 3, message="three plans")

    assert daemon.terminate() == 0
    daemon.start()
    extra = dovecot.deliver(user, _message("After the restart", text="One more."))
    wait_for(
        lambda: f"{extra.uidvalidity}:{extra.uid}" in _email_actions(vault),
        timeout=60,
        message="the message sent after the restart",
    )
    assert len(_email_actions(vault)) == 4
    status = json.loads(daemon.cli("status", "--vault", str(vault), "--json").stdout)
    assert status["services"]["email"]["state"] == "running"
