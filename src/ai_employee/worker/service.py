"""`ai-employee worker`: does the slow steps' work for the daemons of a namespace.

Reads its steps' streams as a consumer of the group `workers` (at most `--concurrency` jobs at
once), takes each job's lease and fencing token, runs the step's work function and hands the
outcome back through the fenced result script; then acknowledges. Every `bus.heartbeat_seconds`
it writes its heartbeat, keeps its running messages from looking idle and renews their leases.
Every `bus.claim_idle / 2` it takes over messages idle longer than `bus.claim_idle` (their worker
died or lost Redis); a message delivered more than `bus.max_deliveries` times goes to the
dead-letter stream with a note instead of running again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time

import structlog

from ai_employee.bus.redis_streams import (
    STEPS,
    TRANSIENT,
    RedisStreams,
    WorkerInfo,
    WorkMessage,
    connect_sync,
    new_worker_id,
    retrying,
)
from ai_employee.bus.work_codec import WireError
from ai_employee.config import Settings
from ai_employee.observability.logging import configure_logging, register_settings_secrets
from ai_employee.observability.stacks import install_stack_dump
from ai_employee.worker.handlers import StepHandlers
from ai_employee.worker.outcomes import Handler, JobInterrupted

log = structlog.get_logger(__name__)

#: the lease is a little shorter than `claim_idle`, so that a reclaimed message finds it expired
LEASE_SHARE = 0.8
#: how long one read waits for work: the longest a graceful stop waits for the reader
READ_BLOCK_MS = 250
#: the longest a stop waits for one client to close (or the worker's entry to be removed)
CLOSE_SECONDS = 2.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        steps: list[str],
        concurrency: int,
        namespace: str | None = None,
        handlers: dict[str, Handler] | None = None,
    ) -> None:
        """`handlers`: the work of steps given by the caller instead of the built-in ones (the
        benchmark's CPU-bound extractor); the others are built from the settings."""
        if not settings.redis.url:
            raise ValueError("a worker needs REDIS_URL (or redis.url in the config)")
        unknown = sorted(set(steps) - set(STEPS))
        if unknown:
            raise ValueError(f"unknown steps {', '.join(unknown)}; the steps are {', '.join(STEPS)}")
        if "transcribe" in steps and "transcribe" not in (handlers or {}):
            require_transcriber(settings)
        self.settings = settings
        self.bus = settings.bus
        self.namespace = namespace or settings.bus.namespace
        self.steps = steps
        self.concurrency = concurrency
        self.worker_id = new_worker_id()
        self.streams = RedisStreams(settings.redis.url, self.namespace)
        self.sync = connect_sync(settings.redis.url)
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self._step_handlers = StepHandlers(settings, self.streams, self.sync)
        self._running: dict[str, tuple[WorkMessage, int]] = {}  # entry id -> (message, token)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stop_now = asyncio.Event()
        self._closing = asyncio.Event()  # the heartbeat and reclaim loops end
        self.done = 0
        self.started = time.time()

    @property
    def lease_ms(self) -> int:
        return int(self.bus.claim_idle * LEASE_SHARE * 1000)

    @property
    def ttl_ms(self) -> int:
        return int(self.bus.result_ttl * 1000)

    def request_stop(self) -> None:
        """The first call: take no more work, finish what runs (up to `bus.stop_grace`). A second
        call (another SIGTERM, Ctrl-C again): stop at once, leaving what runs to be taken over."""
        if self._stopping.is_set():
            self._stop_now.set()
        self._stopping.set()
        self._slot_free.set()

    async def run(self) -> int:
        heartbeats = asyncio.create_task(self._heartbeats(), name="aie-worker-heartbeat")
        built = [step for step in self.steps if step not in self.handlers]
        self.handlers.update(await asyncio.to_thread(self._step_handlers.build, built))  # SDK imports
        await retrying(lambda: self.streams.ensure_work_groups(self.steps), what="create the stream groups")
        loops = [heartbeats, asyncio.create_task(self._reclaims(), name="aie-worker-reclaim")]
        log.info(
            "worker started",
            worker=self.worker_id,
            namespace=self.namespace,
            steps=self.steps,
            concurrency=self.concurrency,
        )
        try:
            await self._read()
            await self._finish_running()
        finally:
            # Not by cancellation alone: a cancellation that arrives inside a redis-py call can
            # come out as a ConnectionError, which these loops ride out, and they would go on.
            self._closing.set()
            await asyncio.wait(loops, timeout=CLOSE_SECONDS)
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            with contextlib.suppress(*TRANSIENT, TimeoutError):  # Redis away: the entry goes stale
                await asyncio.wait_for(self.streams.forget_worker(self.worker_id), CLOSE_SECONDS)
            for what, closing in (
                ("the step handlers", self._step_handlers.aclose()),
                ("redis", self.streams.close()),
            ):
                try:
                    await asyncio.wait_for(closing, CLOSE_SECONDS)
                except Exception as error:  # a stop is never held up by a client that will not close
                    log.warning("could not close cleanly", what=what, error=repr(error))
            self.sync.close()
            log.info("worker stopped", worker=self.worker_id, done=self.done)
        return 0

    async def _finish_running(self) -> None:
        """Graceful: what was taken is finished and answered, for up to `bus.stop_grace` seconds
        (or until a second stop request); what still runs then is cancelled and stays pending in
        its stream, to be taken over after `claim_idle` like the work of a worker that died."""
        if not self._tasks:
            return
        log.info(
            "worker stopping: finishing the jobs it runs", running=len(self._tasks), grace=self.bus.stop_grace
        )
        running = list(self._tasks)
        waiters = [
            asyncio.create_task(asyncio.wait(running)),  # all of them finished
            asyncio.create_task(self._stop_now.wait()),  # or told again to stop
        ]
        try:
            await asyncio.wait(waiters, timeout=self.bus.stop_grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        left = [task for task in running if not task.done()]
        if not left:
            return
        log.warning(
            "stopping with jobs unfinished: they are taken over after claim_idle",
            jobs=sorted(task.get_name() for task in left),
            claim_idle=self.bus.claim_idle,
        )
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=CLOSE_SECONDS)

    def _free(self) -> int:
        return self.concurrency - len(self._tasks)

    async def _read(self) -> None:
        while not self._stopping.is_set():
            free = self._free()
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                messages = await self._read_unless_stopped(free)
            except TRANSIENT as error:
                log.warning(
                    "redis unreachable; reading again shortly", error=str(error) or type(error).__name__
                )
                await self._pause(0.5)
                continue
            for message in messages:
                self._spawn(message)

    async def _read_unless_stopped(self, count: int) -> list[WorkMessage]:
        """One blocking read, given up when a stop is asked for meanwhile (a read waiting for a
        connection could otherwise hold the stop up): what it had taken stays pending, for
        another worker after `claim_idle`."""
        read = asyncio.create_task(
            self.streams.read_work(self.worker_id, self.steps, count=count, block_ms=READ_BLOCK_MS)
        )
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([read, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not read.done():
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, *TRANSIENT):
                await read
            return []
        return read.result()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _spawn(self, message: WorkMessage) -> None:
        task = asyncio.create_task(self._handle(message), name=f"job {message.job_key}")
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._slot_free.set()
            if not finished.cancelled() and finished.exception() is not None:
                log.error("job handling failed", job=message.job_key, error=repr(finished.exception()))

        task.add_done_callback(done)

    async def _handle(self, message: WorkMessage) -> None:
        bound = log.bind(job=message.job_key, step=message.step, entry=message.entry_id)
        handler = self.handlers.get(message.step)
        if handler is None or "_undecodable" in message.body or not message.job_key or not message.reply_to:
            await self._dead(message, "unreadable message" if handler else f"no handler for {message.step}")
            return
        acquired = await retrying(
            lambda: self.streams.acquire(message, lease_ms=self.lease_ms, ttl_ms=self.ttl_ms),
            what="take a lease",
        )
        if acquired.state == "done":
            assert acquired.stored is not None
            bound.info("answered from the stored result")
            await retrying(lambda: self.streams.resend(message, acquired.stored), what="resend a result")  # type: ignore[arg-type]
            await retrying(lambda: self.streams.ack_work(message), what="acknowledge")
            return
        if acquired.state == "busy":
            if acquired.holder != message.entry_id:  # a second copy of a job another worker runs
                await retrying(lambda: self.streams.ack_work(message), what="acknowledge")
            return  # this very message, its holder's lease not yet expired: taken over later
        token = acquired.token
        self._running[message.entry_id] = (message, token)
        try:
            try:
                kind, body = await handler(message, token)
            except WireError as error:
                await self._dead(message, str(error))
                return
            except JobInterrupted as error:  # left pending: taken over after claim_idle, journal intact
                bound.warning("the job is left for a retry", reason=str(error))
                return
            except Exception as error:  # a bug in the work: the daemon decides (template fallback, failed)
                bound.exception("the work raised")
                kind, body = "error", {"error": f"{type(error).__name__}: {error}"}
            finally:
                self._running.pop(message.entry_id, None)  # the lease ends with the answer
            sent = await retrying(
                lambda: self.streams.send(message, token, kind, body, ttl_ms=self.ttl_ms),
                what="send a result",
            )
            if not sent:
                bound.warning("the lease moved on while this ran: the result is not recorded", token=token)
            await retrying(lambda: self.streams.ack_work(message), what="acknowledge")
            self.done += 1
        finally:
            self._running.pop(message.entry_id, None)

    async def _dead(self, message: WorkMessage, note: str) -> None:
        log.warning(
            "dead letter", job=message.job_key, step=message.step, deliveries=message.deliveries, note=note
        )
        await retrying(
            lambda: self.streams.dead_letter(message, note, ttl_ms=self.ttl_ms), what="dead-letter"
        )

    async def _heartbeats(self) -> None:
        info = WorkerInfo(
            worker=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            steps=self.steps,
            heartbeat=time.time(),
            in_flight=0,
            started=self.started,
            concurrency=self.concurrency,
        )
        while not self._closing.is_set():
            try:
                running = list(self._running.values())
                if running:
                    await self.streams.touch(self.worker_id, [message for message, _ in running])
                    renewals = await asyncio.gather(
                        *(self.streams.renew(message, token, self.lease_ms) for message, token in running)
                    )
                    for (message, _), renewed in zip(running, renewals, strict=True):
                        if not renewed and message.entry_id in self._running:  # not just answered
                            log.warning("lease lost: another worker took the job over", job=message.job_key)
                info.heartbeat = time.time()
                info.in_flight = len(self._tasks)
                info.done = self.done
                await self.streams.heartbeat(info)
            except TRANSIENT as error:
                log.warning("heartbeat failed", error=str(error) or type(error).__name__)
            except Exception:
                log.exception("heartbeat failed")
            await self._wait_closing(self.bus.heartbeat_seconds)

    async def _reclaims(self) -> None:
        """Take over the jobs of dead workers. Not right after Redis was unreachable (or this loop
        stalled): then every running job looks idle, and their live workers first need a round
        of heartbeats to take their leases again."""
        interval = max(self.bus.claim_idle / 2, 0.05)
        min_idle_ms = int(self.bus.claim_idle * 1000)
        quiet_until = time.monotonic() + self.bus.claim_idle  # the others' heartbeats, after our start
        last = time.monotonic()
        while not self._closing.is_set():
            await self._wait_closing(interval)
            now = time.monotonic()
            if now - last > interval + 1.0:  # stalled: Redis was away, or this process was
                quiet_until = now + self.bus.claim_idle
            if now >= quiet_until:
                quiet_until = await self._reclaim_round(min_idle_ms, interval, quiet_until)
            last = time.monotonic()

    async def _reclaim_round(self, min_idle_ms: int, interval: float, quiet_until: float) -> float:
        """One round over the steps; returns until when to stay quiet."""
        for step in self.steps:
            free = self._free()
            if free <= 0 or self._stopping.is_set():
                break
            asked = time.monotonic()
            try:
                claimed = await self.streams.reclaim(
                    self.worker_id, step, min_idle_ms=min_idle_ms, count=free
                )
            except TRANSIENT:
                return time.monotonic() + self.bus.claim_idle
            except Exception:
                log.exception("reclaim failed", step=step)
                continue
            if time.monotonic() - asked > interval + 1.0:
                # The call waited for Redis to come back: what it took only looks idle. Left
                # alone, each returns to its live worker at that worker's next heartbeat.
                return time.monotonic() + self.bus.claim_idle
            for message in claimed:
                log.info("took over a job", job=message.job_key, deliveries=message.deliveries)
                if message.deliveries > self.bus.max_deliveries:
                    note = (
                        f"delivered {message.deliveries} times (bus.max_deliveries "
                        f"{self.bus.max_deliveries}): each worker that took it died "
                        "or lost Redis before answering"
                    )
                    self._spawn_dead(message, note)
                else:
                    self._spawn(message)
        return quiet_until

    def _spawn_dead(self, message: WorkMessage, note: str) -> None:
        task = asyncio.create_task(self._dead(message, note), name=f"dead-letter {message.job_key}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_free.set()


def require_transcriber(settings: Settings) -> None:
    """`transcribe` runs this worker's own engine: without one it would only fail, so it does not start."""
    from ai_employee.clients.whisper import transcription_configured

    if not transcription_configured(settings):
        raise ValueError(
            "transcribe needs OPENAI_API_KEY (or telegram.local_whisper_model with faster-whisper) "
            "on this worker; docs/distributed.md"
        )


def run_worker(settings: Settings, *, steps: list[str], concurrency: int, namespace: str | None) -> int:
    configure_logging(settings.logging.level, settings.logging.format)
    register_settings_secrets(settings)
    worker = Worker(settings, steps=steps, concurrency=concurrency, namespace=namespace)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.request_stop)
        install_stack_dump(loop)
        return await worker.run()

    return asyncio.run(main())
