"""What the WhatsApp source remembers across restarts, in the daemon's key-value store
(namespace `whatsapp`; every `put` is durable when it returns):

- each message id already handled (`msg:<wamid>`): the action it became, or that it was a tap
  or something not taken; Meta delivers the same message again after a timeout, for days;
- who sent the message behind an action (`ref:<wamid>`, `action:<action id>`), so that plans
  and outcomes find the person to answer;
- when each person last wrote (`seen:<wa_id>`): the 24-hour window for free-form messages;
- the message that carries a plan's buttons (`plan:<plan id>`), and every message sent
  (`out:<wamid>`), so that a later `failed` status names the action to record it on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ai_employee.model.json_state import JsonNamespace, record_from_json
from ai_employee.model.services import KeyValueStore

NAMESPACE = "whatsapp"


@dataclass
class Handled:
    """A message id already dealt with."""

    kind: str  # action | tap | ignored
    action_id: str | None = None
    acknowledged: bool = False  # the "received" answer was queued


@dataclass
class Sender:
    """Who sent a message (to answer them) and the action it became."""

    message_id: str
    to: str  # the wa_id (or user id) to answer
    name: str | None = None
    action_id: str | None = None


@dataclass
class PlanMessage:
    plan_id: str
    action_id: str
    to: str
    wamid: str = ""
    decided: bool = False


@dataclass
class Sent:
    """A message we sent: for its `failed` status, later."""

    wamid: str
    to: str
    kind: str  # text | buttons | template
    action_id: str | None = None
    text: str = ""


class WhatsAppState:
    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        self._json = JsonNamespace(store, NAMESPACE)

    # -- duplicates ---------------------------------------------------------------------------

    def handled(self, message_id: str) -> Handled | None:
        return record_from_json(Handled, self._json.load(f"msg:{message_id}"))

    def mark_handled(self, message_id: str, handled: Handled) -> None:
        self._json.save(f"msg:{message_id}", asdict(handled))

    # -- senders ------------------------------------------------------------------------------

    def sender_of(self, message_id: str) -> Sender | None:
        return record_from_json(Sender, self._json.load(f"ref:{message_id}"))

    def remember_sender(self, sender: Sender) -> None:
        self._json.save(f"ref:{sender.message_id}", asdict(sender))
        if sender.action_id:
            self._store.put(NAMESPACE, f"action:{sender.action_id}", sender.message_id)

    def sender_of_action(self, action_id: str) -> Sender | None:
        message_id = self._store.get(NAMESPACE, f"action:{action_id}")
        return self.sender_of(message_id) if message_id else None

    # -- the 24-hour window -------------------------------------------------------------------

    def last_seen(self, who: str) -> float | None:
        value = self._store.get(NAMESPACE, f"seen:{who}")
        try:
            return float(value) if value else None
        except ValueError:
            return None

    def saw(self, who: str, when: float) -> None:
        current = self.last_seen(who)
        if current is None or when > current:
            self._store.put(NAMESPACE, f"seen:{who}", repr(when))

    # -- what we sent -------------------------------------------------------------------------

    def plan_message(self, plan_id: str) -> PlanMessage | None:
        return record_from_json(PlanMessage, self._json.load(f"plan:{plan_id}"))

    def remember_plan_message(self, plan: PlanMessage) -> None:
        self._json.save(f"plan:{plan.plan_id}", asdict(plan))

    def sent(self, wamid: str) -> Sent | None:
        return record_from_json(Sent, self._json.load(f"out:{wamid}"))

    def remember_sent(self, sent: Sent) -> None:
        if sent.wamid:
            self._json.save(f"out:{sent.wamid}", asdict(sent))
