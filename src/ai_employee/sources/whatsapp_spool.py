"""The delivery spool: each verified webhook delivery is written durably before the 200 goes out,
then processed, then removed.

`<vault>/.ai-employee/whatsapp/spool/<nanoseconds>-<n>.json` holds the raw body as Meta sent it:
written to a temp file, fsynced, renamed, the folder fsynced (vault.fs.write_durable). A SIGKILL
after the 200 leaves the file, and the next run processes it; a SIGKILL before the 200 leaves at
most a temp file (removed at start), and Meta delivers again. Processing is idempotent per message
id, so a file processed halfway before a crash is simply processed again.

The writes run on threads of their own (four: concurrent deliveries fsync in parallel), so that a
busy default executor (the pipeline's file work) never holds up the answer to Meta.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ai_employee.vault import fs

SPOOL_FOLDER = Path(".ai-employee") / "whatsapp" / "spool"
FAILED_FOLDER = Path(".ai-employee") / "whatsapp" / "failed"
_SUFFIX = ".json"


class Spool:
    def __init__(self, vault_root: Path) -> None:
        self.folder = vault_root / SPOOL_FOLDER
        self.failed_folder = vault_root / FAILED_FOLDER
        self._counter = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="whatsapp-spool")
        self.arrived = asyncio.Event()

    async def put(self, body: bytes) -> Path:
        """Store one delivery durably; returns once it would survive a power cut."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}{_SUFFIX}"
        target = self.folder / name
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._write, target, body)
        self.arrived.set()
        return target

    def _write(self, target: Path, body: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fs.write_durable(target, body)

    def pending(self) -> list[Path]:
        """The deliveries not yet processed, oldest first (names sort by arrival)."""
        if not self.folder.is_dir():
            return []
        return sorted(
            path for path in self.folder.iterdir() if path.suffix == _SUFFIX and not path.name.startswith(".")
        )

    def clear_temps(self) -> int:
        """Temp files of writes a crash cut short (their delivery was never answered 200)."""
        return fs.remove_stale_temps(self.folder) if self.folder.is_dir() else 0

    def done(self, path: Path) -> None:
        """The delivery is processed: it leaves the spool (durably)."""
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fs.fsync_dir(path.parent)

    def give_up(self, path: Path) -> Path:
        """A delivery that fails again and again is set aside, kept for a human to look at."""
        self.failed_folder.mkdir(parents=True, exist_ok=True)
        target = self.failed_folder / path.name
        fs.move(path, target)
        return target
