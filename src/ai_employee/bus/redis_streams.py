"""The Redis Streams transport of distributed work (issue #15, decision 0019).

One stream per step (`work:<step>`) read by the consumer group `workers`; one result stream per
daemon (`results:<daemon>`) read by that daemon's group `daemon`; a dead-letter stream (`dead`);
a hash of worker heartbeats (`workers`). Every key is `aie:{<namespace>}:...`: the braces make
the namespace a hash tag, so that one namespace lives in one slot of a Redis Cluster too.

Exactly once, across machines, rests on three keys per job (`job_key`, e.g. `plan:<action>:<h>`):

- `fence:<job>`: a counter; each worker that starts the job takes the next value as its token;
- `lease:<job>`: the token of the worker running it, with a TTL the worker renews while it runs;
- `result:<job>`: the outcome, written once by a Lua script that first checks that the fence
  still holds the writer's token (a worker that wakes up after its job was taken over cannot
  record anything), and that appends the outcome to the daemon's result stream in the same step.

Once a result is stored the fence never moves again: a job published twice (a restarted daemon)
is answered from the stored result instead of running again.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from redis import Redis as SyncRedis
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as SyncRetry

log = structlog.get_logger(__name__)

T = TypeVar("T")

WORK_GROUP = "workers"
RESULTS_GROUP = "daemon"
#: the steps that may run on workers; `extract` and `transcribe` are named for the CLI's sake
STEPS = ("extract", "transcribe", "plan", "execute")
TRANSIENT = (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError, OSError)

_ACQUIRE = """
local stored = redis.call('GET', KEYS[3])
if stored then return {'done', stored} end
local holder = redis.call('GET', KEYS[2])
if holder then return {'busy', holder} end
local token = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], token .. '|' .. ARGV[3], 'PX', ARGV[1])
return {'ok', tostring(token)}
"""
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] or (not current and redis.call('GET', KEYS[2]) == ARGV[3]
    and redis.call('EXISTS', KEYS[3]) == 0) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_SEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('SET', KEYS[3], ARGV[1] .. '|' .. ARGV[3] .. '|' .. ARGV[4], 'PX', ARGV[5])
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[4], '*', 'job', ARGV[2], 'token', ARGV[1], 'kind', ARGV[3], 'body', ARGV[4])
return 1
"""
_FORCE_DEAD = """
local stored = redis.call('GET', KEYS[3])
if stored then return stored end
local token = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], token .. '|dead|' .. ARGV[3], 'PX', ARGV[1])
redis.call('XADD', KEYS[4], '*', 'job', ARGV[2], 'token', token, 'kind', 'dead', 'body', ARGV[3])
return false
"""
JOURNAL_PUT_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""


class StreamKeys:
    """Every key of one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = f"aie:{{{namespace}}}:"
        self.dead = self.prefix + "dead"
        self.workers = self.prefix + "workers"
        self.budget = self.prefix + "budget"

    def work(self, step: str) -> str:
        return f"{self.prefix}work:{step}"

    def results(self, daemon_id: str) -> str:
        return f"{self.prefix}results:{daemon_id}"

    def fence(self, job_key: str) -> str:
        return f"{self.prefix}fence:{job_key}"

    def lease(self, job_key: str) -> str:
        return f"{self.prefix}lease:{job_key}"

    def result(self, job_key: str) -> str:
        return f"{self.prefix}result:{job_key}"

    def journal(self, job_key: str) -> str:
        return f"{self.prefix}journal:{job_key}"

    def blob(self, digest: str) -> str:
        return f"{self.prefix}blob:{digest}"


@dataclass
class WorkMessage:
    """A job as a worker reads it."""

    step: str
    entry_id: str
    job_key: str
    reply_to: str
    body: dict[str, Any]
    deliveries: int = 1


@dataclass(frozen=True)
class StoredResult:
    token: int
    kind: str  # done | error | dead
    body: dict[str, Any]

    @classmethod
    def parse(cls, raw: bytes | str) -> StoredResult:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        token, kind, body = text.split("|", 2)
        return cls(int(token), kind, json.loads(body))


@dataclass(frozen=True)
class ResultMessage:
    entry_id: str
    job_key: str
    token: int
    kind: str
    body: dict[str, Any]


@dataclass
class Acquired:
    """What `acquire` found: `ok` (run it with `token`), `done` (answered already), `busy`."""

    state: str
    token: int = 0
    stored: StoredResult | None = None
    holder: str = ""


@dataclass
class StreamStats:
    step: str
    length: int = 0
    lag: int = 0  # entries no worker has read yet
    pending: int = 0  # read, not yet acknowledged
    consumers: int = 0


@dataclass
class WorkerInfo:
    worker: str
    host: str
    pid: int
    steps: list[str]
    heartbeat: float
    in_flight: int
    started: float
    concurrency: int = 1
    done: int = 0

    def up(self, now: float, heartbeat_seconds: float) -> bool:
        return now - self.heartbeat <= max(3 * heartbeat_seconds, 5.0)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


@dataclass
class DeadLetter:
    entry_id: str
    step: str
    job_key: str
    deliveries: int
    note: str
    at: float


@dataclass
class _Scripts:
    acquire: Any = None
    renew: Any = None
    send: Any = None
    force_dead: Any = None
    journal_put: Any = None
    loaded: bool = field(default=False)


#: connections one process opens at most; more callers wait for a free one (not an error)
MAX_CONNECTIONS = 32


#: a call rides out a Redis restart of up to about this long before it raises (the callers retry)
RIDE_OUT_SECONDS = 30.0


def ride_out(*, sync: bool = False) -> dict[str, Any]:
    """Client options: retry a call over a restart (connection refused, loading the AOF)."""
    retries = int(RIDE_OUT_SECONDS / 0.5)
    backoff = ExponentialBackoff(cap=0.5, base=0.02)
    return {
        "retry": SyncRetry(backoff, retries) if sync else Retry(backoff, retries),
        "retry_on_error": [
            redis_errors.ConnectionError,
            redis_errors.TimeoutError,
            redis_errors.BusyLoadingError,
        ],
        "socket_connect_timeout": 5.0,
    }


def connect(url: str) -> Any:
    """An asyncio client whose calls ride out a short Redis restart."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=None, health_check_interval=15, **ride_out()
    )
    return Redis(connection_pool=pool)


def connect_sync(url: str) -> Any:
    """A blocking client (the executors' journal is synchronous), as patient as `connect`."""
    return SyncRedis.from_url(url, **ride_out(sync=True))


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000) % 100000}"


async def retrying(
    call: Callable[[], Awaitable[T]], *, what: str, stop: Callable[[], bool] | None = None, cap: float = 2.0
) -> T:
    """`call` until Redis answers: a restart or a partition slows the caller down, it loses nothing."""
    delay = 0.05
    warned = False
    while True:
        try:
            return await call()
        except TRANSIENT as error:
            if stop is not None and stop():
                raise
            if not warned:
                log.warning(
                    "redis unreachable; retrying", what=what, error=str(error) or type(error).__name__
                )
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)


class RedisStreams:
    """The streams, groups and fenced results of one namespace, over one asyncio client."""

    def __init__(self, url: str, namespace: str, *, client: Any = None) -> None:
        self.url = url
        self.keys = StreamKeys(namespace)
        self.redis: Any = client if client is not None else connect(url)
        self._scripts = _Scripts()
        self._groups: set[tuple[str, str]] = set()

    async def close(self) -> None:
        await self.redis.aclose()

    def _script(self, name: str, source: str) -> Any:
        script = getattr(self._scripts, name)
        if script is None:
            script = self.redis.register_script(source)
            setattr(self._scripts, name, script)
        return script

    # --- groups ----------------------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except redis_errors.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._groups.add((stream, group))

    async def ensure_work_groups(self, steps: Sequence[str]) -> None:
        for step in steps:
            await self.ensure_group(self.keys.work(step), WORK_GROUP)

    # --- the daemon's side -------------------------------------------------------------------

    async def publish(self, step: str, job_key: str, reply_to: str, body: dict[str, Any]) -> str:
        fields = {"job": job_key, "reply": reply_to, "body": json.dumps(body, default=str)}
        entry: bytes = await self.redis.xadd(self.keys.work(step), fields)
        return entry.decode()

    async def entry_exists(self, step: str, entry_id: str) -> bool:
        found = await self.redis.xrange(self.keys.work(step), min=entry_id, max=entry_id, count=1)
        return bool(found)

    async def read_results(
        self, stream: str, *, pending: bool, block_ms: int, count: int = 256
    ) -> list[ResultMessage]:
        """The daemon's results: first its own unacknowledged ones (`pending`), then new ones."""
        answer = await self.redis.xreadgroup(
            RESULTS_GROUP,
            "daemon",
            {stream: "0" if pending else ">"},
            count=count,
            block=None if pending else block_ms,
        )
        found: list[ResultMessage] = []
        for _, entries in answer or []:
            for entry_id, fields in entries:
                found.append(_result_message(entry_id, fields))
        return found

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            await self.redis.xack(stream, group, *entry_ids)

    async def stored_result(self, job_key: str) -> StoredResult | None:
        raw = await self.redis.get(self.keys.result(job_key))
        return StoredResult.parse(raw) if raw is not None else None

    async def trim_acknowledged(self, stream: str, group: str, maxlen: int) -> int:
        """`MINID ~` up to the oldest entry still pending or unread: only acknowledged entries go,
        and only when the stream holds more than `maxlen` (a backlog is never cut)."""
        if await self.redis.xlen(stream) <= maxlen:
            return 0
        boundary = await self._safe_boundary(stream, group)
        if boundary is None:
            return 0
        trimmed: int = await self.redis.xtrim(stream, minid=boundary, approximate=True)
        return trimmed

    async def _safe_boundary(self, stream: str, group: str) -> str | None:
        groups = await self.redis.xinfo_groups(stream)
        candidates: list[tuple[int, int]] = []
        for info in groups:
            last = _text(info.get("last-delivered-id") or info.get(b"last-delivered-id") or "0-0")
            candidates.append(_id_tuple(last))
            candidates[-1] = (candidates[-1][0], candidates[-1][1] + 1)  # the last delivered may go if acked
            summary = await self.redis.xpending(stream, _text(info.get("name") or info.get(b"name")))
            if summary and summary.get("pending"):
                candidates.append(_id_tuple(_text(summary["min"])))
        if not candidates:
            return None
        low = min(candidates)
        return f"{low[0]}-{low[1]}"

    async def stats(self, steps: Sequence[str]) -> list[StreamStats]:
        found: list[StreamStats] = []
        for step in steps:
            stats = StreamStats(step)
            stream = self.keys.work(step)
            try:
                stats.length = int(await self.redis.xlen(stream))
                for info in await self.redis.xinfo_groups(stream):
                    if _text(info.get("name")) != WORK_GROUP:
                        continue
                    lag = info.get("lag")
                    stats.lag = int(lag) if lag is not None else stats.length
                    stats.pending = int(info.get("pending") or 0)
                    stats.consumers = int(info.get("consumers") or 0)
            except redis_errors.ResponseError:
                pass  # no stream yet
            found.append(stats)
        return found

    async def workers(self) -> list[WorkerInfo]:
        raw = await self.redis.hgetall(self.keys.workers)
        found: list[WorkerInfo] = []
        for value in raw.values():
            try:
                found.append(WorkerInfo(**json.loads(value)))
            except (ValueError, TypeError):
                continue
        return sorted(found, key=lambda info: info.worker)

    async def forget_worker(self, worker: str) -> None:
        await self.redis.hdel(self.keys.workers, worker)

    async def prune(self, steps: Sequence[str], *, stale_seconds: float) -> int:
        """Forget workers silent for `stale_seconds` (killed, never stopped) and their consumers in
        the groups once nothing is pending for them: a restarted worker is a new consumer."""
        now = time.time()
        stale = [info.worker for info in await self.workers() if now - info.heartbeat > stale_seconds]
        for worker in stale:
            await self.forget_worker(worker)
        removed = 0
        for step in steps:
            try:
                consumers = await self.redis.xinfo_consumers(self.keys.work(step), WORK_GROUP)
            except redis_errors.ResponseError:
                continue  # no stream or group yet
            for consumer in consumers:
                idle_ms = int(consumer.get("idle") or 0)
                if int(consumer.get("pending") or 0) == 0 and idle_ms >= stale_seconds * 1000:
                    await self.redis.xgroup_delconsumer(self.keys.work(step), WORK_GROUP, consumer["name"])
                    removed += 1
        return removed

    async def dead_letters(self, count: int = 20) -> tuple[int, list[DeadLetter]]:
        total = int(await self.redis.xlen(self.keys.dead))
        entries = await self.redis.xrevrange(self.keys.dead, count=count)
        found = [
            DeadLetter(
                entry_id=_text(entry_id),
                step=_field(fields, "step"),
                job_key=_field(fields, "job"),
                deliveries=int(_field(fields, "deliveries") or 0),
                note=_field(fields, "note"),
                at=float(_field(fields, "at") or 0),
            )
            for entry_id, fields in entries
        ]
        return total, found

    # --- the worker's side ---------------------------------------------------------------------

    async def read_work(
        self, consumer: str, steps: Sequence[str], *, count: int, block_ms: int
    ) -> list[WorkMessage]:
        streams = {self.keys.work(step): ">" for step in steps}
        try:
            answer = await self.redis.xreadgroup(WORK_GROUP, consumer, streams, count=count, block=block_ms)
        except redis_errors.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure_work_groups(steps)  # Redis lost its data: start afresh
            return []
        found: list[WorkMessage] = []
        for stream, entries in answer or []:
            step = _text(stream).rsplit(":", 1)[1]
            for entry_id, fields in entries:
                found.append(_work_message(step, entry_id, fields))
        return found

    async def reclaim(self, consumer: str, step: str, *, min_idle_ms: int, count: int) -> list[WorkMessage]:
        """Take over messages idle for `min_idle_ms` (their worker died or lost Redis), with how
        often each has been delivered by now."""
        stream = self.keys.work(step)
        try:
            answer = await self.redis.xautoclaim(
                stream, WORK_GROUP, consumer, min_idle_ms, "0-0", count=count
            )
        except redis_errors.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure_work_groups([step])
            return []
        entries = answer[1]
        found: list[WorkMessage] = []
        for entry_id, fields in entries:
            if fields is None:
                continue
            message = _work_message(step, entry_id, fields)
            pending = await self.redis.xpending_range(
                stream, WORK_GROUP, min=message.entry_id, max=message.entry_id, count=1
            )
            if pending:
                message.deliveries = int(pending[0]["times_delivered"])
            found.append(message)
        return found

    async def touch(self, consumer: str, messages: Sequence[WorkMessage]) -> None:
        """Reset the idle time of messages this worker is running, so nobody reclaims them."""
        by_step: dict[str, list[str]] = {}
        for message in messages:
            by_step.setdefault(message.step, []).append(message.entry_id)
        for step, ids in by_step.items():
            await self.redis.xclaim(self.keys.work(step), WORK_GROUP, consumer, 0, ids, justid=True)

    async def acquire(self, message: WorkMessage, *, lease_ms: int, ttl_ms: int) -> Acquired:
        """Take the job's lease and the fence's next token, unless it is done or leased already
        (`holder`: the entry the lease holder runs: this one when its holder died moments ago)."""
        job_key = message.job_key
        keys = [self.keys.fence(job_key), self.keys.lease(job_key), self.keys.result(job_key)]
        answer = await self._script("acquire", _ACQUIRE)(keys=keys, args=[lease_ms, ttl_ms, message.entry_id])
        state, value = _text(answer[0]), _text(answer[1])
        if state == "done":
            return Acquired("done", stored=StoredResult.parse(value))
        if state == "busy":
            token, _, entry = value.partition("|")
            return Acquired("busy", token=int(token), holder=entry)
        return Acquired("ok", token=int(value))

    async def renew(self, message: WorkMessage, token: int, lease_ms: int) -> bool:
        """Extend this worker's lease; after a Redis outage in which it expired, take it again if
        nobody took the job over meanwhile (the fence still holds `token`)."""
        job_key = message.job_key
        keys = [self.keys.lease(job_key), self.keys.fence(job_key), self.keys.result(job_key)]
        renewed = await self._script("renew", _RENEW)(
            keys=keys, args=[lease_value(token, message), lease_ms, token]
        )
        return bool(renewed)

    async def send(
        self, message: WorkMessage, token: int, kind: str, body: dict[str, Any], *, ttl_ms: int
    ) -> bool:
        """Store the outcome and hand it to the daemon, only while the fence holds `token`."""
        keys = [
            self.keys.fence(message.job_key),
            self.keys.lease(message.job_key),
            self.keys.result(message.job_key),
            message.reply_to,
        ]
        args = [token, message.job_key, kind, json.dumps(body, default=str), ttl_ms]
        return bool(await self._script("send", _SEND)(keys=keys, args=args))

    async def resend(self, message: WorkMessage, stored: StoredResult) -> None:
        fields = {
            "job": message.job_key,
            "token": stored.token,
            "kind": stored.kind,
            "body": json.dumps(stored.body),
        }
        await self.redis.xadd(message.reply_to, fields)

    async def dead_letter(self, message: WorkMessage, note: str, *, ttl_ms: int) -> None:
        """Record `dead` as the job's outcome (fenced: a late worker cannot overwrite it), tell the
        daemon, keep the message in the dead-letter stream with the note, and acknowledge it."""
        keys = [
            self.keys.fence(message.job_key),
            self.keys.lease(message.job_key),
            self.keys.result(message.job_key),
            message.reply_to,
        ]
        body = json.dumps({"error": note})
        stored = await self._script("force_dead", _FORCE_DEAD)(
            keys=keys, args=[ttl_ms, message.job_key, body]
        )
        if stored is not None:
            await self.resend(message, StoredResult.parse(stored))
        await self.redis.xadd(
            self.keys.dead,
            {
                "step": message.step,
                "job": message.job_key,
                "entry": message.entry_id,
                "deliveries": message.deliveries,
                "note": note,
                "at": time.time(),
                "body": json.dumps(message.body, default=str),
            },
        )
        await self.ack_work(message)

    async def ack_work(self, message: WorkMessage) -> None:
        await self.redis.xack(self.keys.work(message.step), WORK_GROUP, message.entry_id)

    async def heartbeat(self, info: WorkerInfo) -> None:
        await self.redis.hset(self.keys.workers, info.worker, info.to_json())


def lease_value(token: int, message: WorkMessage) -> str:
    """What the lease key holds while `message` runs under `token`."""
    return f"{token}|{message.entry_id}"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _field(fields: dict[Any, Any], name: str) -> str:
    value = fields.get(name.encode(), fields.get(name))
    return _text(value) if value is not None else ""


def _id_tuple(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def _work_message(step: str, entry_id: Any, fields: dict[Any, Any]) -> WorkMessage:
    try:
        body = json.loads(_field(fields, "body") or "{}")
    except ValueError:
        body = {"_undecodable": _field(fields, "body")[:200]}
    return WorkMessage(
        step=step,
        entry_id=_text(entry_id),
        job_key=_field(fields, "job"),
        reply_to=_field(fields, "reply"),
        body=body if isinstance(body, dict) else {"_undecodable": str(body)[:200]},
    )


def _result_message(entry_id: Any, fields: dict[Any, Any]) -> ResultMessage:
    try:
        body = json.loads(_field(fields, "body") or "{}")
    except ValueError:
        body = {"error": "undecodable result"}
    return ResultMessage(
        entry_id=_text(entry_id),
        job_key=_field(fields, "job"),
        token=int(_field(fields, "token") or 0),
        kind=_field(fields, "kind"),
        body=body if isinstance(body, dict) else {"error": "undecodable result"},
    )
