"""The WhatsApp Business Cloud API (Meta's Graph API), the calls this product makes
(shared/apis.md section 4, docs/whatsapp.md):

- `check()`: `GET {base}/{phone-number-id}`: the token works and the number is ours;
- `send(to, message)`: `POST {base}/{phone-number-id}/messages` (text, reply buttons, a
  template), returning the new message's `wamid`;
- `download_media(media_id, target)`: `GET {base}/{media-id}` for the URL, then the bytes from
  that URL (another host) with the same Bearer token, within a size limit; an expired URL (401
  or 404, it lives 5 minutes) is asked for again.

Every call carries `Authorization: Bearer <token>`; the token is never in a message, a log line
or an exception text. 429, 5xx and Meta's throttling codes (130429, 131056, 4, 80007) are retried
with the one retry policy (exponential backoff with jitter, `Retry-After` honoured); a refusal
(bad parameter, 131047 outside the 24-hour window, a bad token) is raised as `GraphError` with
Meta's code, never retried.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog

from ai_employee.clients.link import OutsideLink
from ai_employee.clients.retry import (
    RetryPolicy,
    ServiceError,
    ServiceRejected,
    TransientStatus,
    is_transient,
    parse_retry_after,
    timeouts,
)

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://graph.facebook.com/v27.0"

#: "Re-engagement message": free-form and interactive messages only within 24 h of the user's last message.
OUTSIDE_WINDOW = 131047
#: Meta's throttling codes: back off and try again.
THROTTLED = frozenset({4, 80007, 130429, 131056})
#: a bad or expired access token
TOKEN_INVALID = 190

_CHUNK = 64 * 1024


class GraphError(ServiceRejected):
    """The Graph API refused a request: `code` is Meta's error code (131047, 100, 190...)."""

    def __init__(
        self, message: str, *, status: int | None, code: int | None, details: str | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.code = code
        self.details = details


class MediaTooLarge(ServiceRejected):
    """A media file above the configured limit: it is not fetched."""


@dataclass(frozen=True)
class Media:
    path: Path
    content_type: str | None
    size: int


def _graph_error(response: httpx.Response, what: str) -> tuple[str, int | None, str | None]:
    """Meta's `{error: {message, code, error_data: {details}}}` in words, with its code."""
    code: int | None = None
    details: str | None = None
    message = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        raw_code = error.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        data = error.get("error_data")
        if isinstance(data, dict) and isinstance(data.get("details"), str):
            details = data["details"]
    text = f"{what}: {message}" + (f" (code {code})" if code is not None else "")
    if details and details not in text:
        text += f": {details}"
    return text[:500], code, details


def _retry_on(error: BaseException) -> bool:
    """429, 5xx, throttling codes and transport failures; never a refusal."""
    return is_transient(error)


class WhatsAppGraph:
    """One phone number's Graph API client. Build it, use it, `await aclose()`."""

    def __init__(
        self,
        *,
        base_url: str,
        access_token: str,
        phone_number_id: str,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        link: OutsideLink | None = None,
        max_media_bytes: int = 25 * 1024 * 1024,
    ) -> None:
        if not access_token:
            raise ValueError("the WhatsApp access token must not be empty")
        self.base_url = base_url.rstrip("/")
        self.phone_number_id = phone_number_id
        self.max_media_bytes = max_media_bytes
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._http = httpx.AsyncClient(timeout=timeouts(connect=connect_timeout, read=read_timeout))
        self._retry = retry or RetryPolicy()
        self._link = link

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the calls ----------------------------------------------------------------------------

    async def check(self) -> Mapping[str, Any]:
        """The phone number's record (`display_phone_number`, `verified_name`): the token works."""
        return await self._json("GET", f"/{self.phone_number_id}", what="WhatsApp phone number look-up")

    async def send(self, to: str, message: Mapping[str, Any]) -> str:
        """Send one message (`{"type": "text", "text": {...}}`, interactive, template) to a wa_id;
        returns its `wamid`."""
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, **message}
        answer = await self._json(
            "POST", f"/{self.phone_number_id}/messages", json_body=body, what="WhatsApp send"
        )
        messages = answer.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            return str(messages[0].get("id") or "")
        return ""

    async def download_media(self, media_id: str, target: Path) -> Media:
        """Fetch a media file into `target` (written, fsynced). The URL is asked for again when it
        expired (401/404 from the media host); above `max_media_bytes` raises MediaTooLarge."""
        for attempt in range(3):
            info = await self._json("GET", f"/{media_id}", what="WhatsApp media look-up")
            url = info.get("url")
            if not isinstance(url, str) or not url:
                raise ServiceRejected("WhatsApp media look-up: the answer has no url")
            size = _int(info.get("file_size"))
            if size is not None and size > self.max_media_bytes:
                raise MediaTooLarge(
                    f"the file is {size} bytes, above the limit of {self.max_media_bytes} bytes"
                )
            content_type = info.get("mime_type") if isinstance(info.get("mime_type"), str) else None
            try:
                written = await self._download(url, target)
            except _Expired:
                log.info("whatsapp.media_url_expired", media_id=media_id, attempt=attempt + 1)
                continue
            return Media(target, content_type, written)
        raise ServiceRejected("WhatsApp media download: the media URL expired again and again")

    # -- plumbing -----------------------------------------------------------------------------

    async def _download(self, url: str, target: Path) -> int:
        async def attempt() -> int:
            return await self._fetch(url, target)

        return await self._retry.call(attempt, what="WhatsApp media download", retry_on=_retry_on)

    async def _fetch(self, url: str, target: Path) -> int:
        """One download of the bytes (the file fsynced; the caller renames it into place);
        `_Expired` when the URL is no longer good."""
        written = 0
        try:
            async with self._http.stream("GET", url, headers=self._headers) as response:
                status = response.status_code
                if status in (401, 403, 404, 410):
                    raise _Expired(f"the media URL answered {status}")
                if status == 429 or status >= 500:
                    raise TransientStatus(
                        f"WhatsApp media download answered {status}",
                        status=status,
                        retry_after=parse_retry_after(response.headers.get("retry-after")),
                    )
                if status >= 300:
                    raise ServiceRejected(f"WhatsApp media download answered {status}", status=status)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        written += len(chunk)
                        if written > self.max_media_bytes:
                            raise MediaTooLarge(
                                f"the file is larger than the limit of {self.max_media_bytes} bytes"
                            )
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
        return written

    async def _json(
        self, method: str, path: str, *, what: str, json_body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            return await self._once(method, path, what=what, json_body=json_body)

        return await self._retry.call(attempt, what=what, retry_on=_retry_on)

    async def _once(
        self, method: str, path: str, *, what: str, json_body: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        try:
            response = await self._http.request(
                method, f"{self.base_url}{path}", json=json_body, headers=self._headers
            )
        except httpx.TransportError as error:
            if self._link is not None:
                self._link.failed(error, timeout=self._http.timeout, retry=False)
            raise
        status = response.status_code
        if self._link is not None:
            self._link.answered(status)
        if 200 <= status < 300:
            try:
                data = response.json()
            except ValueError as error:
                raise ServiceError(f"{what}: the answer is not JSON") from error
            return data if isinstance(data, dict) else {}
        message, code, details = _graph_error(response, what)
        if status == 429 or status >= 500 or code in THROTTLED:
            raise TransientStatus(
                message, status=status, retry_after=parse_retry_after(response.headers.get("retry-after"))
            )
        raise GraphError(message, status=status, code=code, details=details)


class _Expired(ServiceError):
    """The media URL is no longer good: ask for a fresh one."""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
