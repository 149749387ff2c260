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

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from ai_employee.model.services import KeyValueStore

NAMESPACE = "whatsapp"

R = TypeVar("R")


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

    # -- duplicates ---------------------------------------------------------------------------

    def handled(self, message_id: str) -> Handled | None:
        return _build(Handled, self._load(f"msg:{message_id}"))

    def mark_handled(self, message_id: str, handled: Handled) -> None:
        self._save(f"msg:{message_id}", asdict(handled))

    # -- senders ------------------------------------------------------------------------------

    def sender_of(self, message_id: str) -> Sender | None:
        return _build(Sender, self._load(f"ref:{message_id}"))

    def remember_sender(self, sender: Sender) -> None:
        self._save(f"ref:{sender.message_id}", asdict(sender))
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
        return _build(PlanMessage, self._load(f"plan:{plan_id}"))

    def remember_plan_message(self, plan: PlanMessage) -> None:
        self._save(f"plan:{plan.plan_id}", asdict(plan))

    def sent(self, wamid: str) -> Sent | None:
        return _build(Sent, self._load(f"out:{wamid}"))

    def remember_sent(self, sent: Sent) -> None:
        if sent.wamid:
            self._save(f"out:{sent.wamid}", asdict(sent))

    # -- plumbing -----------------------------------------------------------------------------

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
    """A record from its JSON, ignoring fields a later version added; None if it is unusable."""
    if not isinstance(data, dict):
        return None
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{key: value for key, value in data.items() if key in known})
    except TypeError:
        return None
