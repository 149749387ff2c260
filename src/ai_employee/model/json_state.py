"""Small JSON documents kept in one namespace of a `KeyValueStore`: what the chat sources and
Slack supervision keep between runs (what was handled, which message shows which plan, ...).

A value that is missing or unreadable loads as None (state written by a broken or later version
must not crash a source); records are dataclasses rebuilt with `record_from_json`, which ignores
fields a later version added."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, TypeVar

from ai_employee.model.services import KeyValueStore

R = TypeVar("R")


class JsonNamespace:
    """`load`/`save` JSON values under the keys of one namespace of `store`; a `save` is durable
    when it returns (KeyValueStore)."""

    def __init__(self, store: KeyValueStore, namespace: str) -> None:
        self._store = store
        self._namespace = namespace

    def load(self, key: str) -> Any:
        """The JSON value under `key`; None if it is absent, empty or not JSON."""
        value = self._store.get(self._namespace, key)
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return None

    def save(self, key: str, value: Any) -> None:
        self._store.put(self._namespace, key, json.dumps(value, separators=(",", ":"), sort_keys=True))


def record_from_json(cls: type[R], data: Any) -> R | None:
    """A record from its JSON, ignoring fields a later version added; None if it is unusable."""
    if not isinstance(data, dict):
        return None
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{key: value for key, value in data.items() if key in known})
    except TypeError:
        return None
