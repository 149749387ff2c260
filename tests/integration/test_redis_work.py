"""Distributed work over Redis Streams, in one process: the daemon's side (`RedisWork`) and a
worker (`Worker`) against a real Redis on loopback, each test in a namespace of its own."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from ai_employee.bus.redis_streams import WORK_GROUP, RedisStreams
from ai_employee.bus.redis_work import RedisWork
from ai_employee.bus.work_codec import encode_plan_request, plan_job_key
from ai_employee.config import Settings, load_settings
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.observability.metrics import Metrics
from ai_employee.pipeline.work import InProcessWork
from ai_employee.planners.template import TemplatePlanner
from tests.conftest import skip_or_fail
from tests.fakes.redis_server import PrivateRedis

SHARED_REDIS = os.environ.get("AIE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        skip_or_fail(f"Redis is not reachable at {SHARED_REDIS}: {error}")
    finally:
        client.close()
    return SHARED_REDIS


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    name = f"i15-test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"aie:{{{name}}}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def make_settings(url: str, namespace: str, **bus: Any) -> Settings:
    overrides: dict[tuple[str, ...], Any] = {
        ("redis", "url"): url,
        ("bus", "namespace"): namespace,
        ("bus", "claim_idle"): 0.6,
        ("bus", "heartbeat_seconds"): 0.1,
        ("planner", "kind"): "template",
    }
    overrides.update({("bus", key): value for key, value in bus.items()})
    return load_settings(environ={}, overrides=overrides)


def request(action_id: str = "act-1", text: str = "Pump 3 on line 2 is leaking oil") -> PlanRequest:
    return PlanRequest(
        action_id=action_id,
        title=text,
        text=text,
        source="file",
        sender=None,
        received=datetime(2026, 12, 7, tzinfo=UTC),
        attachments=[],
        handbook="# Handbook",
        actions=[],
    )


def daemon_work(settings: Settings, metrics: Metrics | None = None) -> RedisWork:
    template = TemplatePlanner()

    def template_plan(plan_request: PlanRequest, reason: str) -> PlanProposal:
        return dataclasses.replace(template.plan_local(plan_request), fallback_reason=reason)

    assert settings.redis.url is not None
    return RedisWork(
        RedisStreams(settings.redis.url, settings.bus.namespace),
        settings.bus,
        daemon_id="test-daemon",
        local=InProcessWork(template),
        template_plan=template_plan,
        plan_remotely=True,
        metrics=metrics,
    )


@pytest.fixture
async def work(redis_url: str, namespace: str) -> AsyncIterator[RedisWork]:
    runner = daemon_work(make_settings(redis_url, namespace), Metrics(process_metrics=False))
    await runner.start()
    yield runner
    await runner.close()


class RunningWorker:
    def __init__(self, settings: Settings, steps: list[str]) -> None:
        from ai_employee.worker.service import Worker

        self.worker = Worker(settings, steps=steps, concurrency=4)
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> RunningWorker:
        self.task = asyncio.create_task(self.worker.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.worker.request_stop()
        assert self.task is not None
        assert await asyncio.wait_for(self.task, 10) == 0


async def test_a_plan_published_by_the_daemon_is_planned_by_a_worker_and_handed_back(
    work: RedisWork, redis_url: str, namespace: str
) -> None:
    async with RunningWorker(make_settings(redis_url, namespace), ["plan"]) as running:
        proposal = await asyncio.wait_for(work.plan(request()), 10)
    assert proposal.action and proposal.planner == "template" and proposal.fallback_reason is None
    assert running.worker.done == 1


async def test_a_dead_workers_job_is_taken_over_after_claim_idle(
    work: RedisWork, redis_url: str, namespace: str
) -> None:
    streams = RedisStreams(redis_url, namespace)
    planning = asyncio.create_task(work.plan(request()))
    # a worker that reads the job and dies before answering
    taken = await eventually_async(lambda: streams.read_work("ghost", ["plan"], count=1, block_ms=100))
    assert taken[0].job_key == plan_job_key(request())
    async with RunningWorker(make_settings(redis_url, namespace), ["plan"]):
        proposal = await asyncio.wait_for(planning, 10)
    assert proposal.fallback_reason is None
    assert (await streams.redis.xpending(streams.keys.work("plan"), WORK_GROUP))["pending"] == 0
    await streams.close()


async def test_a_late_worker_cannot_record_a_result_once_its_lease_moved_on(
    redis_url: str, namespace: str
) -> None:
    streams = RedisStreams(redis_url, namespace)
    await streams.ensure_work_groups(["plan"])
    reply = streams.keys.results("fence-test")
    await streams.ensure_group(reply, "daemon")
    await streams.publish("plan", "plan:act-1:x", reply, encode_plan_request(request()))
    (message,) = await streams.read_work("late", ["plan"], count=1, block_ms=100)
    late = await streams.acquire(message, lease_ms=60_000, ttl_ms=60_000)
    assert late.state == "ok"
    assert (await streams.acquire(message, lease_ms=60_000, ttl_ms=60_000)).state == "busy"
    await streams.redis.delete(streams.keys.lease("plan:act-1:x"))  # its lease lapsed: it stalled
    current = await streams.acquire(message, lease_ms=5_000, ttl_ms=60_000)
    assert current.state == "ok" and current.token > late.token
    assert await streams.send(message, current.token, "done", {"who": "current"}, ttl_ms=60_000)
    assert not await streams.send(message, late.token, "done", {"who": "late"}, ttl_ms=60_000)
    stored = await streams.stored_result("plan:act-1:x")
    assert stored is not None and stored.body == {"who": "current"} and stored.token == current.token
    results = await streams.read_results(reply, pending=False, block_ms=100)
    assert [result.body["who"] for result in results] == ["current"]
    await streams.close()


class StuckPlanner:
    """A plan step that never ends (a model call that hangs): a stopping worker must not wait forever."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def __call__(self, message: Any, token: int) -> tuple[str, dict[str, Any]]:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def _stuck_worker(settings: Settings) -> tuple[Any, StuckPlanner, asyncio.Task[int]]:
    from ai_employee.worker.service import Worker

    stuck = StuckPlanner()
    worker = Worker(settings, steps=["plan"], concurrency=1, handlers={"plan": stuck})
    running = asyncio.create_task(worker.run())
    return worker, stuck, running


async def test_a_stopping_worker_leaves_a_job_that_outlasts_stop_grace_to_another_worker(
    work: RedisWork, redis_url: str, namespace: str
) -> None:
    settings = make_settings(redis_url, namespace, stop_grace=0.3)
    worker, stuck, running = await _stuck_worker(settings)
    planning = asyncio.create_task(work.plan(request()))
    await asyncio.wait_for(stuck.started.wait(), 10)

    worker.request_stop()

    assert await asyncio.wait_for(running, 5) == 0
    assert not planning.done()
    async with RunningWorker(settings, ["plan"]) as other:
        proposal = await asyncio.wait_for(planning, 10)
    assert proposal.fallback_reason is None and other.worker.done == 1


async def test_a_second_stop_request_stops_a_worker_at_once(
    redis_url: str, namespace: str, work: RedisWork
) -> None:
    worker, stuck, running = await _stuck_worker(make_settings(redis_url, namespace, stop_grace=600))
    planning = asyncio.create_task(work.plan(request()))
    await asyncio.wait_for(stuck.started.wait(), 10)

    worker.request_stop()
    worker.request_stop()

    assert await asyncio.wait_for(running, 5) == 0
    planning.cancel()


async def test_a_job_published_again_is_answered_from_its_stored_result_without_running_twice(
    work: RedisWork, redis_url: str, namespace: str
) -> None:
    settings = make_settings(redis_url, namespace)
    async with RunningWorker(settings, ["plan"]) as running:
        first = await asyncio.wait_for(work.plan(request()), 10)
        second = await asyncio.wait_for(work.plan(request()), 10)  # a restarted daemon asks again
    assert first == second
    assert running.worker.done == 1


async def test_a_message_delivered_more_than_max_deliveries_goes_to_the_dead_letter_stream_with_a_note(
    redis_url: str, namespace: str
) -> None:
    settings = make_settings(redis_url, namespace, max_deliveries=1)
    runner = daemon_work(settings)
    await runner.start()
    streams = RedisStreams(redis_url, namespace)
    try:
        planning = asyncio.create_task(runner.plan(request()))
        await eventually_async(lambda: streams.read_work("ghost", ["plan"], count=1, block_ms=100))
        async with RunningWorker(settings, ["plan"]):
            proposal = await asyncio.wait_for(planning, 10)
        assert proposal.planner == "template"
        assert proposal.fallback_reason is not None and "dead" in proposal.fallback_reason
        total, dead = await streams.dead_letters()
        assert total == 1 and dead[0].step == "plan" and "delivered 2 times" in dead[0].note
        assert (await streams.redis.xpending(streams.keys.work("plan"), WORK_GROUP))["pending"] == 0
    finally:
        await runner.close()
        await streams.close()


async def test_trimming_drops_only_acknowledged_entries(redis_url: str, namespace: str) -> None:
    streams = RedisStreams(redis_url, namespace)
    await streams.ensure_work_groups(["plan"])
    for n in range(300):
        await streams.publish("plan", f"plan:{n}", "reply", {"n": n})
    read = await streams.read_work("w", ["plan"], count=200, block_ms=100)
    for message in read[:150]:
        await streams.ack_work(message)
    await streams.trim_acknowledged(streams.keys.work("plan"), WORK_GROUP, maxlen=100)
    left = await streams.redis.xrange(streams.keys.work("plan"))
    kept = {entry_id.decode() for entry_id, _ in left}
    assert {message.entry_id for message in read[150:]} <= kept, "pending entries stay"
    assert len(left) >= 150, "unread entries stay"
    assert len(left) < 300, "acknowledged entries go"
    await streams.close()


async def test_status_and_metrics_list_workers_stream_lag_and_dead_letters(
    work: RedisWork, redis_url: str, namespace: str
) -> None:
    streams = RedisStreams(redis_url, namespace)
    for n in range(3):
        await streams.publish("execute", f"execute:{n}", "reply", {})
    async with RunningWorker(make_settings(redis_url, namespace), ["plan"]):
        await eventually_async(lambda: streams.workers())
        await work._refresh_status()
        status = work.status()
        assert status is not None
        (worker,) = status["workers"]
        assert worker["up"] and worker["steps"] == ["plan"] and worker["pid"] == os.getpid()
        assert status["streams"]["execute"]["lag"] == 3
        assert status["dead_letters"]["count"] == 0
        assert work.metrics is not None
        text = work.metrics.lag.collect()[0].samples
        assert any(sample.labels == {"step": "execute"} and sample.value == 3 for sample in text)
        up = work.metrics.worker_up.collect()[0].samples
        assert [sample.value for sample in up] == [1.0]
    assert await streams.workers() == [], "a worker that stops leaves the list"
    await streams.close()


async def test_publishing_waits_while_redis_is_down_and_nothing_is_lost(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis").start()
    try:
        settings = make_settings(server.url, "restart")
        runner = daemon_work(settings)
        await runner.start()
        server.kill()
        planning = asyncio.create_task(runner.plan(request()))
        await asyncio.sleep(0.3)  # the publish is retrying against a dead server
        assert not planning.done()
        server.start()
        async with RunningWorker(settings, ["plan"]):
            proposal = await asyncio.wait_for(planning, 15)
        assert proposal.fallback_reason is None
        await runner.close()
    finally:
        server.stop()


async def eventually_async(call: Any, timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await call()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


async def test_at_most_max_in_flight_jobs_are_in_the_streams_and_the_rest_wait_in_the_daemon(
    redis_url: str, namespace: str
) -> None:
    runner = daemon_work(make_settings(redis_url, namespace, max_in_flight=2))
    await runner.start()
    try:
        waiting = [asyncio.create_task(runner.plan(request(f"act-{n}", f"text {n}"))) for n in range(5)]
        await eventually_async(lambda: runner.streams.redis.xlen(runner.streams.keys.work("plan")))
        await asyncio.sleep(0.2)  # the other three stay in the daemon however long we look
        assert await runner.streams.redis.xlen(runner.streams.keys.work("plan")) == 2
        async with RunningWorker(make_settings(redis_url, namespace), ["plan"]):
            proposals = await asyncio.wait_for(asyncio.gather(*waiting), 15)
        assert all(proposal.fallback_reason is None for proposal in proposals)
    finally:
        await runner.close()


async def test_an_unreadable_message_goes_to_the_dead_letter_stream_at_once(
    work: RedisWork, redis_url: str, namespace: str
) -> None:
    answer = asyncio.create_task(work.submit("plan", "plan:broken:1", {"action_id": "act-9"}))
    async with RunningWorker(make_settings(redis_url, namespace), ["plan"]):
        kind, body = await asyncio.wait_for(answer, 10)
    assert kind == "dead" and "unreadable plan request" in body["error"]
    total, dead = await work.streams.dead_letters()
    assert total == 1 and dead[0].deliveries == 1


def test_attachments_travel_inside_redis_when_small_and_through_the_shared_folder_when_large(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    from ai_employee.bus.redis_work import AttachmentTooLarge
    from ai_employee.bus.work_codec import RemoteJob
    from ai_employee.model.executor import ExecutionContext
    from ai_employee.model.jobs import ExecutionJob
    from ai_employee.worker.handlers import StepHandlers

    vault = tmp_path / "vault"
    (vault / "Attachments").mkdir(parents=True)
    small, large = vault / "Attachments" / "small.txt", vault / "Attachments" / "large.bin"
    small.write_bytes(b"small file")
    large.write_bytes(os.urandom(3000))
    shared = tmp_path / "shared"
    job = ExecutionJob(
        plan_id="plan-1",
        action_id="act-1",
        name="p.md",
        digest="d",
        properties={},
        body="",
        executor=None,  # type: ignore[arg-type]
        params=None,  # type: ignore[arg-type]
        attempt=1,
        attachments=["Attachments/small.txt", "Attachments/large.bin"],
    )
    ctx = ExecutionContext(
        plan_id="plan-1",
        action_id="act-1",
        vault_root=vault,
        live=True,
        journal=None,
        action_files=[small, large],  # type: ignore[arg-type]
    )

    async def round_trip() -> list[bytes]:
        settings = make_settings(redis_url, namespace, inline_attachment_bytes=1000, shared_path=str(shared))
        runner = daemon_work(settings)
        packed = runner._pack_attachments(job, ctx)
        assert [ref.where for ref, _ in packed] == ["blob", "shared"]
        await runner._store_blobs(packed)
        handlers = StepHandlers(settings, runner.streams, redis.Redis.from_url(redis_url))
        remote = RemoteJob("plan-1", "act-1", "x", {}, 1, True, False, attachments=[ref for ref, _ in packed])
        files = await handlers._materialize(remote, tmp_path / "scratch")
        assert vault not in files[0].parents, "the worker reads its own copy, not the vault"
        contents = [path.read_bytes() for path in files]
        await handlers.aclose()
        await runner.streams.close()
        return contents

    assert asyncio.run(round_trip()) == [b"small file", large.read_bytes()]
    without_share = daemon_work(make_settings(redis_url, namespace, inline_attachment_bytes=1000))
    with pytest.raises(AttachmentTooLarge, match=r"no bus\.shared_path"):
        without_share._pack_attachments(job, ctx)


def test_the_worker_command_refuses_to_start_without_redis_url() -> None:
    from click.testing import CliRunner

    from ai_employee.cli import main

    result = CliRunner().invoke(main, ["worker"], env={"REDIS_URL": "", "AIE_CONFIG": ""})
    assert result.exit_code != 0 and "needs REDIS_URL" in result.output




async def test_workers_silent_for_long_are_forgotten_with_their_idle_consumers(
    redis_url: str, namespace: str
) -> None:
    from ai_employee.bus.redis_streams import WorkerInfo

    streams = RedisStreams(redis_url, namespace)
    await streams.ensure_work_groups(["plan"])
    await streams.publish("plan", "plan:done", "reply", {})
    (message,) = await streams.read_work("killed-worker", ["plan"], count=1, block_ms=10)
    await streams.ack_work(message)  # a consumer with nothing pending
    silent = WorkerInfo("killed-worker", "host", 1, ["plan"], heartbeat=0.0, in_flight=0, started=0.0)
    await streams.heartbeat(silent)
    assert await streams.prune(["plan"], stale_seconds=0) == 1
    assert await streams.workers() == []
    assert await streams.redis.xinfo_consumers(streams.keys.work("plan"), WORK_GROUP) == []
    await streams.close()


def test_status_prints_the_workers_the_stream_lag_and_the_dead_letters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ai_employee.cli import _echo_distributed

    _echo_distributed(
        {
            "redis": "up",
            "namespace": "default",
            "in_flight": 3,
            "workers": [
                {
                    "host": "b1",
                    "pid": 7,
                    "up": True,
                    "steps": ["plan"],
                    "in_flight": 2,
                    "last_heartbeat": 0.4,
                },
                {
                    "host": "b2",
                    "pid": 9,
                    "up": False,
                    "steps": ["execute"],
                    "in_flight": 1,
                    "last_heartbeat": 95.0,
                },
            ],
            "streams": {"plan": {"lag": 4, "pending": 2}},
            "dead_letters": {
                "count": 1,
                "recent": [{"step": "plan", "job": "plan:a", "note": "delivered 6 times"}],
            },
        }
    )
    printed = capsys.readouterr().out
    assert "b1:7 up   steps plan, in flight 2, last heartbeat 0.4 s ago" in printed
    assert "b2:9 DOWN" in printed
    assert "stream plan     lag 4, pending 2" in printed
    assert "dead letters: 1" in printed and "delivered 6 times" in printed


def test_start_with_the_redis_backend_and_no_redis_url_says_so(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ai_employee.cli import main

    result = CliRunner().invoke(
        main, ["start", "--vault", str(tmp_path / "v")], env={"REDIS_URL": "", "AIE_BUS__BACKEND": "redis"}
    )
    assert result.exit_code != 0 and "REDIS_URL" in result.output


async def test_the_same_job_asked_twice_while_it_waits_for_a_slot_is_published_once(
    redis_url: str, namespace: str
) -> None:
    runner = daemon_work(make_settings(redis_url, namespace, max_in_flight=1))
    await runner.start()
    try:
        blocker = asyncio.create_task(runner.plan(request("act-0", "first")))
        twins = [asyncio.create_task(runner.plan(request("act-1", "same"))) for _ in range(2)]
        await eventually_async(lambda: runner.streams.redis.xlen(runner.streams.keys.work("plan")))
        async with RunningWorker(make_settings(redis_url, namespace), ["plan"]) as running:
            await asyncio.wait_for(asyncio.gather(blocker, *twins), 15)
        assert twins[0].result() == twins[1].result()
        assert await runner.streams.redis.xlen(runner.streams.keys.work("plan")) == 2
        assert running.worker.done == 2
    finally:
        await runner.close()


async def test_the_workers_service_reports_a_worker_that_died_and_jobs_nobody_takes(
    work: RedisWork, redis_url: str, namespace: str
) -> None:
    import time

    from ai_employee.bus.redis_streams import WorkerInfo
    from ai_employee.bus.worker_health import WorkersService

    service = WorkersService(work, work.settings)
    await work._refresh_status()
    assert (await service.health()).healthy, "no workers and nothing to do is fine"
    killed = WorkerInfo(
        "w-1", "build-01", 4242, ["plan"], heartbeat=time.time() - 20, in_flight=1, started=0.0
    )
    await work.streams.heartbeat(killed)
    await work.streams.publish("plan", "plan:waiting", work.results_stream, {})
    await work._refresh_status()
    report = await service.health()
    assert not report.healthy
    assert "worker build-01:4242 stopped heartbeating" in report.detail
    assert "no worker is up; 1 jobs wait" in report.detail


async def test_the_workers_service_reports_a_lag_over_the_alert_and_each_new_dead_letter(
    redis_url: str, namespace: str
) -> None:
    from ai_employee.bus.redis_streams import WorkerInfo
    from ai_employee.bus.worker_health import WorkersService

    runner = daemon_work(make_settings(redis_url, namespace, lag_alert=2))
    await runner.start()
    service = WorkersService(runner, runner.settings)
    try:
        alive = WorkerInfo("w-2", "build-02", 1, ["plan"], heartbeat=9e12, in_flight=0, started=0.0)
        await runner.streams.heartbeat(alive)
        await runner._refresh_status()
        assert (await service.health()).healthy
        for n in range(2):
            await runner.streams.publish("plan", f"plan:{n}", runner.results_stream, {})
        await runner._refresh_status()
        lagging = await service.health()
        assert not lagging.healthy and "plan lag 2 (bus.lag_alert 2)" in lagging.detail
        taken = await runner.streams.read_work("w-2", ["plan"], count=2, block_ms=10)
        for message in taken:
            await runner.streams.ack_work(message)
        await runner.streams.dead_letter(taken[0], "poison", ttl_ms=60_000)
        await runner._refresh_status()
        dead = await service.health()
        assert not dead.healthy and dead.detail == "1 new dead letter(s), 1 in all"
        await runner._refresh_status()
        assert (await service.health()).healthy, "an old dead letter is in status, not an alert"
    finally:
        await runner.close()
