"""`python -m bench.distributed`: distributed work over Redis Streams (issue #15).

1. Scaling: jobs per second with 1, 2 and 4 `Worker` processes (one job at a time each), for
   - plan-bound work: a fake planner that answers after 100 ms (latency, no CPU);
   - CPU-bound work: a fake extractor that computes for about `--cpu-ms` on one core.
   Each job goes the real way: published by the daemon's `RedisWork`, read by a worker of the
   group, fenced, answered on the result stream, acknowledged.
2. The cost of Redis on the fast path: a burst of `--files` Inbox files through the real daemon
   (template planner, planned inline), in process and with `REDIS_URL` set, in the same run.

A private `redis-server` (AOF on) is started on a free port unless `--redis-url` is given.
Figures go to docs/performance.md; the JSON to bench/results/distributed-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ai_employee.bus.redis_streams import RedisStreams, WorkMessage
from ai_employee.bus.redis_work import RedisWork
from ai_employee.config import Settings, load_settings
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.pipeline.work import InProcessWork
from ai_employee.planners.template import TemplatePlanner

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = ("plan", "extract")


# --- the worker processes ------------------------------------------------------------------------


def burn(cpu_ms: float) -> int:
    """About `cpu_ms` of pure-Python work on one core (calibrated once per process)."""
    loops = int(cpu_ms * _LOOPS_PER_MS)
    total = 0
    for i in range(loops):
        total = (total + i * i) % 1_000_003
    return total


def _calibrate() -> float:
    started = time.perf_counter()
    loops = 200_000
    total = 0
    for i in range(loops):
        total = (total + i * i) % 1_000_003
    return loops / ((time.perf_counter() - started) * 1000)


_LOOPS_PER_MS = 0.0


def worker_main(args: argparse.Namespace) -> int:
    global _LOOPS_PER_MS
    from ai_employee.worker.service import Worker

    _LOOPS_PER_MS = float(args.loops_per_ms) or _calibrate()

    async def fake_plan(message: WorkMessage, token: int) -> tuple[str, dict[str, Any]]:
        await asyncio.sleep(args.plan_ms / 1000)
        return "done", {"action": "vault.note", "summary": message.body.get("title", "")}

    async def fake_extract(message: WorkMessage, token: int) -> tuple[str, dict[str, Any]]:
        return "done", {"title": message.body.get("name", ""), "text": str(burn(args.cpu_ms))}

    settings = _settings(args.redis_url, args.namespace)
    worker = Worker(
        settings,
        steps=list(STEPS),
        concurrency=1,
        handlers={"plan": fake_plan, "extract": fake_extract},
    )

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.request_stop)
        return await worker.run()

    return asyncio.run(main())


def _settings(url: str, namespace: str) -> Settings:
    overrides: dict[tuple[str, ...], Any] = {
        ("redis", "url"): url,
        ("bus", "namespace"): namespace,
        ("bus", "heartbeat_seconds"): 0.5,
        ("planner", "kind"): "template",
        ("logging", "level"): "warning",
    }
    return load_settings(environ={}, overrides=overrides)


# --- scaling ---------------------------------------------------------------------------------------


async def _scaling_run(
    url: str, step: str, workers: int, jobs: int, args: argparse.Namespace, loops_per_ms: float
) -> float:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    settings = _settings(url, namespace)
    template = TemplatePlanner()

    def template_plan(request: PlanRequest, reason: str) -> PlanProposal:
        return template.plan_local(request)

    work = RedisWork(
        RedisStreams(url, namespace),
        settings.bus,
        daemon_id="bench",
        local=InProcessWork(template),
        template_plan=template_plan,
        plan_remotely=True,
    )
    await work.start()
    await work.streams.ensure_work_groups(list(STEPS))
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.distributed",
                "worker",
                "--redis-url",
                url,
                "--namespace",
                namespace,
                "--plan-ms",
                str(args.plan_ms),
                "--cpu-ms",
                str(args.cpu_ms),
                "--loops-per-ms",
                str(loops_per_ms),
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(await work.streams.workers()) < workers:  # started and heartbeating
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # their SDK imports are over before the clock starts
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(
                work.submit(step, f"{step}:{n}", {"name": f"file-{n}", "title": f"item {n}"})
                for n in range(jobs)
            )
        )
        seconds = time.perf_counter() - started
        assert all(kind == "done" for kind, _ in answers), "every job answered"
        return jobs / seconds
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
        await work.close()
        cleaner = RedisStreams(url, namespace)
        keys = [key async for key in cleaner.redis.scan_iter(match=f"aie:{{{namespace}}}:*", count=1000)]
        if keys:
            await cleaner.redis.delete(*keys)
        await cleaner.close()


def _burn_jobs(jobs: int, cpu_ms: float, loops_per_ms: float) -> None:
    global _LOOPS_PER_MS
    _LOOPS_PER_MS = loops_per_ms
    for _ in range(jobs):
        burn(cpu_ms)


def raw_parallelism(jobs: int, cpu_ms: float, loops_per_ms: float) -> dict[int, float]:
    """The same CPU work in 1, 2 and 4 plain processes, no Redis: what the machine gives right now
    (other programs share its cores), the ceiling for the workers' figures."""
    import multiprocessing

    rates: dict[int, float] = {}
    for processes in (1, 2, 4):
        started = time.perf_counter()
        pool = [
            multiprocessing.Process(target=_burn_jobs, args=(jobs // processes, cpu_ms, loops_per_ms))
            for _ in range(processes)
        ]
        for process in pool:
            process.start()
        for process in pool:
            process.join()
        rates[processes] = jobs / (time.perf_counter() - started)
        print(f"raw CPU  {processes} process(es): {rates[processes]:8.1f} jobs/s", flush=True)
    return rates


def scaling(url: str, args: argparse.Namespace) -> dict[str, Any]:
    loops_per_ms = _calibrate()
    found: dict[str, Any] = {}
    raw = raw_parallelism(args.cpu_jobs, args.cpu_ms, loops_per_ms)
    found["raw_cpu"] = {"jobs_per_second": raw, "speedup_2": raw[2] / raw[1], "speedup_4": raw[4] / raw[1]}
    for step, jobs in (("plan", args.plan_jobs), ("extract", args.cpu_jobs)):
        rates = {}
        for workers in (1, 2, 4):
            rates[workers] = asyncio.run(_scaling_run(url, step, workers, jobs, args, loops_per_ms))
            print(f"{step:<8} {workers} worker(s): {rates[workers]:8.1f} jobs/s", flush=True)
        found[step] = {
            "jobs": jobs,
            "jobs_per_second": rates,
            "speedup_2": rates[2] / rates[1],
            "speedup_4": rates[4] / rates[1],
        }
    return found


# --- the fast path -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def burst(files: int, redis_url: str | None, root: Path) -> float:
    """Seconds from the first file renamed into Inbox/ to the last plan written."""
    vault = root / ("vault-redis" if redis_url else "vault-inprocess")
    for folder in ("Inbox", "Needs_Action", "Plans", "Approved", "Rejected", "Done", "Failed", "Logs"):
        (vault / folder).mkdir(parents=True, exist_ok=True)
    (vault / "Company_Handbook.md").write_text("# Handbook\n")
    staging = root / f"staging-{vault.name}"
    staging.mkdir()
    for n in range(files):
        (staging / f"note-{n:05d}.txt").write_text(f"Please check pump {n} on line 2\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIE_", "REDIS"))}
    env.update({"AIE_PLANNER": "template", "AIE_LOGGING__LEVEL": "warning"})
    if redis_url:
        env.update({"REDIS_URL": redis_url, "AIE_BUS__NAMESPACE": f"bench-{uuid.uuid4().hex[:8]}"})
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ai_employee", "start", "--vault", str(vault), "--port", str(_free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        info_path = vault / ".ai-employee" / "daemon.json"
        deadline = time.monotonic() + 60
        while True:
            try:
                port = json.loads(info_path.read_text())["port"]
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not become ready")
            time.sleep(0.05)  # another process coming up: nothing to wait on
        started = time.perf_counter()
        for entry in sorted(staging.iterdir()):
            os.rename(entry, vault / "Inbox" / entry.name)
        plans = vault / "Plans"
        deadline = time.monotonic() + 600
        while sum(1 for _ in os.scandir(plans)) < files:
            if time.monotonic() > deadline:
                raise RuntimeError("the burst did not finish")
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)


# --- main ------------------------------------------------------------------------------------------


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; pass --redis-url")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, url
        except OSError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="all", choices=["all", "scaling", "fast-path", "worker"])
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--namespace", default="bench")
    parser.add_argument("--plan-ms", type=float, default=100.0)
    parser.add_argument("--cpu-ms", type=float, default=50.0)
    parser.add_argument("--loops-per-ms", type=float, default=0.0)
    parser.add_argument("--plan-jobs", type=int, default=200)
    parser.add_argument("--cpu-jobs", type=int, default=200)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.mode == "worker":
        return worker_main(args)
    root = Path(tempfile.mkdtemp(prefix="aie-bench-distributed-"))
    redis_process = None
    url = args.redis_url
    if url is None:
        (root / "redis").mkdir()
        redis_process, url = _start_redis(root / "redis")
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "plan_ms": args.plan_ms,
        "cpu_ms": args.cpu_ms,
    }
    try:
        if args.mode in ("all", "scaling"):
            results["scaling"] = scaling(url, args)
        if args.mode in ("all", "fast-path"):
            inprocess = burst(args.files, None, root)
            print(f"burst of {args.files}: in process {inprocess:6.2f} s", flush=True)
            with_redis = burst(args.files, url, root)
            print(f"burst of {args.files}: with Redis {with_redis:6.2f} s", flush=True)
            results["fast_path"] = {
                "files": args.files,
                "inprocess_seconds": inprocess,
                "redis_seconds": with_redis,
                "inprocess_files_per_second": args.files / inprocess,
                "redis_files_per_second": args.files / with_redis,
            }
    finally:
        if redis_process is not None:
            redis_process.send_signal(signal.SIGTERM)
            redis_process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"distributed-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
