"""Issue 15 end to end: a daemon and three `ai-employee worker` processes over a private Redis (AOF
on), Claude and Atlas on loopback fakes. Planning (100 ms per model call) and live Atlas runs
happen on the workers; the daemon commits. Workers are SIGKILLed five times and restarted, the
daemon is SIGKILLed once, Redis is restarted once: afterwards every item has exactly one plan,
every approved plan exactly one execution (audit lines and Atlas work orders), and no stream
holds a pending entry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import DaemonProcess, audit_lines, drop, notes, wait_for
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.atlas_server import threaded_atlas_with_pump
from tests.fakes.redis_server import PrivateRedis
from tests.fakes.threaded import ThreadedFake

API_KEY = "sk-ant-test-0123456789abcdef"
EMAIL = "admin@example.com"
PASSWORD = "s3cret-pass"
ITEMS = 300


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def claude() -> Iterator[ThreadedFake]:
    threaded = ThreadedFake(AnthropicFake(api_key=API_KEY))
    threaded.start()
    threaded.call(threaded.fake.inject, "POST", "/v1/messages", delay=0.1, times=1_000_000)
    yield threaded
    threaded.stop()


@pytest.fixture
def atlas() -> Iterator[ThreadedFake]:
    with threaded_atlas_with_pump(EMAIL, PASSWORD) as threaded:
        yield threaded


def distributed_env(
    env: dict[str, str], redis_server: PrivateRedis, claude: ThreadedFake, atlas: ThreadedFake
) -> dict[str, str]:
    return {
        **env,
        "REDIS_URL": redis_server.url,
        "AIE_BUS__NAMESPACE": f"i15-{uuid.uuid4().hex[:8]}",
        "AIE_BUS__CLAIM_IDLE": "5",
        "AIE_BUS__HEARTBEAT_SECONDS": "0.25",
        "AIE_PLANNER": "claude",
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": claude.fake.base_url,
        "AIE_PLANNER__MAX_RETRIES": "0",
        "AIE_PLANNER__TIMEOUT_SECONDS": "5",
        "ATLAS_BASE_URL": atlas.fake.base_url,
        "ATLAS_EMAIL": EMAIL,
        "ATLAS_PASSWORD": PASSWORD,
        "AIE_EXECUTION__AUTO_APPROVE": '["atlas.work_order"]',
        "AIE_LOGGING__LEVEL": "warning",
    }


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ai_employee", "worker", "--concurrency", "16"],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # what it waits on, into its log
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)
            self.kill()
            tail = self.log_path.read_text(errors="replace")[-6000:]
            raise AssertionError(
                f"the worker did not stop within 30 s of SIGTERM; its log ends:\n{tail}"
            ) from None


def _created(vault: Path) -> list[dict[str, Any]]:
    return [line for line in audit_lines(vault) if line["event"] == "plan.created"]


def _executed(vault: Path) -> list[dict[str, Any]]:
    return [line for line in audit_lines(vault) if line["event"] in ("plan.executed", "plan.failed")]


def _status(daemon: DaemonProcess) -> dict[str, Any]:
    """`GET /status`, what `ai-employee status --json` prints."""
    info = daemon.info() or {}
    try:
        data: dict[str, Any] = httpx.get(f"http://127.0.0.1:{info['port']}/status", timeout=5).json()
    except (KeyError, ValueError, httpx.HTTPError):
        return {}
    return data


def _workers_up(daemon: DaemonProcess) -> list[dict[str, Any]]:
    workers = (_status(daemon).get("distributed") or {}).get("workers", [])
    return [worker for worker in workers if worker["up"]]


def _approve_waiting(vault: Path) -> None:
    """Plans the daemon wrote but did not get to auto-approve before it was killed: a human moves
    them to Approved/, as in Obsidian."""
    for plan in notes(vault / "Plans"):
        os.rename(plan, vault / "Approved" / plan.name)


def test_chaos_every_item_planned_once_and_every_approved_plan_executed_once(
    vault: Path,
    daemon_env: dict[str, str],
    private_redis: PrivateRedis,
    claude: ThreadedFake,
    atlas: ThreadedFake,
    tmp_path: Path,
) -> None:
    env = distributed_env(daemon_env, private_redis, claude, atlas)
    rng = random.Random(15)
    # The daemon has no model key: a Claude plan can only come from a worker.
    daemon_only = {key: value for key, value in env.items() if key != "ANTHROPIC_API_KEY"}
    daemon = DaemonProcess(vault, daemon_only, ["--live"]).start()
    workers = [WorkerProcess(env, tmp_path / f"worker-{n}.log").start() for n in range(3)]
    try:
        up = wait_for(
            lambda: len(found := _workers_up(daemon)) == 3 and found,
            message="three workers in the daemon's status",
            timeout=60,
        )
        assert all(worker["steps"] == ["extract", "plan", "execute"] for worker in up)
        metrics = httpx.get(f"http://127.0.0.1:{daemon.info()['port']}/metrics").text  # type: ignore[index]
        assert 'aie_stream_lag{step="plan"}' in metrics and "aie_worker_up{" in metrics
        for n in range(ITEMS):
            drop(vault, f"item-{n:03d}.txt", f"Pump 3 on line 2 is leaking oil, ticket {n}, please fix")
        # Chaos at moments picked by progress (plans created so far), each a little random.
        moments = sorted(
            [(rng.randint(20, 260), "worker") for _ in range(5)]
            + [(rng.randint(60, 200), "daemon"), (rng.randint(100, 240), "redis")]
        )
        for threshold, what in moments:
            wait_for(lambda t=threshold: len(_created(vault)) >= t, timeout=120, message=f"{threshold} plans")
            if what == "worker":
                victim = rng.randrange(len(workers))
                workers[victim].kill()
                workers[victim] = WorkerProcess(env, tmp_path / f"worker-{victim}.log").start()
            elif what == "daemon":
                daemon.kill()
                daemon.start()
            else:
                private_redis.restart()
        wait_for(
            lambda: len({line["action_id"] for line in _created(vault)}) >= ITEMS,
            timeout=120,
            message="plans",
        )
        _approve_waiting(vault)
        wait_for(
            lambda: len({line["id"] for line in _executed(vault)}) >= ITEMS, timeout=120, message="executions"
        )
        for worker in workers:
            assert worker.terminate() == 0
        daemon.terminate()

        created = Counter(line["action_id"] for line in _created(vault))
        assert len(created) == ITEMS and set(created.values()) == {1}, "one plan per item"
        assert {line["planner"] for line in _created(vault)} == {"claude:claude-sonnet-4-6"}
        executed = _executed(vault)
        assert all(line["event"] == "plan.executed" and line["dry_run"] is False for line in executed)
        runs = Counter(line["id"] for line in executed)
        assert len(runs) == ITEMS and set(runs.values()) == {1}, "one execution per approved plan"
        orders = atlas.call(lambda: list(atlas.fake.work_orders.values()))  # type: ignore[attr-defined]
        per_plan = Counter(
            next(plan_id for plan_id in runs if plan_id in str(order.get("description"))) for order in orders
        )
        assert len(orders) == ITEMS and set(per_plan.values()) == {1}, "one Atlas work order per plan"
        client = redis.Redis.from_url(private_redis.url)
        namespace = env["AIE_BUS__NAMESPACE"]
        for step in ("plan", "execute"):
            assert client.xpending(f"aie:{{{namespace}}}:work:{step}", "workers")["pending"] == 0
        client.close()
    finally:
        for worker in workers:
            worker.kill()
        daemon.kill()


async def test_a_worker_that_wakes_up_after_its_job_was_taken_over_records_nothing(
    private_redis: PrivateRedis, claude: ThreadedFake, atlas: ThreadedFake, tmp_path: Path
) -> None:
    """The worker that took the job is stopped (SIGSTOP: a GC pause, a suspended VM) in the middle
    of its model call; the other takes the job over after `claim_idle` and answers; the first wakes
    up, gets its answer from the model, and its result is refused by the fence: the daemon sees
    one result, the second worker's."""
    from ai_employee.bus.redis_streams import RedisStreams
    from ai_employee.bus.work_codec import plan_job_key
    from tests.integration.test_redis_work import daemon_work, make_settings, request

    env = distributed_env(dict(os.environ), private_redis, claude, atlas)
    env["AIE_BUS__CLAIM_IDLE"] = "1"
    env["AIE_PLANNER__TIMEOUT_SECONDS"] = "60"
    settings = make_settings(private_redis.url, env["AIE_BUS__NAMESPACE"], claim_idle=1.0)
    runner = daemon_work(settings)
    await runner.start()
    claude.call(claude.fake.faults.clear)
    claude.call(claude.fake.inject, "POST", "/v1/messages", delay=2.0, times=1)  # the first call is slow
    workers = [WorkerProcess(env, tmp_path / f"worker-{n}.log").start() for n in range(2)]
    streams = RedisStreams(private_redis.url, env["AIE_BUS__NAMESPACE"])
    try:
        while len(await streams.workers()) < 2:  # both up before the job is published
            await asyncio.sleep(0.05)
        planning = asyncio.create_task(runner.plan(request()))
        await asyncio.to_thread(
            wait_for, lambda: claude.call(lambda: len(claude.fake.requests)) >= 1, 30, "a call to the model"
        )
        (entry,) = await streams.redis.xpending_range(streams.keys.work("plan"), "workers", "-", "+", 1)
        holder = int(entry["consumer"].decode().split("-")[-2])  # <host>-<pid>-<n>
        sleeper = next(worker for worker in workers if worker.process and worker.process.pid == holder)
        assert sleeper.process is not None
        sleeper.process.send_signal(signal.SIGSTOP)
        proposal = await asyncio.wait_for(planning, 60)
        assert proposal.cost_usd, "the proposal came from the other worker's model call"
        sleeper.process.send_signal(signal.SIGCONT)
        await asyncio.to_thread(
            wait_for,
            lambda: "the result is not recorded" in sleeper.log_path.read_text(),
            30,
            "a refused result",
        )
        stored = await streams.stored_result(plan_job_key(request()))
        assert stored is not None and stored.token == 2, "the second token is the one recorded"
        answers = await streams.redis.xrange(runner.results_stream)
        assert len(answers) == 1, "one result reached the daemon"
    finally:
        for worker in workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)
            worker.kill()
        await streams.close()
        await runner.close()
