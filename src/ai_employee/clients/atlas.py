"""Atlas CMMS (Grashjs/cmms) over its REST API: sign-in, work orders, and name lookups.

Wire facts are in shared/apis.md section 1. What shapes this client:
- The JWT is cached until shortly before it expires. Atlas ≤ v1.8 answers sign-in with
  `{accessToken}` only (a 14-day JWT); newer builds add `refreshToken` and `expiresAt`
  (a 30-minute JWT). Without `expiresAt` the JWT's own `exp` claim is read (unverified:
  it only decides when to sign in again, never whether to trust anything).
- A refused token (401/403, or the 500 "Expired or invalid JWT token") makes the client
  sign in again once and repeat the request: tokens die early when Atlas restarts with a
  new signing secret.
- PATCH replaces: every omitted field is reset (priority to NONE, relations to null), so
  `update_work_order` reads the work order first and sends it back whole.
- Atlas has no idempotency key: `create_work_order(marker=...)` searches for its own marker
  before sending again, so a create whose answer was lost is not repeated.
- Every request has deadlines (connect, then each read): an Atlas that accepts and never
  answers costs a bounded wait. With a `link`, each exchange says whether Atlas was reached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from ai_employee.clients.link import OutsideLink
from ai_employee.clients.retry import (
    RetryPolicy,
    ServiceAuthError,
    ServiceError,
    ServiceRejected,
    TransientStatus,
    is_transient,
    is_unsent,
    parse_retry_after,
    timeouts,
)
from ai_employee.observability.timing import timed_operation

log = structlog.get_logger(__name__)

WORK_ORDER_STATUSES = ("OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETE")
PRIORITIES = ("NONE", "LOW", "MEDIUM", "HIGH")

# Every field of WorkOrderPatchDTO: a PATCH without one of them resets it.
_PATCH_SCALARS = (
    "title",
    "description",
    "priority",
    "dueDate",
    "estimatedStartDate",
    "estimatedDuration",
    "requiredSignature",
    "completedOn",
    "archived",
)
_PATCH_REFS = ("image", "category", "location", "team", "primaryUser", "asset", "completedBy")
_PATCH_LISTS = ("assignedTo", "customers", "files")

_JWT_REFUSED = "expired or invalid jwt token"
# 500s that are Spring's answer to a body it could not read: the caller's fault, not worth retrying.
_CLIENT_FAULT_500 = (
    "json parse error",
    "cannot deserialize",
    "not one of the values accepted",
    "failed to convert",
    "numberformatexception",
    "http message not readable",
)
_DEFAULT_TOKEN_SECONDS = 10 * 60  # when neither expiresAt nor a readable exp says otherwise
_CONFLICT_RETRIES = 3


class AtlasLookupError(ServiceRejected):
    """A name or email given in the params matches no record, or more than one."""


@dataclass
class _Token:
    access: str
    renew_at: float  # unix seconds: a little before it expires
    refresh: str | None = None


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying the signature (we are its bearer, not its judge)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def parse_atlas_time(value: Any) -> float | None:
    """Atlas dates: ISO-8601 (`…000+00:00` or `…Z`), or epoch millis/seconds from odd builds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        if text.endswith("+0000"):
            text = text[:-5] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


def filter_field(
    field: str,
    operation: str,
    value: Any = None,
    *,
    values: Sequence[Any] = (),
    enum_name: str | None = None,
    join_type: str | None = None,
) -> dict[str, Any]:
    """One entry of SearchCriteria.filterFields."""
    entry: dict[str, Any] = {"field": field, "operation": operation, "value": value, "values": list(values)}
    if enum_name is not None:
        entry["enumName"] = enum_name
    if join_type is not None:
        entry["joinType"] = join_type
    return entry


def search_criteria(
    filters: Sequence[Mapping[str, Any]],
    *,
    page_num: int = 0,
    page_size: int = 10,
    sort_field: str = "id",
    direction: str = "DESC",
) -> dict[str, Any]:
    return {
        "filterFields": [dict(item) for item in filters],
        "pageNum": page_num,
        "pageSize": page_size,
        "sortField": sort_field,
        "direction": direction,
    }


def marker_search(marker: str) -> dict[str, Any]:
    """The search that finds work orders whose description carries `marker`."""
    return search_criteria([filter_field("description", "cn", marker)], page_size=20)


def carries_marker(work_order: Mapping[str, Any], marker: str) -> bool:
    """`cn` is a case-insensitive substring match: confirm the marker is a whole line of its own."""
    description = work_order.get("description")
    if not isinstance(description, str):
        return False
    return any(line.strip() == marker for line in description.splitlines())


def patch_body_from(work_order: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH body that leaves `work_order` as it is: every field, relations as `{"id": N}`."""
    body: dict[str, Any] = {}
    for key in _PATCH_SCALARS:
        if key in work_order:
            body[key] = work_order[key]
    for key in _PATCH_REFS:
        ref = work_order.get(key)
        body[key] = {"id": ref["id"]} if isinstance(ref, Mapping) and "id" in ref else None
    for key in _PATCH_LISTS:
        items = work_order.get(key) or []
        body[key] = [{"id": item["id"]} for item in items if isinstance(item, Mapping) and "id" in item]
    if "customFields" in work_order:
        body["customFields"] = work_order["customFields"]
    return body


def _error_message(response: httpx.Response) -> str:
    text = response.text.strip()
    if text:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping):
            for key in ("message", "error", "detail"):
                value = body.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()[:500]
        return text[:500]
    return response.reason_phrase or f"HTTP {response.status_code}"


class AtlasClient:
    """A thin, typed, retried Atlas client. One per executor; reuse it, close it with `aclose`."""

    def __init__(
        self,
        base_url: str,
        email: str,
        password: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout_seconds: float = 30.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        expiry_margin_seconds: float = 60.0,
        link: OutsideLink | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._email = email
        self._password = password
        self._own_http = http is None
        self._timeouts = timeouts(connect=connect_timeout, read=timeout_seconds)
        self._http = http if http is not None else httpx.AsyncClient(timeout=self._timeouts)
        self._link = link
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._margin = expiry_margin_seconds
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.signins = 0  # observable for health and tests: how often we had to sign in

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _exchange(self, method: str, path: str, **options: Any) -> httpx.Response:
        """One HTTP exchange; the link learns whether Atlas was reached."""
        try:
            response = await self._http.request(method, self.url(path), **options)
        except httpx.TransportError as error:
            if self._link is not None:
                self._link.failed(error, timeout=self._http.timeout, retry=False)
            raise
        if self._link is not None:
            self._link.answered(response.status_code)
        return response

    # --- authentication ------------------------------------------------------------------

    async def _access_token(self) -> str:
        async with self._lock:
            token = self._token
            now = self._clock()
            if token is not None and now < token.renew_at:
                return token.access
            fresh: _Token | None = None
            if token is not None and token.refresh:
                fresh = await self._refresh(token.refresh)
            if fresh is None:
                fresh = await self._signin()
            self._token = fresh
            return fresh.access

    async def _forget(self, access: str) -> None:
        async with self._lock:
            if self._token is not None and self._token.access == access:
                self._token = None

    def _token_from(self, body: Any) -> _Token:
        if not isinstance(body, Mapping) or not isinstance(body.get("accessToken"), str):
            raise ServiceError("Atlas sign-in answered without an accessToken")
        access = body["accessToken"]
        now = self._clock()
        expires_at = parse_atlas_time(body.get("expiresAt")) or jwt_expiry(access)
        if expires_at is None:
            expires_at = now + _DEFAULT_TOKEN_SECONDS
        refresh = body.get("refreshToken")
        # Renew a little early, but a short-lived token must not look stale the moment it arrives.
        margin = min(self._margin, max(0.0, expires_at - now) / 4)
        return _Token(access, expires_at - margin, refresh if isinstance(refresh, str) and refresh else None)

    async def _signin(self) -> _Token:
        response = await self._exchange(
            "POST", "/auth/signin", json={"email": self._email, "password": self._password}
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientStatus(
                f"Atlas sign-in answered {response.status_code}: {_error_message(response)}",
                status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if response.status_code != 200:
            raise ServiceAuthError(
                f"Atlas sign-in failed ({response.status_code}): {_error_message(response)}"
                " - check ATLAS_EMAIL and ATLAS_PASSWORD",
                status=response.status_code,
            )
        self.signins += 1
        log.info("atlas signed in", base_url=self.base_url)
        return self._token_from(response.json())

    async def _refresh(self, refresh_token: str) -> _Token | None:
        """Trade the refresh token for a new pair; None (sign in instead) if Atlas refuses it."""
        try:
            response = await self._exchange("POST", "/auth/refresh", json={"refreshToken": refresh_token})
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            log.info("atlas refresh refused; signing in", status=response.status_code)
            return None
        try:
            return self._token_from(response.json())
        except (ValueError, ServiceError):
            return None

    # --- requests ------------------------------------------------------------------------

    @staticmethod
    def _is_auth_refusal(response: httpx.Response) -> bool:
        if response.status_code in (401, 403):
            return True
        return response.status_code == 500 and _JWT_REFUSED in response.text.lower()

    async def _send(
        self, method: str, path: str, token: str, json_body: Any, params: Mapping[str, Any] | None
    ) -> httpx.Response:
        return await self._exchange(
            method,
            path,
            json=json_body,
            params=dict(params) if params else None,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def _once(
        self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """One attempt: with a refused token, sign in again once and repeat."""
        token = await self._access_token()
        response = await self._send(method, path, token, json_body, params)
        if self._is_auth_refusal(response):
            log.info("atlas refused the token; signing in again", status=response.status_code, path=path)
            await self._forget(token)
            token = await self._access_token()
            response = await self._send(method, path, token, json_body, params)
        return self._decode(method, path, response)

    @staticmethod
    def _decode(method: str, path: str, response: httpx.Response) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError as error:
                raise ServiceError(f"Atlas answered {method} {path} with a body that is not JSON") from error
        message = _error_message(response)
        if status >= 500 and any(fault in message.lower() for fault in _CLIENT_FAULT_500):
            raise ServiceRejected(f"Atlas could not read the request ({status}): {message}", status=status)
        if status == 429 or status >= 500:
            raise TransientStatus(
                f"Atlas answered {status}: {message}",
                status=status,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status in (401, 403):
            raise ServiceAuthError(f"Atlas refused {method} {path} ({status}): {message}", status=status)
        raise ServiceRejected(f"Atlas answered {status}: {message}", status=status)

    @timed_operation("atlas.request")
    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        safe_to_repeat: bool = True,
    ) -> Any:
        """Send with retries; `safe_to_repeat=False` retries only what surely did not arrive."""

        async def attempt() -> Any:
            return await self._once(method, path, json_body=json_body, params=params)

        return await self._retry.call(
            attempt, what=f"Atlas {method} {path}", retry_on=is_transient if safe_to_repeat else is_unsent
        )

    # --- work orders ---------------------------------------------------------------------

    async def get_work_order(self, work_order_id: int) -> dict[str, Any]:
        return _mapping(await self.request("GET", f"/work-orders/{int(work_order_id)}"))

    async def search_work_orders(self, criteria: Mapping[str, Any]) -> dict[str, Any]:
        """A Spring Page: `content`, `totalElements`, `totalPages`, `number`, ..."""
        return _mapping(await self.request("POST", "/work-orders/search", json_body=dict(criteria)))

    async def find_work_order_by_marker(self, marker: str) -> dict[str, Any] | None:
        page = await self.search_work_orders(marker_search(marker))
        return _first_with_marker(page, marker)

    async def create_work_order(
        self, body: Mapping[str, Any], *, marker: str | None = None
    ) -> dict[str, Any]:
        """POST /work-orders. With `marker` (a line of `body["description"]`), a retry first
        looks for a work order carrying it, so a create whose answer was lost happens once."""
        if marker is None:
            return _mapping(
                await self.request("POST", "/work-orders", json_body=dict(body), safe_to_repeat=False)
            )
        if marker not in str(body.get("description") or "").splitlines():
            raise ValueError("the marker must be a line of the work order's description")
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                page = await self._once("POST", "/work-orders/search", json_body=marker_search(marker))
                found = _first_with_marker(_mapping(page), marker)
                if found is not None:
                    log.info("atlas work order found by marker after a failed attempt", id=found.get("id"))
                    return found
            return await self._once("POST", "/work-orders", json_body=dict(body))

        created = await self._retry.call(attempt, what="Atlas POST /work-orders", retry_on=is_transient)
        return _mapping(created)

    async def patch_work_order(self, work_order_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """Raw PATCH: Atlas replaces the work order with `body` (omitted fields are reset)."""
        path = f"/work-orders/{int(work_order_id)}"
        return _mapping(await self.request("PATCH", path, json_body=dict(body)))

    async def update_work_order(self, work_order_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change some fields and keep the rest: read, modify, write the whole work order.

        A 409 (another writer won the optimistic lock) reads again and reapplies the changes.
        """
        if "status" in changes:
            raise ValueError("status is not a PATCH field; use change_status")
        for round_number in range(1, _CONFLICT_RETRIES + 1):
            current = await self.get_work_order(work_order_id)
            body = patch_body_from(current)
            body.update(changes)
            try:
                return await self.patch_work_order(work_order_id, body)
            except ServiceRejected as error:
                if error.status != 409 or round_number == _CONFLICT_RETRIES:
                    raise
                log.info("atlas work order changed under us; reading it again", id=work_order_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def change_status(
        self, work_order_id: int, status: str, *, feedback: str | None = None, signature: str | None = None
    ) -> dict[str, Any]:
        if status not in WORK_ORDER_STATUSES:
            raise ValueError(f"status must be one of {', '.join(WORK_ORDER_STATUSES)}")
        body: dict[str, Any] = {"status": status}
        if feedback is not None:
            body["feedback"] = feedback
        if signature is not None:
            body["signature"] = signature
        return _mapping(
            await self.request("PATCH", f"/work-orders/{int(work_order_id)}/change-status", json_body=body)
        )

    # --- lookups -------------------------------------------------------------------------

    async def _search(self, entity: str, criteria: Mapping[str, Any]) -> list[dict[str, Any]]:
        page = _mapping(await self.request("POST", f"/{entity}/search", json_body=dict(criteria)))
        content = page.get("content")
        return [item for item in content if isinstance(item, dict)] if isinstance(content, list) else []

    async def _resolve(self, entity: str, label: str, field: str, wanted: str) -> int:
        """The id of the one record whose `field` equals `wanted` (case-insensitive), or why not."""
        candidates = await self._search(
            entity, search_criteria([filter_field(field, "cn", wanted)], page_size=50, direction="ASC")
        )
        key = wanted.strip().casefold()
        exact = [item for item in candidates if str(item.get(field, "")).strip().casefold() == key]
        if len(exact) == 1 and isinstance(exact[0].get("id"), int):
            return int(exact[0]["id"])
        if len(exact) > 1:
            ids = ", ".join(str(item.get("id")) for item in exact[:10])
            raise AtlasLookupError(
                f"{len(exact)} Atlas {label}s have {field} {wanted!r} (ids {ids}); make it unique in Atlas"
            )
        near = [str(item.get(field)) for item in candidates[:5]]
        hint = f"; similar: {', '.join(repr(name) for name in near)}" if near else ""
        raise AtlasLookupError(f"no Atlas {label} has {field} {wanted!r}{hint}")

    async def asset_id(self, name: str) -> int:
        return await self._resolve("assets", "asset", "name", name)

    async def location_id(self, name: str) -> int:
        return await self._resolve("locations", "location", "name", name)

    async def user_id(self, email: str) -> int:
        return await self._resolve("users", "user", "email", email)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ServiceError("Atlas answered with an unexpected body (not a JSON object)")
    return value


def _first_with_marker(page: Mapping[str, Any], marker: str) -> dict[str, Any] | None:
    content = page.get("content")
    if not isinstance(content, list):
        return None
    for item in content:
        if isinstance(item, dict) and carries_marker(item, marker):
            return item
    return None
