"""Slack messages become actions: a message or an `app_mention` from an allowed user, in the main
channel or a DM to the bot, or a `/ai-employee` slash command.

Exactly once: Slack retries events it did not see acknowledged, and a message that mentions the
bot comes both as `message` and as `app_mention`. Each event id is remembered, each message's
"channel:ts" is its `source_ref` (the intake is idempotent per source_ref) and is remembered with
its action before anything is fetched again. Files shared with the message are fetched with the
bot token, only from Slack's own hosts, and handed to the intake as attachments.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from slack_sdk.web.async_client import AsyncWebClient

from ai_employee.model.ids import safe_file_name
from ai_employee.model.messages import IncomingAttachment, IncomingMessage, IntakeSink
from ai_employee.supervision.state import SupervisionState

log = structlog.get_logger(__name__)

ACCEPTED_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})
_MENTION = re.compile(r"<@[A-Z0-9]+>")
_SLACK_FILE_HOSTS = ("slack.com", "slack-edge.com", "slack-files.com")
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Access:
    """Who may ask and decide (Slack user ids), and where messages are heard."""

    allowed_users: frozenset[str]
    api_host: str  # the Web API's host: files are fetched from it, or from Slack's own hosts

    def may(self, user: str | None) -> bool:
        return bool(user) and user in self.allowed_users

    def trusted_file_url(self, url: str) -> bool:
        """The bot token goes only to Slack's hosts (or the configured API host)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("https", "http") or not host:
            return False
        if host == self.api_host:
            return True
        return parts.scheme == "https" and any(
            host == name or host.endswith("." + name) for name in _SLACK_FILE_HOSTS
        )


class MessageIntake:
    def __init__(
        self,
        *,
        intake: IntakeSink,
        state: SupervisionState,
        access: Access,
        bot_token: str,
        client: Callable[[], AsyncWebClient | None],
        main_channel: str,
        temp_dir: Path,
        max_file_bytes: int,
        read_timeout: float,
    ) -> None:
        self._intake = intake
        self._state = state
        self._access = access
        self._token = bot_token
        self._client = client
        self._main_channel = main_channel
        self._temp_dir = temp_dir
        self._max_file_bytes = max_file_bytes
        self._read_timeout = read_timeout
        self._lock = asyncio.Lock()  # one message at a time: a mention's two events meet here
        self._recent_events: deque[str] = deque(maxlen=2048)
        self._refused: set[str] = set()
        self.created = 0

    def hears(self, event: Mapping[str, Any]) -> bool:
        """A message for us: not from a bot, not an edit, in the main channel, a DM, or a mention."""
        kind = event.get("type")
        if kind not in ("message", "app_mention"):
            return False
        if event.get("bot_id") or str(event.get("subtype") or "") not in ACCEPTED_SUBTYPES:
            return False
        if not event.get("user") or not event.get("ts") or not event.get("channel"):
            return False
        if kind == "app_mention":
            return True
        if event.get("thread_ts") and event.get("thread_ts") != event.get("ts"):
            return False  # a reply in a thread is talk about an item, not a new one
        channel = str(event["channel"])
        return event.get("channel_type") == "im" or channel in self._main_channels()

    def _main_channels(self) -> set[str]:
        known = {self._main_channel}
        learned = self._state.channel_id(self._main_channel)
        if learned:
            known.add(learned)
        return known

    async def on_event(self, body: Mapping[str, Any]) -> str | None:
        """An `event_callback`: the action it became (or had become), None if it is not for us.
        Raises when the action could not be stored: Slack then delivers the event again."""
        event_id = str(body.get("event_id") or "")
        event = body.get("event")
        if not isinstance(event, Mapping):
            return None
        if event_id and (event_id in self._recent_events or self._state.seen_event(event_id)):
            log.info("slack.duplicate_event", event_id=event_id)
            return None
        action_id = None
        if self.hears(event):
            user = str(event["user"])
            if not self._access.may(user):
                self._note_refused(user, "message")
            else:
                action_id = await self.submit(event)
        if event_id:
            self._recent_events.append(event_id)
            self._state.remember_event(event_id)
        return action_id

    async def on_command(self, form: Mapping[str, Any]) -> str | None:
        """A slash command's text becomes an action; None when the user may not ask."""
        user = str(form.get("user_id") or "")
        if not self._access.may(user):
            self._note_refused(user, "command")
            return None
        channel = str(form.get("channel_id") or "")
        trigger = str(form.get("trigger_id") or "")
        text = str(form.get("text") or "").strip()
        event = {
            "user": user,
            "text": text,
            "channel": channel,
            "ts": f"{datetime.now(UTC).timestamp():.6f}",
            "source_ref": f"{channel}:cmd-{trigger}",
            "sender": str(form.get("user_name") or user),
        }
        return await self.submit(event)

    async def submit(self, event: Mapping[str, Any]) -> str:
        source_ref = str(event.get("source_ref") or f"{event['channel']}:{event['ts']}")
        async with self._lock:
            known = self._state.action_for_ref(source_ref)
            if known is not None:
                log.info("slack.duplicate_message", source_ref=source_ref, action_id=known)
                return known
            message, temp_files = await self._prepare(event, source_ref)
            try:
                action_id = await self._intake.submit(message)
            finally:
                for path in temp_files:
                    with contextlib.suppress(OSError):
                        path.unlink()
            self._state.remember_ref(source_ref, action_id)
        self.created += 1
        log.info("slack.action_created", action_id=action_id, source_ref=source_ref, files=len(temp_files))
        return action_id

    async def _prepare(self, event: Mapping[str, Any], source_ref: str) -> tuple[IncomingMessage, list[Path]]:
        text = _MENTION.sub("", str(event.get("text") or "")).strip()
        user = str(event.get("user") or "")
        try:
            received = datetime.fromtimestamp(float(str(event.get("ts"))), UTC)
        except ValueError:
            received = datetime.now(UTC)
        message = IncomingMessage(
            source="slack",
            source_ref=source_ref,
            title=_title(text),
            body=text,
            received=received,
            sender=str(event.get("sender") or user),
        )
        temp_files: list[Path] = []
        errors: list[str] = []
        files = event.get("files")
        if isinstance(files, list):
            for index, item in enumerate(files):
                if not isinstance(item, Mapping):
                    continue
                if item.get("file_access") == "check_file_info" or not item.get("url_private_download"):
                    item = await self._file_info(item)
                fetched = await self._fetch_file(item, source_ref, index, errors)
                if fetched is not None:
                    temp_files.append(fetched)
                    message.attachments.append(
                        IncomingAttachment(
                            filename=str(item.get("name") or fetched.name),
                            path=fetched,
                            content_type=str(item.get("mimetype") or "") or None,
                        )
                    )
        if errors:
            message.properties["attachment_error"] = "; ".join(errors)[:500]
        if not message.body:
            names = ", ".join(str(item.get("name")) for item in files or [] if isinstance(item, Mapping))
            message.body = (
                f"Files shared in Slack without a message: {names}." if names else "(empty message)"
            )
            message.title = _title(names) if names else "Slack message"
        return message, temp_files

    async def _fetch_file(
        self, item: Mapping[str, Any], source_ref: str, index: int, errors: list[str]
    ) -> Path | None:
        """Download one shared file to the vault's private temp folder. A refusal (too big, not on
        Slack's hosts) is written on the action; a lost connection raises (the event comes again)."""
        name = str(item.get("name") or f"file-{index}")
        url = str(item.get("url_private_download") or item.get("url_private") or "")
        size = item.get("size")
        if isinstance(size, int) and size > self._max_file_bytes:
            errors.append(f"{name}: {size} bytes is more than the {self._max_file_bytes} allowed")
            return None
        if not url or not self._access.trusted_file_url(url):
            errors.append(f"{name}: no download link on Slack's own hosts")
            return None
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        target = (
            self._temp_dir / f"{safe_file_name(source_ref.replace(':', '_'))}-{index}-{safe_file_name(name)}"
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._read_timeout, sock_read=self._read_timeout
        )
        headers = {"Authorization": f"Bearer {self._token}"}
        written = 0
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers=headers, allow_redirects=False) as response,
        ):
            if response.status != 200:
                if response.status >= 500 or response.status == 429:
                    raise aiohttp.ClientResponseError(
                        response.request_info, (), status=response.status, message=f"file download of {name}"
                    )
                errors.append(f"{name}: Slack answered HTTP {response.status}")
                return None
            with target.open("wb") as handle:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    written += len(chunk)
                    if written > self._max_file_bytes:
                        handle.close()
                        target.unlink(missing_ok=True)
                        errors.append(f"{name}: more than the {self._max_file_bytes} bytes allowed")
                        return None
                    handle.write(chunk)
        return target

    async def _file_info(self, item: Mapping[str, Any]) -> Mapping[str, Any]:
        """A file the event names without its links (large or shared ones): ask files.info."""
        client = self._client()
        if client is None or not item.get("id"):
            return item
        answer = await client.files_info(file=str(item["id"]))
        found = answer.get("file")
        return found if isinstance(found, Mapping) else item

    def _note_refused(self, user: str, what: str) -> None:
        log.warning(
            "slack.not_allowed", user=user, what=what, hint="add the user id to SLACK_ALLOWED_USER_IDS"
        )
        self._refused.add(user)


def _title(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return (first[:117] + "…") if len(first) > 120 else (first or "Slack message")
