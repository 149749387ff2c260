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
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        bare = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(calls):
            with timing.timer("bench.timer"):
                work()
        with_timer = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(calls):
            timed_work()
        decorated = time.perf_counter() - started
        for name, seconds in (("bare_us", bare), ("timer_us", with_timer), ("decorated_us", decorated)):
            best[name] = min(best.get(name, float("inf")), seconds / calls * 1e6)
    timing.bind(None)
    best["timer_overhead_us"] = best["timer_us"] - best["bare_us"]
    best["decorated_overhead_us"] = best["decorated_us"] - best["bare_us"]
    return best


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
    parser.add_argument("--timer-only", action="store_true")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"timer": timer_overhead()}
    print("timer overhead per call (µs):", json.dumps({k: round(v, 3) for k, v in report["timer"].items()}))
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
