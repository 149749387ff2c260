"""Real documents made on the spot, for the tests and the document benchmark: PDFs with a
Flate-compressed text layer, scans, photos of text, Word and Excel files, and hostile ones."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)


def font_path() -> str | None:
    """A real TrueType font for text in images (fonts-dejavu-core), or None."""
    return next((path for path in FONT_PATHS if Path(path).exists()), None)


def _pdf(objects: Sequence[bytes]) -> bytes:
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _content(lines: Sequence[str]) -> bytes:
    shown = " ".join(f"({_escape(line)}) Tj T*" for line in lines)
    stream = zlib.compress(f"BT /F1 14 Tf 72 720 Td 18 TL {shown} ET".encode("latin-1"))
    return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"


def _pages(numbers: Sequence[int]) -> bytes:
    kids = " ".join(f"{number} 0 R" for number in numbers)
    return f"<< /Type /Pages /Kids [{kids}] /Count {len(numbers)} >>".encode()


def text_pdf(pages: Sequence[str]) -> bytes:
    """A PDF whose pages carry the given text (lines split on newlines) in Flate-compressed streams."""
    count = len(pages)
    font = 3 + 2 * count
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        _pages([3 + 2 * i for i in range(count)]),
    ]
    for index, text in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            f" /Resources << /Font << /F1 {font} 0 R >> >> /Contents {4 + 2 * index} 0 R >>".encode()
        )
        objects.append(_content(text.split("\n")))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf(objects)


def many_page_pdf(pages: int, text: str = "Inspection report page") -> bytes:
    """A PDF of `pages` pages sharing one content stream: 20,000 pages in about 1.5 MB."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        _pages([5 + i for i in range(pages)]),
        _content([text]),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >>"
        b" /Contents 3 0 R >>"
    )
    objects.extend([page] * pages)
    return _pdf(objects)


def text_image_bytes(lines: Sequence[str], fmt: str = "PNG", *, size: int = 32, width: int = 760) -> bytes:
    """A photo of text: black DejaVu Sans on white, as PNG or JPEG bytes."""
    from PIL import Image, ImageDraw, ImageFont

    path = font_path()
    font = ImageFont.truetype(path, size) if path else ImageFont.load_default(size)
    image = Image.new("RGB", (width, 40 + len(lines) * (size + 18)), "white")
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((24, 20 + number * (size + 18)), line, font=font, fill="black")
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def scanned_pdf(pages: Sequence[Sequence[str]]) -> bytes:
    """A PDF made of page images only (no text layer), as a scanner makes them."""
    from PIL import Image

    images = [Image.open(io.BytesIO(text_image_bytes(lines, width=1000))).convert("L") for lines in pages]
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=150, save_all=True, append_images=images[1:])
    return out.getvalue()


def docx_bytes(heading: str, paragraphs: Sequence[str], table: Sequence[Sequence[str]] = ()) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, values in zip(grid.rows, table, strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx_bytes(sheets: dict[str, Sequence[Sequence[object]]]) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    first = True
    for name, rows in sheets.items():
        sheet = workbook.active if first else workbook.create_sheet()
        assert sheet is not None
        sheet.title = name
        first = False
        for row in rows:
            sheet.append(list(row))
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def zip_bomb_docx(unpacked_mb: int = 40) -> bytes:
    """A .docx whose document.xml unpacks to `unpacked_mb` MB of nothing (about 1,000 times its size)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            chunk = b" " * (1024 * 1024)
            for _ in range(unpacked_mb):
                member.write(chunk)
    return out.getvalue()


def huge_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG that says it is `width` x `height` px (decoding it would need gigabytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def encrypted_pdf(text: str, password: str = "secret") -> bytes:
    """A PDF that needs a password to open (made with pypdf, a test dependency)."""
    import pypdf

    reader = pypdf.PdfReader(io.BytesIO(text_pdf([text])))
    writer = pypdf.PdfWriter()
    for page in reader.pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def odt_bytes(heading: str, paragraphs: Sequence[str]) -> bytes:
    """A minimal OpenDocument text: its mimetype first, stored, and content.xml."""
    ns = 'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
    ns += ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    body = f"<text:h>{heading}</text:h>" + "".join(f"<text:p>{p}</text:p>" for p in paragraphs)
    content = f'<?xml version="1.0"?><office:document-content {ns}><office:body><office:text>{body}'
    content += "</office:text></office:body></office:document-content>"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text", zipfile.ZIP_STORED)
        archive.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def pptx_bytes(slides: Sequence[Sequence[str]]) -> bytes:
    """A minimal PowerPoint file: the parts its text lives in."""
    drawing = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("ppt/presentation.xml", "<presentation/>")
        for number, texts in enumerate(slides, 1):
            runs = "".join(f"<a:p><a:r><a:t>{text}</a:t></a:r></a:p>" for text in texts)
            archive.writestr(f"ppt/slides/slide{number}.xml", f"<sld {drawing}><txBody>{runs}</txBody></sld>")
    return out.getvalue()


def msg_bytes(subject: str, body: str, sender: str) -> bytes:
    """An Outlook .msg: a compound file (CFB v3) with the subject, body and sender streams (UTF-16),
    each padded with NULs to 4 KiB so that it lives in regular sectors (no mini stream)."""
    streams = [
        ("__substg1.0_0037001F", subject),
        ("__substg1.0_0C1A001F", sender),
        ("__substg1.0_1000001F", body),
    ]
    end, free = 0xFFFFFFFE, 0xFFFFFFFF
    fat = [0xFFFFFFFD, end]  # sector 0: the FAT, sector 1: the directory
    data = b""
    starts: list[tuple[int, int]] = []
    for _, text in streams:
        raw = text.encode("utf-16-le").ljust(4096, b"\x00")
        first = len(fat)
        sectors = -(-len(raw) // 512)
        fat.extend(first + n + 1 for n in range(sectors - 1))
        fat.append(end)
        data += raw.ljust(sectors * 512, b"\x00")
        starts.append((first, len(raw)))
    fat.extend([free] * (128 - len(fat)))

    def entry(name: str, kind: int, left: int, right: int, child: int, start: int, size: int) -> bytes:
        encoded = name.encode("utf-16-le") + b"\x00\x00" if name else b""
        return (
            encoded.ljust(64, b"\x00")
            + struct.pack("<HBBIII", len(encoded), kind, 1, left, right, child)
            + b"\x00" * 36
            + struct.pack("<IQ", start, size)
        )

    directory = entry("Root Entry", 5, free, free, 2, end, 0)
    (first_name, _), (middle_name, _), (last_name, _) = streams
    directory += entry(first_name, 2, free, free, free, *starts[0])
    directory += entry(middle_name, 2, 1, 3, free, *starts[1])
    directory += entry(last_name, 2, free, free, free, *starts[2])
    header = (
        bytes.fromhex("D0CF11E0A1B11AE1")
        + b"\x00" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\x00" * 6
        + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, end, 0, end, 0)
        + struct.pack("<I", 0)
        + struct.pack("<I", free) * 108
    )
    return header + struct.pack("<128I", *fat) + directory + data
