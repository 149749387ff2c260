"""Plans in WhatsApp: announced to the sender with the reply buttons Approve / Reject, decided by a
tap, closed with the outcome as text.

A tap makes the same move as Obsidian (the ApprovalGateway: the note goes to Approved/ or
Rejected/), recorded with who decided and the door `whatsapp`. A second tap, or a tap on a plan
decided elsewhere, changes nothing and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog

from ai_employee.clients.retry import describe
from ai_employee.model.bus import EventBus, Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import ApprovalGateway
from ai_employee.sources.chat_replies import (
    callback_answer,
    callback_data,
    decide,
    no_decision_text,
    outcome_text,
    parse_callback,
    plan_and_action,
    plan_text,
    plan_text_without_buttons,
    truncate,
)
from ai_employee.sources.whatsapp_outbox import Outbox, Outgoing
from ai_employee.sources.whatsapp_state import PlanMessage, Sender, WhatsAppState
from ai_employee.sources.whatsapp_wire import InboundMessage

log = structlog.get_logger("ai_employee.sources.whatsapp")

MAX_REPLY_ID_BYTES = 256  # a reply button's id
STORING_WAIT_SECONDS = 60.0

ActionInfo = Callable[[str], Mapping[str, Any] | None]


class Decisions:
    def __init__(
        self,
        *,
        state: WhatsAppState,
        outbox: Outbox,
        approvals: ApprovalGateway,
        action_info: ActionInfo,
    ) -> None:
        self._state = state
        self._outbox = outbox
        self._approvals = approvals
        self._action_info = action_info
        self._storing: dict[str, asyncio.Event] = {}
        self._announcing: set[str] = set()
        self._seen_outcomes: deque[str] = deque(maxlen=1024)

    def subscribe(self, bus: EventBus) -> list[Subscription]:
        return [
            bus.subscribe(EventType.PLAN_CREATED, self.on_plan_created, name="whatsapp.plan_created"),
            bus.subscribe(EventType.PLAN_EXECUTED, self.on_plan_outcome, name="whatsapp.plan_executed"),
            bus.subscribe(EventType.PLAN_FAILED, self.on_plan_outcome, name="whatsapp.plan_failed"),
        ]

    @contextlib.contextmanager
    def storing(self, message_id: str) -> Iterator[None]:
        """A message is becoming an action: its plan waits until "received" is queued."""
        done = asyncio.Event()
        self._storing[message_id] = done
        try:
            yield
        finally:
            done.set()
            self._storing.pop(message_id, None)

    # -- plans and outcomes from the bus ------------------------------------------------------

    def _sender_for(self, action_id: str, payload: Mapping[str, Any]) -> Sender | None:
        if payload.get("source") == "whatsapp" and isinstance(payload.get("source_ref"), str):
            sender = self._state.sender_of(payload["source_ref"])
            if sender is not None:
                return sender
        sender = self._state.sender_of_action(action_id) if action_id else None
        if sender is not None:
            return sender
        info = self._action_info(action_id) if action_id else None
        if info and info.get("source") == "whatsapp" and isinstance(info.get("source_ref"), str):
            return self._state.sender_of(info["source_ref"])
        return None

    async def on_plan_created(self, event: Event) -> None:
        payload = event.payload
        plan_id, action_id = plan_and_action(event)
        if not plan_id or payload.get("source") not in (None, "whatsapp"):
            return
        sender = self._sender_for(action_id, payload)
        if sender is None:
            return
        waiting = self._storing.get(sender.message_id)
        if waiting is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiting.wait(), STORING_WAIT_SECONDS)
        if plan_id in self._announcing or self._state.plan_message(plan_id) is not None:
            return
        self._announcing.add(plan_id)
        try:
            self._announce(plan_id, action_id or sender.action_id or "", sender, payload)
        finally:
            self._announcing.discard(plan_id)

    def _announce(self, plan_id: str, action_id: str, sender: Sender, payload: Mapping[str, Any]) -> None:
        record = PlanMessage(plan_id=plan_id, action_id=action_id, to=sender.to)
        self._state.remember_plan_message(record)  # before sending: a repeated event sends nothing twice
        no_decision = no_decision_text(plan_id, payload)
        if no_decision is not None:
            self._outbox.put(Outgoing(sender.to, no_decision, action_id, reply_to=sender.message_id))
            return
        approve = callback_data("approve", plan_id, MAX_REPLY_ID_BYTES)
        reject = callback_data("reject", plan_id, MAX_REPLY_ID_BYTES)
        if approve is None or reject is None:
            text = plan_text_without_buttons(plan_id, payload)
            self._outbox.put(Outgoing(sender.to, text, action_id, reply_to=sender.message_id))
            return

        def sent(wamid: str) -> None:
            record.wamid = wamid
            self._state.remember_plan_message(record)

        self._outbox.put(
            Outgoing(
                sender.to,
                plan_text(plan_id, payload),
                action_id,
                buttons=((approve, "Approve"), (reject, "Reject")),
                reply_to=sender.message_id,
                on_sent=sent,
                fallback_text=plan_text_without_buttons(plan_id, payload),
            )
        )

    async def on_plan_outcome(self, event: Event) -> None:
        if event.id in self._seen_outcomes:
            return
        self._seen_outcomes.append(event.id)
        plan_id, action_id = plan_and_action(event)
        sender = self._sender_for(action_id, {}) if action_id else None
        if sender is None or not plan_id:
            return
        text = outcome_text(plan_id, event)
        self._outbox.put(Outgoing(sender.to, text, action_id, reply_to=sender.message_id))
        record = self._state.plan_message(plan_id)
        if record is not None and not record.decided:
            record.decided = True
            self._state.remember_plan_message(record)

    # -- taps ---------------------------------------------------------------------------------

    def on_tap(self, message: InboundMessage, button_id: str) -> None:
        """A tap on Approve or Reject, from an allowed number (the caller checked)."""
        to = message.sender_key
        parsed = parse_callback(button_id)
        if parsed is None:
            self._outbox.put(Outgoing(to, "This button is not for me.", reply_to=message.id))
            return
        decision, plan_id = parsed
        who = message.describe_sender()
        record = self._state.plan_message(plan_id)
        action_id = record.action_id if record else None
        try:
            result = decide(self._approvals, decision, plan_id, who, "whatsapp")
        except Exception as error:
            log.exception("whatsapp.decision_failed", plan_id=plan_id, decision=decision)
            text = truncate(f"Could not {decision} {plan_id}: {describe(error)}", 1000)
            self._outbox.put(Outgoing(to, text, action_id, reply_to=message.id))
            return
        log.info("whatsapp.decision", plan_id=plan_id, decision=decision, outcome=result.outcome, by=who)
        self._outbox.put(Outgoing(to, callback_answer(result), action_id, reply_to=message.id))
        if record is not None and result.outcome in ("approved", "rejected") and not record.decided:
            record.decided = True
            self._state.remember_plan_message(record)
