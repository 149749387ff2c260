"""MIME to text and attachments: what an action gets from any email, however odd."""

from __future__ import annotations

import base64
import io
import os
import tracemalloc
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from ai_employee.sources.mail_parsing import NO_TEXT, ParsedMail, parse_mail, safe_filename

CRLF = b"\r\n"


def parse(raw: bytes, spool: Path, **limits: int) -> ParsedMail:
    return parse_mail(io.BytesIO(raw), spool, **limits)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8", "surrogateescape")


def simple(body: str = "Pump 3 is leaking on line 2.", **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = headers.get("sender", "Jörg Maintenance <Joerg@Example.COM>")
    message["To"] = "employee@example.com"
    message["Subject"] = headers.get("subject", "Pump 3 leaking")
    message["Date"] = "Sat, 21 Nov 2026 10:15:00 +0100"
    message["Message-ID"] = "<abc123@example.com>"
    message.set_content(body)
    return message


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


def test_plain_email_gives_text_and_envelope(spool: Path) -> None:
    mail = parse(simple().as_bytes(), spool)

    assert mail.text == "Pump 3 is leaking on line 2."
    assert mail.subject == "Pump 3 leaking"
    assert mail.sender == "Jörg Maintenance <Joerg@Example.COM>"
    assert mail.sender_address == "joerg@example.com"
    assert mail.message_id == "<abc123@example.com>"
    assert mail.date == datetime(2026, 11, 21, 9, 15, tzinfo=UTC)
    assert mail.attachments == [] and mail.problems == []


def test_html_only_email_is_turned_into_text(spool: Path) -> None:
    message = simple()
    message.set_content("<html><body><h1>Pump 3</h1><p>Leaking on <b>line 2</b>.</p></body></html>", "html")

    mail = parse(message.as_bytes(), spool)

    assert "<" not in mail.text
    assert "Pump 3" in mail.text and "Leaking on **line 2**." in mail.text


def test_alternative_prefers_the_plain_text(spool: Path) -> None:
    message = simple("plain version")
    message.add_alternative("<p>html version</p>", subtype="html")

    assert parse(message.as_bytes(), spool).text == "plain version"


def test_alternative_with_blank_plain_text_falls_back_to_html(spool: Path) -> None:
    message = simple("   \n")
    message.add_alternative("<p>html version</p>", subtype="html")

    assert parse(message.as_bytes(), spool).text == "html version"


def test_pdf_attachment_is_kept_with_its_name_and_type(spool: Path) -> None:
    pdf = b"%PDF-1.4\n" + os.urandom(2000) + b"\n%%EOF\n"
    message = simple()
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="report.pdf")

    mail = parse(message.as_bytes(), spool)

    assert [(a.filename, a.content_type, a.data) for a in mail.attachments] == [
        ("report.pdf", "application/pdf", pdf)
    ]
    assert mail.text == "Pump 3 is leaking on line 2."


def test_large_attachment_goes_to_a_spool_file_without_being_held_in_memory(spool: Path) -> None:
    blob = os.urandom(20 * 1024 * 1024)
    raw_file = spool.parent / "raw.eml"
    raw_file.write_bytes(
        crlf(
            "From: a@example.com\nSubject: big\nContent-Type: multipart/mixed; boundary=XX\n\n"
            "--XX\nContent-Type: text/plain\n\nsee attached\n--XX\n"
            "Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=big.bin\n"
            "Content-Transfer-Encoding: base64\n\n"
        )
        + base64.encodebytes(blob).replace(b"\n", CRLF)
        + b"--XX--\r\n"
    )

    tracemalloc.start()
    try:
        with raw_file.open("rb") as stream:
            mail = parse_mail(stream, spool)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    (attachment,) = mail.attachments
    assert attachment.data is None and attachment.path is not None
    assert attachment.path.parent == spool and attachment.size == len(blob)
    assert attachment.path.read_bytes() == blob
    assert peak < 4 * 1024 * 1024, f"parsing held {peak} bytes at its peak"


def test_small_attachments_stay_in_memory(spool: Path) -> None:
    message = simple()
    message.add_attachment(b"x" * 1000, maintype="application", subtype="octet-stream", filename="a.bin")

    mail = parse(message.as_bytes(), spool, spill_threshold=4096)

    assert mail.attachments[0].data == b"x" * 1000 and mail.attachments[0].path is None
    assert list(spool.iterdir()) == []


def test_cleanup_removes_spool_files(spool: Path) -> None:
    message = simple()
    message.add_attachment(b"x" * 10_000, maintype="application", subtype="octet-stream", filename="a.bin")
    mail = parse(message.as_bytes(), spool, spill_threshold=1024)
    assert len(list(spool.iterdir())) == 1

    mail.cleanup()

    assert list(spool.iterdir()) == []


def test_non_ascii_file_names_are_decoded(spool: Path) -> None:
    message = simple()
    message.add_attachment(b"a", maintype="application", subtype="pdf", filename="Prüfbericht.pdf")
    message.add_attachment(b"b", maintype="text", subtype="plain", filename="Résumé.txt")

    mail = parse(message.as_bytes(), spool)

    assert [a.filename for a in mail.attachments] == ["Prüfbericht.pdf", "Résumé.txt"]


def test_file_names_cannot_name_folders_or_hidden_files() -> None:
    assert safe_filename("../../etc/passwd", "x") == "passwd"
    assert safe_filename("C:\\Users\\me\\report.pdf", "x") == "report.pdf"
    assert safe_filename(".bashrc", "x") == "bashrc"
    assert safe_filename("a\x00b\nc.txt", "x") == "abc.txt"
    assert safe_filename("...", "fallback.bin") == "fallback.bin"
    assert len(safe_filename("a" * 500 + ".pdf", "x")) <= 150
    assert safe_filename("a" * 500 + ".pdf", "x").endswith(".pdf")


def test_attachments_with_the_same_name_get_distinct_names(spool: Path) -> None:
    message = simple()
    for content in (b"1", b"2", b"3"):
        message.add_attachment(content, maintype="image", subtype="png", filename="photo.png")

    mail = parse(message.as_bytes(), spool)

    assert [a.filename for a in mail.attachments] == ["photo.png", "photo (2).png", "photo (3).png"]


def test_attachment_without_a_name_gets_one_from_its_type(spool: Path) -> None:
    message = simple()
    message.add_attachment(b"%PDF", maintype="application", subtype="pdf")

    assert parse(message.as_bytes(), spool).attachments[0].filename == "attachment-1.pdf"


def test_declared_latin1_text_is_decoded(spool: Path) -> None:
    raw = crlf("From: a@example.com\nSubject: s\nContent-Type: text/plain; charset=iso-8859-1\n\n") + (
        "Prüfung für Pumpe".encode("latin-1")
    )

    mail = parse(raw, spool)

    assert mail.text == "Prüfung für Pumpe" and mail.problems == []


def test_unknown_charset_is_read_as_utf8_and_said(spool: Path) -> None:
    raw = crlf("From: a@example.com\nSubject: s\nContent-Type: text/plain; charset=x-klingon\n\nPrüfung\n")

    mail = parse(raw, spool)

    assert mail.text == "Prüfung"
    assert mail.problems == ['the text of part 1: its charset "x-klingon" is unknown; it was read as UTF-8']


def test_undecodable_characters_are_replaced_and_said(spool: Path) -> None:
    raw = crlf("From: a@example.com\nSubject: s\nContent-Type: text/plain; charset=utf-8\n\n") + (
        b"caf\xe9 \xff\xfe ok"
    )

    mail = parse(raw, spool)

    assert mail.text.startswith("caf") and mail.text.endswith("ok")
    assert "not valid UTF-8" in mail.problems[0]


def test_eight_bit_utf8_without_a_charset_is_read_as_utf8(spool: Path) -> None:
    raw = crlf("From: a@example.com\nSubject: s\n\nGrüße\n")

    mail = parse(raw, spool)

    assert mail.text == "Grüße" and mail.problems == []


def test_quoted_printable_text_is_decoded_with_soft_breaks(spool: Path) -> None:
    raw = crlf(
        "From: a@example.com\nSubject: s\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "Pr=C3=BCfung of a very long line that goes on=\n and on.\nSecond line.\n"
    )

    assert parse(raw, spool).text == "Prüfung of a very long line that goes on and on.\nSecond line."


def test_binary_part_keeps_exact_bytes_without_the_line_break_before_the_boundary(spool: Path) -> None:
    payload = b"\x00\x01binary\r\nwith lines\n\r\n"
    raw = (
        crlf(
            "From: a@example.com\nSubject: s\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="XX"\n\n--XX\n'
            "Content-Type: application/octet-stream; name=blob.bin\nContent-Transfer-Encoding: binary\n\n"
        )
        + payload
        + CRLF
        + b"--XX--"
        + CRLF
    )

    mail = parse(raw, spool)

    assert mail.attachments[0].data == payload


def test_missing_closing_boundary_keeps_the_parts_and_says_so(spool: Path) -> None:
    raw = crlf(
        "From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary=XX\n\n"
        "--XX\nContent-Type: text/plain\n\nthe text\n"
        "--XX\nContent-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0x\n"
    )

    mail = parse(raw, spool)

    assert mail.text == "the text"
    assert mail.attachments[0].data == b"%PDF-1"
    assert mail.problems == ["the email ends before its last part was closed; it may be cut off"]


def test_multipart_without_any_part_is_read_as_text(spool: Path) -> None:
    raw = crlf(
        "From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary=XX\n\n"
        "someone forgot the parts\n"
    )

    mail = parse(raw, spool)

    assert mail.text == "someone forgot the parts"
    assert "none was found" in mail.problems[0]


def test_multipart_without_a_boundary_parameter_is_read_as_text(spool: Path) -> None:
    raw = crlf("From: a@example.com\nSubject: s\nContent-Type: multipart/mixed\n\njust text\n")

    mail = parse(raw, spool)

    assert mail.text == "just text"
    assert "names no boundary" in mail.problems[0]


def test_damaged_base64_keeps_what_could_be_decoded(spool: Path) -> None:
    raw = crlf(
        "From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary=XX\n\n"
        "--XX\nContent-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
        "JVBE*Ri0x\nJ\n--XX--\n"
    )

    mail = parse(raw, spool)

    assert mail.attachments[0].data == b"%PDF-1"
    assert mail.problems == [
        'attachment "a.pdf": its base64 data is damaged or cut off; kept what could be decoded'
    ]


def test_unknown_transfer_encoding_is_kept_as_sent(spool: Path) -> None:
    raw = crlf(
        "From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary=XX\n\n"
        "--XX\nContent-Type: application/octet-stream; name=a.bin\nContent-Transfer-Encoding: x-weird\n\n"
        "abc\n--XX--\n"
    )

    mail = parse(raw, spool)

    assert mail.attachments[0].data == b"abc"
    assert mail.problems == [
        'attachment "a.bin": its transfer encoding "x-weird" is unknown; kept as it was sent'
    ]


def test_headers_only_message_has_no_text_line(spool: Path) -> None:
    mail = parse(crlf("From: a@example.com\nSubject: nothing else"), spool)

    assert mail.subject == "nothing else" and mail.text == ""
    assert mail.body() == NO_TEXT


def test_problems_are_listed_in_the_body(spool: Path) -> None:
    mail = ParsedMail(text="hello", problems=["one thing", "another"])

    assert mail.body() == (
        "hello\n\n---\nNot everything in this email could be read:\n- one thing\n- another\n"
    )


def test_garbage_headers_do_not_stop_parsing(spool: Path) -> None:
    raw = crlf("From: <<<@@@>>>\nDate: the day before yesterday\nSubject: =?bogus?q?x?=\n\nbody\n")

    mail = parse(raw, spool)

    assert mail.text == "body"
    assert mail.sender_address is None and mail.date is None


def test_nested_structure_gives_text_inline_images_and_attachments(spool: Path) -> None:
    message = simple("plain body")
    message.add_alternative("<p>html body <img src='cid:img1'></p>", subtype="html")
    html_part = message.get_payload()[1]
    html_part.add_related(b"\x89PNG fake", maintype="image", subtype="png", cid="<img1>")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="spec.pdf")

    mail = parse(message.as_bytes(), spool)

    assert mail.text == "plain body"
    assert [a.content_type for a in mail.attachments] == ["image/png", "application/pdf"]
    assert mail.attachments[1].filename == "spec.pdf"


def test_attached_email_is_kept_as_an_eml_file(spool: Path) -> None:
    inner = simple("forwarded text", subject="the original")
    message = simple("see the forwarded mail")
    message.add_attachment(inner)

    mail = parse(message.as_bytes(), spool)

    (attachment,) = mail.attachments
    assert attachment.filename == "attached-message.eml" and attachment.content_type == "message/rfc822"
    assert attachment.data is not None and b"forwarded text" in attachment.data


def test_very_long_text_becomes_an_attachment(spool: Path) -> None:
    mail = parse(simple("x" * 5000).as_bytes(), spool, max_text_bytes=1024)

    assert mail.text == ""
    assert mail.attachments[0].filename == "message-1.txt"
    assert "too long for the note" in mail.problems[0]


def test_lf_only_line_endings_are_understood(spool: Path) -> None:
    raw = (
        b"From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary=XX\n\n"
        b"--XX\nContent-Type: text/plain\n\nhello\n--XX\nContent-Type: application/pdf; name=a.pdf\n"
        b"Content-Transfer-Encoding: base64\n\nJVBERi0x\n--XX--\n"
    )

    mail = parse(raw, spool)

    assert mail.text == "hello" and mail.attachments[0].data == b"%PDF-1" and mail.problems == []


@pytest.mark.parametrize(
    "content",
    [b"", b"a", b"\r\n", b"line\r\n" * 100, os.urandom(70_000), bytes(range(256)) * 50],
    ids=["empty", "one-byte", "crlf", "lines", "random", "all-bytes"],
)
def test_attachments_match_what_the_standard_library_decodes(spool: Path, content: bytes) -> None:
    message = simple()
    message.add_attachment(content, maintype="application", subtype="octet-stream", filename="f.bin")
    message.add_attachment(
        content.decode("latin-1"), subtype="plain", charset="utf-8", cte="quoted-printable", filename="f.txt"
    )
    raw = message.as_bytes()
    reference = BytesParser(policy=policy.default).parsebytes(raw)
    expected = [part.get_payload(decode=True) for part in reference.iter_attachments()]

    mail = parse(raw, spool, spill_threshold=1024)

    found = [a.path.read_bytes() if a.path is not None else a.data for a in mail.attachments]
    assert found == expected
