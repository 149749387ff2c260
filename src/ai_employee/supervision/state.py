"""What Slack supervision remembers across restarts, in the daemon's key-value store.

- Each item's thread (channel, thread ts, the ts of the message that shows the item) and the
  item as its top message last showed it: after a restart, updates go into the same thread.
- The message that carries a plan's Approve / Reject buttons, and whether they are gone.
- Slack messages that became actions (channel:ts -> action id) and the event ids seen, so a
  retried event or a message seen as both `message` and `app_mention` creates one action.
- The main channel's id, learned from Slack's first answer.

Values are small JSON documents; every `put` is durable when it returns (KeyValueStore).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from ai_employee.model.services import KeyValueStore
from ai_employee.supervision.checkpoints import ItemView

NAMESPACE = "slack"

R = TypeVar("R")


@dataclass
class ThreadRef:
    """Where an item's thread is. For an item that came from Slack, the thread is under the
    user's own message and `status_ts` is our first reply in it; otherwise both are our top message."""

    channel: str
    thread_ts: str
    status_ts: str = ""


@dataclass
class DecisionMessage:
    plan_id: str
    action_id: str
    channel: str
    ts: str
    text: str
    retired: bool = False


class SupervisionState:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store

    # -- threads ---------------------------------------------------------------------------

    def thread(self, action_id: str) -> tuple[ThreadRef | None, ItemView | None]:
        data = self._load(f"thread:{action_id}")
        if not isinstance(data, dict):
            return None, None
        return _build(ThreadRef, data.get("ref")), ItemView.from_dict(data.get("view"))

    def remember_thread(self, action_id: str, ref: ThreadRef | None, view: ItemView) -> None:
        self._save(f"thread:{action_id}", {"ref": asdict(ref) if ref else None, "view": view.to_dict()})

    # -- decision buttons ------------------------------------------------------------------

    def decision_message(self, plan_id: str) -> DecisionMessage | None:
        return _build(DecisionMessage, self._load(f"decision:{plan_id}"))

    def remember_decision_message(self, message: DecisionMessage) -> None:
        self._save(f"decision:{message.plan_id}", asdict(message))

    # -- Slack messages that became actions ------------------------------------------------

    def action_for_ref(self, source_ref: str) -> str | None:
        return self._store.get(NAMESPACE, f"ref:{source_ref}")

    def remember_ref(self, source_ref: str, action_id: str) -> None:
        self._store.put(NAMESPACE, f"ref:{source_ref}", action_id)

    def seen_event(self, event_id: str) -> bool:
        return self._store.get(NAMESPACE, f"event:{event_id}") is not None

    def remember_event(self, event_id: str) -> None:
        self._store.put(NAMESPACE, f"event:{event_id}", "1")

    # -- the main channel ------------------------------------------------------------------

    def channel_id(self, channel: str) -> str | None:
        return self._store.get(NAMESPACE, f"channel:{channel}")

    def remember_channel_id(self, channel: str, channel_id: str) -> None:
        if self.channel_id(channel) != channel_id:
            self._store.put(NAMESPACE, f"channel:{channel}", channel_id)

    # -- plumbing --------------------------------------------------------------------------

    def _load(self, key: str) -> Any:
        value = self._store.get(NAMESPACE, key)
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return None

    def _save(self, key: str, value: Any) -> None:
        self._store.put(NAMESPACE, key, json.dumps(value, separators=(",", ":"), sort_keys=True))


def _build(cls: type[R], data: Any) -> R | None:
    if not isinstance(data, dict):
        return None
    known = {item.name for item in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{key: value for key, value in data.items() if key in known})
    except TypeError:
        return None
