"""What the bot says, and the buttons it shows: the texts are shared with WhatsApp (chat_replies);
the inline keyboard is Telegram's own."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from ai_employee.sources.chat_replies import (
    CALLBACK_PREFIX,
    MAX_CALLBACK_BYTES,
    MAX_MESSAGE_CHARS,
    Decision,
    arrival_text,
    callback_answer,
    callback_data,
    decided_suffix,
    describe_result,
    executed_text,
    failed_text,
    parse_callback,
    plan_text,
    plan_text_without_buttons,
    transcribed_text,
    truncate,
    unsupported_text,
)

__all__ = [
    "CALLBACK_PREFIX",
    "MAX_CALLBACK_BYTES",
    "MAX_MESSAGE_CHARS",
    "Decision",
    "arrival_text",
    "callback_answer",
    "callback_data",
    "decided_suffix",
    "decision_keyboard",
    "describe_result",
    "executed_text",
    "failed_text",
    "parse_callback",
    "plan_text",
    "plan_text_without_buttons",
    "transcribed_text",
    "truncate",
    "unsupported_text",
]


def decision_keyboard(plan_id: str) -> InlineKeyboardMarkup | None:
    """Approve / Reject, or None when the plan id does not fit in callback data."""
    approve = callback_data("approve", plan_id)
    reject = callback_data("reject", plan_id)
    if approve is None or reject is None:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Approve", callback_data=approve),
                InlineKeyboardButton("Reject", callback_data=reject),
            ]
        ]
    )
