"""Replies to the sender of an email with the outcome of its plan (PLAN_EXECUTED / PLAN_FAILED).

Dry-run by default; only to senders named in `allowed_senders`, never to automatic mail
(RFC 3834). What to answer is remembered per action when the email is taken, in the durable
state, and each outcome is answered once, across restarts and redelivered events.
"""

from __future__ import annotations

import json
from typing import Final

import structlog

from ai_employee.clients.smtp_reply import Reply, ReplySender, SmtpConfig
from ai_employee.config import Settings
from ai_employee.model.bus import Subscription
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import ServiceContext
from ai_employee.sources.mail_parsing import ParsedMail

log = structlog.get_logger(__name__)

REPLY_NAMESPACE: Final = "email.reply"
REPLIED_NAMESPACE: Final = "email.replied"


class OutcomeReplies:
    """Answers the sender of each email once its plan ran or failed."""

    def __init__(self, ctx: ServiceContext, sender: ReplySender | None) -> None:
        self._ctx = ctx
        self._sender = sender
        self._subscriptions: list[Subscription] = []

    def start(self) -> None:
        if self._sender is None:
            return
        bus = self._ctx.bus
        for event_type in (EventType.PLAN_EXECUTED, EventType.PLAN_FAILED):
            self._subscriptions.append(bus.subscribe(event_type, self._on_outcome, name="email-reply"))

    def stop(self) -> None:
        for subscription in self._subscriptions:
            self._ctx.bus.unsubscribe(subscription)
        self._subscriptions = []

    def remember(self, action_id: str, parsed: ParsedMail, trusted: bool) -> None:
        if self._sender is None:
            return
        record = {
            "to": parsed.sender_address,  # not Reply-To: the address checked against the allow list
            "subject": parsed.subject or "",
            "message_id": parsed.message_id,
            # Replies go only to senders named in allowed_senders: with an empty list everyone
            # is "trusted", and answering every sender would answer spammers (backscatter).
            "allowed": trusted and bool(self._ctx.settings.email.allowed_senders),
            "automatic": parsed.automatic,
        }
        self._ctx.state.put(REPLY_NAMESPACE, action_id, json.dumps(record))

    async def _on_outcome(self, event: Event) -> None:
        sender = self._sender
        action_id = event.correlation_id
        if sender is None or not action_id:
            return
        stored = self._ctx.state.get(REPLY_NAMESPACE, action_id)
        if stored is None:
            return  # not an email this source took
        record = json.loads(stored)
        plan_id = str(event.payload.get("plan_id") or "")
        done_key = f"{action_id}:{plan_id}:{event.type.value}"
        if self._ctx.state.get(REPLIED_NAMESPACE, done_key) is not None:
            return
        to = record.get("to")
        if not to or not record.get("allowed") or record.get("automatic"):
            log.info(
                "email.reply_skipped",
                action_id=action_id,
                reason="automatic mail" if record.get("automatic") else "sender not in allowed_senders",
            )
            return
        reply = Reply(
            to=str(to),
            subject=str(record.get("subject") or ""),
            body=_outcome_text(event, str(record.get("subject") or ""), action_id),
            in_reply_to=record.get("message_id"),
        )
        try:
            outcome = await sender.send(reply)
        except Exception as error:
            log.warning("email.reply_failed", action_id=action_id, error=_error_text(error))
            return
        self._ctx.state.put(REPLIED_NAMESPACE, done_key, outcome)


def _outcome_text(event: Event, subject: str, action_id: str) -> str:
    payload = event.payload
    what = f'your email "{subject}"' if subject else "your email"
    action = payload.get("action") or "the planned action"
    if event.type == EventType.PLAN_EXECUTED:
        dry = " as a dry run: nothing was sent to outside systems" if payload.get("dry_run") else ""
        lines = ["Hello,", "", f"{what} has been handled{dry}.", "", f"Action: {action}"]
        result = payload.get("result")
        if isinstance(result, dict):
            for key, value in list(result.items())[:10]:
                if isinstance(value, str | int | float | bool):
                    lines.append(f"{key}: {str(value)[:200]}")
    else:
        error = str(payload.get("error") or "unknown error")[:500]
        lines = ["Hello,", "", f"{what} could not be handled.", "", f"Action: {action}", f"Reason: {error}"]
    lines += ["", f"Reference: {action_id}", "", "-- ", "AI Employee (automatic reply)"]
    return "\n".join(lines) + "\n"


def _error_text(error: BaseException) -> str:
    text = str(error).strip()
    return (f"{type(error).__name__}: {text}" if text else type(error).__name__)[:300]


def reply_sender_from(all_settings: Settings) -> ReplySender | None:
    settings, services = all_settings.email, all_settings.services
    if not settings.reply_enabled:
        return None
    from_address = settings.user if settings.user and "@" in settings.user else None
    if from_address is None:
        log.warning("email.reply_off", reason="IMAP_USER is not an email address to send from")
        return None
    if not settings.smtp_host and not settings.reply_dry_run:
        log.warning("email.reply_off", reason="reply_enabled without smtp_host")
        return None
    config = SmtpConfig(
        host=settings.smtp_host or "",
        port=settings.smtp_port,
        username=settings.user,
        password=settings.password.get_secret_value() if settings.password else None,
        oauth2_token=settings.oauth2_token.get_secret_value() if settings.oauth2_token else None,
        from_address=from_address,
        connect_timeout=services.connect_timeout,
        timeout=services.read_timeout,
        deadline=services.grace_seconds,  # a reply in flight never holds a stop beyond the grace
        max_backoff=services.max_backoff,
    )
    return ReplySender(config, dry_run=settings.reply_dry_run)
