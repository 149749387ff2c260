"""Reading documents: each kind gives its text, each broken or hostile one a reason, never a crash.
The documents are real, made by the test (bench/sample_documents.py)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from ai_employee.config import DocumentSettings
from ai_employee.documents.extract import extract_file
from ai_employee.documents.extraction import Extraction, Limits
from ai_employee.documents.markdown import document_markdown, extraction_properties
from ai_employee.documents.pool import DocumentReader
from bench import sample_documents as samples
from tests.conftest import require_ocr, wait_for

LIMITS = Limits(seconds=30.0)


def read(tmp_path: Path, name: str, data: bytes, limits: Limits = LIMITS) -> Extraction:
    path = tmp_path / name
    path.write_bytes(data)
    return extract_file(path, name, limits)


# --- PDF -----------------------------------------------------------------------------------


def test_pdf_text_layer_is_read_page_by_page_with_page_markers(tmp_path: Path) -> None:
    pdf = samples.text_pdf(["Pump 3 is leaking on line 2", "Replace the seal kit"])
    assert b"/FlateDecode" in pdf and b"Pump 3" not in pdf  # the text is compressed
    got = read(tmp_path, "report.pdf", pdf)
    assert (got.kind, got.method, got.pages, got.problem) == ("pdf", "pdf-text", 2, None)
    assert got.text == "### Page 1\n\nPump 3 is leaking on line 2\n\n### Page 2\n\nReplace the seal kit"


def test_a_20000_page_pdf_is_cut_at_the_page_limit_with_a_clear_line(tmp_path: Path) -> None:
    got = read(tmp_path, "huge.pdf", samples.many_page_pdf(20_000))
    assert got.pages == 20_000
    assert got.text.count("### Page") == LIMITS.max_pages
    assert got.cut == "cut at 50 pages (of 20,000)"
    assert "_… cut at 50 pages (of 20,000)._" in document_markdown(got, "Attachments/d/huge.pdf")


def test_an_encrypted_pdf_is_not_read_and_the_note_says_so(tmp_path: Path) -> None:
    got = read(tmp_path, "locked.pdf", samples.encrypted_pdf("Secret text"))
    assert got.problem == "encrypted PDF (it needs a password)"
    assert not got.read
    note = document_markdown(got, "Attachments/d/locked.pdf")
    assert "Could not be read: encrypted PDF" in note and "kept as it came" in note
    assert extraction_properties([got])["extracted"] == "failed"


def test_a_truncated_pdf_is_reported_as_damaged(tmp_path: Path) -> None:
    got = read(tmp_path, "cut.pdf", samples.text_pdf(["Hello there, page one"] * 3)[:300])
    assert got.problem is not None and got.problem.startswith("damaged or not a PDF")


def test_a_scanned_pdf_is_read_by_ocr_with_its_confidence(tmp_path: Path) -> None:
    require_ocr()
    got = read(tmp_path, "scan.pdf", samples.scanned_pdf([["Delivery note 42"], ["Received by John"]]))
    assert got.method == "ocr"
    assert "Delivery note 42" in got.text and "Received by John" in got.text
    assert got.text.index("### Page 1") < got.text.index("Delivery") < got.text.index("### Page 2")
    assert got.confidence is not None and got.confidence > 60
    assert extraction_properties([got]) == {"extracted": "ocr", "ocr_confidence": round(got.confidence)}


# --- images --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_photo_of_text_is_read_by_ocr_and_embedded(tmp_path: Path, fmt: str) -> None:
    require_ocr()
    name = f"nameplate.{fmt.lower()}"
    got = read(tmp_path, name, samples.text_image_bytes(["PUMP 3 SERIAL 4711", "ALARM HIGH PRESSURE"], fmt))
    assert got.method == "ocr"
    assert "PUMP 3 SERIAL 4711" in got.text and "ALARM HIGH PRESSURE" in got.text
    note = document_markdown(got, f"Attachments/d/{name}")
    assert note.startswith(f"![[Attachments/d/{name}]]")
    assert note.index("![[") < note.index("ALARM HIGH PRESSURE")


def test_without_ocr_an_image_is_still_embedded_and_the_note_says_how_to_enable_ocr(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, tesseract_cmd=str(tmp_path / "no-tesseract"))
    got = read(tmp_path, "photo.png", samples.text_image_bytes(["Hello"]), limits)
    note = document_markdown(got, "Attachments/d/photo.png")
    assert note.startswith("![[Attachments/d/photo.png]]")
    assert "OCR is not available" in note and "apt-get install tesseract-ocr" in note


def test_an_image_of_30000_by_30000_pixels_is_refused_without_decoding_it(tmp_path: Path) -> None:
    got = read(tmp_path, "bomb.png", samples.huge_png())
    assert got.problem is not None and "too large to read: 900,000,000 pixels" in got.problem


# --- Office files ----------------------------------------------------------------------------


def test_a_word_document_gives_its_headings_paragraphs_and_tables(tmp_path: Path) -> None:
    data = samples.docx_bytes(
        "Handover", ["Valve V-12 replaced.", "Check again on Friday."], [["Part", "Qty"], ["Seal", "2"]]
    )
    got = read(tmp_path, "handover.docx", data)
    assert got.method == "docx"
    assert got.text == (
        "### Handover\n\nValve V-12 replaced.\n\nCheck again on Friday.\n\n"
        "| Part | Qty |\n| --- | --- |\n| Seal | 2 |"
    )


def test_a_spreadsheet_gives_its_sheet_names_and_first_rows_as_tables(tmp_path: Path) -> None:
    rows = [["Part", "Qty"], *[[f"Part {n}", n] for n in range(1, 41)]]
    got = read(tmp_path, "parts.xlsx", samples.xlsx_bytes({"Parts": rows, "Notes": [["Order on Monday"]]}))
    assert (got.method, got.pages) == ("xlsx", 2)
    assert "### Sheet: Parts\n\n| Part | Qty |\n| --- | --- |\n| Part 1 | 1 |" in got.text
    assert "| Part 29 | 29 |" in got.text and "Part 30 |" not in got.text
    assert "_… first 30 rows shown" in got.text
    assert "### Sheet: Notes\n\n| Order on Monday |" in got.text


def test_opendocument_text_and_slides_give_their_text(tmp_path: Path) -> None:
    odt = read(tmp_path, "memo.odt", samples.odt_bytes("Shift memo", ["Fire door 2 does not latch."]))
    assert (odt.method, odt.text) == ("odt", "### Shift memo\n\nFire door 2 does not latch.")
    pptx = read(
        tmp_path, "brief.pptx", samples.pptx_bytes([["Safety brief"], ["Wear ear protection", "Hall 5"]])
    )
    assert pptx.method == "pptx" and pptx.pages == 2
    assert pptx.text == "### Slide 1\n\nSafety brief\n\n### Slide 2\n\nWear ear protection\nHall 5"


def test_a_missing_ocr_language_pack_is_named_in_the_note(tmp_path: Path) -> None:
    require_ocr()
    limits = dataclasses.replace(LIMITS, ocr_languages="eng+xyz")
    got = read(tmp_path, "photo.png", samples.text_image_bytes(["Hello"]), limits)
    assert got.hint is not None and "tesseract-ocr-xyz" in got.hint and "documents.ocr_languages" in got.hint


def test_a_zip_bomb_docx_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    got = read(tmp_path, "bomb.docx", samples.zip_bomb_docx(40))
    assert got.problem is not None and "zip bomb" in got.problem
    assert got.kind == "docx"


# --- text-like documents ---------------------------------------------------------------------


def test_html_rtf_and_eml_are_read_as_text(tmp_path: Path) -> None:
    html = read(
        tmp_path, "page.html", b"<html><body><h1>Boiler</h1><p>Check the <b>valve</b>.</p></body></html>"
    )
    assert html.method == "html" and "# Boiler" in html.text and "Check the **valve**." in html.text
    rtf = read(tmp_path, "memo.rtf", rb"{\rtf1\ansi{\fonttbl\f0 Arial;}\f0 Replace filter F-3.\par}")
    assert rtf.method == "rtf" and "Replace filter F-3." in rtf.text
    eml = read(
        tmp_path,
        "fwd.eml",
        b"From: Ann <ann@example.com>\r\nTo: ops@example.com\r\nSubject: Gate 4 stuck\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe gate at door 4 does not close.\r\n",
    )
    assert eml.method == "eml"
    assert "**Subject:** Gate 4 stuck" in eml.text and "The gate at door 4 does not close." in eml.text


def test_an_outlook_msg_gives_its_sender_subject_and_body(tmp_path: Path) -> None:
    data = samples.msg_bytes("Chiller alarm", "The chiller on roof B tripped at 03:00.", "Ann Lee")
    got = read(tmp_path, "alarm.msg", data)
    assert got.method == "msg"
    assert (
        got.text == "**From:** Ann Lee\n**Subject:** Chiller alarm\n\nThe chiller on roof B tripped at 03:00."
    )


def test_text_over_the_character_limit_is_cut_with_a_clear_line(tmp_path: Path) -> None:
    limits = dataclasses.replace(LIMITS, max_chars=1000)
    got = read(tmp_path, "long.html", b"<p>" + b"word " * 2000 + b"</p>", limits)
    assert len(got.text) <= 1000
    assert got.cut == "cut at 1,000 characters"


def test_an_unknown_binary_file_is_kept_and_not_read(tmp_path: Path) -> None:
    got = read(tmp_path, "drawing.dwg", bytes(range(256)) * 8)
    assert not got.read and got.hint is not None and "Binary file `drawing.dwg`" in got.hint


def test_an_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    got = read(tmp_path, "nothing.pdf", b"")
    assert got.kind == "empty"
    assert "empty" in document_markdown(got, "Attachments/d/nothing.pdf")


# --- the worker processes ---------------------------------------------------------------------


def test_a_document_needing_more_memory_than_a_worker_may_use_gets_a_note_and_the_next_is_read(
    tmp_path: Path,
) -> None:
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("L", (7000, 7000), 255).save(big)  # 49 MP: decoding it needs more than the limit leaves
    reader = DocumentReader(DocumentSettings(max_memory_mb=160, timeout_seconds=20))
    try:
        hostile = reader.read(big, "big.png")
        assert hostile.problem is not None and "memory" in hostile.problem
        good = tmp_path / "ok.pdf"
        good.write_bytes(samples.text_pdf(["Still reading"]))
        assert "Still reading" in reader.read(good, "ok.pdf").text
    finally:
        reader.close()


def test_the_worker_stops_at_the_time_limit_and_says_where_it_cut(tmp_path: Path) -> None:
    require_ocr()
    scan = tmp_path / "scan.pdf"
    lines = [f"Line {line}: the pump on page {{page}} was inspected and found leaking" for line in range(8)]
    scan.write_bytes(samples.scanned_pdf([[text.format(page=n) for text in lines] for n in range(1, 31)]))
    reader = DocumentReader(DocumentSettings(timeout_seconds=1.5))
    started = time.monotonic()
    try:
        got = reader.read(scan, "scan.pdf")
    finally:
        reader.close()
    assert time.monotonic() - started < 1.5 + 5  # answered by the worker itself, not killed
    assert got.cut is not None and got.cut.endswith("(of 30): the time limit of 2 s was reached")


def test_closing_the_reader_never_waits_for_a_document_being_read(tmp_path: Path) -> None:
    require_ocr()
    scan = tmp_path / "long.pdf"
    lines = [f"Line {line}: the pump on page {{page}} was inspected and found leaking" for line in range(8)]
    scan.write_bytes(samples.scanned_pdf([[text.format(page=n) for text in lines] for n in range(1, 21)]))
    reader = DocumentReader(DocumentSettings(timeout_seconds=120))
    future = reader.submit(scan, "long.pdf")
    wait_for(lambda: reader.reading == 1, message="the worker reading")
    started = time.monotonic()
    reader.close()
    assert time.monotonic() - started < 5
    assert future.result(timeout=5).problem is not None
