"""The daemon's side of distributed work (`model.work.WorkRunner` over Redis Streams).

`plan` and `execute` publish a job to the step's stream and wait for its result on this daemon's
result stream; the pipeline then commits it as it would an in-process one, exactly once (the
ledger). A result is taken only if its token is the one the job's fence stored (see
`bus.redis_streams`): a worker that lost its lease cannot record a second execution.

Nothing is dropped: while Redis is unreachable a publish waits and retries (intake slows down);
at most `bus.max_in_flight` jobs are out at once (back-pressure); a job whose stream entry was
lost (Redis restarted without its last second of AOF) is published again, and a job whose result
was stored but whose message was lost is answered from the stored result.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future as ConcurrentFuture
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Gauge
from redis.exceptions import ResponseError

from ai_employee.bus.redis_streams import (
    RESULTS_GROUP,
    TRANSIENT,
    WORK_GROUP,
    RedisStreams,
    ResultMessage,
    retrying,
)
from ai_employee.bus.work_codec import (
    EXECUTE,
    EXTRACT,
    PLAN,
    TRANSCRIBE,
    AttachmentRef,
    WireError,
    decode_proposal,
    decode_result,
    encode_extract,
    encode_job,
    encode_plan_request,
    execute_job_key,
    extract_job_key,
    plan_job_key,
)
from ai_employee.config import BusSettings
from ai_employee.model.executor import ExecutionContext
from ai_employee.model.jobs import ExecutionJob, ExecutionResult
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.model.work import WorkRunner
from ai_employee.observability.metrics import PREFIX, Metrics

log = structlog.get_logger(__name__)

REMOTE_STEPS = (EXTRACT, TRANSCRIBE, PLAN, EXECUTE)
#: how often lost entries are looked for, streams trimmed and the status refreshed (at most)
HOUSEKEEPING_SECONDS = 5.0
#: a worker silent this long leaves `status` (and its consumer the group, once nothing is pending)
STALE_WORKER_SECONDS = 3600.0

TemplatePlan = Callable[[PlanRequest, str], PlanProposal]


class AttachmentTooLarge(Exception):
    """Larger than `bus.inline_attachment_bytes` and no `bus.shared_path` is configured."""


@dataclass
class _Waiter:
    step: str
    body: dict[str, Any]
    future: asyncio.Future[tuple[str, dict[str, Any]]]
    entry_id: str = ""
    published: float = field(default_factory=time.monotonic)


class StreamMetrics:
    """`aie_stream_lag{step}`, `aie_worker_up{worker}`, `aie_dead_letters`, in the daemon's registry."""

    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.lag = Gauge(
            PREFIX + "stream_lag",
            "Jobs in a step's stream no worker has read yet.",
            ["step"],
            registry=registry,
        )
        self.pending = Gauge(
            PREFIX + "stream_pending",
            "Jobs of a step read by a worker and not yet done.",
            ["step"],
            registry=registry,
        )
        self.worker_up = Gauge(
            PREFIX + "worker_up",
            "1 while a worker's heartbeat is fresh, 0 once it stops.",
            ["worker"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            PREFIX + "dead_letters", "Entries in the dead-letter stream.", registry=registry
        )


class RedisWork:
    """`WorkRunner` that sends plan and execute work to workers over Redis Streams."""

    def __init__(
        self,
        streams: RedisStreams,
        settings: BusSettings,
        *,
        daemon_id: str,
        local: WorkRunner,
        template_plan: TemplatePlan,
        plan_remotely: bool,
        metrics: Metrics | None = None,
    ) -> None:
        self.streams = streams
        self.settings = settings
        self.daemon_id = daemon_id
        self.results_stream = streams.keys.results(daemon_id)
        self.local = local
        self.template_plan = template_plan
        self.plan_remotely = plan_remotely
        self.metrics = StreamMetrics(metrics) if metrics is not None else None
        self._waiting: dict[str, _Waiter] = {}
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._status: dict[str, Any] = {
            "namespace": settings.namespace,
            "daemon": daemon_id,
            "redis": "connecting",
        }
        self._known_workers: set[str] = set()
        self._local_limits: dict[str, asyncio.Semaphore] = {}
        self._last_prune = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None  # set by `start`: `read_document` uses it

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.result_ttl * 1000)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await retrying(self._ensure_groups, what="create the stream groups")
        self._tasks = [
            asyncio.create_task(self._read_results(), name="aie-redis-results"),
            asyncio.create_task(self._housekeeping(), name="aie-redis-housekeeping"),
        ]
        log.info(
            "work goes to workers over Redis Streams",
            namespace=self.settings.namespace,
            daemon=self.daemon_id,
        )

    async def _ensure_groups(self) -> None:
        await self.streams.ensure_work_groups(REMOTE_STEPS)
        await self.streams.ensure_group(self.results_stream, RESULTS_GROUP)

    async def close(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.streams.close()

    # --- WorkRunner --------------------------------------------------------------------------

    def concurrency(self, step: str, default: int) -> int:
        """Up to `bus.max_in_flight` jobs out at once: the workers decide how many run."""
        if step == PLAN and not self.plan_remotely:
            return default
        self._local_limits[step] = asyncio.Semaphore(default)  # what still runs here keeps its limit
        return max(default, self.settings.max_in_flight)

    async def _run_here(self, job: ExecutionJob, ctx: ExecutionContext, *, dry_run: bool) -> ExecutionResult:
        limit = self._local_limits.get(EXECUTE)
        if limit is None:
            return await self.local.execute(job, ctx, dry_run=dry_run)
        async with limit:
            return await self.local.execute(job, ctx, dry_run=dry_run)

    def status(self) -> dict[str, Any] | None:
        return {**self._status, "in_flight": len(self._waiting)}

    async def plan(self, request: PlanRequest) -> PlanProposal:
        if not self.plan_remotely:
            return await self.local.plan(request)
        kind, body = await self.submit(PLAN, plan_job_key(request), encode_plan_request(request))
        if kind == "done":
            try:
                return decode_proposal(body)
            except WireError as unreadable:
                body = {"error": str(unreadable)}
        reason = f"the worker could not plan ({kind}): {body.get('error', 'no reason given')}"
        log.warning(
            "planning on a worker failed; the template planner plans",
            action_id=request.action_id,
            reason=reason,
        )
        return self.template_plan(request, reason)

    async def execute(self, job: ExecutionJob, ctx: ExecutionContext, *, dry_run: bool) -> ExecutionResult:
        if dry_run or job.executor.name not in self.settings.remote_actions:
            return await self._run_here(job, ctx, dry_run=dry_run)
        try:
            attachments = await asyncio.to_thread(self._pack_attachments, job, ctx)
        except AttachmentTooLarge as error:
            log.warning(
                "runs in the daemon: an attachment cannot travel", plan_id=job.plan_id, reason=str(error)
            )
            return await self._run_here(job, ctx, dry_run=dry_run)
        await self._store_blobs(attachments)
        body = encode_job(job, live=ctx.live, dry_run=False, attachments=[ref for ref, _ in attachments])
        kind, answer = await self.submit(EXECUTE, execute_job_key(job), body)
        if kind == "done":
            return decode_result(answer)
        reason = str(answer.get("error") or "no reason given")
        return ExecutionResult(dry_run=False, error=f"the worker could not run it ({kind}): {reason}")

    # --- documents (`model.work.DocumentWork`) ----------------------------------------------------

    def read_document(
        self, path: Path, name: str, content_type: str | None, *, reading_seconds: float
    ) -> ConcurrentFuture[Sequence[Any] | None]:
        """Any thread: `extract` on the daemon's event loop; None at once once it stops."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and not self._stopping:
            try:
                return asyncio.run_coroutine_threadsafe(
                    self.extract(path, name, content_type, reading_seconds=reading_seconds), loop
                )
            except RuntimeError:  # the loop closed meanwhile
                pass
        nothing: ConcurrentFuture[Sequence[Any] | None] = ConcurrentFuture()
        nothing.set_result(None)
        return nothing

    async def extract(
        self, path: Path, name: str, content_type: str | None = None, *, reading_seconds: float
    ) -> list[Any] | None:
        """A document read by a worker's `extract` step (the file travels by content), as
        `Extraction.to_wire()`; None when no worker could, so that the caller reads it in process:
        no worker runs `extract`, the file cannot travel, the worker failed or the job went to the
        dead letters, or no answer came within `claim_idle` + twice `reading_seconds`."""
        if not self.workers_up(EXTRACT):
            log.debug("no worker reads documents; the daemon reads it", file=name)
            return None
        try:
            ((ref, data),) = await asyncio.to_thread(self._pack, [(name, path)])
        except (AttachmentTooLarge, ValueError, OSError) as error:
            log.warning("the daemon reads it: the file cannot travel", file=name, reason=str(error))
            return None
        wait = self.settings.claim_idle + 2 * reading_seconds
        try:
            async with asyncio.timeout(wait):
                if data is not None:
                    await self._store_document(ref, data, int(wait * 1000))
                kind, answer = await self.submit(
                    EXTRACT, extract_job_key(ref, content_type), encode_extract(ref, content_type)
                )
        except TimeoutError:
            log.warning("no worker read the document in time; the daemon reads it", file=name, seconds=wait)
            return None
        wire = answer.get("extraction")
        if kind != "done" or not isinstance(wire, list):
            reason = answer.get("error", "no reading in the answer")
            log.warning(
                "reading on a worker failed; the daemon reads it", file=name, kind=kind, reason=reason
            )
            return None
        return wire

    async def _store_document(self, ref: AttachmentRef, data: bytes, ttl_ms: int) -> None:
        """A document's bytes in Redis only as long as the daemon waits for its reading (an Inbox
        of PDFs would otherwise hold Redis's memory for `result_ttl`); a blob already there (an
        execution's attachment of the same content) keeps its longer life."""
        key = self.streams.keys.blob(ref.sha256)
        redis = self.streams.redis
        if await retrying(lambda: redis.set(key, data, px=ttl_ms, nx=True), what="store a document"):
            return
        left = await retrying(lambda: redis.pttl(key), what="store a document")
        if 0 <= left < ttl_ms:
            await retrying(lambda: redis.pexpire(key, ttl_ms), what="store a document")
        elif left == -2:  # expired meanwhile
            await retrying(lambda: redis.set(key, data, px=ttl_ms), what="store a document")

    def workers_up(self, step: str) -> bool:
        """A worker that runs `step` had a fresh heartbeat at the last status refresh."""
        workers = self._status.get("workers") or []
        return any(worker.get("up") and step in worker.get("steps", ()) for worker in workers)

    # --- attachments -------------------------------------------------------------------------

    def _pack_attachments(
        self, job: ExecutionJob, ctx: ExecutionContext
    ) -> list[tuple[AttachmentRef, bytes | None]]:
        """Small files travel inside Redis; larger ones through `bus.shared_path` (by content)."""
        return self._pack(list(zip(job.attachments, ctx.action_files, strict=False)))

    def _pack(self, files: list[tuple[str, Path]]) -> list[tuple[AttachmentRef, bytes | None]]:
        packed: list[tuple[AttachmentRef, bytes | None]] = []
        for name, path in files:
            try:
                size = path.stat().st_size
            except OSError:
                continue  # a missing attachment is the executor's to report, as in process
            if size <= self.settings.inline_attachment_bytes:
                data = path.read_bytes()
                packed.append(
                    (AttachmentRef(name, len(data), hashlib.sha256(data).hexdigest(), "blob"), data)
                )
                continue
            shared = self.settings.shared_path
            if shared is None:
                raise AttachmentTooLarge(
                    f"{name} has {size} bytes, over bus.inline_attachment_bytes "
                    f"({self.settings.inline_attachment_bytes}), and no bus.shared_path is set"
                )
            digest = _file_digest(path)
            _copy_durable(path, Path(shared) / digest)
            packed.append((AttachmentRef(name, size, digest, "shared"), None))
        return packed

    def content_ref(self, name: str, data: bytes, digest: str | None = None) -> AttachmentRef:
        """How some bytes (a voice note) travel to a worker by content: `blob` (the caller puts
        them into Redis) up to `bus.inline_attachment_bytes`, else written into `bus.shared_path`
        here (blocking: call it from a thread). Raises AttachmentTooLarge without a shared folder,
        OSError when it cannot be written."""
        digest = digest or hashlib.sha256(data).hexdigest()
        if len(data) <= self.settings.inline_attachment_bytes:
            return AttachmentRef(name, len(data), digest, "blob")
        shared = self.settings.shared_path
        if shared is None:
            raise AttachmentTooLarge(
                f"{name} has {len(data)} bytes, over bus.inline_attachment_bytes "
                f"({self.settings.inline_attachment_bytes}), and no bus.shared_path is set"
            )
        _copy_durable(data, Path(shared) / digest)
        return AttachmentRef(name, len(data), digest, "shared")

    async def _store_blobs(self, attachments: list[tuple[AttachmentRef, bytes | None]]) -> None:
        for ref, data in attachments:
            if data is not None:
                key = self.streams.keys.blob(ref.sha256)
                await retrying(
                    lambda key=key, data=data: self.streams.redis.set(key, data, px=self.ttl_ms),  # type: ignore[misc]
                    what="store an attachment",
                )

    # --- publishing and results ------------------------------------------------------------------

    async def submit(self, step: str, job_key: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Publish one job to `step`'s stream and wait for its answer: (`done`, result body), or
        (`error`/`dead`, `{"error": why}`). The same `job_key` asked twice runs once."""
        waiter = self._waiting.get(job_key)
        if waiter is not None:  # the same job asked for twice (recovery and a hint): one run
            return await asyncio.shield(waiter.future)
        # Registered before it waits for a slot: a second ask meanwhile joins this one, and a
        # result already on its way (asked by this daemon before it restarted) answers it.
        waiter = _Waiter(step, body, asyncio.get_running_loop().create_future())
        self._waiting[job_key] = waiter
        try:
            async with self._slots:
                if not waiter.future.done():
                    await self._publish(job_key, waiter)
                return await waiter.future
        finally:
            self._waiting.pop(job_key, None)

    async def _publish(self, job_key: str, waiter: _Waiter) -> None:
        waiter.entry_id = await retrying(
            lambda: self.streams.publish(waiter.step, job_key, self.results_stream, waiter.body),
            what=f"publish {waiter.step} work",
            stop=lambda: self._stopping,
        )
        waiter.published = time.monotonic()

    async def _read_results(self) -> None:
        pending = True  # first what this daemon read before it restarted and did not acknowledge
        while not self._stopping:
            try:
                messages = await self.streams.read_results(
                    self.results_stream, pending=pending, block_ms=1000
                )
                if pending and not messages:
                    pending = False
                    continue
                for message in messages:
                    await self._take(message)
                await self.streams.ack(self.results_stream, RESULTS_GROUP, [m.entry_id for m in messages])
            except asyncio.CancelledError:
                raise
            except TRANSIENT as error:
                self._status["redis"] = f"unreachable: {error}"
                await asyncio.sleep(0.5)
            except ResponseError as error:  # Redis lost its data (no AOF): the groups start afresh
                log.warning("the result stream is gone; making it again", error=str(error))
                await retrying(
                    self._ensure_groups, what="create the stream groups", stop=lambda: self._stopping
                )
            except Exception:
                log.exception("reading results failed")
                await asyncio.sleep(0.5)

    async def _take(self, message: ResultMessage) -> None:
        waiter = self._waiting.get(message.job_key)
        if waiter is None or waiter.future.done():
            return  # nobody waits (answered already, or the daemon restarted): recovery asks again
        stored = await self.streams.stored_result(message.job_key)
        if stored is None or stored.token != message.token:
            log.warning(
                "a result without the fence's token is ignored", job=message.job_key, token=message.token
            )
            return
        waiter.future.set_result((message.kind, message.body))

    # --- housekeeping ----------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        interval = min(HOUSEKEEPING_SECONDS, max(self.settings.claim_idle / 2, 0.2))
        while not self._stopping:
            try:
                await self._find_lost()
                for step in REMOTE_STEPS:
                    await self.streams.trim_acknowledged(
                        self.streams.keys.work(step), WORK_GROUP, self.settings.maxlen
                    )
                await self.streams.trim_acknowledged(self.results_stream, RESULTS_GROUP, self.settings.maxlen)
                if time.monotonic() - self._last_prune > STALE_WORKER_SECONDS / 10:
                    self._last_prune = time.monotonic()
                    await self.streams.prune(REMOTE_STEPS, stale_seconds=STALE_WORKER_SECONDS)
                await self._refresh_status()
            except asyncio.CancelledError:
                raise
            except TRANSIENT as error:
                self._status["redis"] = f"unreachable: {error}"
            except Exception:
                log.exception("redis housekeeping failed")
            await asyncio.sleep(interval)

    async def _find_lost(self) -> None:
        """Jobs waited on for longer than `claim_idle` whose entry is gone: answered from the stored
        result if there is one, otherwise published again."""
        now = time.monotonic()
        for job_key, waiter in list(self._waiting.items()):
            if (
                waiter.future.done()
                or now - waiter.published < self.settings.claim_idle
                or not waiter.entry_id
            ):
                continue
            if await self.streams.entry_exists(waiter.step, waiter.entry_id):
                continue
            stored = await self.streams.stored_result(job_key)
            if stored is not None:
                if not waiter.future.done():
                    waiter.future.set_result((stored.kind, stored.body))
                continue
            log.warning("a job's entry was lost; publishing it again", job=job_key)
            await self._publish(job_key, waiter)

    async def _refresh_status(self) -> None:
        now = time.time()
        workers = await self.streams.workers()
        streams = await self.streams.stats(REMOTE_STEPS)
        dead_total, dead = await self.streams.dead_letters()
        heartbeat = self.settings.heartbeat_seconds
        self._status = {
            "namespace": self.settings.namespace,
            "daemon": self.daemon_id,
            "redis": "up",
            "workers": [
                {
                    "worker": info.worker,
                    "host": info.host,
                    "pid": info.pid,
                    "steps": info.steps,
                    "up": info.up(now, heartbeat),
                    "last_heartbeat": round(now - info.heartbeat, 1),
                    "in_flight": info.in_flight,
                    "done": info.done,
                }
                for info in workers
            ],
            "streams": {s.step: {"lag": s.lag, "pending": s.pending, "length": s.length} for s in streams},
            "dead_letters": {
                "count": dead_total,
                "recent": [
                    {"step": d.step, "job": d.job_key, "deliveries": d.deliveries, "note": d.note}
                    for d in dead
                ],
            },
        }
        if self.metrics is not None:
            for s in streams:
                self.metrics.lag.labels(step=s.step).set(s.lag)
                self.metrics.pending.labels(step=s.step).set(s.pending)
            self.metrics.dead_letters.set(dead_total)
            seen = set()
            for info in workers:
                name = f"{info.host}:{info.pid}"
                seen.add(name)
                self.metrics.worker_up.labels(worker=name).set(1 if info.up(now, heartbeat) else 0)
            for gone in self._known_workers - seen:
                self.metrics.worker_up.remove(gone)
            self._known_workers = seen


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_durable(source: Path | bytes, target: Path) -> None:
    """A file's or some bytes' content into the shared folder under its digest: temp, fsync,
    rename; an existing copy is the same bytes."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".aie-tmp-{target.name}-{os.getpid()}")
    with temp.open("wb") as writing:
        if isinstance(source, bytes):
            writing.write(source)
        else:
            with source.open("rb") as reading:
                shutil.copyfileobj(reading, writing, 1 << 20)
        writing.flush()
        os.fsync(writing.fileno())
    os.replace(temp, target)
