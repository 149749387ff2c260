"""What the Telegram source remembers across restarts, in the daemon's key-value store.

- The getUpdates offset: the first update id not yet handled. It only moves once an update's
  action note is durable, so a crash in between makes Telegram hand the update over again.
- Which action each Telegram message became (and the way back), so that plan and outcome
  events find the chat to answer, and a redelivered message is recognised.
- The message that carries a plan's Approve / Reject buttons.
- Voice notes waiting for a transcription (no key, or the engine failed).

Values are small JSON documents; every `put` is durable when it returns (KeyValueStore).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ai_employee.model.json_state import JsonNamespace, record_from_json
from ai_employee.model.services import KeyValueStore

NAMESPACE = "telegram"


@dataclass
class ActionLink:
    """A Telegram message that became an action."""

    action_id: str
    chat_id: int
    message_id: int
    acknowledged: bool = False  # the "arrived" reply was sent


@dataclass
class PlanMessage:
    """The bot's message that asks for a decision on a plan."""

    plan_id: str
    action_id: str
    chat_id: int
    message_id: int
    text: str
    decided: bool = False


@dataclass
class PendingTranscription:
    """A voice note whose action exists but whose transcript does not yet."""

    action_id: str
    source_ref: str
    chat_id: int
    message_id: int
    file_id: str
    filename: str
    content_type: str | None = None
    duration_seconds: int = 0
    attempts: int = 0
    last_error: str | None = None


class TelegramState:
    """Typed access to the source's records. `bot_id` keys the offset: each bot has its own."""

    def __init__(self, store: KeyValueStore, bot_id: str) -> None:
        self._store = store
        self._json = JsonNamespace(store, NAMESPACE)
        self._bot_id = bot_id

    # -- getUpdates offset -----------------------------------------------------------------

    def offset(self) -> int | None:
        value = self._store.get(NAMESPACE, f"offset:{self._bot_id}")
        return int(value) if value else None

    def set_offset(self, offset: int) -> None:
        current = self.offset()
        if current is None or offset > current:
            self._store.put(NAMESPACE, f"offset:{self._bot_id}", str(offset))

    # -- messages and their actions --------------------------------------------------------

    def action_for_ref(self, source_ref: str) -> ActionLink | None:
        action_id = self._store.get(NAMESPACE, f"ref:{source_ref}")
        return self.link(action_id) if action_id else None

    def link(self, action_id: str) -> ActionLink | None:
        return record_from_json(ActionLink, self._json.load(f"action:{action_id}"))

    def remember_link(self, link: ActionLink, source_ref: str) -> None:
        self._json.save(f"action:{link.action_id}", asdict(link))
        self._store.put(NAMESPACE, f"ref:{source_ref}", link.action_id)

    def mark_acknowledged(self, link: ActionLink) -> None:
        link.acknowledged = True
        self._json.save(f"action:{link.action_id}", asdict(link))

    # -- plans waiting for a decision ------------------------------------------------------

    def plan_message(self, plan_id: str) -> PlanMessage | None:
        return record_from_json(PlanMessage, self._json.load(f"plan:{plan_id}"))

    def remember_plan_message(self, plan: PlanMessage) -> None:
        self._json.save(f"plan:{plan.plan_id}", asdict(plan))

    # -- voice notes waiting for a transcript ----------------------------------------------

    def pending_transcriptions(self) -> list[PendingTranscription]:
        data = self._json.load("pending_transcriptions")
        if not isinstance(data, list):
            return []
        built = (record_from_json(PendingTranscription, item) for item in data)
        return [item for item in built if item is not None]

    def add_pending(self, pending: PendingTranscription) -> None:
        items = [item for item in self.pending_transcriptions() if item.action_id != pending.action_id]
        items.append(pending)
        self._json.save("pending_transcriptions", [asdict(item) for item in items])

    def update_pending(self, pending: PendingTranscription) -> None:
        self.add_pending(pending)

    def remove_pending(self, action_id: str) -> None:
        items = self.pending_transcriptions()
        kept = [item for item in items if item.action_id != action_id]
        if len(kept) != len(items):
            self._json.save("pending_transcriptions", [asdict(item) for item in kept])

    # -- late transcripts, kept until the pipeline has folded them into the note ---------------

    def transcript(self, action_id: str) -> dict[str, Any] | None:
        """The TRANSCRIPTION_COMPLETED payload of an action, should the event have been missed."""
        data = self._json.load(f"transcript:{action_id}")
        return data if isinstance(data, dict) else None

    def save_transcript(self, action_id: str, payload: dict[str, Any]) -> None:
        self._json.save(f"transcript:{action_id}", payload)
