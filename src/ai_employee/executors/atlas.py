"""atlas.work_order: create a work order in Atlas CMMS, exactly once.

Atlas has no idempotency key, so exactly-once rests on two things:
- the journal: an intent is written before the POST and the work order id after it, so a
  plan that already made its work order returns the recorded result without calling Atlas;
- a marker line in the work order's description (`ai-employee plan: <plan id>`): when the
  journal holds an intent but no id (the daemon died, or the answer was lost), the executor
  searches Atlas for the marker before it creates anything.

Every call has deadlines (`services.connect_timeout` to reach Atlas, `atlas.timeout_seconds` for
each answer), and `link()` says whether Atlas was reached at the last live call, and why not.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field

from ai_employee.clients.atlas import AtlasClient, AtlasLookupError, filter_field, search_criteria
from ai_employee.clients.link import OutsideLink, describe_target
from ai_employee.clients.retry import RetryPolicy, ServiceError, ServiceRejected
from ai_employee.model.executor import (
    ActionParams,
    ExecutionContext,
    ExecutionError,
    Executor,
    ExecutorUnavailable,
)
from ai_employee.model.services import LinkStatus

log = structlog.get_logger(__name__)

JOURNAL_KEY = "atlas.create"
MARKER_PREFIX = "ai-employee plan: "
MASK = "***"
DESCRIPTION_LIMIT = 10_000  # Atlas's documented maximum for a work order's description


class WorkOrderParams(ActionParams):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    priority: Literal["NONE", "LOW", "MEDIUM", "HIGH"] = "MEDIUM"
    due_date: date | None = None
    asset: str | None = Field(None, max_length=200, description="asset name, resolved to its id")
    location: str | None = Field(None, max_length=200, description="location name, resolved to its id")
    assignees: list[str] = Field(default_factory=list, description="user emails, resolved to ids")
    require_links: bool = Field(
        False,
        description=(
            "fail when the asset, location or an assignee is not found in Atlas; by default the work"
            " order is created without that link and the description says which name was not found"
        ),
    )


def marker_for(plan_id: str) -> str:
    return f"{MARKER_PREFIX}{plan_id}"


def due_date_value(day: date) -> str:
    """Noon UTC: the same calendar day in every time zone from UTC-11 to UTC+11, where Atlas shows it."""
    return f"{day.isoformat()}T12:00:00.000Z"


def work_order_body(
    params: WorkOrderParams,
    marker: str,
    *,
    asset: Any = None,
    location: Any = None,
    assignees: list[Any] | None = None,
    unlinked: list[str] | None = None,
) -> dict[str, Any]:
    """The POST /work-orders body; relation ids are passed in (real ids, or placeholders in dry-run).

    The description ends with the names that could not be linked, then the marker line.
    """
    tail = ["\n".join(unlinked)] if unlinked else []
    tail.append(marker)
    room = DESCRIPTION_LIMIT - len("\n\n".join(tail)) - 2
    text = params.description.rstrip()
    if len(text) > room:  # the marker must survive: it is how a lost create is found again
        text = text[: max(0, room - 1)].rstrip() + "…"
    parts = [text, *tail] if text.strip() else tail
    body: dict[str, Any] = {
        "title": params.title,
        "description": "\n\n".join(parts),
        "priority": params.priority,
    }
    if params.due_date is not None:
        body["dueDate"] = due_date_value(params.due_date)
    if asset is not None:
        body["asset"] = {"id": asset}
    if location is not None:
        body["location"] = {"id": location}
    if assignees:
        body["assignedTo"] = [{"id": ident} for ident in assignees]
    return body


@dataclass
class _Links:
    asset: int | None = None
    location: int | None = None
    assignees: list[int] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (label, name, why)


def _join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class AtlasWorkOrderExecutor(Executor):
    name = "atlas.work_order"
    params_model = WorkOrderParams
    description = "Create a work order in Atlas CMMS"
    external = True

    def __init__(
        self,
        base_url: str | None,
        email: str | None,
        password: str | None,
        *,
        timeout_seconds: float = 30.0,
        connect_timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self._email = email
        self._password = password
        self._timeout = timeout_seconds
        self._connect_timeout = connect_timeout
        self._http = http
        self._retry = retry
        self._clock = clock
        self._client: AtlasClient | None = None
        self._link: OutsideLink | None = None

    # --- availability --------------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        missing = [
            variable
            for variable, value in (
                ("ATLAS_BASE_URL", self.base_url),
                ("ATLAS_EMAIL", self._email),
                ("ATLAS_PASSWORD", self._password),
            )
            if not value
        ]
        if not missing:
            return None
        return f"{_join_names(missing)} {'is' if len(missing) == 1 else 'are'} not set"

    def link(self) -> LinkStatus | None:
        return self._link.status() if self._link is not None else None

    def _require_client(self) -> AtlasClient:
        reason = self.unavailable_reason()
        if reason is not None:
            raise ExecutorUnavailable(f"atlas.work_order cannot run: {reason}")
        if self._client is None:
            assert self.base_url and self._email and self._password
            if self._link is None:  # kept across clients: it counts the attempts since Atlas answered
                self._link = OutsideLink(self.name, describe_target("Atlas", self.base_url))
            self._client = AtlasClient(
                self.base_url,
                self._email,
                self._password,
                http=self._http,
                timeout_seconds=self._timeout,
                connect_timeout=self._connect_timeout,
                retry=self._retry,
                link=self._link,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- dry run -------------------------------------------------------------------------

    def render_dry_run(self, params: ActionParams, ctx: ExecutionContext) -> dict[str, Any]:
        """What a live run would send, in order; ids looked up at run time shown as placeholders."""
        wanted = self._params(params)
        base = self.base_url or "${ATLAS_BASE_URL}"
        auth = {"Authorization": f"Bearer {MASK}"}
        requests: list[dict[str, Any]] = [
            {
                "method": "POST",
                "url": f"{base}/auth/signin",
                "json": {"email": self._email or "${ATLAS_EMAIL}", "password": MASK},
                "when": "no valid token is cached",
            }
        ]

        def lookup(entity: str, field: str, value: str) -> None:
            requests.append(
                {
                    "method": "POST",
                    "url": f"{base}/{entity}/search",
                    "headers": auth,
                    "json": search_criteria(
                        [filter_field(field, "cn", value)], page_size=50, direction="ASC"
                    ),
                }
            )

        if wanted.asset:
            lookup("assets", "name", wanted.asset)
        if wanted.location:
            lookup("locations", "name", wanted.location)
        for email in wanted.assignees:
            lookup("users", "email", email)
        body = work_order_body(
            wanted,
            marker_for(ctx.plan_id),
            asset=f"<id of asset {wanted.asset!r}>" if wanted.asset else None,
            location=f"<id of location {wanted.location!r}>" if wanted.location else None,
            assignees=[f"<id of user {email!r}>" for email in wanted.assignees],
        )
        requests.append({"method": "POST", "url": f"{base}/work-orders", "headers": auth, "json": body})
        rendered: dict[str, Any] = {"service": "Atlas CMMS", "requests": requests}
        reason = self.unavailable_reason()
        if reason is not None:
            rendered["unavailable"] = reason
        return rendered

    # --- live ----------------------------------------------------------------------------

    @staticmethod
    def _params(params: ActionParams) -> WorkOrderParams:
        if isinstance(params, WorkOrderParams):
            return params
        return WorkOrderParams.model_validate(params.model_dump())

    def work_order_url(self, work_order_id: int) -> str | None:
        """The Atlas web app's page for a work order, when the API sits under the app's `/api`."""
        if self.base_url and self.base_url.endswith("/api"):
            return f"{self.base_url[: -len('/api')]}/app/work-orders/{work_order_id}"
        return None

    def _result(self, work_order: dict[str, Any], params: WorkOrderParams) -> dict[str, Any]:
        ident = work_order.get("id")
        if not isinstance(ident, int):
            raise ExecutionError("Atlas answered the create without a work order id")
        result: dict[str, Any] = {
            "work_order_id": ident,
            "custom_id": work_order.get("customId"),
            "title": work_order.get("title", params.title),
            "priority": work_order.get("priority", params.priority),
            "status": work_order.get("status"),
        }
        url = self.work_order_url(ident)
        if url is not None:
            result["url"] = url
        if params.due_date is not None:
            result["due_date"] = params.due_date.isoformat()
        if params.asset:
            result["asset"] = params.asset
        if params.location:
            result["location"] = params.location
        if params.assignees:
            result["assignees"] = list(params.assignees)
        return result

    async def _resolve(self, client: AtlasClient, params: WorkOrderParams) -> _Links:
        """Names to ids. A name Atlas does not know is left unlinked (and reported), unless
        the plan says `require_links`: then nothing is created."""
        links = _Links()

        async def lookup(label: str, name: str, find: Callable[[str], Awaitable[int]]) -> int | None:
            try:
                return await find(name)
            except AtlasLookupError as error:
                if params.require_links:
                    raise
                links.missing.append((label, name, str(error)))
                return None

        if params.asset:
            links.asset = await lookup("Asset", params.asset, client.asset_id)
        if params.location:
            links.location = await lookup("Location", params.location, client.location_id)
        for email in params.assignees:
            ident = await lookup("Assignee", email, client.user_id)
            if ident is not None:
                links.assignees.append(ident)
        return links

    def _record(self, ctx: ExecutionContext, marker: str, result: dict[str, Any]) -> dict[str, Any]:
        ctx.journal.put(
            JOURNAL_KEY,
            {
                "state": "created",
                "marker": marker,
                "work_order_id": result["work_order_id"],
                "result": result,
                "at": datetime.fromtimestamp(self._clock(), UTC).isoformat(),
            },
        )
        return result

    async def execute(self, params: ActionParams, ctx: ExecutionContext) -> dict[str, Any]:
        client = self._require_client()
        wanted = self._params(params)
        marker = marker_for(ctx.plan_id)
        record = ctx.journal.get(JOURNAL_KEY)
        if record is not None and record.get("state") == "created" and isinstance(record.get("result"), dict):
            log.info("atlas work order already created for this plan", plan_id=ctx.plan_id)
            return dict(record["result"])
        bound = log.bind(plan_id=ctx.plan_id, action_id=ctx.action_id)
        try:
            if record is not None and record.get("state") == "intent":
                # A previous run may have created it and died before recording the id.
                found = await client.find_work_order_by_marker(marker)
                if found is not None:
                    bound.info(
                        "atlas work order found by its marker; not creating another", id=found.get("id")
                    )
                    return self._record(ctx, marker, self._result(found, wanted))
            ctx.progress("resolving names in Atlas", {"asset": wanted.asset, "assignees": wanted.assignees})
            links = await self._resolve(client, wanted)
            body = work_order_body(
                wanted,
                marker,
                asset=links.asset,
                location=links.location,
                assignees=links.assignees,
                unlinked=[
                    f"{label}: {name} (not found in Atlas: {why})" for label, name, why in links.missing
                ],
            )
            ctx.journal.put(
                JOURNAL_KEY,
                {
                    "state": "intent",
                    "marker": marker,
                    "at": datetime.fromtimestamp(self._clock(), UTC).isoformat(),
                },
            )
            ctx.progress("creating the work order in Atlas", {"title": wanted.title})
            created = await client.create_work_order(body, marker=marker)
        except ServiceRejected as error:
            raise ExecutionError(str(error)) from error
        except ServiceError as error:
            raise ExecutionError(str(error), retryable=True) from error
        outcome = self._result(created, wanted)
        if links.missing:
            outcome["not_linked"] = [f"{label} {name!r}: {why}" for label, name, why in links.missing]
        result = self._record(ctx, marker, outcome)
        bound.info("atlas work order created", id=result["work_order_id"], custom_id=result["custom_id"])
        return result


def create(settings: Any) -> AtlasWorkOrderExecutor:
    """Always an executor: without credentials it still renders dry-runs and says why it cannot run."""
    atlas = settings.atlas
    password = atlas.password.get_secret_value() if atlas.password is not None else None
    return AtlasWorkOrderExecutor(
        atlas.base_url,
        atlas.email,
        password,
        timeout_seconds=atlas.timeout_seconds,
        connect_timeout=settings.services.connect_timeout,
        retry=RetryPolicy.for_services(settings.services),
    )
