"""`python -m bench.store`: what the audit store costs.

1. A 10,000-file burst (bench/scenarios.py `run_burst`: first drop -> 10,000th plan note, against
   the raw limit measured around it) with the store off, on SQLite (the default) and on
   PostgreSQL (a database of its own on `--postgres`, created and dropped), the three interleaved
   run by run so that the machine's drift falls on each alike. The target: each store within 10%
   of the burst with the store off (compared as the ratio to the raw limit of the same run).
2. The timer's own cost per call (observability/timing.py), bound to a Prometheus histogram as
   the daemon binds it: `with timer(...)`, a `@timed_operation` function and a bare call. The
   target: at most 5 µs per call.

    python -m bench.store                 # 3 runs of each, 10,000 files
    python -m bench.store --runs 1 --burst 2000 --postgres postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scenarios import FULL, Bench, Sizes, run_burst
from bench.target import TargetSpec


def timer_overhead(calls: int = 200_000) -> dict[str, float]:
    """Microseconds per call: a bare call, the same under `timer()`, and a decorated one."""
    from ai_employee.observability import timing
    from ai_employee.observability.metrics import Metrics

    metrics = Metrics(process_metrics=False)
    timing.bind(metrics.operation_duration_seconds)

    def work() -> int:
        return 1

    timed_work = timing.timed_operation("bench.decorated")(work)
    best: dict[str, float] = {}
    clock = time.thread_time  # CPU of this thread: what a shared, loaded machine leaves steady
    for _ in range(5):
        started = clock()
        for _ in range(calls):
            work()
        bare = clock() - started
        started = clock()
        for _ in range(calls):
            with timing.timer("bench.timer"):
                work()
        with_timer = clock() - started
        started = clock()
        for _ in range(calls):
            timed_work()
        decorated = clock() - started
        for name, seconds in (("bare_us", bare), ("timer_us", with_timer), ("decorated_us", decorated)):
            best[name] = min(best.get(name, float("inf")), seconds / calls * 1e6)
    timing.bind(None)
    best["timer_overhead_us"] = best["timer_us"] - best["bare_us"]
    best["decorated_overhead_us"] = best["decorated_us"] - best["bare_us"]
    return best


def store_cpu(url: str | None, items: int = 10_000) -> dict[str, float]:
    """CPU seconds of the daemon's threads for the store's share of a burst of `items` files: the
    loop's handler (queue the event), the writer's thread (events into records, batches written).
    CPU time, unlike wall time, hardly moves with the load of a shared machine."""
    from datetime import UTC, datetime

    from ai_employee.model.events import Event, EventType
    from ai_employee.store.database import open_store
    from ai_employee.store.recorder import records_for
    from ai_employee.store.writer import BATCH_MAX, StoreWriter

    with tempfile.TemporaryDirectory(prefix="aie-bench-store-cpu-") as folder:
        engine = open_store(url, Path(folder))
        writer = StoreWriter(engine, Path(folder) / "spool.jsonl")
        events: list[Event] = []
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        for number in range(items):
            action_id = f"act-{stamp}-{number:06x}"
            plan_id = "plan-" + action_id.removeprefix("act-")
            events.append(
                Event(
                    EventType.ACTION_CREATED,
                    {
                        "action_id": action_id,
                        "source": "file",
                        "source_ref": f"burst-{number}.txt",
                        "title": f"Burst note {number}",
                        "note": f"Needs_Action/{action_id}.md",
                    },
                    action_id,
                )
            )
            events.append(
                Event(
                    EventType.PLAN_CREATED,
                    {
                        "plan_id": plan_id,
                        "action_id": action_id,
                        "action": "vault.note",
                        "risk": "low",
                        "planner": "template",
                        "note": f"Plans/{plan_id}.md",
                        "source": "file",
                        "title": f"Burst note {number}",
                    },
                    action_id,
                )
            )
        queued = time.thread_time()
        for event in events:  # the loop's side: one put per event
            writer.submit_raw(event)
        loop_cpu = time.thread_time() - queued
        started = time.thread_time()
        records = [record for event in events for record in records_for(event)]
        translate_cpu = time.thread_time() - started
        started = time.thread_time()
        for first in range(0, len(records), BATCH_MAX):
            writer._write(records[first : first + BATCH_MAX])
        write_cpu = time.thread_time() - started
        engine.dispose()
    return {
        "items": items,
        "loop_cpu_s": loop_cpu,
        "translate_cpu_s": translate_cpu,
        "write_cpu_s": write_cpu,
        "store_cpu_s": loop_cpu + translate_cpu + write_cpu,
    }


def _own_database(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = "aie_bench_" + secrets.token_hex(4)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return name, admin_url.rsplit("/", 1)[0] + "/" + name


def _drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def burst(label: str, env: dict[str, str], sizes: Sizes, workdir: Path, run: int) -> dict[str, Any]:
    bench = Bench(sizes=sizes, spec=TargetSpec(settle_seconds=sizes.settle_seconds, env=env), workdir=workdir)
    results = run_burst(bench, run)
    daemon = results[-1]
    return {
        "store": label,
        "run": run,
        "completed": daemon.completed,
        "files": daemon.files,
        "files_per_second": daemon.files_per_second,
        "ratio_to_raw": daemon.ratio_to_raw,
        "problems": daemon.problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burst", type=int, default=FULL.burst)
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="an admin URL of a PostgreSQL server ('' to leave PostgreSQL out)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--timer-only", action="store_true", help="only the timer and the store's CPU")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"timer": timer_overhead()}
    print("timer overhead per call (µs):", json.dumps({k: round(v, 3) for k, v in report["timer"].items()}))
    report["cpu"] = {"sqlite": store_cpu(None)}
    if args.postgres:
        name, url = _own_database(args.postgres)
        try:
            report["cpu"]["postgresql"] = store_cpu(url)
        finally:
            _drop_database(args.postgres, name)
    print("store CPU for a 10,000-file burst (s):", json.dumps(report["cpu"]))
    if not args.timer_only:
        sizes = Sizes(**{**FULL.__dict__, "runs": args.runs, "burst": args.burst})
        runs: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="aie-bench-store-") as workdir:
            for run in range(1, args.runs + 1):
                configs: list[tuple[str, dict[str, str], str | None]] = [
                    ("off", {"AIE_DATABASE__STORE": "false"}, None),
                    ("sqlite", {}, None),
                ]
                if args.postgres:
                    name, url = _own_database(args.postgres)
                    configs.append(("postgresql", {"DATABASE_URL": url}, name))
                for label, env, database in configs:
                    try:
                        outcome = burst(label, env, sizes, Path(workdir) / label, run)
                    finally:
                        if database:
                            _drop_database(args.postgres, database)
                    runs.append(outcome)
                    print(json.dumps(outcome), flush=True)
        report["bursts"] = runs
        report["summary"] = {}
        for label in ("off", "sqlite", "postgresql"):
            ratios = [
                item["ratio_to_raw"] for item in runs if item["store"] == label and item["ratio_to_raw"]
            ]
            rates = [
                item["files_per_second"]
                for item in runs
                if item["store"] == label and item["files_per_second"]
            ]
            if ratios:
                report["summary"][label] = {
                    "median_files_per_second": statistics.median(rates),
                    "median_ratio_to_raw": statistics.median(ratios),
                }
        off = report["summary"].get("off", {}).get("median_ratio_to_raw")
        for figures in report["summary"].values():
            if off:
                figures["vs_off"] = figures["median_ratio_to_raw"] / off
        print(json.dumps(report["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
