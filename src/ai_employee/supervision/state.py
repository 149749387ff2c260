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

from dataclasses import asdict, dataclass

from ai_employee.model.json_state import JsonNamespace, record_from_json
from ai_employee.model.services import KeyValueStore
from ai_employee.supervision.checkpoints import ItemView

NAMESPACE = "slack"


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
        self._json = JsonNamespace(store, NAMESPACE)

    # -- threads ---------------------------------------------------------------------------

    def thread(self, action_id: str) -> tuple[ThreadRef | None, ItemView | None]:
        data = self._json.load(f"thread:{action_id}")
        if not isinstance(data, dict):
            return None, None
        return record_from_json(ThreadRef, data.get("ref")), ItemView.from_dict(data.get("view"))

    def remember_thread(self, action_id: str, ref: ThreadRef | None, view: ItemView) -> None:
        self._json.save(f"thread:{action_id}", {"ref": asdict(ref) if ref else None, "view": view.to_dict()})

    # -- decision buttons ------------------------------------------------------------------

    def decision_message(self, plan_id: str) -> DecisionMessage | None:
        return record_from_json(DecisionMessage, self._json.load(f"decision:{plan_id}"))

    def remember_decision_message(self, message: DecisionMessage) -> None:
        self._json.save(f"decision:{message.plan_id}", asdict(message))

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
