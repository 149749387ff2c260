"""Plans in the chat: announced with Approve / Reject, decided by a button, closed with the outcome.

The answers go to the chat the action came from, as replies to the user's message. A plan
decided anywhere else (Obsidian, the CLI, Slack, auto-approval) loses its buttons too, so a
stale button is never pressed.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import structlog
from telegram import CallbackQuery, Message, Update
from telegram.ext import ContextTypes

from ai_employee.clients.retry import describe
from ai_employee.model.bus import EventBus, Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import ApprovalGateway, DecisionResult
from ai_employee.sources.chat_replies import decide, no_decision_text, outcome_text, plan_and_action
from ai_employee.sources.telegram_bot import LOGGER_NAME, Access, ActionInfo, BotClient
from ai_employee.sources.telegram_content import describe_sender
from ai_employee.sources.telegram_replies import (
    callback_answer,
    decided_suffix,
    decision_keyboard,
    parse_callback,
    plan_text,
    plan_text_without_buttons,
    truncate,
)
from ai_employee.sources.telegram_state import ActionLink, PlanMessage, TelegramState

log = structlog.get_logger(LOGGER_NAME)


class Decisions:
    """Plan and outcome events from the bus, and the button presses that decide plans."""

    def __init__(
        self,
        *,
        state: TelegramState,
        bot: BotClient,
        access: Access,
        approvals: ApprovalGateway,
        action_info: ActionInfo,
    ) -> None:
        self._state = state
        self._bot = bot
        self._access = access
        self._approvals = approvals
        self._action_info = action_info
        self._submitting = 0
        self._held: deque[Event] = deque(maxlen=64)  # plan events that beat their action's record
        self._announcing: set[str] = set()
        self._decided_while_announcing: dict[str, str] = {}  # plan id -> note for its buttons
        self._deciding: set[str] = set()  # plans whose button press is being handled
        self._seen_outcomes: deque[str] = deque(maxlen=1024)

    def subscribe(self, bus: EventBus) -> list[Subscription]:
        return [
            bus.subscribe(EventType.PLAN_CREATED, self.on_plan_created, name="telegram.plan_created"),
            bus.subscribe(EventType.PLAN_EXECUTED, self.on_plan_outcome, name="telegram.plan_executed"),
            bus.subscribe(EventType.PLAN_FAILED, self.on_plan_outcome, name="telegram.plan_failed"),
            bus.subscribe(EventType.APPROVAL_GRANTED, self.on_decided_elsewhere, name="telegram.approved"),
            bus.subscribe(EventType.APPROVAL_DENIED, self.on_decided_elsewhere, name="telegram.rejected"),
        ]

    @contextlib.contextmanager
    def storing(self) -> Iterator[None]:
        """An action is being stored: a plan event that cannot find its chat yet waits for it."""
        self._submitting += 1
        try:
            yield
        finally:
            self._submitting -= 1

    # -- buttons ----------------------------------------------------------------------------

    async def on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        user = query.from_user
        parsed = parse_callback(query.data)
        if parsed is None:
            await self._bot.answer(query, "This button is not for me.")
            return
        if user.id not in self._access.allowed:
            chat_id = query.message.chat.id if query.message is not None else user.id
            self._access.note_unauthorized(chat_id, user, "button")
            await self._bot.answer(query, "You are not allowed to approve or reject plans.")
            return
        decision, plan_id = parsed
        who = describe_sender(user) or str(user.id)
        self._deciding.add(plan_id)  # the bus's approval event must not edit the message first
        try:
            try:
                result = decide(self._approvals, decision, plan_id, who, "telegram")
            except Exception as error:
                log.exception("telegram.decision_failed", plan_id=plan_id, decision=decision)
                await self._bot.answer(
                    query, truncate(f"Could not {decision} {plan_id}: {describe(error)}", 200)
                )
                return
            log.info(
                "telegram.decision",
                plan_id=plan_id,
                decision=decision,
                outcome=result.outcome,
                user_id=user.id,
            )
            await self._bot.answer(query, callback_answer(result))
            if result.outcome != "not_found":
                await self._close_plan_message(plan_id, query, result, who)
        finally:
            self._deciding.discard(plan_id)

    async def _close_plan_message(
        self, plan_id: str, query: CallbackQuery, result: DecisionResult, who: str
    ) -> None:
        """Take the buttons away and say what was decided, on the message that carried them."""
        record = self._state.plan_message(plan_id)
        if record is not None and record.decided:
            return
        message = query.message
        if record is not None:
            chat_id, message_id, text = record.chat_id, record.message_id, record.text
        elif isinstance(message, Message):
            chat_id, message_id, text = message.chat_id, message.message_id, message.text or ""
        else:
            return
        await self._bot.edit(chat_id, message_id, truncate(text + decided_suffix(result, who)))
        if record is not None:
            record.decided = True
            self._state.remember_plan_message(record)

    # -- plans and outcomes from the bus ----------------------------------------------------

    async def on_plan_created(self, event: Event) -> None:
        plan_id, action_id = plan_and_action(event)
        if not plan_id or not action_id or self._bot.app is None:
            return
        link = self._state.link(action_id)
        if link is None:
            hinted = _link_from(action_id, event.payload)
            if self._submitting and (hinted is not None or not event.payload.get("source")):
                # A fast pipeline planned before submit() returned: answer "received" first.
                self._held.append(event)
                return
            link = hinted or self._find_link(action_id)
        if link is not None:
            await self._announce_plan(link, plan_id, event.payload)

    async def release_held(self, action_id: str) -> None:
        """Announce the plans held back while an action was being stored."""
        ready = [event for event in self._held if event.correlation_id == action_id or not self._submitting]
        for event in ready:
            self._held.remove(event)
        for event in ready:
            await self.on_plan_created(event)

    async def _announce_plan(self, link: ActionLink, plan_id: str, payload: Mapping[str, Any]) -> None:
        if plan_id in self._announcing or self._state.plan_message(plan_id) is not None:
            return
        self._announcing.add(plan_id)
        try:
            no_decision = no_decision_text(plan_id, payload)
            if no_decision is not None:
                await self._bot.send(link.chat_id, no_decision, reply_to=link.message_id)
                return
            keyboard = decision_keyboard(plan_id)
            text = plan_text(plan_id, payload) if keyboard else plan_text_without_buttons(plan_id, payload)
            sent = await self._bot.send(link.chat_id, text, reply_to=link.message_id, reply_markup=keyboard)
            if sent is not None:
                self._state.remember_plan_message(
                    PlanMessage(plan_id, link.action_id, link.chat_id, sent.message_id, text)
                )
        finally:
            self._announcing.discard(plan_id)
        late = self._decided_while_announcing.pop(plan_id, None)
        if late is not None:  # decided elsewhere while the message was on its way
            await self._retire_buttons(plan_id, late)

    async def on_plan_outcome(self, event: Event) -> None:
        if event.id in self._seen_outcomes or self._bot.app is None:
            return
        self._seen_outcomes.append(event.id)
        plan_id, action_id = plan_and_action(event)
        link = self._find_link(action_id) if action_id else None
        if link is None or not plan_id:
            return
        await self._bot.send(link.chat_id, outcome_text(plan_id, event), reply_to=link.message_id)
        await self._retire_buttons(plan_id, "Approved outside Telegram.")

    async def on_decided_elsewhere(self, event: Event) -> None:
        """A plan decided in Obsidian, the CLI, Slack or by auto-approval: its buttons go."""
        plan_id = str(event.payload.get("plan_id") or "")
        if not plan_id or plan_id in self._deciding or self._bot.app is None:
            return
        granted = event.type == EventType.APPROVAL_GRANTED
        await self._retire_buttons(
            plan_id, "Approved outside Telegram." if granted else "Rejected outside Telegram."
        )

    async def _retire_buttons(self, plan_id: str, note: str) -> None:
        record = self._state.plan_message(plan_id)
        if record is None and plan_id in self._announcing:
            self._decided_while_announcing[plan_id] = note
            return
        if record is None or record.decided:
            return
        record.decided = True
        self._state.remember_plan_message(record)
        await self._bot.edit(record.chat_id, record.message_id, truncate(f"{record.text}\n\n{note}"))

    def _find_link(self, action_id: str) -> ActionLink | None:
        """The chat of an action: our own record, else the ledger's source_ref for Telegram actions."""
        link = self._state.link(action_id)
        if link is not None:
            return link
        return _link_from(action_id, self._action_info(action_id))


def _link_from(action_id: str, info: Mapping[str, Any] | None) -> ActionLink | None:
    """An action's chat from a ledger row or an event payload that names its Telegram source_ref."""
    if not info or info.get("source") != "telegram":
        return None
    chat, _, message = str(info.get("source_ref") or "").partition(":")
    try:
        return ActionLink(action_id, int(chat), int(message), acknowledged=True)
    except ValueError:
        return None
