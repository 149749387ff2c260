"""Typed events carried by the bus.

Every event names the action it concerns as its correlation id, so one query of the
history, the logs or the audit trail tells an item's whole story.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ai_employee.model.tokens import random_hex


class EventType(StrEnum):
    # files and inputs
    FILE_DETECTED = "file.detected"
    FILE_IGNORED = "file.ignored"
    INPUT_QUARANTINED = "input.quarantined"
    # actions
    ACTION_CREATED = "action.created"
    ACTION_UPDATED = "action.updated"
    # plans
    PLAN_CREATED = "plan.created"
    PLAN_FALLBACK = "plan.fallback"
    PLAN_RETURNED = "plan.returned"
    # approvals
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_DENIED = "approval.denied"
    APPROVAL_REVOKED = "approval.revoked"
    # execution
    PLAN_EXECUTING = "plan.executing"
    PLAN_EXECUTED = "plan.executed"
    PLAN_FAILED = "plan.failed"
    PLAN_DUPLICATE_IGNORED = "plan.duplicate_ignored"
    EXECUTION_PROGRESS = "execution.progress"
    # email
    EMAIL_RECEIVED = "email.received"
    EMAIL_ERROR = "email.error"
    # telegram
    TELEGRAM_MESSAGE = "telegram.message"
    TELEGRAM_UNAUTHORIZED = "telegram.unauthorized"
    TRANSCRIPTION_COMPLETED = "transcription.completed"
    TRANSCRIPTION_PENDING = "transcription.pending"
    # whatsapp
    WHATSAPP_MESSAGE_RECEIVED = "whatsapp.message_received"
    WHATSAPP_MESSAGE_PROCESSED = "whatsapp.message_processed"
    WHATSAPP_UNAUTHORIZED = "whatsapp.unauthorized"
    WHATSAPP_REPLY_FAILED = "whatsapp.reply_failed"
    # services
    SERVICE_STARTED = "service.started"
    SERVICE_STOPPED = "service.stopped"
    SERVICE_FAILED = "service.failed"
    SERVICE_RESTARTED = "service.restarted"
    # an integration's link to its outside server (supervision alerts on these)
    SERVICE_CONNECTING = "service.connecting"
    SERVICE_CONNECTED = "service.connected"
    SERVICE_RETRYING = "service.retrying"
    # health
    HEALTH_CHECKED = "health.checked"
    HEALTH_CHANGED = "health.changed"
    # system
    SYSTEM_STARTED = "system.started"
    SYSTEM_STOPPING = "system.stopping"
    SYSTEM_STOPPED = "system.stopped"
    WATCHER_OVERFLOW = "watcher.overflow"
    RECONCILE_COMPLETED = "reconcile.completed"
    # the audit store (#13)
    PLAN_CONTEXT_WARNING = "plan.context_warning"  # a planner prompt used over 70% / 85% of the window
    TASK_LINKED = "task.linked"  # where an item lives elsewhere: {"action_id", "slack_thread": "C1:1712.5"}
    COST_INCURRED = "cost.incurred"  # money spent for an item: {"action_id", "service", "usd", "key"}


def new_event_id() -> str:
    return "evt-" + random_hex(8)


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    payload: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    source: str = "core"
    id: str = field(default_factory=new_event_id)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type.value,
            "time": self.time.isoformat(),
            "correlation_id": self.correlation_id,
            "source": self.source,
            "payload": dict(self.payload),
        }
