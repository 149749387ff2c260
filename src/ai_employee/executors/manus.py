"""manus.research: a Manus research task whose result becomes a note in the vault.

Exactly once, across crashes: the plan's journal holds an intent before the task is created
and the task id right after. A restart that finds a task id polls that task; one that finds
only an intent first searches Manus for the marker line the prompt carries. Credits are
spent once.

The answer (the last assistant message's text) and the files Manus produced become
`Research/<date> <slug>.md` plus originals under `Attachments/`; where they go is written to
the journal before anything is written, so a repeated run rewrites the same files.

Every call to the API has deadlines (`services.connect_timeout`, then `services.read_timeout` for
each answer), and `link()` says whether Manus was reached at the last call, and why not.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field

from ai_employee.clients.link import OutsideLink, describe_target
from ai_employee.clients.manus import (
    AGENT_PROFILES,
    SUCCEEDED,
    ManusClient,
    TaskWaitTimeout,
    answered_follow_up,
    credit_usage,
    final_text,
    output_files,
    task_url,
)
from ai_employee.clients.retry import RetryPolicy, ServiceError, ServiceRejected
from ai_employee.model.executor import (
    ActionParams,
    ExecutionContext,
    ExecutionError,
    Executor,
    ExecutorUnavailable,
)
from ai_employee.model.ids import safe_file_name, short_id, slugify
from ai_employee.model.services import LinkStatus
from ai_employee.vault.fs import fsync_dir, unique_path, write_durable
from ai_employee.vault.notes import render_note, wikilink

log = structlog.get_logger(__name__)

JOURNAL_KEY = "manus.task"
MARKER_PREFIX = "ai-employee plan: "
MASK = "***"
RESEARCH_FOLDER = "Research"
ATTACHMENTS_FOLDER = "Attachments"


class ResearchParams(ActionParams):
    prompt: str = Field(min_length=1, max_length=20_000)
    profile: Literal["lite", "standard", "max"] = "standard"
    task_mode: Literal["chat", "adaptive", "agent"] = "agent"
    attach_files: bool = True
    continue_task_id: str | None = Field(
        None,
        max_length=100,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="a Manus task id to continue (a follow-up question) instead of starting a new task",
    )


def marker_for(plan_id: str, attempt: int = 1) -> str:
    """The line the prompt carries so a lost task can be found again; a new attempt, a new marker."""
    return f"{MARKER_PREFIX}{plan_id}" + (f" attempt {attempt}" if attempt > 1 else "")


def _now_iso(clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds")


def _note_id(plan_id: str) -> str:
    return "research-" + plan_id.removeprefix("plan-")


def inline_attachments(
    files: list[Path], vault_root: Path, *, max_each: int, max_total: int, read: bool
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The action's files as `fileData` attachments; too large or unreadable ones skipped, with why.

    `read=False` (dry-run) describes each file instead of encoding it.
    """
    attached: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    total = 0
    for path in files:
        shown = _vault_relative(path, vault_root)
        try:
            size = path.stat().st_size
        except OSError as error:
            skipped.append({"file": shown, "reason": f"cannot read it: {error.strerror}"})
            continue
        if size > max_each:
            limit = max_each // (1024 * 1024)
            skipped.append({"file": shown, "reason": f"{_size(size)} is over the {limit} MiB limit per file"})
            continue
        if total + size > max_total:
            limit = max_total // (1024 * 1024)
            skipped.append({"file": shown, "reason": f"the attachments would exceed {limit} MiB in total"})
            continue
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if read:
            try:
                data = path.read_bytes()
            except OSError as error:
                skipped.append({"file": shown, "reason": f"cannot read it: {error.strerror}"})
                continue
            encoded = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        else:
            encoded = f"data:{mime};base64,<{size} bytes of {shown}>"
        total += size
        attached.append({"filename": path.name, "fileData": encoded})
    return attached, skipped


class ManusResearchExecutor(Executor):
    name = "manus.research"
    params_model = ResearchParams
    description = "Run a Manus research task; its answer and files become a note under Research/"
    external = True

    def __init__(
        self,
        api_key: str | None,
        base_url: str,
        *,
        default_profile: str = "standard",
        poll_initial_seconds: float = 5.0,
        poll_max_seconds: float = 60.0,
        max_wait_seconds: float = 6 * 3600.0,
        max_inline_bytes: int = 10 * 1024 * 1024,
        max_inline_total_bytes: int = 25 * 1024 * 1024,
        max_download_bytes: int = 100 * 1024 * 1024,
        timeout_seconds: float = 60.0,
        connect_timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        usd_per_credit: float = 0.01,
    ) -> None:
        self._api_key = api_key
        self.usd_per_credit = usd_per_credit  # config `costs.manus_usd_per_credit`
        self.base_url = base_url.rstrip("/")
        self.default_profile = default_profile
        self.poll_initial_seconds = poll_initial_seconds
        self.poll_max_seconds = poll_max_seconds
        self.max_wait_seconds = max_wait_seconds
        self.max_inline_bytes = max_inline_bytes
        self.max_inline_total_bytes = max_inline_total_bytes
        self.max_download_bytes = max_download_bytes
        self._timeouts = (timeout_seconds, connect_timeout)
        self._http = http
        self._retry = retry
        self._clock = clock
        self._client: ManusClient | None = None
        self._link: OutsideLink | None = None

    # --- availability --------------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        return None if self._api_key else "MANUS_API_KEY is not set"

    def link(self) -> LinkStatus | None:
        return self._link.status() if self._link is not None else None

    def _require_client(self) -> ManusClient:
        reason = self.unavailable_reason()
        if reason is not None:
            raise ExecutorUnavailable(f"manus.research cannot run: {reason}")
        if self._client is None:
            assert self._api_key
            if self._link is None:  # kept across clients: it counts the attempts since Manus answered
                self._link = OutsideLink(self.name, describe_target("Manus", self.base_url))
            read, connect = self._timeouts
            self._client = ManusClient(
                self._api_key,
                self.base_url,
                http=self._http,
                timeout_seconds=read,
                connect_timeout=connect,
                retry=self._retry,
                link=self._link,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- the request ---------------------------------------------------------------------

    def _params(self, params: ActionParams) -> ResearchParams:
        """The params, with MANUS_DEFAULT_PROFILE where the plan named no profile."""
        wanted = (
            params
            if isinstance(params, ResearchParams)
            else ResearchParams.model_validate(params.model_dump(exclude_unset=True))
        )
        if "profile" not in wanted.model_fields_set and self.default_profile in AGENT_PROFILES:
            wanted = wanted.model_copy(update={"profile": self.default_profile})
        return wanted

    def _attachments(
        self, params: ResearchParams, ctx: ExecutionContext, *, read: bool
    ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        if not params.attach_files:
            return [], []
        return inline_attachments(
            ctx.action_files,
            ctx.vault_root,
            max_each=self.max_inline_bytes,
            max_total=self.max_inline_total_bytes,
            read=read,
        )

    def _body(
        self, params: ResearchParams, marker: str, attachments: list[dict[str, Any]], continued: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": f"{params.prompt.rstrip()}\n\n{marker}",
            "agentProfile": AGENT_PROFILES[params.profile],
            "taskMode": params.task_mode,
        }
        if attachments:
            body["attachments"] = attachments
        if continued:
            body["taskId"] = continued
        return body

    def render_dry_run(self, params: ActionParams, ctx: ExecutionContext) -> dict[str, Any]:
        wanted = self._params(params)
        record = ctx.journal.get(JOURNAL_KEY) or {}
        attempt = int(record.get("attempt", 0)) + 1 if record.get("state") == "failed" else 1
        attachments, skipped = self._attachments(wanted, ctx, read=False)
        body = self._body(wanted, marker_for(ctx.plan_id, attempt), attachments, wanted.continue_task_id)
        headers = {"API_KEY": MASK, "Content-Type": "application/json"}
        rendered: dict[str, Any] = {
            "service": "Manus",
            "requests": [
                {"method": "POST", "url": f"{self.base_url}/v1/tasks", "headers": headers, "json": body},
                {
                    "method": "GET",
                    "url": f"{self.base_url}/v1/tasks/<task_id>",
                    "headers": {"API_KEY": MASK},
                    "repeat": (
                        f"every {self.poll_initial_seconds:g} s, doubling up to {self.poll_max_seconds:g} s,"
                        " until the task is completed or failed"
                    ),
                },
            ],
            "then": (
                f"the answer is written to {RESEARCH_FOLDER}/<date> <slug>.md and its files"
                f" to {ATTACHMENTS_FOLDER}/"
            ),
        }
        if skipped:
            rendered["attachments_skipped"] = skipped
        reason = self.unavailable_reason()
        if reason is not None:
            rendered["unavailable"] = reason
        return rendered

    # --- live ----------------------------------------------------------------------------

    async def execute(self, params: ActionParams, ctx: ExecutionContext) -> dict[str, Any]:
        client = self._require_client()
        wanted = self._params(params)
        bound = log.bind(plan_id=ctx.plan_id, action_id=ctx.action_id)
        record = dict(ctx.journal.get(JOURNAL_KEY) or {})
        state = record.get("state")
        if state == "completed" and isinstance(record.get("result"), dict):
            return dict(record["result"])
        skipped: list[dict[str, str]] = list(record.get("attachments_skipped") or [])
        try:
            if state in ("created", "writing") and isinstance(record.get("task_id"), str):
                bound.info("resuming the manus task of this plan", task_id=record["task_id"])
            else:
                record, skipped = await self._start(client, wanted, ctx, record)
            task_id = str(record["task_id"])
            ctx.progress(
                "waiting for the Manus task", {"task_id": task_id, "task_url": record.get("task_url")}
            )

            def on_status(status: str, task: Mapping[str, Any]) -> None:
                ctx.progress(f"Manus task {status}", {"task_id": task_id, "status": status})

            finished = None
            if record.get("continued"):
                marker, sent_at = str(record["marker"]), float(record.get("sent_at") or 0)

                def finished(task: Mapping[str, Any]) -> bool:
                    return answered_follow_up(task, marker, sent_at)

            task = await client.wait_for_task(
                task_id,
                initial_seconds=self.poll_initial_seconds,
                max_seconds=self.poll_max_seconds,
                timeout_seconds=self.max_wait_seconds,
                on_status=on_status,
                finished=finished,
            )
        except TaskWaitTimeout as waited:
            raise ExecutionError(
                f"{waited}; it goes on at Manus ({record.get('task_url') or ''}) -"
                " approve the plan again to collect its result",
                retryable=True,
            ) from waited
        except ServiceRejected as error:
            raise ExecutionError(str(error)) from error
        except ServiceError as error:
            raise ExecutionError(str(error), retryable=True) from error

        status = str(task.get("status"))
        url = task_url(task) or record.get("task_url")
        if status != SUCCEEDED:
            record.update({"state": "failed", "status": status})
            ctx.journal.put(JOURNAL_KEY, record)
            detail = task.get("error") or task.get("incomplete_details") or "no reason given"
            raise ExecutionError(f"Manus task {task_id} ended {status}: {detail} ({url})")
        result = await self._write_result(client, wanted, ctx, record, task, skipped)
        bound.info(
            "manus research written", task_id=task_id, note=result["note"], credits=result["credit_usage"]
        )
        return result

    async def _start(
        self,
        client: ManusClient,
        params: ResearchParams,
        ctx: ExecutionContext,
        record: dict[str, Any],
    ) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Create the task (or find the one a crashed run created): intent first, task id after."""
        attempt = int(record.get("attempt", 1))
        if record.get("state") == "failed":
            attempt += 1  # the human approved it again: a fresh task, with a fresh marker
        marker = marker_for(ctx.plan_id, attempt)
        continued = params.continue_task_id
        if record.get("state") == "intent" and record.get("marker") == marker:
            found = await client.find_task(marker, continued=continued)
            if found is not None:
                log.info("manus task found by its marker; not creating another", task_id=found["task_id"])
                return self._created(ctx, record, found), list(record.get("attachments_skipped") or [])
        attachments, skipped = self._attachments(params, ctx, read=True)
        intent = {
            "state": "intent",
            "marker": marker,
            "attempt": attempt,
            "continued": continued,
            "attachments_skipped": skipped,
            "at": _now_iso(self._clock),
            "sent_at": int(self._clock()) - 1,  # unix seconds, as Manus's updated_at
        }
        ctx.journal.put(JOURNAL_KEY, intent)
        ctx.progress("creating the Manus task", {"profile": params.profile, "attachments": len(attachments)})
        created = await client.create_task(self._body(params, marker, attachments, continued), marker=marker)
        return self._created(ctx, intent, created), skipped

    def _created(
        self, ctx: ExecutionContext, intent: dict[str, Any], created: Mapping[str, Any]
    ) -> dict[str, Any]:
        record = {
            **intent,
            "state": "created",
            "task_id": created["task_id"],
            "task_url": created.get("task_url"),
            "task_title": created.get("task_title"),
        }
        ctx.journal.put(JOURNAL_KEY, record)
        return record

    def _plan_paths(
        self, ctx: ExecutionContext, record: dict[str, Any], title: str, files: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Choose the note's and the files' names once; a repeated run reuses them."""
        if isinstance(record.get("note_path"), str):
            return record
        root = ctx.vault_root
        day = datetime.fromtimestamp(self._clock(), UTC).date().isoformat()
        research = root / RESEARCH_FOLDER
        attachments = root / ATTACHMENTS_FOLDER / day  # the intake's layout: Attachments/<date>/
        for folder in (research, attachments):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                fsync_dir(folder.parent)
        note = unique_path(research, f"{day} {slugify(title)}", ".md")
        planned: list[dict[str, Any]] = []
        taken: set[str] = set()
        for item in files:
            name = safe_file_name(f"{short_id(ctx.plan_id)}-{item.get('fileName') or 'file'}")
            target = unique_path(attachments, Path(name).stem, Path(name).suffix, taken=taken)
            taken.add(target.name)
            planned.append({**item, "path": target.relative_to(root).as_posix()})
        record = {
            **record,
            "state": "writing",
            "note_path": note.relative_to(root).as_posix(),
            "files": planned,
        }
        ctx.journal.put(JOURNAL_KEY, record)
        return record

    async def _write_result(
        self,
        client: ManusClient,
        params: ResearchParams,
        ctx: ExecutionContext,
        record: dict[str, Any],
        task: Mapping[str, Any],
        skipped: list[dict[str, str]],
    ) -> dict[str, Any]:
        task_id = str(record["task_id"])
        url = task_url(task) or record.get("task_url")
        title = str(record.get("task_title") or _first_line(params.prompt))
        record = self._plan_paths(ctx, record, title, output_files(task))
        root = ctx.vault_root
        links: list[str] = []
        not_downloaded: list[dict[str, str]] = []
        for item in record.get("files") or []:
            file_url = item.get("fileUrl")
            name = str(item.get("fileName") or "file")
            if not file_url:
                not_downloaded.append({"file": name, "reason": "Manus gave no URL for it"})
                continue
            try:
                data = await client.download(str(file_url), max_bytes=self.max_download_bytes)
            except ServiceError as error:
                not_downloaded.append({"file": name, "reason": str(error), "url": str(file_url)})
                continue
            write_durable(root / item["path"], data)
            links.append(wikilink(item["path"]))
        credits = credit_usage(task)
        note_path = str(record["note_path"])
        properties: dict[str, Any] = {
            "id": _note_id(ctx.plan_id),
            "type": "research",
            "title": title,
            "plan_id": ctx.plan_id,
            "action_id": ctx.action_id,
            "task_id": task_id,
            "task_url": url,
            "status": str(task.get("status")),
            "credit_usage": credits,
            "profile": AGENT_PROFILES[params.profile],
            "created": _now_iso(self._clock),
            "attachments": links,
        }
        if record.get("continued"):
            properties["continues_task"] = record["continued"]
        body = _note_body(
            title, params.prompt, final_text(task), links, not_downloaded, skipped, url, credits
        )
        write_durable(root / note_path, render_note(properties, body).encode("utf-8"))
        result: dict[str, Any] = {
            "task_id": task_id,
            "task_url": url,
            "status": str(task.get("status")),
            "credit_usage": credits,
            "note": wikilink(note_path),
        }
        if credits is not None:
            result["cost_usd"] = round(credits * self.usd_per_credit, 6)
        if links:
            result["files"] = links
        if not_downloaded:
            result["files_not_downloaded"] = not_downloaded
        if skipped:
            result["attachments_skipped"] = skipped
        ctx.journal.put(JOURNAL_KEY, {**record, "state": "completed", "result": result})
        return result


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:120]
    return "research"


def _size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _vault_relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _note_body(
    title: str,
    prompt: str,
    answer: str,
    links: list[str],
    not_downloaded: list[dict[str, str]],
    skipped: list[dict[str, str]],
    url: str | None,
    credits: int | None,
) -> str:
    parts = [f"# {title}", "", answer.strip() or "_Manus returned no text._", ""]
    if links or not_downloaded:
        parts += ["## Files", ""]
        parts += [f"- {link}" for link in links]
        parts += [f"- {item['file']}: not downloaded ({item['reason']})" for item in not_downloaded]
        parts.append("")
    parts += ["## Request", "", *[f"> {line}" for line in prompt.strip().splitlines()], ""]
    if skipped:
        parts += ["Not sent to Manus:", *[f"- {item['file']}: {item['reason']}" for item in skipped], ""]
    footer = f"Manus task: {url}" if url else "Manus task"
    if credits is not None:
        footer += f" · credits used: {credits}"
    parts.append(footer)
    return "\n".join(parts) + "\n"


def create(settings: Any) -> ManusResearchExecutor:
    """Always an executor: without a key it still renders dry-runs and says why it cannot run."""
    manus = settings.manus
    key = manus.api_key.get_secret_value() if manus.api_key is not None else None
    if manus.api_version != "v1":
        log.warning("manus.api_version is not implemented; using the v1 tasks API", asked=manus.api_version)
    return ManusResearchExecutor(
        key,
        manus.base_url,
        default_profile=manus.default_profile,
        poll_initial_seconds=manus.poll_initial_seconds,
        poll_max_seconds=manus.poll_max_seconds,
        timeout_seconds=settings.services.read_timeout,
        connect_timeout=settings.services.connect_timeout,
        retry=RetryPolicy.for_services(settings.services),
        usd_per_credit=settings.costs.manus_usd_per_credit,
    )
