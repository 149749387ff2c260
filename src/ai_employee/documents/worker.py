"""A reading worker: a child Python that reads one document per request (decision 0018).

Started by `documents.pool.DocumentReader`; the request is (path, name, content type, limits) and
the answer an `Extraction` as a tuple. Its address space is capped (RLIMIT_AS) at the first
request, so a hostile document makes a MemoryError here (or kills this process), never the daemon.
Tesseract, which it calls, is one thread (OMP_THREAD_LIMIT=1) and inherits the cap.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

from ai_employee.documents.extract import extract_file
from ai_employee.documents.extraction import Limits
from ai_employee.helper_process import serve

_capped: list[int] = []


def _cap_memory(megabytes: int) -> None:
    if _capped == [megabytes]:
        return
    limit = megabytes * 1024 * 1024
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard < 0 else min(limit, hard), hard))
    except (ValueError, OSError):  # pragma: no cover - a platform without RLIMIT_AS
        return
    _capped[:] = [megabytes]


def handle(request: tuple[Any, ...]) -> tuple[Any, ...]:
    path, name, content_type, wire = request
    limits = Limits.from_wire(wire)
    _cap_memory(limits.max_memory_mb)
    return extract_file(Path(os.fsdecode(path)), name, limits, content_type).to_wire()


if __name__ == "__main__":
    os.environ["OMP_THREAD_LIMIT"] = "1"
    serve(handle)
