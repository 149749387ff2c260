"""How much of a model's context window a planner prompt fills, and cutting a long input so that
it fits rather than failing.

Tokens are estimated from characters (`CHARS_PER_TOKEN`, about four for English text and JSON);
the estimate is for warnings and for cutting, not for billing (the API's usage is billed). The
windows are the providers' published sizes (checked November 2026); `costs.context_windows` in
the config overrides or adds to them, the longest matching prefix winning as for prices.
"""

from __future__ import annotations

from collections.abc import Mapping

CHARS_PER_TOKEN = 4
#: the prompt may fill at most this share of the window; beyond it the input text is cut
FIT_SHARE = 0.85
#: model name prefix -> context window in tokens
CONTEXT_WINDOWS: dict[str, int] = {
    "claude-opus-4-6": 1_000_000,
    "claude-sonnet-4-6": 1_000_000,
    "claude-": 200_000,
    "gpt-4.1": 1_047_576,
    "gpt-5": 400_000,
    "gpt-6": 400_000,
    "gpt-4o": 128_000,
    "o3": 200_000,
    "o4-mini": 200_000,
}
UNKNOWN_MODEL_WINDOW = 128_000


def context_window(model: str, overrides: Mapping[str, int] | None = None) -> int:
    table = {**CONTEXT_WINDOWS, **(overrides or {})}
    for prefix in sorted(table, key=len, reverse=True):
        if model.startswith(prefix):
            return table[prefix]
    return UNKNOWN_MODEL_WINDOW


def estimate_tokens(*texts: str) -> int:
    return sum(len(text) for text in texts) // CHARS_PER_TOKEN + 1


def input_chars_that_fit(fixed_tokens: int, window: int, wanted_chars: int) -> int:
    """How many characters of the input fit beside the rest of the prompt within FIT_SHARE."""
    room = int(window * FIT_SHARE) - fixed_tokens
    return max(0, min(wanted_chars, room * CHARS_PER_TOKEN))
