"""The vocabulary of an item's state in Slack: one word, one emoji, one colour each."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    STARTING = "starting"  # received, being planned
    WORKING = "working"  # running
    WAITING = "waiting"  # a plan waits for a human decision
    APPROVED = "approved"
    REJECTED = "rejected"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WARNING = "warning"

    @property
    def look(self) -> Look:
        return LOOKS[self]

    @property
    def final(self) -> bool:
        """An item in this state needs nothing more (until a human moves its plan again)."""
        return self in (Status.REJECTED, Status.COMPLETE, Status.FAILED, Status.CANCELLED)


@dataclass(frozen=True)
class Look:
    emoji: str  # Slack's short name
    colour: str  # the bar beside the message
    label: str


LOOKS: dict[Status, Look] = {
    Status.STARTING: Look(":hourglass_flowing_sand:", "#9E9E9E", "Starting"),
    Status.WORKING: Look(":gear:", "#1E88E5", "Working"),
    Status.WAITING: Look(":raised_hand:", "#F9A825", "Waiting for approval"),
    Status.APPROVED: Look(":white_check_mark:", "#43A047", "Approved"),
    Status.REJECTED: Look(":no_entry_sign:", "#757575", "Rejected"),
    Status.COMPLETE: Look(":tada:", "#2E7D32", "Complete"),
    Status.FAILED: Look(":x:", "#D32F2F", "Failed"),
    Status.CANCELLED: Look(":black_square_for_stop:", "#616161", "Cancelled"),
    Status.WARNING: Look(":warning:", "#FB8C00", "Warning"),
}
