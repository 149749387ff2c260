"""Manus tasks API, v1 (shared/apis.md section 2): create, get, list, wait, download results.

- Auth is the literal header `API_KEY: <key>`. It is added per request to the API's own
  URLs only: result files live elsewhere (signed storage URLs) and must never see the key.
- There is no idempotency key: `create_task(marker=...)` searches the task list for the
  marker (a line of the prompt) before sending again, so a create whose answer was lost
  does not start a second task (and spend credits twice).
- Waiting polls with exponential backoff on asyncio timers, so nothing else waits on it.
- Every request has deadlines (connect, then each read); with a `link`, each exchange with the
  API says whether Manus was reached (result downloads are from other hosts: they do not count).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
import structlog

from ai_employee.clients.link import OutsideLink
from ai_employee.clients.retry import (
    RetryPolicy,
    ServiceAuthError,
    ServiceError,
    ServiceRejected,
    ServiceUnavailable,
    TransientStatus,
    is_transient,
    is_unsent,
    parse_retry_after,
    timeouts,
)
from ai_employee.observability.timing import timed_operation

log = structlog.get_logger(__name__)

DEFAULT_BASE_URL = "https://api.manus.ai"
AGENT_PROFILES = {"lite": "manus-1.6-lite", "standard": "manus-1.6", "max": "manus-1.6-max"}
TASK_MODES = ("chat", "adaptive", "agent")
FINISHED = frozenset({"completed", "failed", "error", "stopped", "cancelled"})
SUCCEEDED = "completed"


class TaskWaitTimeout(ServiceError):
    """The task was still running when the wait ended; it goes on at Manus."""

    def __init__(self, message: str, task: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.task = dict(task)


def _error_message(response: httpx.Response) -> str:
    text = response.text.strip()
    if not text:
        return response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return text[:500]
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]  # the v2 envelope
        parts = [str(body[key]) for key in ("message", "error", "details") if body.get(key)]
        if parts:
            return ": ".join(parts)[:500]
    return text[:500]


def turn_messages(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The assistant messages after the last user message: this turn's answer."""
    output = task.get("output")
    if not isinstance(output, list):
        return []
    messages = [item for item in output if isinstance(item, dict)]
    last_user = max((i for i, item in enumerate(messages) if item.get("role") == "user"), default=-1)
    return [item for item in messages[last_user + 1 :] if item.get("role") == "assistant"]


def _contents(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [item for item in content if isinstance(item, dict)] if isinstance(content, list) else []


def final_text(task: Mapping[str, Any]) -> str:
    """The last assistant message's `output_text` items of this turn, joined."""
    for message in reversed(turn_messages(task)):
        texts = [
            str(item.get("text"))
            for item in _contents(message)
            if item.get("type") == "output_text" and item.get("text")
        ]
        if texts:
            return "\n\n".join(texts)
    return ""


def output_files(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every `output_file` of this turn: `fileUrl`, `fileName`, `mimeType`."""
    files: list[dict[str, Any]] = []
    for message in turn_messages(task):
        for item in _contents(message):
            if item.get("type") == "output_file":
                files.append(
                    {key: item.get(key) for key in ("fileUrl", "fileName", "mimeType") if item.get(key)}
                )
    return files


def task_mentions(task: Mapping[str, Any], marker: str) -> bool:
    """Whether the task's prompt (or one of its user messages) carries `marker`."""
    instructions = task.get("instructions")
    if isinstance(instructions, str) and marker in instructions:
        return True
    output = task.get("output")
    for message in output if isinstance(output, list) else []:
        if isinstance(message, Mapping) and message.get("role") == "user":
            for item in _contents(message):
                if marker in str(item.get("text") or ""):
                    return True
    return False


def answered_follow_up(task: Mapping[str, Any], marker: str, sent_at: float) -> bool:
    """Whether a continued task has finished *this* turn, not still shows the previous one.

    Right after a follow-up the task may still read `completed` from its last turn: count it
    finished once the follow-up (carrying `marker`) is answered, or, when Manus does not echo
    user messages, once the task was updated after the follow-up was sent.
    """
    status = str(task.get("status") or "")
    if status not in FINISHED:
        return False
    if status != SUCCEEDED:
        return True
    output = task.get("output")
    messages = [m for m in output if isinstance(m, Mapping)] if isinstance(output, list) else []
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if users:
        last = messages[users[-1]]
        echoed = any(marker in str(item.get("text") or "") for item in _contents(last))
        return echoed and any(m.get("role") == "assistant" for m in messages[users[-1] + 1 :])
    updated = task.get("updated_at")
    return isinstance(updated, int | float) and not isinstance(updated, bool) and updated >= sent_at


def credit_usage(task: Mapping[str, Any]) -> int | None:
    value = task.get("credit_usage")
    if value is None and isinstance(task.get("metadata"), Mapping):
        value = task["metadata"].get("credit_usage")  # the OpenAI-compatible shape: a string
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def task_url(task: Mapping[str, Any]) -> str | None:
    metadata = task.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("task_url"), str):
        return str(metadata["task_url"])
    value = task.get("task_url")
    return value if isinstance(value, str) else None


class ManusClient:
    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        http: httpx.AsyncClient | None = None,
        timeout_seconds: float = 60.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        link: OutsideLink | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._own_http = http is None
        self._http = (
            http
            if http is not None
            else httpx.AsyncClient(timeout=timeouts(connect=connect_timeout, read=timeout_seconds))
        )
        self._retry = retry or RetryPolicy()
        self._link = link

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @timed_operation("manus.request")
    async def _once(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
    ) -> Any:
        try:
            response = await self._http.request(
                method,
                self.url(path),
                json=json_body,
                params=params,  # type: ignore[arg-type]
                headers={"API_KEY": self._api_key},
            )
        except httpx.TransportError as error:
            if self._link is not None:
                self._link.failed(error, timeout=self._http.timeout, retry=False)
            raise
        if self._link is not None:
            self._link.answered(response.status_code)
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json() if response.content else None
            except ValueError as error:
                raise ServiceError(f"Manus answered {method} {path} with a body that is not JSON") from error
        message = _error_message(response)
        if status == 429 or status >= 500:
            raise TransientStatus(
                f"Manus answered {status}: {message}",
                status=status,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status in (401, 403):
            raise ServiceAuthError(
                f"Manus refused the API key ({status}): {message} - check MANUS_API_KEY", status=status
            )
        raise ServiceRejected(f"Manus answered {status}: {message}", status=status)

    async def _call(
        self, method: str, path: str, *, safe_to_repeat: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        async def attempt() -> Any:
            return await self._once(method, path, **kwargs)

        value = await self._retry.call(
            attempt, what=f"Manus {method} {path}", retry_on=is_transient if safe_to_repeat else is_unsent
        )
        if not isinstance(value, dict):
            raise ServiceError(f"Manus answered {method} {path} with an unexpected body")
        return value

    # --- tasks ---------------------------------------------------------------------------

    async def create_task(self, body: Mapping[str, Any], *, marker: str | None = None) -> dict[str, Any]:
        """POST /v1/tasks -> `{task_id, task_title, task_url, share_url?}`.

        With `marker` (text the prompt carries), a retry after a lost answer first looks for
        the task it may have started: in the list (a new task) or in the continued task's
        messages (`taskId` given).
        """
        if marker is None:
            return await self._call("POST", "/v1/tasks", json_body=dict(body), safe_to_repeat=False)
        if marker not in str(body.get("prompt") or ""):
            raise ValueError("the marker must be part of the prompt")
        continued = body.get("taskId")
        attempts = 0

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                found = await self._find_once(marker, continued if isinstance(continued, str) else None)
                if found is not None:
                    log.info("manus task found by marker after a failed attempt", task_id=found["task_id"])
                    return found
            return await self._once("POST", "/v1/tasks", json_body=dict(body))

        created = await self._retry.call(attempt, what="Manus POST /v1/tasks", retry_on=is_transient)
        if not isinstance(created, dict) or not isinstance(created.get("task_id"), str):
            raise ServiceError("Manus answered the task creation without a task_id")
        return created

    async def _find_once(self, marker: str, continued: str | None) -> dict[str, Any] | None:
        if continued is not None:
            task = await self._once("GET", f"/v1/tasks/{continued}")
            if isinstance(task, dict) and task_mentions(task, marker):
                return {"task_id": continued, "task_url": task_url(task), "task_title": _title(task)}
            return None
        listing = await self._once("GET", "/v1/tasks", params={"query": marker, "limit": 20})
        data = listing.get("data") if isinstance(listing, dict) else None
        for task in data if isinstance(data, list) else []:
            if isinstance(task, dict) and isinstance(task.get("id"), str) and task_mentions(task, marker):
                return {"task_id": task["id"], "task_url": task_url(task), "task_title": _title(task)}
        return None

    async def find_task(self, marker: str, *, continued: str | None = None) -> dict[str, Any] | None:
        """The task a previous run started with `marker` in its prompt, if there is one."""

        async def attempt() -> dict[str, Any] | None:
            return await self._find_once(marker, continued)

        return await self._retry.call(attempt, what="Manus task search", retry_on=is_transient)

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/tasks/{task_id}")

    async def list_tasks(
        self,
        *,
        query: str | None = None,
        limit: int | None = None,
        status: Sequence[str] = (),
        created_after: int | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        params: list[tuple[str, Any]] = []
        if query is not None:
            params.append(("query", query))
        if limit is not None:
            params.append(("limit", limit))
        params.extend(("status", value) for value in status)
        if created_after is not None:
            params.append(("createdAfter", created_after))
        if after is not None:
            params.append(("after", after))
        return await self._call("GET", "/v1/tasks", params=params)

    async def wait_for_task(
        self,
        task_id: str,
        *,
        initial_seconds: float,
        max_seconds: float,
        timeout_seconds: float,
        on_status: Callable[[str, Mapping[str, Any]], Awaitable[None] | None] | None = None,
        finished: Callable[[Mapping[str, Any]], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> dict[str, Any]:
        """Poll until the task finishes (or `finished(task)` says so). The interval doubles from
        `initial_seconds` up to `max_seconds`; a blip of unavailability is ridden out, not fatal."""
        deadline = clock() + timeout_seconds
        interval = max(0.0, initial_seconds)
        last_status: str | None = None
        task: dict[str, Any] = {}
        while True:
            try:
                task = await self.get_task(task_id)
            except ServiceUnavailable as error:
                log.warning("manus poll failed; polling on", task_id=task_id, reason=str(error))
            else:
                status = str(task.get("status") or "")
                if status != last_status:
                    last_status = status
                    if on_status is not None:
                        maybe = on_status(status, task)
                        if maybe is not None:
                            await maybe
                if finished(task) if finished is not None else status in FINISHED:
                    return task
            remaining = deadline - clock()
            if remaining <= 0:
                raise TaskWaitTimeout(
                    f"Manus task {task_id} was still {last_status or 'unknown'} after {timeout_seconds:g} s",
                    task,
                )
            await asyncio.sleep(min(interval, remaining))
            interval = min(max_seconds, max(interval * 2, 0.001))

    @timed_operation("manus.download")
    async def download(self, url: str, *, max_bytes: int) -> bytes:
        """Fetch a result file. Without the API key: these URLs are not the API's."""
        if not url.startswith(("https://", "http://")):
            raise ServiceRejected(f"refusing to download a non-HTTP URL: {url[:80]}")

        async def attempt() -> bytes:
            async with self._http.stream("GET", url) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise TransientStatus(
                        f"file download answered {response.status_code}", status=response.status_code
                    )
                if response.status_code != 200:
                    raise ServiceRejected(
                        f"file download answered {response.status_code}", status=response.status_code
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ServiceRejected(f"the file is larger than {max_bytes // (1024 * 1024)} MiB")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ServiceRejected(f"the file is larger than {max_bytes // (1024 * 1024)} MiB")
                    chunks.append(chunk)
                return b"".join(chunks)

        return await self._retry.call(attempt, what="Manus file download", retry_on=is_transient)


def _title(task: Mapping[str, Any]) -> str | None:
    metadata = task.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("task_title"), str):
        return str(metadata["task_title"])
    return None
