"""Slack's Web API through slack-sdk: the one place that builds the client and reads its errors.

The client is slack-sdk's `AsyncWebClient`, pointed at `slack.api_base_url` (tests: a loopback
fake). Its retry handlers retry a lost connection and honour a 429's `Retry-After`
(`AsyncRateLimitErrorRetryHandler`: the sync one does not work with the async client, apis.md §5).
What still fails after that is the caller's to queue and try again: `is_permanent` says which
errors will never go through however often they are sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from ai_employee.config import ServicesSettings, SlackSettings
from ai_employee.observability.logging import redact_text

#: `ok: false` errors that no retry will fix: the message or the setup is wrong, not the link
PERMANENT_ERRORS = frozenset(
    {
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_attachments",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "user_not_in_channel",
        "thread_not_found",
    }
)
#: errors that say the app is set up wrongly: retried with the link's backoff, shown in status
SETUP_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
    }
)

RATE_LIMIT_RETRIES = 3
CONNECTION_RETRIES = 1


def build_web_client(
    slack: SlackSettings, services: ServicesSettings, *, token: str | None = None
) -> AsyncWebClient:
    """The Web API client: bot token, base URL, deadline, and retries for 429 and lost connections."""
    bot_token = (
        token if token is not None else (slack.bot_token.get_secret_value() if slack.bot_token else None)
    )
    return AsyncWebClient(
        token=bot_token,
        base_url=slack.api_base_url,
        timeout=max(1, round(services.read_timeout)),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=CONNECTION_RETRIES),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )


def error_code(error: BaseException) -> str | None:
    """Slack's `error` of an `ok: false` answer ("channel_not_found"), None for other failures."""
    if isinstance(error, SlackApiError):
        data: Any = error.response.data if error.response is not None else None
        if isinstance(data, dict):
            code = data.get("error")
            return str(code) if code else None
    return None


def is_permanent(error: BaseException) -> bool:
    """Sending this again will not help: drop it (after a log line), do not hold the queue."""
    return error_code(error) in PERMANENT_ERRORS


def is_link_failure(error: BaseException) -> bool:
    """Slack could not be reached, or answered that it cannot serve now: try again later."""
    return isinstance(error, SlackClientError | aiohttp.ClientError | OSError | asyncio.TimeoutError)


def describe_slack_failure(error: BaseException) -> str:
    """In plain words and without secrets: "ratelimited (HTTP 429)", "channel_not_found",
    "connection refused"."""
    code = error_code(error)
    if code is not None:
        status = error.response.status_code if isinstance(error, SlackApiError) else None
        return f"{code} (HTTP {status})" if status and status != 200 else code
    if isinstance(error, SlackApiError):  # not ok and no error field: a gateway's answer
        status = error.response.status_code
        return f"answered HTTP {status}"
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused (nothing is listening)"
        if isinstance(current, asyncio.TimeoutError | TimeoutError):
            return "timed out"
        current = current.__cause__ or current.__context__
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return redact_text(text)[:300]
