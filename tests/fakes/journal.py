"""A file-backed ExecutionJournal for executor tests (the daemon backs it with its SQLite ledger).

Each `put` rewrites one JSON file durably, so a fresh instance over the same file sees
exactly what a restarted daemon would: the tests of crash recovery build a second
executor and a second journal over the same path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ai_employee.vault.fs import write_durable


class FileJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.puts: list[tuple[str, dict[str, Any]]] = []

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        loaded = json.loads(self.path.read_text(encoding="utf-8"))
        assert isinstance(loaded, dict)
        return loaded

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._load().get(key)
        return dict(value) if isinstance(value, dict) else None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        data = self._load()
        data[key] = json.loads(json.dumps(dict(value)))  # what a database would give back
        write_durable(self.path, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))
        self.puts.append((key, dict(value)))
