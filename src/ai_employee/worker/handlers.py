"""What a worker runs for each step: the same work functions the daemon runs in process
(`Planner.plan`, `executors.run.run_job`), fed from the wire form and answering in it.

A worker never opens the vault: an execution's attachments come from Redis (small) or from
`bus.shared_path` (large) into a scratch folder of its own; its journal is a Redis hash whose
writes are fenced by the job's token (a worker that lost its lease cannot write an intent, so it
cannot go on to call the outside service)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
import structlog

from ai_employee.bus.redis_streams import (
    JOURNAL_PUT_SCRIPT,
    RedisStreams,
    StreamKeys,
    WorkMessage,
    lease_value,
)
from ai_employee.bus.work_codec import (
    EXECUTE,
    EXTRACT,
    PLAN,
    TRANSCRIBE,
    AttachmentRef,
    RemoteJob,
    WireError,
    decode_extract,
    decode_job,
    decode_plan_request,
    encode_proposal,
    encode_result,
)
from ai_employee.config import Settings
from ai_employee.documents.pool import DocumentReader
from ai_employee.executors.run import run_job
from ai_employee.model.executor import ExecutionContext
from ai_employee.model.jobs import ExecutionJob
from ai_employee.model.plugins import PLANNERS_GROUP, PluginDisabled, load_factory
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.planners.base import Planner
from ai_employee.planners.fallback import FallbackPlanner, template_planner
from ai_employee.planners.guard import collect_secrets
from ai_employee.worker.outcomes import Handler, JobInterrupted, Outcome
from ai_employee.worker.transcription import TranscribeStep

log = structlog.get_logger(__name__)



class RedisJournal:
    """`ExecutionJournal` in Redis, shared by every worker; `put` only while this worker holds the
    job's lease and the fence its token (AOF keeps it over a Redis restart: docs/distributed.md)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: StreamKeys,
        plan_id: str,
        message: WorkMessage,
        token: int,
        ttl_ms: int,
    ) -> None:
        self._client = client
        self._key = keys.journal(plan_id)
        self._fence = keys.fence(message.job_key)
        self._lease = keys.lease(message.job_key)
        self._lease_value = lease_value(token, message)
        self._token = token
        self._ttl_ms = ttl_ms
        self._put = client.register_script(JOURNAL_PUT_SCRIPT)
        self.trouble: Exception | None = None

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            raw: Any = self._client.hget(self._key, key)
        except redis.RedisError as error:
            self.trouble = error
            raise
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        try:
            written = self._put(
                keys=[self._fence, self._key, self._lease],
                args=[self._token, key, json.dumps(dict(value)), self._ttl_ms, self._lease_value],
            )
        except redis.RedisError as error:
            self.trouble = error
            raise
        if not written:
            self.trouble = LeaseLost(f"the lease of {self._fence} moved on: another worker runs this job now")
            raise self.trouble


class LeaseLost(Exception):
    """This worker's token is no longer the fence's: it must not act on the job any more."""


class RedisBudgetStore:
    """The day's planning spend, shared by the workers of a namespace."""

    def __init__(self, client: redis.Redis, keys: StreamKeys) -> None:
        self._client = client
        self._key = keys.budget

    def get(self, day: str) -> float:
        raw: Any = self._client.hget(self._key, day)
        return float(raw) if raw is not None else 0.0

    def put(self, day: str, spent_usd: float) -> None:
        self._client.hset(self._key, day, str(spent_usd))


def build_worker_planner(settings: Settings, budget: RedisBudgetStore) -> Planner:
    """The configured planner with the template planner as its fallback, as in the daemon."""
    template = template_planner(settings)
    kind = settings.planner_kind()
    if kind == "template":
        return template
    factory = load_factory(PLANNERS_GROUP, kind)
    if factory is None:
        log.error("no such planner; the template planner plans", planner=kind)
        return template
    try:
        primary: Planner = factory(settings, budget_store=budget)
    except PluginDisabled as reason:
        log.warning(
            "planner off on this worker; the template planner plans", planner=kind, reason=str(reason)
        )
        return template
    return FallbackPlanner(primary, template, secrets=collect_secrets(settings))


class StepHandlers:
    """The handlers of the steps this worker runs, with what they need (planner, executors)."""

    def __init__(self, settings: Settings, streams: RedisStreams, sync_client: redis.Redis) -> None:
        self.settings = settings
        self.streams = streams
        self.sync = sync_client
        self.planner: Planner | None = None
        self.registry: ExecutorRegistry | None = None
        self.reader: DocumentReader | None = None
        self.transcription: TranscribeStep | None = None
        self.scratch = Path(tempfile.mkdtemp(prefix="aie-worker-"))

    def build(self, steps: list[str]) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {}
        if PLAN in steps:
            self.planner = build_worker_planner(self.settings, RedisBudgetStore(self.sync, self.streams.keys))
            handlers[PLAN] = self.plan
        if EXECUTE in steps:
            self.registry = ExecutorRegistry.from_entry_points(self.settings)
            handlers[EXECUTE] = self.execute
        if EXTRACT in steps:
            self.reader = DocumentReader(self.settings.documents)
            handlers[EXTRACT] = self.extract
        if TRANSCRIBE in steps:
            self.transcription = TranscribeStep(self.settings, self._fetch, self.scratch)
            handlers[TRANSCRIBE] = self.transcription
        return handlers

    async def aclose(self) -> None:
        if self.planner is not None:
            await self.planner.aclose()
        if self.registry is not None:
            await self.registry.aclose()
        if self.reader is not None:
            await asyncio.to_thread(self.reader.close)
        if self.transcription is not None:
            await self.transcription.aclose()
        shutil.rmtree(self.scratch, ignore_errors=True)

    async def plan(self, message: WorkMessage, token: int) -> Outcome:
        request = decode_plan_request(message.body)
        assert self.planner is not None
        proposal = await self.planner.plan(request)
        return "done", encode_proposal(proposal)

    async def execute(self, message: WorkMessage, token: int) -> Outcome:
        job = decode_job(message.body)
        assert self.registry is not None
        executor = self.registry.get(job.action)
        if executor is None:
            reason = self.registry.disabled.get(job.action, "not installed")
            return "error", {"error": f"{job.action} cannot run on this worker: {reason}"}
        try:
            params = executor.validate(job.params)
        except ValueError as error:
            raise WireError(f"params refused by {job.action}: {error}") from error
        folder = self.scratch / message.job_key.replace(":", "_")
        try:
            files = await self._materialize(job, folder)
            journal = RedisJournal(
                self.sync,
                self.streams.keys,
                job.plan_id,
                message,
                token,
                int(self.settings.bus.result_ttl * 1000),
            )
            ctx = ExecutionContext(
                plan_id=job.plan_id,
                action_id=job.action_id,
                vault_root=folder,
                live=job.live,
                journal=journal,
                action_files=files,
                action_title=job.action_title,
                progress=lambda text, data: log.info("progress", plan_id=job.plan_id, message=text),
            )
            execution = ExecutionJob(
                plan_id=job.plan_id,
                action_id=job.action_id,
                name="",
                digest="",
                properties={},
                body="",
                executor=executor,
                params=params,
                attempt=job.attempt,
                action_title=job.action_title,
                attachments=[ref.name for ref in job.attachments],
            )
            result = await run_job(execution, ctx, dry_run=job.dry_run)
            if journal.trouble is not None:
                raise JobInterrupted(f"{type(journal.trouble).__name__}: {journal.trouble}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return "done", encode_result(result)

    async def extract(self, message: WorkMessage, token: int) -> Outcome:
        """A document that came by content, read as the daemon reads it: by this worker's
        `DocumentReader` (its processes, with `documents.*` limits per file). A document it cannot
        read is an answer too (`Extraction.failed`, with its problem)."""
        ref, content_type = decode_extract(message.body)
        assert self.reader is not None
        folder = self.scratch / message.job_key.replace(":", "_")
        try:
            (path,) = await self._fetch([ref], folder)
            reading = self.reader.submit(path, Path(ref.name).name, content_type)
            extraction = await asyncio.wrap_future(reading)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return "done", {"extraction": list(extraction.to_wire())}

    async def _materialize(self, job: RemoteJob, folder: Path) -> list[Path]:
        return await self._fetch(job.attachments, folder)

    async def _fetch(self, refs: list[AttachmentRef], folder: Path) -> list[Path]:
        files: list[Path] = []
        for ref in refs:
            if ref.where == "shared":
                shared = self.settings.bus.shared_path
                if shared is None:
                    raise WireError(
                        f"{ref.name} is in the shared folder, and this worker has no bus.shared_path"
                    )
                files.append(Path(shared) / ref.sha256)
                continue
            data = await self.streams.redis.get(self.streams.keys.blob(ref.sha256))
            if data is None:
                raise WireError(f"the attachment {ref.name} is no longer in Redis")
            target = folder / Path(ref.name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files.append(target)
        return files
