"""`python -m bench.documents`: how fast documents are read, and that a big one delays nothing else.

- text PDFs: pages/s of `extract_file` on a 200-page report (40 lines a page), in process and
  through one reading worker;
- OCR: images/s for a photo of a label and for a scanned A4 page, one worker and two at once;
- a 20-page scanned PDF dropped with 50 text files: when the text files' plans are written, and
  when the PDF's (the real intake steps and reading workers, on a temporary vault).

Prints a table; `--json PATH` writes the figures too. `--quick`: smaller sizes (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ai_employee.config import DocumentSettings, load_settings
from ai_employee.documents.extract import extract_file
from ai_employee.documents.extraction import Limits
from ai_employee.documents.pool import DocumentReader
from bench import sample_documents as samples


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def text_pdf_pages(work: Path, pages: int) -> dict[str, float]:
    lines = "\n".join(
        f"Line {n}: inspection of pump station, vibration and seal readings." for n in range(40)
    )
    path = work / "report.pdf"
    path.write_bytes(samples.text_pdf([f"Page {page}\n{lines}" for page in range(pages)]))
    limits = Limits(max_pages=pages, max_chars=10_000_000, seconds=600)
    extract_file(path, "warm-up.pdf", Limits(max_pages=1))  # imports are not the PDF's cost
    cpu = time.process_time()
    in_process = _timed(lambda: extract_file(path, "report.pdf", limits))
    cpu = time.process_time() - cpu
    reader = DocumentReader(DocumentSettings(max_pages=pages, max_chars=10_000_000, timeout_seconds=600))
    try:
        reader.read(path, "warm-up.pdf")  # the worker's start is not the PDF's cost
        worker = _timed(lambda: reader.read(path, "report.pdf"))
    finally:
        reader.close()
    return {
        "pages": pages,
        "pages_per_second": pages / in_process,
        "pages_per_cpu_second": pages / cpu,
        "worker_pages_per_second": pages / worker,
    }


def ocr_images(work: Path, count: int) -> dict[str, float]:
    label = work / "label.png"
    label.write_bytes(samples.text_image_bytes(["PUMP 3 SERIAL 4711", "MAX 16 BAR"]))
    page = work / "page.png"
    page.write_bytes(
        samples.text_image_bytes(
            [f"Line {n} of the delivery note: 4 x seal kit" for n in range(30)], width=1240
        )
    )
    figures: dict[str, float] = {"images": count}
    for workers in (1, 2):
        reader = DocumentReader(DocumentSettings(workers=workers, timeout_seconds=600))
        cpu_before = _children_cpu()
        try:
            for warm in [reader.submit(label, "warm.png") for _ in range(workers)]:
                warm.result()
            for name, path in (("label", label), ("page", page)):
                seconds = _timed(
                    lambda path=path, reader=reader: [
                        future.result() for future in [reader.submit(path, path.name) for _ in range(count)]
                    ]
                )
                figures[f"{name}_images_per_second_{workers}_workers"] = count / seconds
        finally:
            reader.close()
        if workers == 1:  # the workers and their Tesseracts are reaped now: CPU per image, load-proof
            figures["cpu_seconds_per_label_and_page"] = (_children_cpu() - cpu_before) / count
    return figures


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def big_pdf_beside_text_files(work: Path, scanned_pages: int, texts: int) -> dict[str, float]:
    from ai_employee.executors.vault_note import VaultNoteExecutor
    from ai_employee.model.registry import ExecutorRegistry
    from ai_employee.pipeline.steps import VaultSteps
    from ai_employee.planners.template import TemplatePlanner
    from ai_employee.vault.audit import AuditLog
    from ai_employee.vault.layout import Folder, VaultLayout
    from ai_employee.vault.ledger import Ledger

    root = work / "vault"
    layout = VaultLayout(root)
    layout.create()
    settings = load_settings(environ={"AIE_VAULT": str(root), "AIE_VAULT__SETTLE_SECONDS": "0"})
    ledger = Ledger(layout.state_dir / "state.db")
    steps = VaultSteps(
        layout,
        ledger,
        AuditLog(ledger, layout.folder(Folder.LOGS)),
        settings,
        ExecutorRegistry([VaultNoteExecutor()]),
        TemplatePlanner(),
    )
    inbox = layout.folder(Folder.INBOX)
    (inbox / "scan.pdf").write_bytes(
        samples.scanned_pdf([[f"Delivery note page {n}", "4 x seal kit"] for n in range(scanned_pages)])
    )
    names = ["scan.pdf"] + [f"note-{n}.txt" for n in range(texts)]
    for name in names[1:]:
        (inbox / name).write_text(f"{name}: the light in corridor B flickers.\n")
    try:
        started = time.perf_counter()
        first = steps.intake_files(names, renamed=set(names))
        texts_planned = time.perf_counter() - started
        assert len(first.actions) == texts and first.reading == ["scan.pdf"]
        steps.intake.documents.wait(timeout=600)
        second = steps.intake_files(["scan.pdf"], renamed={"scan.pdf"})
        pdf_planned = time.perf_counter() - started
        assert len(second.actions) == 1
    finally:
        steps.intake.documents.close()
        ledger.close()
    return {
        "scanned_pages": scanned_pages,
        "text_files": texts,
        "text_files_planned_after_s": texts_planned,
        "scanned_pdf_planned_after_s": pdf_planned,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.documents", description=__doc__)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    if shutil.which("tesseract") is None:
        print("Tesseract is not installed: OCR figures are skipped", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="aie-bench-documents-"))
    try:
        figures: dict[str, dict[str, float]] = {
            "text_pdf": text_pdf_pages(work, 20 if args.quick else 200),
        }
        if shutil.which("tesseract") is not None:
            figures["ocr"] = ocr_images(work, 2 if args.quick else 8)
            figures["big_pdf"] = big_pdf_beside_text_files(
                work, 2 if args.quick else 20, 10 if args.quick else 50
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures["machine"] = {"cpus": float(os.cpu_count() or 0), "load_average_1m": os.getloadavg()[0]}
    for group, values in figures.items():
        for key, value in values.items():
            print(f"{group:10} {key:42} {value:10.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
