"""One document in, its text out: the dispatch by kind, and every failure turned into a reason.

`extract_file` runs in a reading worker (documents/worker.py), whose address space and time are
limited; it may also be called directly (tests, benchmarks). It never raises for a bad document.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from ai_employee.documents.extraction import DocumentProblem, Extraction, Limits
from ai_employee.documents.sniff import document_kind
from ai_employee.documents.text import SNIFF_BYTES, human_size, read_head


def extract_file(path: Path, name: str, limits: Limits, content_type: str | None = None) -> Extraction:
    started = time.monotonic()
    deadline = started + limits.seconds * 0.8  # leave time to answer before the daemon's hard limit
    try:
        info = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            return Extraction.failed("other", "not a regular file")
        if info.st_size == 0:
            return Extraction(kind="empty", method="none")
        if info.st_size > limits.max_bytes:
            return Extraction.failed(
                "other",
                f"the file is too large to read ({human_size(info.st_size)}; limit"
                f" {human_size(limits.max_bytes)}, `documents.max_file_mb`)",
            )
        head = read_head(path, SNIFF_BYTES)
        return _extract(path, name, head, limits, deadline, content_type)
    except DocumentProblem as problem:
        return Extraction.failed(_kind_of(path, name, content_type), str(problem))
    except MemoryError:
        return Extraction.failed(
            _kind_of(path, name, content_type),
            f"reading it needs more memory than a reader may use ({limits.max_memory_mb} MB,"
            " `documents.max_memory_mb`)",
        )
    except RecursionError:
        return Extraction.failed(_kind_of(path, name, content_type), "the document is nested too deeply")
    except OSError as error:
        return Extraction.failed(
            _kind_of(path, name, content_type), f"the file could not be read ({error.strerror})"
        )
    except Exception as error:  # a library's own error on a damaged file: a reason, not a dead worker
        why = f"damaged or unreadable ({type(error).__name__}: {error})"
        return Extraction.failed(_kind_of(path, name, content_type), why[:300])


def _extract(
    path: Path, name: str, head: bytes, limits: Limits, deadline: float, content_type: str | None
) -> Extraction:
    from ai_employee.documents import office, paged, textual

    kind = document_kind(head, name, content_type)
    if kind == "pdf":
        return paged.read_pdf(path, limits, deadline)
    if kind == "image":
        return paged.read_image(path, limits, deadline)
    if kind == "zip":
        return office.read_zip(path, limits)
    if kind == "ole":
        return textual.read_ole(path, limits, name)
    if kind == "rtf":
        return textual.read_rtf(path, limits)
    if kind == "html":
        return textual.read_html(path, limits)
    if kind == "eml":
        return textual.read_eml(path, limits)
    if b"\x00" in head:
        size = human_size(os.stat(path).st_size)
        return Extraction(
            kind="other",
            method="none",
            hint=f"Binary file `{name}` ({size}): kept as the attachment below, not read (there is no"
            " reader for this kind of file).",
        )
    return textual.read_text_file(path, limits)


_ZIP_SUFFIXES = {".docx": "docx", ".xlsx": "xlsx", ".pptx": "pptx", ".odt": "odt"}


def _kind_of(path: Path, name: str, content_type: str | None) -> str:
    try:
        kind = document_kind(read_head(path, 1024), name, content_type) or "other"
    except OSError:
        return "other"
    if kind == "zip":
        return _ZIP_SUFFIXES.get(Path(name).suffix.lower(), "zip")
    return kind
