"""PDFs (their text layer, OCR for scanned pages) and images (OCR). Runs in a reading worker."""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

from ai_employee.documents import ocr
from ai_employee.documents.extraction import DocumentProblem, Extraction, Limits, TextBudget

#: A page with fewer characters than this in its text layer is taken for a scan (OCR reads it).
MIN_TEXT_CHARS = 3
#: Resolution scanned pages are rendered at for OCR (72 = 1 PDF point per pixel).
OCR_DPI = 200


def read_pdf(path: Path, limits: Limits, deadline: float) -> Extraction:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as error:
        message = str(error)
        if "password" in message.lower():
            return Extraction.failed(
                "pdf", "encrypted PDF (it needs a password)", "Remove the password and drop it in again."
            )
        return Extraction.failed("pdf", f"damaged or not a PDF ({message})")
    try:
        return _read_pages(pdf, limits, deadline)
    finally:
        pdf.close()


def _read_pages(pdf: Any, limits: Limits, deadline: float) -> Extraction:
    """`pdf`: an open `pypdfium2.PdfDocument` (the library has no type information)."""
    import pypdfium2 as pdfium

    total = len(pdf)
    if total == 0:
        return Extraction.failed("pdf", "the PDF has no pages")
    budget = TextBudget(limits.max_chars)
    unavailable = ocr.ocr_unavailable(limits.tesseract_cmd, limits.ocr_languages)
    by_text = by_ocr = scanned_unread = 0
    confidences: list[float] = []
    cut: str | None = None
    problems: list[str] = []
    for index in range(min(total, limits.max_pages)):
        if time.monotonic() > deadline:
            cut = (
                f"cut at {_pages(index)} (of {total:,}): the time limit of {limits.seconds:.0f} s was reached"
            )
            break
        try:
            page = pdf[index]
        except pdfium.PdfiumError as error:
            problems.append(f"page {index + 1} could not be read ({error})")
            continue
        try:
            textpage = page.get_textpage()
            text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n").strip()
            textpage.close()
            if len(text) < MIN_TEXT_CHARS:
                if unavailable is not None or by_ocr >= limits.max_ocr_pages:
                    scanned_unread += 1
                else:
                    scale = OCR_DPI / 72
                    bitmap = page.render(scale=scale, grayscale=True)
                    image = bitmap.to_pil()
                    try:
                        read = ocr.read_text(
                            image,
                            command=limits.tesseract_cmd,
                            languages=limits.ocr_languages,
                            timeout=max(1.0, deadline - time.monotonic()),
                        )
                    except RuntimeError as error:
                        problems.append(f"page {index + 1}: {error}")
                        read = ocr.OcrText("", None)
                    bitmap.close()
                    by_ocr += 1
                    text = read.text.strip() or text
                    if read.confidence is not None:
                        confidences.append(read.confidence)
            else:
                by_text += 1
        finally:
            page.close()
        if not budget.add(f"### Page {index + 1}\n\n{text or '_(no text on this page)_'}\n\n"):
            cut = f"{budget.cut_note()} (on page {index + 1} of {total:,})"
            break
    if cut is None and total > limits.max_pages:
        cut = f"cut at {_pages(limits.max_pages)} (of {total:,})"
    method = "+".join(part for part, count in (("pdf-text", by_text), ("ocr", by_ocr)) if count) or "none"
    hint = None
    if scanned_unread:
        if unavailable is not None:
            hint = f"{scanned_unread} page(s) have no text layer (scanned?). {unavailable}"
        else:
            hint = (
                f"{scanned_unread} scanned page(s) were not read: OCR reads at most"
                f" {limits.max_ocr_pages} pages (`documents.max_ocr_pages`)."
            )
    return Extraction(
        kind="pdf",
        method=method,
        text=budget.text(),
        pages=total,
        cut=cut,
        confidence=round(sum(confidences) / len(confidences), 1) if confidences else None,
        problem="; ".join(problems) or None,
        hint=hint,
    )


def read_image(path: Path, limits: Limits, deadline: float) -> Extraction:
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > limits.max_image_pixels:
                    raise DocumentProblem(_too_big(width, height, limits))
                unavailable = ocr.ocr_unavailable(limits.tesseract_cmd, limits.ocr_languages)
                if unavailable is not None:
                    return Extraction(kind="image", method="none", pages=1, hint=unavailable)
                image.draft("L", (ocr.MAX_OCR_SIDE, ocr.MAX_OCR_SIDE))  # JPEG: decode at a smaller size
                image.load()
                read = ocr.read_text(
                    image,
                    command=limits.tesseract_cmd,
                    languages=limits.ocr_languages,
                    timeout=max(1.0, deadline - time.monotonic()),
                )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise DocumentProblem(
            f"the image is too large to read: {pixels} (limit {limits.max_image_pixels / 1e6:.0f}"
            " megapixels, `documents.max_image_pixels`)"
        ) from error
    except UnidentifiedImageError as error:
        raise DocumentProblem("not an image Pillow can read (damaged or an unknown format)") from error
    except RuntimeError as error:
        raise DocumentProblem(str(error)) from error
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's errors for damaged files
        raise DocumentProblem(f"damaged image ({error})") from error
    budget = TextBudget(limits.max_chars)
    whole = budget.add(read.text)
    return Extraction(
        kind="image",
        method="ocr",
        text=budget.text(),
        pages=1,
        cut=None if whole else budget.cut_note(),
        confidence=read.confidence,
    )


def _too_big(width: int, height: int, limits: Limits) -> str:
    return (
        f"the image is too large to read: {width:,} x {height:,} px"
        f" (limit {limits.max_image_pixels / 1e6:.0f} megapixels, `documents.max_image_pixels`)"
    )


def _pages(count: int) -> str:
    return "1 page" if count == 1 else f"{count:,} pages"
