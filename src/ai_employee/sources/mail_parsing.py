"""MIME to text and attachments, streaming: a 20 MB attachment is decoded straight into a file.

Why not `email.message_from_bytes`: it keeps every part's encoded payload in memory (while
parsing, once more as a list of lines), and decoding makes yet another copy: four to five
times an attachment's size. This walker reads the raw message line by line, uses the
standard library only for each part's *headers* (RFC 2047 words, RFC 2231 file names,
addresses, dates), and decodes bodies incrementally, into memory while small and into a
spool file once large.

It is tolerant the way mail readers are: a missing closing boundary, a part without
headers, damaged base64, an unknown charset or transfer encoding each become a sentence in
`ParsedMail.problems`, and everything that could be read is kept. It never raises for bad
input; an I/O error or a bug is reported the same way, so one odd email cannot stop the
mail watcher.
"""

from __future__ import annotations

import binascii
import contextlib
import mimetypes
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, TypeVar

import html2text
import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

MAX_LINE: Final = 64 * 1024  # longer lines are read in pieces; a boundary line is never that long
MAX_HEADER_BYTES: Final = 256 * 1024
MAX_DEPTH: Final = 32
MAX_PARTS: Final = 1000
BLOCK: Final = 64 * 1024  # bytes handed to a decoder at once
DEFAULT_SPILL_THRESHOLD: Final = 256 * 1024
DEFAULT_MAX_TEXT_BYTES: Final = 2 * 1024 * 1024
MAX_FILENAME: Final = 150

NO_TEXT: Final = "(This email has no text.)"


@dataclass
class MailAttachment:
    """One attachment: in memory (`data`) while small, else in a spool file (`path`)."""

    filename: str
    content_type: str
    size: int
    data: bytes | None = None
    path: Path | None = None


@dataclass
class ParsedMail:
    subject: str | None = None
    sender: str | None = None  # the From header as written, decoded: "Jörg <joerg@example.com>"
    sender_address: str | None = None  # lower-cased addr-spec, for allow lists and replies
    reply_to: str | None = None  # lower-cased addr-spec of Reply-To, if any
    message_id: str | None = None
    date: datetime | None = None
    automatic: bool = False  # sent by a machine (RFC 3834 Auto-Submitted, lists, bulk): never reply
    text: str = ""
    attachments: list[MailAttachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def body(self) -> str:
        """The action note's body: the text, then one line per thing that could not be read."""
        text = self.text.strip() or NO_TEXT
        if not self.problems:
            return text
        lines = "\n".join(f"- {problem}" for problem in self.problems)
        return f"{text}\n\n---\nNot everything in this email could be read:\n{lines}\n"

    def spooled_paths(self) -> list[Path]:
        return [item.path for item in self.attachments if item.path is not None]

    def cleanup(self) -> None:
        """Remove the spool files (the intake has linked or copied them by now)."""
        for path in self.spooled_paths():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


# -- decoders ---------------------------------------------------------------------------------

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_WHITESPACE = b" \t\r\n\x0b\x0c"
_NOT_B64 = bytes(byte for byte in range(256) if byte not in _B64_ALPHABET)


class _Identity:
    problem: str | None = None

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


class _Base64:
    """Incremental, lenient base64: junk characters are skipped, a short tail is padded."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._junk = False
        self._damaged = False

    @property
    def problem(self) -> str | None:
        if self._damaged:
            return "its base64 data is damaged or cut off; kept what could be decoded"
        if self._junk:
            return "its base64 data holds stray characters, which were skipped"
        return None

    def feed(self, data: bytes) -> bytes:
        stripped = data.translate(None, _WHITESPACE)
        cleaned = stripped.translate(None, _NOT_B64)
        if len(cleaned) != len(stripped):
            self._junk = True
        if b"=" not in cleaned:
            self._pending += cleaned
            return self._decode_ready()
        out = bytearray()
        pieces = cleaned.split(b"=")
        for index, piece in enumerate(pieces):
            self._pending += piece
            if index < len(pieces) - 1:  # "=" ends a base64 run (padding)
                out += self._flush()
        out += self._decode_ready()
        return bytes(out)

    def finish(self) -> bytes:
        return self._flush()

    def _decode_ready(self) -> bytes:
        ready = len(self._pending) // 4 * 4
        if not ready:
            return b""
        chunk = bytes(self._pending[:ready])
        del self._pending[:ready]
        return self._decode(chunk)

    def _flush(self) -> bytes:
        out = self._decode_ready()
        rest = len(self._pending)
        if rest == 1:
            self._damaged = True
        elif rest:
            out += self._decode(bytes(self._pending) + b"=" * (4 - rest))
        self._pending.clear()
        return out

    def _decode(self, chunk: bytes) -> bytes:
        try:
            return binascii.a2b_base64(chunk)
        except binascii.Error:
            self._damaged = True
            return b""


class _QuotedPrintable:
    """Quoted-printable, decoded a whole line at a time so that soft line breaks are seen."""

    problem: str | None = None

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) < MAX_LINE:
            self._pending = data
            return b""
        if cut == 0:
            cut = len(data)
        self._pending = data[cut:]
        return binascii.a2b_qp(data[:cut])

    def finish(self) -> bytes:
        data, self._pending = self._pending, b""
        return binascii.a2b_qp(data) if data else b""


_Decoder = _Identity | _Base64 | _QuotedPrintable


def _decoder_for(encoding: str) -> tuple[_Decoder, str | None]:
    """The decoder for a Content-Transfer-Encoding, and a problem if it is unknown."""
    if encoding == "base64":
        return _Base64(), None
    if encoding == "quoted-printable":
        return _QuotedPrintable(), None
    if encoding in {"", "7bit", "8bit", "binary"}:
        return _Identity(), None
    return _Identity(), f'its transfer encoding "{encoding}" is unknown; kept as it was sent'


# -- where decoded bytes go -------------------------------------------------------------------


class _Sink:
    """The bytes of one part: in memory up to `threshold`, then in a spool file."""

    def __init__(self, spool_dir: Path, threshold: int) -> None:
        self._spool_dir = spool_dir
        self._threshold = threshold
        self._buffer = bytearray()
        self._file: IO[bytes] | None = None
        self.path: Path | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
            return
        self._buffer += data
        if len(self._buffer) > self._threshold:
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open across writes
                dir=self._spool_dir, prefix=".email-", suffix=".part", delete=False
            )
            self._file = handle
            self.path = Path(handle.name)
            handle.write(self._buffer)
            self._buffer = bytearray()

    def close(self) -> bytes | Path:
        """The bytes, or the path of the spool file, flushed and fsynced (it may be linked as is)."""
        if self._file is None:
            return bytes(self._buffer)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        assert self.path is not None
        return self.path

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            assert self.path is not None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._buffer = bytearray()


class _NullSink(_Sink):
    def write(self, data: bytes) -> None:
        self.size += len(data)


# -- headers ----------------------------------------------------------------------------------

_HEADER_PARSER = BytesHeaderParser(policy=policy.default)
_SPACES = re.compile(r"\s+")


def _safe(read: Callable[[], T], default: T) -> T:
    """Read one header property; the stdlib's header parser can raise on pathological input."""
    try:
        return read()
    except Exception:
        return default


def _header_text(headers: Message, name: str) -> str | None:
    """A header decoded to one line (RFC 2047 words, folding, 8-bit bytes)."""
    value = _safe(lambda: headers.get(name), None)
    if value is None:
        raw = _safe(lambda: headers.get_all(name), None)
        if not raw:
            return None
        value = _safe(lambda: str(make_header(decode_header(str(raw[0])))), str(raw[0]))
    text = _SPACES.sub(" ", str(value).replace("\x00", "")).strip()
    return text.encode("utf-8", "replace").decode("utf-8") if text else None


def _address(headers: Message, name: str) -> str | None:
    """The first addr-spec of an address header, lower-cased, or None."""
    header = _safe(lambda: headers.get(name), None)
    addresses: tuple[Any, ...] = _safe(lambda: tuple(getattr(header, "addresses", ())), ())
    for address in addresses:
        spec = str(getattr(address, "addr_spec", ""))
        if "@" in spec:
            return spec.lower()
    raw = _header_text(headers, name)
    if raw:
        for _, spec in getaddresses([raw]):
            if "@" in spec:
                return spec.lower()
    return None


def _date(headers: Message) -> datetime | None:
    header = _safe(lambda: headers.get("date"), None)
    when = _safe(lambda: getattr(header, "datetime", None), None)
    if not isinstance(when, datetime):
        raw = _header_text(headers, "date")
        when = _safe(lambda: parsedate_to_datetime(raw), None) if raw else None
    if not isinstance(when, datetime):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _parse_headers(raw: bytes) -> Message:
    return _HEADER_PARSER.parsebytes(raw)


# -- text -------------------------------------------------------------------------------------


def decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Bytes of a text part to str, and a problem when characters may be wrong.

    No charset, or US-ASCII, is read as UTF-8 (a superset; mislabelled 8-bit mail is
    common). A declared charset that fails is retried as UTF-8 before replacing characters.
    """
    declared = (charset or "").strip().strip('"').lower()
    wanted = "utf-8" if declared in {"", "us-ascii", "ascii", "unknown-8bit", "x-unknown"} else declared
    try:
        return data.decode(wanted), None
    except LookupError:
        try:
            return data.decode("utf-8"), None if declared in {"unknown-8bit", "x-unknown"} else (
                f'its charset "{declared}" is unknown; it was read as UTF-8'
            )
        except UnicodeDecodeError:
            return data.decode("cp1252", "replace"), (
                f'its charset "{declared}" is unknown; it was read as Windows-1252, '
                "some characters may be wrong"
            )
    except UnicodeDecodeError:
        if wanted != "utf-8":
            with contextlib.suppress(UnicodeDecodeError):
                return data.decode("utf-8"), None
        return data.decode(wanted, "replace"), (
            f"some characters are not valid {wanted.upper()} and were replaced"
        )


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text(bodywidth=0)
    converter.ignore_images = False
    converter.unicode_snob = True
    return converter.handle(html)


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def safe_filename(name: str | None, fallback: str) -> str:
    """A name fit for one file in Attachments/: no folders, no control characters, not hidden."""
    if not name:
        return fallback
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch >= " " and ch != "\x7f")
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME:
        stem, dot, suffix = name.rpartition(".")
        name = (
            stem[: MAX_FILENAME - len(suffix) - 1] + dot + suffix
            if dot and len(suffix) <= 10
            else (name[:MAX_FILENAME])
        )
    return name or fallback


# -- the walker -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Boundary:
    depth: int
    closing: bool


_BODY: Final = object()  # headers ended with a blank line; the body follows


@dataclass
class _Text:
    content_type: str
    data: bytes
    charset: str | None
    group: object
    label: str


class _Walker:
    def __init__(self, stream: BinaryIO, spool_dir: Path, spill_threshold: int, max_text_bytes: int) -> None:
        self._stream = stream
        self._spool_dir = spool_dir
        self._spill_threshold = spill_threshold
        self._max_text_bytes = max_text_bytes
        self._at_line_start = True
        self._markers: list[bytes] = []
        self._lookup: dict[bytes, _Boundary] = {}
        self._parts = 0
        self._texts: list[_Text] = []
        self.mail = ParsedMail()

    # lines

    def _read(self) -> tuple[bytes, bool]:
        """One line (or a piece of a very long one), and whether it starts a line."""
        line = self._stream.readline(MAX_LINE)
        starts = self._at_line_start
        self._at_line_start = line.endswith(b"\n")
        return line, starts

    def _boundary(self, line: bytes) -> _Boundary | None:
        return self._lookup.get(line.rstrip(b" \t\r\n"))

    def _push(self, marker: bytes) -> int:
        self._markers.append(marker)
        self._rebuild()
        return len(self._markers) - 1

    def _pop(self) -> None:
        self._markers.pop()
        self._rebuild()

    def _rebuild(self) -> None:
        self._lookup = {}
        for depth, marker in enumerate(self._markers):  # inner markers win over equal outer ones
            self._lookup[marker] = _Boundary(depth, False)
            self._lookup[marker + b"--"] = _Boundary(depth, True)

    def _skip(self, keep: bytearray | None = None) -> _Boundary | None:
        """Skip a preamble or epilogue: up to the next known boundary, or None at the end.

        `keep` collects what was skipped (up to the text limit), to salvage a "multipart"
        body that has no parts at all.
        """
        while True:
            line, starts = self._read()
            if not line:
                return None
            if starts and line[:2] == b"--" and (found := self._boundary(line)) is not None:
                return found
            if keep is not None and len(keep) < self._max_text_bytes:
                keep += line

    def _read_headers(self) -> tuple[bytes, object]:
        """Header lines up to the blank line; then _BODY, or the boundary / None that came first."""
        raw = bytearray()
        too_long = False
        while True:
            line, starts = self._read()
            if not line:
                outcome: object = None
                break
            if starts and line[:2] == b"--" and (found := self._boundary(line)) is not None:
                outcome = found
                break
            if starts and line in (b"\r\n", b"\n"):
                outcome = _BODY
                break
            if len(raw) + len(line) <= MAX_HEADER_BYTES:
                raw += line
            else:
                too_long = True
        if too_long:
            self.problem(f"headers longer than {MAX_HEADER_BYTES // 1024} KB were cut")
        return bytes(raw), outcome

    def _copy_body(self, decoder: _Decoder, sink: _Sink) -> _Boundary | None:
        """Decode a leaf's body into `sink`, up to the next boundary (whose CRLF it owns)."""
        block = bytearray()
        held: bytes | None = None
        end: _Boundary | None = None
        while True:
            line, starts = self._read()
            if not line:
                break
            if starts and line[:2] == b"--" and (found := self._boundary(line)) is not None:
                end = found
                break
            if held is not None:
                block += held
                if len(block) >= BLOCK:
                    sink.write(decoder.feed(bytes(block)))
                    block.clear()
            held = line
        if held is not None:
            if held.endswith(b"\r\n"):
                held = held[:-2]
            elif held.endswith(b"\n"):
                held = held[:-1]
            block += held
        sink.write(decoder.feed(bytes(block)))
        sink.write(decoder.finish())
        return end

    # structure

    def problem(self, text: str) -> None:
        if text not in self.mail.problems:
            self.mail.problems.append(text)

    def run(self) -> None:
        raw, outcome = self._read_headers()
        headers = _parse_headers(raw)
        self._read_envelope(headers)
        if outcome is _BODY:
            self._part(headers, "", None, 0)

    def _read_envelope(self, headers: Message) -> None:
        mail = self.mail
        mail.subject = _header_text(headers, "subject")
        mail.sender = _header_text(headers, "from")
        mail.sender_address = _address(headers, "from")
        mail.reply_to = _address(headers, "reply-to")
        mail.message_id = _header_text(headers, "message-id")
        mail.date = _date(headers)
        auto_submitted = (_header_text(headers, "auto-submitted") or "no").lower()
        precedence = (_header_text(headers, "precedence") or "").lower()
        mail.automatic = (
            not auto_submitted.startswith("no")
            or precedence in {"bulk", "list", "junk", "auto_reply"}
            or _header_text(headers, "list-id") is not None
            or (mail.sender_address or "").split("@")[0] in {"mailer-daemon", "postmaster"}
        )

    def _part(self, headers: Message, label: str, group: object, depth: int) -> _Boundary | None:
        content_type = _safe(headers.get_content_type, "text/plain").lower()
        if content_type.startswith("multipart/"):
            boundary = _safe(lambda: headers.get_param("boundary"), None)
            if isinstance(boundary, str) and boundary and depth < MAX_DEPTH:
                return self._multipart(headers, content_type, boundary, label, group, depth)
            where = f"part {label}" if label else "the email"
            if depth >= MAX_DEPTH:
                self.problem(f"{where} is nested more than {MAX_DEPTH} levels deep; kept as a file")
                return self._leaf(headers, "application/octet-stream", label, group)
            self.problem(f"{where} says it has several parts but names no boundary; read as text")
            return self._leaf(headers, "text/plain", label, group)
        return self._leaf(headers, content_type, label, group)

    def _multipart(
        self, headers: Message, content_type: str, boundary: str, label: str, group: object, depth: int
    ) -> _Boundary | None:
        marker = b"--" + boundary.strip().encode("utf-8", "surrogateescape")
        mine = self._push(marker)
        inner_group = object() if content_type == "multipart/alternative" else group
        preamble = bytearray()
        end = self._skip(preamble)
        index = 0
        popped = False
        try:
            while True:
                if end is None and index == 0:
                    where = f"part {label}" if label else "the email"
                    self.problem(f"{where} says it has several parts but none was found; read as text")
                    text = bytes(preamble).strip(b"\r\n")
                    if text:
                        self._texts.append(_Text("text/plain", text, None, group or object(), label))
                    return None
                if end is None:
                    self.problem("the email ends before its last part was closed; it may be cut off")
                    return None
                if end.depth < mine:
                    self.problem(f"part {label or 1} was not closed before its parent went on")
                    return end
                if end.closing:
                    self._pop()
                    popped = True
                    return self._skip()  # epilogue
                index += 1
                child = f"{label}.{index}" if label else str(index)
                raw, outcome = self._read_headers()
                if outcome is not _BODY:  # a part with headers and no body, or none at all
                    end = outcome if isinstance(outcome, _Boundary) else None
                    continue
                end = self._part(_parse_headers(raw), child, inner_group, depth + 1)
        finally:
            if not popped:
                self._pop()

    def _leaf(self, headers: Message, content_type: str, label: str, group: object) -> _Boundary | None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            self.problem(f"only the first {MAX_PARTS} parts were read")
            return self._copy_body(_Identity(), _NullSink(self._spool_dir, 0))
        encoding = (_header_text(headers, "content-transfer-encoding") or "7bit").lower()
        decoder, encoding_problem = _decoder_for(encoding)
        disposition = _safe(headers.get_content_disposition, None)
        filename = _safe(headers.get_filename, None)
        is_text = content_type in {"text/plain", "text/html"} and disposition != "attachment" and not filename
        threshold = self._max_text_bytes if is_text else self._spill_threshold
        sink = _Sink(self._spool_dir, threshold)
        try:
            end = self._copy_body(decoder, sink)
            content = sink.close()
        except BaseException:
            sink.discard()
            raise
        name = safe_filename(filename, self._fallback_name(content_type, headers))
        where = f'attachment "{name}"' if not is_text else f"the {content_type} text of part {label or 1}"
        for problem in (encoding_problem, decoder.problem):
            if problem:
                self.problem(f"{where}: {problem}")
        charset = _safe(headers.get_content_charset, None)
        if is_text and isinstance(content, bytes):
            self._texts.append(_Text(content_type, content, charset, group or object(), label))
        elif is_text:
            size_mb = sink.size / (1024 * 1024)
            self.problem(f"{where} is {size_mb:.1f} MB, too long for the note; it is kept as {name}")
            self._attach(name, content_type, sink.size, content)
        elif sink.size or filename:
            self._attach(name, content_type, sink.size, content)
        return end

    def _attach(self, name: str, content_type: str, size: int, content: bytes | Path) -> None:
        taken = {item.filename for item in self.mail.attachments}
        unique, counter = name, 1
        while unique in taken:
            counter += 1
            stem, dot, suffix = name.rpartition(".")
            unique = f"{stem} ({counter}).{suffix}" if dot and stem else f"{name} ({counter})"
        attachment = MailAttachment(unique, content_type, size)
        if isinstance(content, Path):
            attachment.path = content
        else:
            attachment.data = content
        self.mail.attachments.append(attachment)

    def _fallback_name(self, content_type: str, headers: Message) -> str:
        if content_type in {"message/rfc822", "message/global"}:
            return "attached-message.eml"
        if content_type == "text/plain":
            extension = ".txt"
        elif content_type == "text/html":
            extension = ".html"
        else:
            extension = mimetypes.guess_extension(content_type, strict=False) or ".bin"
        stem = "message" if content_type.startswith("text/") else "attachment"
        return f"{stem}-{len(self.mail.attachments) + 1}{extension}"

    # the readable text

    def finish(self) -> ParsedMail:
        groups: dict[object, list[_Text]] = {}
        for text in self._texts:
            groups.setdefault(text.group, []).append(text)
        chosen: list[str] = []
        for members in groups.values():
            plain = [item for item in members if item.content_type == "text/plain"]
            html = [item for item in members if item.content_type == "text/html"]
            picked = next((t for t in (self._render(item) for item in plain) if t), None)
            if picked is None:
                picked = next((t for t in (self._render(item) for item in html) if t), None)
            if picked:
                chosen.append(picked)
        self.mail.text = "\n\n".join(chosen)
        return self.mail

    def _render(self, item: _Text) -> str:
        text, problem = decode_text(item.data, item.charset)
        if problem:
            self.problem(f"the text of part {item.label or 1}: {problem}")
        if item.content_type == "text/html":
            try:
                text = html_to_text(text)
            except Exception as error:
                log.warning("html_to_text_failed", error=type(error).__name__)
                text = re.sub(r"<[^>]*>", " ", text)
                self.problem(f"the HTML of part {item.label or 1} could not be converted; tags were removed")
        return _clean_text(text)


def parse_mail(
    stream: BinaryIO,
    spool_dir: Path,
    *,
    spill_threshold: int = DEFAULT_SPILL_THRESHOLD,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
) -> ParsedMail:
    """Read one raw RFC 5322 message from `stream`.

    Attachments larger than `spill_threshold` are written to new files in `spool_dir` (the
    caller removes them with `ParsedMail.cleanup()` once they are handed on); text parts
    longer than `max_text_bytes` become attachments too.
    """
    walker = _Walker(stream, spool_dir, spill_threshold, max_text_bytes)
    try:
        walker.run()
    except Exception as error:  # a bug or an I/O error must not lose the message
        log.exception("mail_parse_failed", error=type(error).__name__)
        walker.problem(f"the email could not be read to its end ({type(error).__name__})")
    return walker.finish()
