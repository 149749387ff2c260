"""A loopback Manus v1 tasks API that follows shared/apis.md section 2.

- `API_KEY` header required (401 otherwise); result files are served without it, like the
  signed storage URLs Manus hands out, and the fake records who sent what to them.
- POST /v1/tasks validates like its OpenAPI schema: `prompt` and `agentProfile` required,
  enums checked, attachments one of the three shapes, `additionalProperties: false`;
  `taskId` continues a task (a new user message, the task runs again).
- Task states pending → running → completed | failed, driven by the test (`start`,
  `complete`, `fail`) or automatically after a number of polls (`auto_finish_after_polls`).
- GET /v1/tasks with `query` (title and prompt text), `status`, `limit`.

Run it for a demo: `python -m tests.fakes.manus_server --port 8082 --api-key demo-key`
(tasks finish by themselves after 3 polls with a canned answer and a file).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from tests.fakes.loopback import LoopbackServer

log = structlog.get_logger(__name__)

PROFILES = ("manus-1.6", "manus-1.6-lite", "manus-1.6-max")
MODES = ("chat", "adaptive", "agent")
CREATE_KEYS = {
    "prompt",
    "attachments",
    "taskMode",
    "connectors",
    "hideInTaskList",
    "createShareableLink",
    "taskId",
    "agentProfile",
    "locale",
    "projectId",
    "interactiveMode",
}


class ManusError(Exception):
    def __init__(self, status: int, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


@dataclass
class FakeTask:
    id: str
    title: str
    profile: str
    mode: str | None
    prompts: list[str]
    attachments: list[list[dict[str, Any]]]
    created_at: int
    updated_at: int
    status: str = "pending"
    output: list[dict[str, Any]] = field(default_factory=list)
    credit_usage: int = 0
    error: str | None = None
    polls: int = 0


class ManusFake(LoopbackServer):
    def __init__(
        self,
        api_key: str = "test-manus-key",
        *,
        auto_finish_after_polls: int | None = None,
        auto_answer: str = "Here is the research you asked for.",
        auto_files: list[tuple[str, bytes, str]] | None = None,
        auto_credits: int = 42,
        keep_status_on_continue: bool = False,
    ) -> None:
        self.api_key = api_key
        self.tasks: dict[str, FakeTask] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.auto_finish_after_polls = auto_finish_after_polls
        self.auto_answer = auto_answer
        self.auto_files = auto_files or []
        self.auto_credits = auto_credits
        self.keep_status_on_continue = keep_status_on_continue  # a continued task still reads "completed"
        self.created = 0
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/tasks", self._create)
        app.router.add_get("/v1/tasks", self._list)
        app.router.add_get("/v1/tasks/{task_id}", self._get)
        app.router.add_get("/files/{token}/{name}", self._file)

    def fault_body(self, status: int) -> Any:
        if status == 429:
            return {"message": "rate limit exceeded", "details": "too many requests"}
        return {"message": "internal error"}

    async def on_error(self, request: web.Request, error: Exception) -> web.StreamResponse | None:
        if not isinstance(error, ManusError):
            return None
        body: dict[str, Any] = {"message": error.message}
        if error.details:
            body["details"] = error.details
        return web.json_response(body, status=error.status)

    # --- control -------------------------------------------------------------------------

    def only_task(self) -> FakeTask:
        assert len(self.tasks) == 1, f"expected one task, found {len(self.tasks)}"
        return next(iter(self.tasks.values()))

    def start_task(self, task_id: str) -> None:
        self._task(task_id).status = "running"

    def complete(
        self,
        task_id: str,
        text: str = "Done.",
        *,
        files: Sequence[tuple[str, bytes, str]] = (),
        credits: int = 10,
        with_url: bool = True,
    ) -> None:
        """Finish the task with an assistant message: `text`, then each file as `output_file`."""
        task = self._task(task_id)
        content: list[dict[str, Any]] = [{"type": "output_text", "text": text}]
        for name, data, mime in files:
            item: dict[str, Any] = {"type": "output_file", "fileName": name, "mimeType": mime}
            if with_url:
                token = secrets.token_hex(8)
                self.files[f"{token}/{name}"] = (data, mime)
                item["fileUrl"] = f"{self.base_url}/files/{token}/{name}"
            content.append(item)
        task.output.append(self._message("assistant", content))
        task.status = "completed"
        task.credit_usage += credits
        task.updated_at = int(time.time())

    def fail(self, task_id: str, error: str = "the agent could not finish", *, credits: int = 3) -> None:
        task = self._task(task_id)
        task.status = "failed"
        task.error = error
        task.credit_usage += credits
        task.updated_at = int(time.time())

    def file_requests(self) -> list[Any]:
        return [r for r in self.requests if r.path.startswith("/files/")]

    # --- helpers -------------------------------------------------------------------------

    def _task(self, task_id: str) -> FakeTask:
        if task_id not in self.tasks:
            raise ManusError(404, "task not found", f"no task with id {task_id}")
        return self.tasks[task_id]

    @staticmethod
    def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"msg_{secrets.token_hex(6)}",
            "status": "completed",
            "role": role,
            "type": "message",
            "content": content,
        }

    def _authorise(self, request: web.Request) -> None:
        if request.headers.get("API_KEY") != self.api_key:
            raise ManusError(401, "invalid API key", "the API_KEY header is missing or wrong")

    def _show(self, task: FakeTask) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": task.id,
            "object": "task",
            "created_at": task.created_at,
            "updated_at": task.updated_at,
            "status": task.status,
            "instructions": task.prompts[0],
            "model": task.profile,
            "metadata": {"task_title": task.title, "task_url": self._url(task.id)},
            "output": task.output,
            "locale": "en-US",
            "credit_usage": task.credit_usage,
        }
        if task.error:
            shown["error"] = task.error
        return shown

    @staticmethod
    def _url(task_id: str) -> str:
        return f"https://manus.im/app/{task_id}"

    # --- handlers ------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        self._authorise(request)
        try:
            body = await request.json()
        except ValueError as error:
            raise ManusError(400, "invalid JSON body") from error
        if not isinstance(body, dict):
            raise ManusError(400, "the body must be a JSON object")
        extra = sorted(set(body) - CREATE_KEYS)
        if extra:
            raise ManusError(
                400, "invalid request body", f"additional properties not allowed: {', '.join(extra)}"
            )
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ManusError(400, "invalid request body", "prompt is required")
        profile = body.get("agentProfile")
        if profile not in PROFILES:
            raise ManusError(
                400, "invalid request body", f"agentProfile must be one of {', '.join(PROFILES)}"
            )
        mode = body.get("taskMode")
        if mode is not None and mode not in MODES:
            raise ManusError(400, "invalid request body", f"taskMode must be one of {', '.join(MODES)}")
        attachments = self._check_attachments(body.get("attachments"))
        now = int(time.time())
        user = self._message("user", [{"type": "input_text", "text": prompt}])
        continued = body.get("taskId")
        if continued is not None:
            task = self._task(str(continued))
            task.prompts.append(prompt)
            task.attachments.append(attachments)
            task.output.append(user)
            if not self.keep_status_on_continue:
                task.status = "pending"
            task.polls = 0
            task.updated_at = now
        else:
            task = FakeTask(
                id=f"task_{secrets.token_hex(8)}",
                title=prompt.strip().splitlines()[0][:60],
                profile=profile,
                mode=mode,
                prompts=[prompt],
                attachments=[attachments],
                created_at=now,
                updated_at=now,
                output=[user],
            )
            self.tasks[task.id] = task
        self.created += 1
        return web.json_response(
            {"task_id": task.id, "task_title": task.title, "task_url": self._url(task.id)}
        )

    @staticmethod
    def _check_attachments(value: Any) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ManusError(400, "invalid request body", "attachments must be an array")
        for item in value:
            if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                raise ManusError(400, "invalid request body", "each attachment needs a filename")
            if "fileData" in item:
                data = str(item["fileData"])
                head, sep, payload = data.partition(";base64,")
                if not head.startswith("data:") or not sep:
                    raise ManusError(
                        400, "invalid request body", "fileData must be data:<mime>;base64,<data>"
                    )
                try:
                    base64.b64decode(payload, validate=True)
                except binascii.Error as error:
                    raise ManusError(400, "invalid request body", "fileData is not valid base64") from error
            elif "url" not in item and "file_id" not in item:
                raise ManusError(400, "invalid request body", "an attachment needs fileData, url or file_id")
        return list(value)

    async def _get(self, request: web.Request) -> web.Response:
        self._authorise(request)
        task = self._task(request.match_info["task_id"])
        task.polls += 1
        if self.auto_finish_after_polls is not None and task.status in ("pending", "running"):
            if task.polls >= self.auto_finish_after_polls:
                self.complete(task.id, self.auto_answer, files=self.auto_files, credits=self.auto_credits)
            else:
                task.status = "running"
        return web.json_response(self._show(task))

    async def _list(self, request: web.Request) -> web.Response:
        self._authorise(request)
        query = request.query.get("query", "").lower()
        statuses = request.query.getall("status", [])
        limit = int(request.query.get("limit", "100"))
        if not 1 <= limit <= 1000:
            raise ManusError(400, "invalid request", "limit must be between 1 and 1000")
        tasks = sorted(self.tasks.values(), key=lambda task: task.created_at, reverse=True)
        found = [
            self._show(task)
            for task in tasks
            if (not query or query in task.title.lower() or any(query in p.lower() for p in task.prompts))
            and (not statuses or task.status in statuses)
        ][:limit]
        return web.json_response(
            {
                "object": "list",
                "data": found,
                "first_id": found[0]["id"] if found else None,
                "last_id": found[-1]["id"] if found else None,
                "has_more": False,
            }
        )

    async def _file(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['token']}/{request.match_info['name']}"
        if key not in self.files:
            return web.Response(status=404, text="NoSuchKey")
        data, mime = self.files[key]
        return web.Response(body=data, content_type=mime)


async def _serve(args: argparse.Namespace) -> None:
    fake = ManusFake(
        args.api_key,
        auto_finish_after_polls=args.polls,
        auto_files=[("summary.txt", b"A file Manus produced.\n", "text/plain")],
    )

    def announce(url: str) -> None:
        log.info("manus fake listening", url=url, api_key=args.api_key, polls=args.polls)

    await fake.serve_until_signalled(args.host, args.port, announce)


def main() -> None:
    parser = argparse.ArgumentParser(description="A loopback Manus v1 API for demos and manual tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--api-key", default="demo-key")
    parser.add_argument("--polls", type=int, default=3, help="polls until a task completes")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
