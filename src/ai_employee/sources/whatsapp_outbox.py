"""Everything the WhatsApp source sends goes through this queue, one message at a time, so that a
slow, failing or rate-limiting Graph API (429, 5xx, throttling codes: retried with backoff) never
slows the intake.

Meta's 24-hour window: free-form and interactive messages reach a person only within 24 hours of
their last message. Outside it (by our own record of when they last wrote, or by Meta's answer
131047, synchronously or as a later `failed` status), the reply is sent with the approved template
`whatsapp.reply_template` when one is configured; otherwise the action note and the log say that
the reply could not be sent. A template is never retried as another template: nothing loops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from ai_employee.clients.retry import ServiceError, describe
from ai_employee.clients.whatsapp import OUTSIDE_WINDOW, GraphError, WhatsAppGraph
from ai_employee.model.events import EventType
from ai_employee.sources.chat_replies import truncate
from ai_employee.sources.whatsapp_notes import NoteRemarks
from ai_employee.sources.whatsapp_state import Sent, WhatsAppState
from ai_employee.sources.whatsapp_wire import StatusUpdate

log = structlog.get_logger("ai_employee.sources.whatsapp")

WINDOW_SECONDS = 24 * 3600
MAX_BODY_CHARS = 1024  # an interactive message's body, a template parameter
MAX_BUTTON_TITLE = 20

Publish = Callable[[EventType, str | None, dict[str, Any]], None]


@dataclass
class Outgoing:
    to: str
    text: str
    action_id: str | None = None
    buttons: tuple[tuple[str, str], ...] = ()  # (id, title): reply buttons
    reply_to: str | None = None  # the wamid this answers (shown quoted)
    on_sent: Callable[[str], None] | None = None  # given the new wamid
    #: what a template carries instead, when buttons cannot be sent (outside the window)
    fallback_text: str | None = None
    #: (code, reason): a message Meta refused after the fact (a `failed` status), dealt with in
    #: the queue's order so that the spool worker never waits for the Graph API
    refused: tuple[int | None, str] | None = None

    @property
    def kind(self) -> str:
        return "buttons" if self.buttons else "text"

    @property
    def plain_text(self) -> str:
        return self.fallback_text or self.text


def text_message(text: str, reply_to: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "text", "text": {"body": truncate(text), "preview_url": False}}
    if reply_to:
        message["context"] = {"message_id": reply_to}
    return message


def buttons_message(
    text: str, buttons: tuple[tuple[str, str], ...], reply_to: str | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": truncate(text, MAX_BODY_CHARS)},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": button_id, "title": title[:MAX_BUTTON_TITLE]}}
                    for button_id, title in buttons[:3]
                ]
            },
        },
    }
    if reply_to:
        message["context"] = {"message_id": reply_to}
    return message


def template_message(name: str, language: str, text: str) -> dict[str, Any]:
    """The approved template, its body's one parameter the reply (Meta refuses new lines, tabs
    and long runs of spaces in a parameter)."""
    flat = truncate(" ".join(text.split()), MAX_BODY_CHARS)
    return {
        "type": "template",
        "template": {
            "name": name,
            "language": {"code": language},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": flat}]}],
        },
    }


class Outbox:
    def __init__(
        self,
        *,
        graph: Callable[[], WhatsAppGraph | None],
        state: WhatsAppState,
        notes: NoteRemarks,
        publish: Publish,
        template: str | None,
        template_language: str,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._graph = graph
        self._state = state
        self._notes = notes
        self._publish = publish
        self._template = template
        self._template_language = template_language
        self._now = now
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.sent_count = 0
        self.failed_count = 0

    def put(self, item: Outgoing) -> None:
        self._queue.put_nowait(item)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        """Send what is queued, in order, until cancelled."""
        while True:
            item = await self._queue.get()
            try:
                await self._deliver(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("whatsapp.send_crashed", to=item.to, action_id=item.action_id)

    async def drain(self) -> None:
        """Send what is queued now (a stopping service)."""
        while not self._queue.empty():
            await self._deliver(self._queue.get_nowait())

    def within_window(self, to: str) -> bool:
        seen = self._state.last_seen(to)
        return seen is not None and self._now() - seen < WINDOW_SECONDS

    async def _deliver(self, item: Outgoing) -> None:
        if item.refused is not None:
            code, reason = item.refused
            if code == OUTSIDE_WINDOW and item.text:  # the reply again, by template if there is one
                await self._outside_window(item.to, item.action_id, item.text, item.kind, reason)
            else:
                await self._undeliverable(item.to, item.action_id, reason, code=code)
            return
        if not self.within_window(item.to):
            await self._outside_window(
                item.to, item.action_id, item.plain_text, item.kind, "the last message is older than 24 hours"
            )
            return
        if item.buttons:
            message = buttons_message(item.text, item.buttons, item.reply_to)
        else:
            message = text_message(item.text, item.reply_to)
        wamid = await self._send(item.to, message, item.action_id, item.plain_text, item.kind)
        if wamid is not None and item.on_sent is not None:
            item.on_sent(wamid)

    async def _send(
        self, to: str, message: Mapping[str, Any], action_id: str | None, text: str, kind: str
    ) -> str | None:
        graph = self._graph()
        if graph is None:
            log.warning(
                "whatsapp.reply_not_sent", to=to, action_id=action_id, reason="the service is not running"
            )
            return None
        try:
            wamid = await graph.send(to, message)
        except GraphError as error:
            if error.code == OUTSIDE_WINDOW and kind != "template":
                await self._outside_window(to, action_id, text, kind, error.message)
            else:
                await self._undeliverable(to, action_id, error.message, code=error.code)
            return None
        except ServiceError as error:  # 429 / 5xx through every retry, or no connection
            await self._undeliverable(to, action_id, describe(error), code=None)
            return None
        self.sent_count += 1
        self._state.remember_sent(Sent(wamid=wamid, to=to, kind=kind, action_id=action_id, text=text[:1024]))
        return wamid

    def on_status(self, status: StatusUpdate) -> None:
        """A receipt for a message we sent. `failed` is recorded; 131047 falls back to the template
        (never for a template that failed: nothing loops)."""
        if status.status != "failed":
            return
        sent = self._state.sent(status.id)
        to = sent.to if sent else (status.recipient_id or "")
        action_id = sent.action_id if sent else None
        reason = status.error_text()
        codes = status.error_codes()
        if OUTSIDE_WINDOW in codes and sent is not None and sent.kind != "template":
            self.put(Outgoing(to, sent.text, action_id, refused=(OUTSIDE_WINDOW, reason)))
            return
        self.put(Outgoing(to, "", action_id, refused=(next(iter(codes), None), reason)))

    async def _outside_window(
        self, to: str, action_id: str | None, text: str, kind: str, reason: str
    ) -> None:
        if self._template:
            log.info(
                "whatsapp.reply_by_template",
                to=to,
                action_id=action_id,
                template=self._template,
                reason=reason,
            )
            message = template_message(self._template, self._template_language, text)
            await self._send(to, message, action_id, text, "template")
            return
        await self._undeliverable(
            to,
            action_id,
            f"outside WhatsApp's 24-hour window ({reason}); "
            "set whatsapp.reply_template to answer with a template",
            code=OUTSIDE_WINDOW,
        )

    async def _undeliverable(self, to: str, action_id: str | None, reason: str, *, code: int | None) -> None:
        self.failed_count += 1
        log.warning("whatsapp.reply_failed", to=to, action_id=action_id, code=code, error=reason)
        self._publish(
            EventType.WHATSAPP_REPLY_FAILED,
            action_id,
            {"action_id": action_id, "code": code, "error": reason},
        )
        if action_id:
            await self._notes.record(action_id, f"A WhatsApp reply could not be sent: {reason}")
