"""Text in images through Tesseract (the `tesseract` program, called by pytesseract); decision 0017.

Runs in a reading worker. Tesseract is one thread per call (OMP_THREAD_LIMIT=1, set by the worker):
on two cores, two workers each running one page beat one worker running two threads.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

#: Longest side given to Tesseract: a 24 MP photo scaled to this reads as well and 4-6 times faster.
MAX_OCR_SIDE = 3500
#: Text this small (in pixels of width) is scaled up first: Tesseract reads ~30 px letters best.
MIN_OCR_WIDTH = 1000

INSTALL_HINT = (
    "OCR is not available, so text in images and scans is not read: {why}. To enable it, install"
    " Tesseract (Debian/Ubuntu: `sudo apt-get install tesseract-ocr tesseract-ocr-eng`; macOS:"
    " `brew install tesseract`) and restart ai-employee."
)


@dataclass(frozen=True)
class OcrText:
    text: str
    confidence: float | None  # mean word confidence, 0-100; None when no words were found


@functools.cache
def ocr_unavailable(command: str, languages: str) -> str | None:
    """None when Tesseract runs with every language asked for, else what the user should do."""
    import pytesseract

    pytesseract.pytesseract.tesseract_cmd = command
    try:
        pytesseract.get_tesseract_version()
        installed = set(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, OSError) as error:
        return INSTALL_HINT.format(why=f"the program `{command}` was not found ({type(error).__name__})")
    except pytesseract.TesseractError as error:
        return INSTALL_HINT.format(why=f"`{command}` did not run: {error}")
    missing = [code for code in languages.split("+") if code and code not in installed]
    if missing:
        packages = " ".join(f"tesseract-ocr-{code}" for code in missing)
        return (
            f"OCR is not available for the language(s) {', '.join(missing)} (config"
            f" `documents.ocr_languages: {languages}`): install `{packages}` or change the setting."
        )
    return None


def prepare(image: Image) -> Image:
    """Grey, upright, and at a size Tesseract reads well and fast."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGBA").convert("RGB") if "A" in image.mode or image.mode == "P" else image
    image = image.convert("L")
    width, height = image.size
    longest = max(width, height)
    if longest > MAX_OCR_SIDE:
        scale = MAX_OCR_SIDE / longest
        image = image.resize(
            (max(1, int(width * scale)), max(1, int(height * scale))), PILImage.Resampling.LANCZOS
        )
    elif width < MIN_OCR_WIDTH and longest * 2 <= MAX_OCR_SIDE:
        image = image.resize((width * 2, height * 2), PILImage.Resampling.LANCZOS)
    return image


def read_text(image: Image, *, command: str, languages: str, timeout: float) -> OcrText:
    """The words Tesseract finds, line by line, and their mean confidence. Raises RuntimeError when
    Tesseract fails or runs out of time."""
    import pytesseract

    pytesseract.pytesseract.tesseract_cmd = command
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    try:
        data = pytesseract.image_to_data(
            prepare(image),
            lang=languages,
            config="--psm 3",
            output_type=pytesseract.Output.DICT,
            timeout=max(1, int(timeout)),
        )
    except pytesseract.TesseractError as error:
        raise RuntimeError(f"Tesseract failed: {error.message or error.status}") from error
    except RuntimeError as error:  # pytesseract's timeout
        raise RuntimeError(f"OCR took longer than {max(1, int(timeout))} s") from error
    lines: dict[tuple[int, int, int], list[str]] = {}
    paragraphs: list[tuple[int, int]] = []
    confidences: list[float] = []
    for word, conf, block, par, line in zip(
        data["text"], data["conf"], data["block_num"], data["par_num"], data["line_num"], strict=True
    ):
        word = str(word).strip()
        if not word:
            continue
        lines.setdefault((block, par, line), []).append(word)
        if (block, par) not in paragraphs:
            paragraphs.append((block, par))
        if float(conf) >= 0:
            confidences.append(float(conf))
    out: list[str] = []
    last: tuple[int, int] | None = None
    for (block, par, _), words in lines.items():
        if last is not None and last != (block, par):
            out.append("")
        out.append(" ".join(words))
        last = (block, par)
    confidence = round(sum(confidences) / len(confidences), 1) if confidences else None
    return OcrText("\n".join(out), confidence)
