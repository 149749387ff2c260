"""Office and OpenDocument files (zip archives of XML): Word, Excel, PowerPoint, ODT. Runs in a
reading worker. Every archive is checked before a library opens it: a zip bomb is refused, not
unpacked."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from ai_employee.documents.extraction import DocumentProblem, Extraction, Limits, TextBudget
from ai_employee.documents.text import human_size

#: What an archive may unpack to, in all, and how much more than its packed size.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_RATIO = 200
#: Rows and columns of a spreadsheet shown per sheet.
SHEET_ROWS = 30
SHEET_COLUMNS = 12
CELL_CHARS = 80

_ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_DRAWING_TEXT = "{http://schemas.openxmlformats.org/drawingml/2006/main}t"


def zip_kind(path: Path) -> str:
    """docx, xlsx, pptx, odt, ods/odp (read as ODF text) or zip (an archive we do not open)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "word/document.xml" in names:
                return "docx"
            if "xl/workbook.xml" in names:
                return "xlsx"
            if "ppt/presentation.xml" in names:
                return "pptx"
            if "mimetype" in names and "content.xml" in names:
                mimetype = archive.read("mimetype")[:100]
                if mimetype.startswith(b"application/vnd.oasis.opendocument."):
                    return "odt"
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DocumentProblem(f"damaged zip archive ({error})") from error
    return "zip"


def check_archive(path: Path) -> None:
    """Refuse an archive that would unpack to too much (a zip bomb), before anything unpacks it."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DocumentProblem(f"damaged zip archive ({error})") from error
    unpacked = sum(member.file_size for member in members)
    packed = sum(member.compress_size for member in members) or 1
    if unpacked > MAX_UNPACKED_BYTES or (unpacked > 16 * 1024 * 1024 and unpacked / packed > MAX_RATIO):
        raise DocumentProblem(
            f"the archive would unpack to {human_size(unpacked)} from {human_size(packed)}"
            " (a zip bomb?); it was not unpacked"
        )


def read_zip(path: Path, limits: Limits) -> Extraction:
    kind = zip_kind(path)
    if kind == "zip":
        return _archive_listing(path, limits)
    check_archive(path)
    reader = {"docx": _read_docx, "xlsx": _read_xlsx, "pptx": _read_pptx, "odt": _read_odf}[kind]
    try:
        return reader(path, limits)
    except DocumentProblem:
        raise
    except (KeyError, ValueError, zipfile.BadZipFile, ElementTree.ParseError) as error:
        raise DocumentProblem(f"damaged {kind.upper()} file ({type(error).__name__}: {error})") from error
    except Exception as error:  # lxml and openpyxl raise their own types for damaged files
        raise DocumentProblem(f"damaged {kind.upper()} file ({type(error).__name__}: {error})") from error


def _read_docx(path: Path, limits: Limits) -> Extraction:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(str(path))
    budget = TextBudget(limits.max_chars)
    whole = True
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = block.text.strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            level = _heading_level(style)
            piece = f"{'#' * min(level + 2, 6)} {text}\n\n" if level else f"{text}\n\n"
        elif isinstance(block, Table):
            rows = [[cell.text for cell in row.cells] for row in block.rows[:SHEET_ROWS]]
            piece = markdown_table(rows) + "\n\n"
        else:  # pragma: no cover - python-docx yields only these two
            continue
        if not budget.add(piece):
            whole = False
            break
    return Extraction(
        kind="docx", method="docx", text=budget.text(), cut=None if whole else budget.cut_note()
    )


def _heading_level(style: str) -> int:
    match = re.fullmatch(r"Heading (\d)", style)
    if match:
        return int(match.group(1))
    return 1 if style == "Title" else 0


def _read_xlsx(path: Path, limits: Limits) -> Extraction:
    import openpyxl

    # a file object, not a path: openpyxl refuses a path whose suffix is not .xlsx (spooled files)
    handle = path.open("rb")
    workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    try:
        budget = TextBudget(limits.max_chars)
        whole = True
        sheets = workbook.sheetnames
        for sheet_name in sheets:
            sheet = workbook[sheet_name]
            rows: list[list[str]] = []
            more = False
            for row in sheet.iter_rows(values_only=True):
                cells = ["" if value is None else str(value) for value in row[:SHEET_COLUMNS]]
                if not any(cell.strip() for cell in cells):
                    continue
                if len(rows) == SHEET_ROWS:
                    more = True
                    break
                rows.append(cells)
            dims = getattr(sheet, "max_row", None)
            piece = f"### Sheet: {sheet_name}\n\n"
            piece += markdown_table(rows) if rows else "_(empty)_"
            if more:
                piece += f"\n\n_… first {SHEET_ROWS} rows shown" + (
                    f" (of about {dims:,})._" if dims else "._"
                )
            if not budget.add(piece + "\n\n"):
                whole = False
                break
    finally:
        workbook.close()
        handle.close()
    return Extraction(
        kind="xlsx",
        method="xlsx",
        text=budget.text(),
        pages=len(sheets),
        cut=None if whole else budget.cut_note(),
    )


def _read_pptx(path: Path, limits: Limits) -> Extraction:
    with zipfile.ZipFile(path) as archive:
        slides = sorted(
            (name for name in archive.namelist() if re.fullmatch(r"ppt/slides/slide\d+\.xml", name)),
            key=lambda name: int(re.sub(r"\D", "", name.rsplit("/", 1)[1])),
        )
        budget = TextBudget(limits.max_chars)
        cut = None
        for number, name in enumerate(slides, 1):
            if number > limits.max_pages:
                cut = f"cut at {limits.max_pages} slides (of {len(slides)})"
                break
            root = _parse_xml(archive.read(name))
            words = [element.text or "" for element in root.iter(_DRAWING_TEXT)]
            text = "\n".join(word for word in words if word.strip())
            if not budget.add(f"### Slide {number}\n\n{text or '_(no text)_'}\n\n"):
                cut = budget.cut_note()
                break
    return Extraction(kind="pptx", method="pptx", text=budget.text(), pages=len(slides), cut=cut)


def _read_odf(path: Path, limits: Limits) -> Extraction:
    with zipfile.ZipFile(path) as archive:
        root = _parse_xml(archive.read("content.xml"))
    budget = TextBudget(limits.max_chars)
    whole = True
    for element in root.iter():
        if element.tag in (f"{{{_ODF_TEXT}}}p", f"{{{_ODF_TEXT}}}h"):
            text = "".join(element.itertext()).strip()
            if not text:
                continue
            piece = f"### {text}\n\n" if element.tag.endswith("}h") else f"{text}\n\n"
            if not budget.add(piece):
                whole = False
                break
    return Extraction(kind="odt", method="odt", text=budget.text(), cut=None if whole else budget.cut_note())


def _parse_xml(data: bytes) -> ElementTree.Element:
    """Parse a part of a checked archive. Expat (2.4+) refuses entity expansion bombs itself, and
    ElementTree resolves no external entities; the archive check has capped the size."""
    return ElementTree.fromstring(data)  # noqa: S314 - see the docstring


def _archive_listing(path: Path, limits: Limits) -> Extraction:
    with zipfile.ZipFile(path) as archive:
        names = [member.filename for member in archive.infolist() if not member.is_dir()]
    shown = names[:50]
    lines = [f"- `{name}`" for name in shown]
    if len(names) > len(shown):
        lines.append(f"- … and {len(names) - len(shown)} more")
    return Extraction(
        kind="zip",
        method="none",
        text="Files in the archive:\n\n" + "\n".join(lines) if lines else "",
        hint="Archives are not unpacked; drop the files themselves (or the folder) to have them read.",
    )


def markdown_table(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as a Markdown table (the first row is the header); pipes and newlines escaped."""
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    cleaned = [[_cell(value) for value in row] + [""] * (width - len(row)) for row in rows]
    header, *body = cleaned
    lines = [_row(header), _row(["---"] * width), *(_row(row) for row in body)]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text[:CELL_CHARS] + ("…" if len(text) > CELL_CHARS else "")


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"
