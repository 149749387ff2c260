"""A loopback Atlas CMMS that follows the wire contract in shared/apis.md section 1.

What it reproduces, because the client depends on it:
- sign-in in both shapes (≤ v1.8 `{accessToken}`; HEAD `{accessToken, refreshToken,
  tokenType, expiresAt}`), 403 "Invalid credentials"; `/auth/refresh` with rotating
  refresh tokens (a reused one → 401);
- bearer auth on everything else: no token → 403 with an empty body, a token it did not
  sign (or signed before `rotate_secret`) → 500 "Expired or invalid JWT token";
- work orders with `customId` "WO000001"..., 400 when `title` is missing, 500 for an
  unknown enum value or unreadable JSON (Spring's catch-all), PATCH that replaces
  (omitted fields go back to their defaults), change-status (406 without a status);
- SearchCriteria with the Spring Page shape, `cn` case-insensitive, 400 "Invalid search field";
- faults injected per test (`inject`): an answer (429, 500...), a delay, or a dropped
  connection before or after the work is committed;
- a request log, so that a test can assert what was (or was not) sent.

Run it for a demo: `python -m tests.fakes.atlas_server --port 8081` (seeds a user, an
asset, a location; the credentials are logged at start).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from tests.fakes.loopback import LoopbackServer
from tests.fakes.threaded import ThreadedFake

log = structlog.get_logger(__name__)

PRIORITIES = ("NONE", "LOW", "MEDIUM", "HIGH")
STATUSES = ("OPEN", "IN_PROGRESS", "ON_HOLD", "COMPLETE")
RATE_LIMITED = {"error": "Rate limit exceeded", "message": "Too many requests. Please try again later."}
_SEARCHABLE = {
    "work-orders": {
        "id",
        "title",
        "description",
        "priority",
        "status",
        "archived",
        "customId",
        "dueDate",
        "asset",
        "location",
        "assignedTo",
        "createdAt",
    },
    "assets": {"id", "name", "status", "location", "customId", "barCode"},
    "locations": {"id", "name", "address", "customId"},
    "users": {"id", "email", "firstName", "lastName", "enabled"},
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def java_date(moment: datetime) -> str:
    """`java.util.Date` as Spring Boot's Jackson writes it: 2026-01-02T03:04:05.000+00:00."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+00:00"


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class SpringError(Exception):
    def __init__(self, status: int, message: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _deser_error(type_name: str, value: Any, accepted: tuple[str, ...]) -> SpringError:
    return SpringError(
        500,
        f"JSON parse error: Cannot deserialize value of type `com.grash.model.enums.{type_name}` from "
        f"String {json.dumps(value)}: not one of the values accepted for Enum class: [{', '.join(accepted)}]",
    )


class AtlasFake(LoopbackServer):
    """State and behaviour of the fake; `app` is the aiohttp application serving it."""

    def __init__(
        self,
        *,
        email: str = "admin@example.com",
        password: str = "s3cret-pass",
        signin_shape: str = "legacy",
        token_seconds: float = 14 * 24 * 3600,
        bad_token_status: int = 500,
    ) -> None:
        if signin_shape not in ("legacy", "refresh"):
            raise ValueError("signin_shape is 'legacy' (≤ v1.8) or 'refresh' (HEAD)")
        self.signin_shape = signin_shape
        self.token_seconds = token_seconds
        self.bad_token_status = bad_token_status
        self.users: dict[int, dict[str, Any]] = {}
        self.passwords: dict[str, str] = {}
        self.assets: dict[int, dict[str, Any]] = {}
        self.locations: dict[int, dict[str, Any]] = {}
        self.work_orders: dict[int, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, tuple[int, float]] = {}
        self.signins = 0
        self.refreshes = 0
        self._secret = secrets.token_bytes(32)
        self._next_id = 1
        self._next_wo = 1
        self.admin = self.add_user(email, password=password, first_name="Ada", last_name="Admin")
        super().__init__()

    # --- seeding and control -------------------------------------------------------------

    def _id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def add_user(
        self, email: str, *, password: str = "x", first_name: str = "Test", last_name: str = "User"
    ) -> dict[str, Any]:
        user = {
            "id": self._id(),
            "email": email,
            "firstName": first_name,
            "lastName": last_name,
            "phone": None,
            "image": None,
            "enabled": True,
            "companyId": 1,
            "role": {"id": 1, "name": "Administrator", "roleType": "ROLE_CLIENT"},
        }
        self.users[user["id"]] = user
        self.passwords[email.lower()] = password
        return user

    def add_location(self, name: str, *, address: str | None = None) -> dict[str, Any]:
        ident = self._id()
        location = {
            "id": ident,
            "name": name,
            "address": address,
            "customId": f"L{ident:06d}",
            "parentId": None,
        }
        self.locations[ident] = location
        return location

    def add_asset(self, name: str, *, location_id: int | None = None) -> dict[str, Any]:
        ident = self._id()
        asset = {
            "id": ident,
            "name": name,
            "customId": f"A{ident:06d}",
            "status": "OPERATIONAL",
            "parentId": None,
            "locationId": location_id,
        }
        self.assets[ident] = asset
        return asset

    def rotate_secret(self) -> None:
        """Like an Atlas restart with a new JWT secret: every issued token is now refused."""
        self._secret = secrets.token_bytes(32)

    def work_orders_with(self, text: str) -> list[dict[str, Any]]:
        return [wo for wo in self.work_orders.values() if text in (wo.get("description") or "")]

    # --- server --------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/auth/signin", self._signin)
        r.add_post("/auth/refresh", self._refresh)
        r.add_get("/auth/me", self._me)
        r.add_post("/work-orders", self._create_work_order)
        r.add_post("/work-orders/search", self._search_handler("work-orders"))
        r.add_get("/work-orders/{id}", self._get_work_order)
        r.add_patch("/work-orders/{id}", self._patch_work_order)
        r.add_patch("/work-orders/{id}/change-status", self._change_status)
        r.add_delete("/work-orders/{id}", self._delete_work_order)
        r.add_post("/assets/search", self._search_handler("assets"))
        r.add_post("/locations/search", self._search_handler("locations"))
        r.add_post("/users/search", self._search_handler("users"))

    def fault_body(self, status: int) -> Any:
        if status == 429:
            return RATE_LIMITED
        return {"success": False, "message": "Internal Server Error" if status >= 500 else "Error"}

    async def on_error(self, request: web.Request, error: Exception) -> web.StreamResponse | None:
        if not isinstance(error, SpringError):
            return None
        if error.message is None:
            return web.Response(status=error.status)
        return web.json_response({"success": False, "message": error.message}, status=error.status)

    # --- auth ----------------------------------------------------------------------------

    def _issue(self, user_id: int) -> dict[str, Any]:
        now = time.time()
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": self.users[user_id]["email"], "uid": user_id, "iat": int(now)}
        claims["exp"] = int(now + self.token_seconds)
        claims["jti"] = secrets.token_hex(4)
        payload = _b64url(json.dumps(claims).encode())
        signature = _b64url(hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{signature}"
        if self.signin_shape == "legacy":
            return {"accessToken": token}
        refresh = secrets.token_urlsafe(24)
        self.refresh_tokens[refresh] = (user_id, now + 7 * 24 * 3600)
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        return {
            "accessToken": token,
            "refreshToken": refresh,
            "tokenType": "Bearer",
            "expiresAt": java_date(expires),
        }

    def _user_of(self, request: web.Request) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise SpringError(403, None)
        token = header[len("Bearer ") :]
        parts = token.split(".")
        refused = SpringError(self.bad_token_status, "Expired or invalid JWT token")
        if len(parts) != 3:
            raise refused
        expected = _b64url(hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            raise refused
        claims = json.loads(_b64url_decode(parts[1]))
        if claims.get("exp", 0) < time.time() or claims.get("uid") not in self.users:
            raise refused
        return self.users[claims["uid"]]

    async def _signin(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        email = str(body.get("email") or "").lower()
        if email not in self.passwords or not hmac.compare_digest(
            self.passwords[email], str(body.get("password") or "")
        ):
            raise SpringError(403, "Invalid credentials")
        user = next(u for u in self.users.values() if u["email"].lower() == email)
        self.signins += 1
        return web.json_response(self._issue(user["id"]))

    async def _refresh(self, request: web.Request) -> web.Response:
        if self.signin_shape == "legacy":
            raise SpringError(404, "Not Found")
        body = await _json_object(request)
        token = str(body.get("refreshToken") or "")
        entry = self.refresh_tokens.pop(token, None)  # rotates: a reused token is gone
        if entry is None or entry[1] < time.time():
            raise SpringError(401, "Invalid refresh token")
        self.refreshes += 1
        return web.json_response(self._issue(entry[0]))

    async def _me(self, request: web.Request) -> web.Response:
        return web.json_response(self._user_of(request))

    # --- work orders ---------------------------------------------------------------------

    def _mini_user(self, user_id: int) -> dict[str, Any]:
        user = self.users[user_id]
        return {k: user[k] for k in ("id", "firstName", "lastName", "image", "phone")}

    def _ref(self, table: dict[int, dict[str, Any]], value: Any, label: str) -> int | None:
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("id"), int):
            raise SpringError(500, f"JSON parse error: cannot read {label} (expected an object with an id)")
        if value["id"] not in table:
            raise SpringError(404, f"{label} not found")
        return int(value["id"])

    def _refs(self, table: dict[int, dict[str, Any]], value: Any, label: str) -> list[int]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise SpringError(500, f"JSON parse error: cannot read {label} (expected an array)")
        return [ref for ref in (self._ref(table, item, label) for item in value) if ref is not None]

    @staticmethod
    def _date(value: Any, label: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise SpringError(
                500, f"JSON parse error: Cannot deserialize value of type `java.util.Date` ({label})"
            )
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as error:
            raise SpringError(
                500,
                f"JSON parse error: Cannot deserialize value of type `java.util.Date` from String {value!r}",
            ) from error
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return java_date(parsed)

    def _fields(self, body: dict[str, Any]) -> dict[str, Any]:
        """What a POST or PATCH body sets, with the DTO's defaults for what it omits."""
        priority = body.get("priority", "NONE")
        if priority is None:
            priority = "NONE"
        if priority not in PRIORITIES:
            raise _deser_error("Priority", priority, PRIORITIES)
        duration = body.get("estimatedDuration", 0)
        if not isinstance(duration, int | float) or isinstance(duration, bool) or duration < 0:
            raise SpringError(400, "estimatedDuration: must be greater than or equal to 0")
        return {
            "title": body.get("title"),
            "description": body.get("description"),
            "priority": priority,
            "dueDate": self._date(body.get("dueDate"), "dueDate"),
            "estimatedStartDate": self._date(body.get("estimatedStartDate"), "estimatedStartDate"),
            "estimatedDuration": float(duration),
            "requiredSignature": bool(body.get("requiredSignature", False)),
            "asset": self._ref(self.assets, body.get("asset"), "Asset"),
            "location": self._ref(self.locations, body.get("location"), "Location"),
            "primaryUser": self._ref(self.users, body.get("primaryUser"), "User"),
            "assignedTo": self._refs(self.users, body.get("assignedTo"), "User"),
            "team": None,
            "category": None,
            "image": None,
            "customers": [],
            "files": [],
        }

    def _show(self, wo: dict[str, Any]) -> dict[str, Any]:
        shown = dict(wo)
        asset = self.assets.get(wo["asset"]) if wo["asset"] else None
        shown["asset"] = (
            {k: asset[k] for k in ("id", "name", "customId", "parentId", "locationId")} if asset else None
        )
        location = self.locations.get(wo["location"]) if wo["location"] else None
        shown["location"] = dict(location) if location else None
        shown["primaryUser"] = self._mini_user(wo["primaryUser"]) if wo["primaryUser"] else None
        shown["assignedTo"] = [self._mini_user(uid) for uid in wo["assignedTo"]]
        shown["completedBy"] = self._mini_user(wo["completedBy"]) if wo["completedBy"] else None
        return shown

    def _find(self, request: web.Request) -> dict[str, Any]:
        raw = request.match_info["id"]
        if not raw.isdigit():
            raise SpringError(
                500, f'Failed to convert value of type "java.lang.String" to "java.lang.Long": {raw}'
            )
        wo = self.work_orders.get(int(raw))
        if wo is None:
            raise SpringError(404, "Work Order not found")
        return wo

    async def _create_work_order(self, request: web.Request) -> web.Response:
        user = self._user_of(request)
        body = await _json_object(request)
        if body.get("title") is None:
            raise SpringError(400, "title: must not be null")
        status = body.get("status", "OPEN") or "OPEN"
        if status not in STATUSES:
            raise _deser_error("Status", status, STATUSES)
        values = self._fields(body)
        now = datetime.now(UTC)
        ident = self._id()
        number = self._next_wo
        self._next_wo += 1
        wo = {
            "id": ident,
            "customId": f"WO{number:06d}",
            **values,
            "status": status,
            "archived": False,
            "completedBy": None,
            "completedOn": None,
            "feedback": None,
            "signature": None,
            "parentRequest": None,
            "parentPreventiveMaintenance": None,
            "audioDescription": None,
            "createdBy": user["id"],
            "createdAt": instant(now),
            "updatedAt": instant(now),
        }
        self.work_orders[ident] = wo
        return web.json_response(self._show(wo))

    async def _get_work_order(self, request: web.Request) -> web.Response:
        self._user_of(request)
        return web.json_response(self._show(self._find(request)))

    async def _patch_work_order(self, request: web.Request) -> web.Response:
        self._user_of(request)
        wo = self._find(request)
        body = await _json_object(request)
        values = self._fields(body)  # PATCH replaces: what the body omits is reset
        values["completedBy"] = self._ref(self.users, body.get("completedBy"), "User")
        values["completedOn"] = self._date(body.get("completedOn"), "completedOn")
        values["archived"] = bool(body.get("archived", False))
        wo.update(values)
        wo["updatedAt"] = instant(datetime.now(UTC))
        return web.json_response(self._show(wo))

    async def _change_status(self, request: web.Request) -> web.Response:
        user = self._user_of(request)
        wo = self._find(request)
        body = await _json_object(request)
        status = body.get("status")
        if status is None:
            raise SpringError(406, "Status can't be null")
        if status not in STATUSES:
            raise _deser_error("Status", status, STATUSES)
        wo["status"] = status
        if "feedback" in body:
            wo["feedback"] = body["feedback"]
        if status == "COMPLETE":
            wo["completedBy"] = user["id"]
            wo["completedOn"] = java_date(datetime.now(UTC))
        wo["updatedAt"] = instant(datetime.now(UTC))
        return web.json_response(self._show(wo))

    async def _delete_work_order(self, request: web.Request) -> web.Response:
        self._user_of(request)
        wo = self._find(request)
        del self.work_orders[wo["id"]]
        return web.json_response({"success": True, "message": "Deleted successfully"})

    # --- search --------------------------------------------------------------------------

    def _search_handler(self, entity: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            self._user_of(request)
            criteria = await _json_object(request)
            if entity == "work-orders":
                rows = [self._show(wo) for wo in self.work_orders.values()]
            elif entity == "assets":
                rows = [dict(a) for a in self.assets.values()]
            elif entity == "locations":
                rows = [dict(loc) for loc in self.locations.values()]
            else:
                rows = [dict(u) for u in self.users.values()]
                if request.query.get("enabledOnly") == "true":
                    rows = [u for u in rows if u["enabled"]]
            for item in criteria.get("filterFields") or []:
                rows = [row for row in rows if _matches(entity, row, item)]
            return web.json_response(_page(rows, criteria))

        return handler


def _field_value(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    if isinstance(value, dict) and "id" in value:
        return value["id"]
    if isinstance(value, list):
        return [item["id"] if isinstance(item, dict) else item for item in value]
    return value


def _matches(entity: str, row: dict[str, Any], item: Any) -> bool:
    if not isinstance(item, dict):
        raise SpringError(500, "JSON parse error: filterFields")
    name = str(item.get("field") or "")
    if name.split(".")[0] not in _SEARCHABLE[entity]:
        raise SpringError(400, "Invalid search field")
    operation = item.get("operation")
    value = _field_value(row, name)
    wanted = item.get("value")
    wanted_many = item.get("values") or []
    text = "" if value is None else str(value).lower()
    needle = "" if wanted is None else str(wanted).lower()
    checks: dict[str, Callable[[], bool]] = {
        "cn": lambda: needle in text,
        "nc": lambda: needle not in text,
        "bw": lambda: text.startswith(needle),
        "bn": lambda: not text.startswith(needle),
        "ew": lambda: text.endswith(needle),
        "en": lambda: not text.endswith(needle),
        "eq": lambda: value == wanted,
        "ne": lambda: value != wanted,
        "nu": lambda: value is None,
        "nn": lambda: value is not None,
        "gt": lambda: value is not None and value > wanted,
        "ge": lambda: value is not None and value >= wanted,
        "lt": lambda: value is not None and value < wanted,
        "le": lambda: value is not None and value <= wanted,
        "in": lambda: value in wanted_many,
        "inm": lambda: isinstance(value, list) and any(v in wanted_many for v in value),
    }
    check = checks.get(str(operation))
    if check is None:
        raise SpringError(400, "Invalid search field")
    return check()


def _page(rows: list[dict[str, Any]], criteria: dict[str, Any]) -> dict[str, Any]:
    sort_field = str(criteria.get("sortField") or "id")
    descending = str(criteria.get("direction") or "ASC").upper() == "DESC"

    def key(row: dict[str, Any]) -> tuple[bool, Any]:
        value = row.get(sort_field)
        return (value is None, value if isinstance(value, int | float) else str(value or ""))

    rows = sorted(rows, key=key, reverse=descending)
    size = int(criteria.get("pageSize") or 10)
    number = int(criteria.get("pageNum") or 0)
    chunk = rows[number * size : (number + 1) * size]
    total = len(rows)
    pages = (total + size - 1) // size if size else 0
    sort = {"sorted": True, "unsorted": False, "empty": False}
    return {
        "content": chunk,
        "totalElements": total,
        "totalPages": pages,
        "number": number,
        "size": size,
        "numberOfElements": len(chunk),
        "first": number == 0,
        "last": number >= pages - 1,
        "empty": not chunk,
        "sort": sort,
        "pageable": {
            "pageNumber": number,
            "pageSize": size,
            "offset": number * size,
            "paged": True,
            "unpaged": False,
            "sort": sort,
        },
    }


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError as error:
        raise SpringError(500, f"JSON parse error: {error}") from error
    if not isinstance(body, dict):
        raise SpringError(500, "JSON parse error: expected an object")
    return body


async def _serve(args: argparse.Namespace) -> None:
    fake = AtlasFake(email=args.email, password=args.password, signin_shape=args.signin_shape)
    line = fake.add_location("Line 2")
    fake.add_asset("Pump 3", location_id=line["id"])
    fake.add_user("tech@example.com", first_name="Tom", last_name="Tech")

    def announce(url: str) -> None:
        log.info("atlas fake listening", url=url, email=args.email, password=args.password)

    await fake.serve_until_signalled(args.host, args.port, announce)
    log.info("atlas fake stopped", work_orders=len(fake.work_orders))


@contextlib.contextmanager
def threaded_atlas_with_pump(email: str, password: str) -> Iterator[ThreadedFake[AtlasFake]]:
    """An Atlas fake on its own thread, holding the asset the end-to-end notes name (Pump 3 on Line 2)."""
    fake = AtlasFake(email=email, password=password)
    line = fake.add_location("Line 2")
    fake.add_asset("Pump 3", location_id=line["id"])
    threaded = ThreadedFake(fake)
    threaded.start()
    yield threaded
    threaded.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="A loopback Atlas CMMS for demos and manual tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--email", default="admin@example.com")
    parser.add_argument("--password", default="s3cret-pass")
    parser.add_argument("--signin-shape", choices=("legacy", "refresh"), default="refresh")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
