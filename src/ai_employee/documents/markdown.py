"""What an action note says about its documents: images embedded, the text read from each, how it was
read, what went wrong, and the flat properties `extracted` and `ocr_confidence`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ai_employee.documents.extraction import Extraction

_HOW = {
    "pdf-text": "from the PDF's text layer",
    "ocr": "by OCR",
    "pdf-text+ocr": "from the PDF's text layer, its scanned pages by OCR",
    "docx": "from the Word document",
    "xlsx": "from the spreadsheet: each sheet's first rows",
    "pptx": "from the slides",
    "odt": "from the OpenDocument file",
    "rtf": "from the RTF document",
    "html": "from the HTML page",
    "eml": "from the e-mail",
    "msg": "from the Outlook e-mail",
    "text": "as text",
}
_KIND_NAMES = {
    "pdf": "PDF",
    "image": "image",
    "docx": "Word document",
    "xlsx": "spreadsheet",
    "pptx": "presentation",
    "odt": "OpenDocument file",
    "rtf": "RTF document",
    "html": "HTML page",
    "eml": "e-mail",
    "msg": "Outlook e-mail",
    "zip": "archive",
}


def document_markdown(extraction: Extraction, attachment: str | None) -> str:
    """The Markdown for one document: an embed for an image, a line saying how it was read (or why
    not), the text, and what was cut."""
    parts: list[str] = []
    if extraction.kind == "image" and attachment:
        parts.append(f"![[{attachment}]]")
    if extraction.kind == "empty":
        parts.append("_The file is empty: there is nothing to read._")
        return "\n\n".join(parts)
    if extraction.problem and not extraction.read:
        kind = _KIND_NAMES.get(extraction.kind, "file")
        parts.append(
            f"> [!warning] Could not be read: {extraction.problem}\n"
            f"> The {kind} is kept as it came, as the attachment below."
        )
    elif extraction.read:
        parts.append(_how_line(extraction))
    if extraction.problem and extraction.read:
        parts.append(f"> [!warning] Partly read: {extraction.problem}")
    if extraction.hint:
        parts.append(f"> [!info] {extraction.hint}")
    if extraction.read:
        if extraction.kind == "image":
            parts.append("Text in the image:")
        parts.append(extraction.text.strip())
    elif extraction.kind == "image" and not extraction.hint and not extraction.problem:
        parts.append("_No text was found in the image._")
    if extraction.cut:
        parts.append(f"_… {extraction.cut}._")
    return "\n\n".join(parts)


def _how_line(extraction: Extraction) -> str:
    how = _HOW.get(extraction.method, f"as {extraction.method}")
    details: list[str] = []
    if extraction.pages is not None and extraction.kind == "pdf":
        details.append(f"{extraction.pages:,} page{'s' if extraction.pages != 1 else ''}")
    if extraction.confidence is not None:
        details.append(f"OCR confidence {extraction.confidence:.0f} %")
    return f"_Read {how}" + (f" ({', '.join(details)})" if details else "") + "._"


def extraction_properties(extractions: Sequence[Extraction]) -> dict[str, Any]:
    """Flat properties for the action note: `extracted` (how, e.g. "pdf-text" or "docx, ocr"),
    `ocr_confidence` (0-100) where OCR ran, `extraction_problem` where something could not be read."""
    methods: list[str] = []
    confidences: list[float] = []
    problems: list[str] = []
    for extraction in extractions:
        if extraction.kind == "empty":
            methods.append("empty")
        elif extraction.read:
            methods.append(extraction.method)
        elif extraction.problem:
            methods.append("failed")
        else:
            methods.append("none")
        if extraction.confidence is not None:
            confidences.append(extraction.confidence)
        if extraction.problem:
            problems.append(extraction.problem)
    properties: dict[str, Any] = {}
    if methods:
        properties["extracted"] = ", ".join(dict.fromkeys(methods))
    if confidences:
        properties["ocr_confidence"] = round(sum(confidences) / len(confidences))
    if problems:
        properties["extraction_problem"] = "; ".join(problems)[:300]
    return properties
