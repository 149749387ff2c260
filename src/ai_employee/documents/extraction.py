"""What reading a document gave: its text as Markdown, how it was read, and what went wrong.

Plain data, sent between the daemon and a reading worker as a tuple (`to_wire`/`from_wire`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ai_employee.config import DocumentSettings


@dataclass(frozen=True)
class Limits:
    """What one document may cost a worker."""

    max_bytes: int = 100 * 1024 * 1024
    max_pages: int = 50
    max_ocr_pages: int = 20
    max_chars: int = 100_000
    max_image_pixels: int = 60_000_000
    max_memory_mb: int = 1024
    seconds: float = 60.0  # the worker stops starting pages after this; the daemon kills it a bit later
    ocr_languages: str = "eng"
    tesseract_cmd: str = "tesseract"

    @classmethod
    def from_settings(cls, settings: DocumentSettings) -> Limits:
        return cls(
            max_bytes=int(settings.max_file_mb * 1024 * 1024),
            max_pages=settings.max_pages,
            max_ocr_pages=settings.max_ocr_pages,
            max_chars=settings.max_chars,
            max_image_pixels=settings.max_image_pixels,
            max_memory_mb=settings.max_memory_mb,
            seconds=settings.timeout_seconds,
            ocr_languages=settings.ocr_languages,
            tesseract_cmd=settings.tesseract_cmd,
        )

    def to_wire(self) -> tuple[Any, ...]:
        return dataclasses.astuple(self)

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> Limits:
        return cls(*wire)


@dataclass
class Extraction:
    """One document read (or not). `text` is Markdown, with page markers for paged documents."""

    kind: str  # pdf | image | docx | xlsx | pptx | odt | rtf | html | eml | msg | text | empty | other
    method: str  # how the text was read: pdf-text | ocr | pdf-text+ocr | docx | ... | none
    text: str = ""
    pages: int | None = None  # pages (or sheets, slides) in the document
    cut: str | None = None  # what was left out, e.g. "cut at 50 pages (of 20,000)"
    confidence: float | None = None  # OCR's mean word confidence, 0-100
    problem: str | None = None  # why it could not be read (in full), e.g. "encrypted PDF"
    hint: str | None = None  # what the user can do, e.g. how to enable OCR

    @property
    def read(self) -> bool:
        """Some text came out of it."""
        return bool(self.text.strip())

    def to_wire(self) -> tuple[Any, ...]:
        return dataclasses.astuple(self)

    @classmethod
    def from_wire(cls, wire: tuple[Any, ...]) -> Extraction:
        return cls(*wire)

    @classmethod
    def failed(cls, kind: str, problem: str, hint: str | None = None) -> Extraction:
        return cls(kind=kind, method="none", problem=problem, hint=hint)


class DocumentProblem(Exception):
    """A document that cannot be read, with a reason a person understands."""


class TextBudget:
    """Text gathered up to a number of characters; what does not fit is cut with a clear line."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.parts: list[str] = []
        self.used = 0
        self.full = False

    def add(self, text: str) -> bool:
        """Add a piece; False once the budget is spent (the piece is cut to fit)."""
        if self.full:
            return False
        room = self.max_chars - self.used
        if len(text) > room:
            cut = text[:room]
            if "\n" in cut[room // 2 :]:
                cut = cut.rsplit("\n", 1)[0]
            self.parts.append(cut)
            self.used = self.max_chars
            self.full = True
            return False
        self.parts.append(text)
        self.used += len(text)
        return True

    def text(self) -> str:
        return "".join(self.parts).strip()

    def cut_note(self) -> str:
        return f"cut at {self.max_chars:,} characters"
