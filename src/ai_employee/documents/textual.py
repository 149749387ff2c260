"""Documents that are text underneath: HTML, RTF, e-mails (.eml, Outlook .msg) and plain text.
Runs in a reading worker."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

from ai_employee.documents.extraction import DocumentProblem, Extraction, Limits, TextBudget
from ai_employee.documents.text import decode_text, read_head

#: Outlook .msg property streams (MS-OXMSG), Unicode (001F) variants.
_MSG_SUBJECT = "__substg1.0_0037001F"
_MSG_SENDER = "__substg1.0_0C1A001F"
_MSG_SENDER_ADDRESS = "__substg1.0_5D01001F"
_MSG_TO = "__substg1.0_0E04001F"
_MSG_BODY = "__substg1.0_1000001F"
_MSG_ATTACH_NAME = "__substg1.0_3707001F"


def _budgeted(kind: str, text: str, limits: Limits) -> Extraction:
    """Text read as `kind`, cut at `limits.max_chars` with a clear line."""
    budget = TextBudget(limits.max_chars)
    whole = budget.add(text)
    return Extraction(kind=kind, method=kind, text=budget.text(), cut=None if whole else budget.cut_note())


def _read_capped(path: Path, limits: Limits) -> bytes:
    # Text-like documents are at most a few times their text: read only what can be kept.
    return read_head(path, min(limits.max_bytes, limits.max_chars * 8))


def html_to_markdown(html: str) -> str:
    import html2text

    converter = html2text.HTML2Text(bodywidth=0)
    converter.ignore_images = True
    converter.unicode_snob = True
    return converter.handle(html).strip()


def read_html(path: Path, limits: Limits) -> Extraction:
    return _budgeted("html", html_to_markdown(decode_text(_read_capped(path, limits))), limits)


def read_text_file(path: Path, limits: Limits) -> Extraction:
    return _budgeted("text", decode_text(_read_capped(path, limits)).strip(), limits)


def read_rtf(path: Path, limits: Limits) -> Extraction:
    from striprtf.striprtf import rtf_to_text

    raw = _read_capped(path, limits).decode("latin-1")
    try:
        text = str(rtf_to_text(raw, errors="replace"))  # type: ignore[no-untyped-call]
    except (ValueError, IndexError) as error:
        raise DocumentProblem(f"damaged RTF file ({error})") from error
    return _budgeted("rtf", text.strip(), limits)


def read_eml(path: Path, limits: Limits) -> Extraction:
    with path.open("rb") as handle:
        data = handle.read(limits.max_bytes)
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    lines = [
        f"**{label}:** {message[header]}"
        for label, header in (("From", "From"), ("To", "To"), ("Date", "Date"), ("Subject", "Subject"))
        if message[header]
    ]
    body = ""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is not None:
        try:
            content = part.get_content()
        except (LookupError, ValueError):
            payload = part.get_payload(decode=True)
            content = decode_text(payload if isinstance(payload, bytes) else b"")
        body = html_to_markdown(content) if part.get_content_type() == "text/html" else str(content).strip()
    names = [item.get_filename() or item.get_content_type() for item in message.iter_attachments()]
    text = "\n".join(lines) + "\n\n" + body
    if names:
        text += "\n\nAttached to this e-mail (kept inside it, not read): " + ", ".join(
            f"`{n}`" for n in names
        )
    return _budgeted("eml", text.strip(), limits)


def read_ole(path: Path, limits: Limits, name: str) -> Extraction:
    """An Outlook .msg; other OLE files (legacy .doc, .xls, .ppt) have no reader here."""
    import olefile

    try:
        ole = olefile.OleFileIO(str(path))
    except OSError as error:
        raise DocumentProblem(f"damaged Outlook/Office file ({error})") from error
    try:
        if not ole.exists(_MSG_SUBJECT) and not ole.exists(_MSG_BODY):
            suffix = name.rsplit(".", 1)[-1].lower() if "." in name else "old Office"
            return Extraction(
                kind="other",
                method="none",
                hint=f"Old binary Office files (.{suffix}) are not read; save it as .docx/.xlsx/.pdf to have"
                " it read.",
            )

        def stream(name: str) -> str:
            if not ole.exists(name):
                return ""
            with ole.openstream(name) as handle:
                return str(handle.read(limits.max_bytes).decode("utf-16-le", "replace")).rstrip("\x00")

        sender = stream(_MSG_SENDER)
        address = stream(_MSG_SENDER_ADDRESS)
        lines = [
            f"**{label}:** {value}"
            for label, value in (
                ("From", f"{sender} <{address}>" if sender and address else sender or address),
                ("To", stream(_MSG_TO)),
                ("Subject", stream(_MSG_SUBJECT)),
            )
            if value
        ]
        attached = [
            stream("/".join([*entry[:-1], _MSG_ATTACH_NAME]))
            for entry in ole.listdir(streams=True, storages=False)
            if entry[-1] == _MSG_ATTACH_NAME.split("/")[-1] and entry[0].startswith("__attach")
        ]
        text = "\n".join(lines) + "\n\n" + stream(_MSG_BODY).strip()
        if any(attached):
            text += "\n\nAttached to this e-mail (kept inside it, not read): " + ", ".join(
                f"`{item}`" for item in attached if item
            )
    finally:
        ole.close()
    return _budgeted("msg", text.strip(), limits)
