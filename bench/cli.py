"""`python -m bench`: run the scenarios, print the table, write the JSON.

Exit status: 0 when every run was correct (every file yielded exactly one output, nothing
crashed); 1 when one was not; with `--strict`, also 1 when a speed target was missed. The smoke
run (`--smoke`) is small and judges correctness only: the test suite runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from bench.raw import measure_barriers, syncfs
from bench.results import (
    RunResult,
    ScenarioResult,
    figure_lines,
    filesystem,
    machine,
    revision,
    table,
    verdict_lines,
    write_json,
)
from bench.scenarios import FULL, SCENARIOS, SMOKE, Bench, Sizes
from bench.target import OWN_OUTPUT, TargetSpec

log = structlog.get_logger("bench")

RESULTS = Path(__file__).resolve().parent / "results"
_TABLE_METRICS = {
    "files",
    "completed",
    "seconds",
    "files_per_second",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "peak_rss_mb",
    "raw_files_per_second",
    "ratio_to_raw",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the vault pipeline (or any folder-watching program) on this machine.",
    )
    parser.add_argument("--smoke", action="store_true", help="small, quick run that checks correctness only")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per scenario but overload (default 3; smoke 1)"
    )
    parser.add_argument(
        "--overload-runs", type=int, default=None, help="runs of the overload scenario (default 3; smoke 1)"
    )
    parser.add_argument(
        "--scenario",
        "-s",
        action="append",
        choices=sorted(SCENARIOS),
        default=None,
        help="run only this scenario (repeatable); default: all",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS,
        help="where <timestamp>.json and profiles go (default: bench/results, gitignored)",
    )
    parser.add_argument(
        "--peer",
        default=None,
        metavar="COMMAND",
        help="time this program instead of ours; {vault} is replaced by the vault path, {python} by"
        " this Python; it runs in the current directory",
    )
    parser.add_argument(
        "--peer-output",
        default=None,
        metavar="GLOB",
        help=f"where the program's outputs appear (default: {OWN_OUTPUT}); wildcards in the file name only",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="AIE_VAULT__SETTLE_SECONDS for the daemon (default 2.0; smoke 0.3)",
    )
    parser.add_argument("--burst", type=int, default=None, help="files in the burst scenario")
    parser.add_argument("--overload", type=int, default=None, help="files in the overload scenario")
    parser.add_argument(
        "--large-notes", type=int, default=None, help="notes in Done/ in the large-vault scenario"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy to the program in the first run of burst, latency and large-vault;"
        " summaries printed, raw stacks in the results dir",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the temporary vaults go (default: the system temp dir)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the vaults (for a look afterwards)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a speed target is missed")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = SMOKE if args.smoke else FULL
    changes: dict[str, Any] = {}
    for field_name, value in (
        ("runs", args.runs),
        ("overload_runs", args.overload_runs),
        ("burst", args.burst),
        ("overload", args.overload),
        ("large_notes", args.large_notes),
        ("settle_seconds", args.settle),
    ):
        if value is not None:
            changes[field_name] = value
    return Sizes(**{**base.__dict__, **changes})


def configure_logging() -> None:
    """Progress to stderr, so that stdout carries the table alone."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def run(args: argparse.Namespace) -> int:
    sizes = sizes_from(args)
    spec = TargetSpec(
        command=args.peer,
        output=args.peer_output or OWN_OUTPUT,
        settle_seconds=sizes.settle_seconds,
    )
    try:
        program = spec.argv(Path("vault"))[0]
        spec.output_folder_and_pattern(Path("vault"))
    except (ValueError, IndexError) as error:
        log.error("bad --peer or --peer-output", error=str(error) or "empty command")
        return 2
    if shutil.which(program) is None:
        log.error("the program to time was not found", program=program)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="aie-bench-", dir=parent))
    profile_dir = None
    if args.profile:
        profile_dir = args.results_dir / f"{stamp}-profile"
        profile_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(sizes=sizes, spec=spec, workdir=workdir, profile_dir=profile_dir)
    started = time.monotonic()
    load_start = os.getloadavg()
    try:
        barriers = measure_barriers(workdir / "barriers")
        scenarios = run_scenarios(bench, args.scenario or list(SCENARIOS))
    finally:
        # Nothing is deleted before this point: a delete between timed phases slows the file
        # creates of the next minute on some filesystems (see bench/scenarios.py).
        if not args.keep:
            log.info("removing the bench files", workdir=str(workdir))
            shutil.rmtree(workdir, ignore_errors=True)
            # Written out now, the freed inodes count as recent for 60 s instead of up to 360 s:
            # a bench started a minute after this one finds the disk as fast as before it.
            syncfs(parent)
    document: dict[str, Any] = {
        "timestamp": stamp,
        "mode": "smoke" if sizes.smoke else "full",
        "program": spec.label,
        "output_glob": spec.output,
        "sizes": sizes.__dict__,
        "code": revision(RESULTS.parent.parent),
        "machine": machine(),
        "filesystem": filesystem(parent),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "barriers_ms": barriers,
        "seconds": round(time.monotonic() - started, 1),
        "scenarios": {result.name: result.as_dict() for result in scenarios},
        "correct": not any(result.problems for result in scenarios),
        "profile": bench.profiles,
    }
    sys.stdout.write(report(document, scenarios, bench) + "\n")
    sys.stdout.flush()
    paths = [args.results_dir / f"{stamp}.json"]
    if args.json is not None:
        paths.append(args.json)
    for path in paths:
        write_json(path, document)
    log.info("results written", files=[str(path) for path in paths])

    missed = [target for result in scenarios for target, _, met in result.verdicts() if met is False]
    if not document["correct"]:
        return 1
    if args.strict and missed and not sizes.smoke:
        return 1
    return 0


def run_scenarios(bench: Bench, names: list[str]) -> list[ScenarioResult]:
    """Each scenario `runs` times; one row per result name (latency also yields approval)."""
    scenarios: list[ScenarioResult] = []
    for name in names:
        scenario = SCENARIOS[name]
        rows: dict[str, list[RunResult]] = {}
        runs = scenario.runs(bench.sizes)
        for number in range(runs):
            log.info("running", scenario=name, run=number + 1, of=runs)
            load_before = os.getloadavg()[0]
            run_started = time.monotonic()
            for result in scenario.run(bench, number):
                result.figures["load_avg_1m"] = load_before
                rows.setdefault(result.scenario, []).append(result)
                if result.problems:
                    log.warning(
                        "problems", scenario=result.scenario, run=number + 1, problems=result.problems
                    )
            log.info("done", scenario=name, run=number + 1, seconds=round(time.monotonic() - run_started, 1))
        for row_name, row_runs in rows.items():
            scenarios.append(
                ScenarioResult(
                    name=row_name,
                    description=scenario.description,
                    runs=row_runs,
                    targets=scenario.targets.get(row_name, []),
                )
            )
    return scenarios


def report(document: dict[str, Any], scenarios: list[ScenarioResult], bench: Bench) -> str:
    """The text a person reads: what ran where, the table, the targets, problems, profiles."""
    sizes, spec, host, code = bench.sizes, bench.spec, document["machine"], document["code"]
    load_start, load_end = document["load_average"]["start"], document["load_average"]["end"]
    text = [
        "",
        f"program: {spec.label}   outputs: {spec.output}   mode: {document['mode']}   runs per scenario:"
        f" {sizes.runs} (overload {sizes.overload_runs})   took {document['seconds']:.0f} s",
        f"code: commit {code['commit']}{' + changes in src/' if code['src_changed'] else ''}",
        f"machine: {host['cpus']} CPUs ({host['cpu']}), {host['memory_gb']} GB, kernel {host['kernel']},"
        f" Python {host['python']}; load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end",
        "barriers now (medians): "
        + ", ".join(_barrier(name, value) for name, value in document["barriers_ms"].items()),
        "",
        table(scenarios),
        "",
        "targets (medians over runs):",
        *("  " + line for line in verdict_lines(scenarios, speed=not sizes.smoke)),
        "",
        "other figures (medians):",
        *("  " + line for line in figure_lines(scenarios, lambda name: name in _TABLE_METRICS)),
    ]
    if load_start[0] > (host["cpus"] or 1) * 0.5:  # at the end, the load is mostly the bench's own
        text += [
            "",
            "NOTE: other programs kept this machine busy when the run started (see the load average):"
            " figures are pessimistic and vary between runs.",
        ]
    problems = [f"{result.name}: {problem}" for result in scenarios for problem in result.problems]
    if problems:
        text += ["", "PROBLEMS:", *("  " + problem for problem in problems)]
    if bench.profile_texts:
        text += ["", *bench.profile_texts]
    return "\n".join(text)


def _barrier(name: str, value: float) -> str:
    if name.endswith("_us"):
        return f"{name.removesuffix('_us')} {value:.0f} µs"
    return f"{name.removesuffix('_ms')} {value:.2f} ms"


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (and SIGINT, even where a shell left it ignored) unwind like Ctrl-C: programs stopped,
    vaults removed."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:
        log.warning("interrupted: the programs under test were stopped and the vaults removed")
        return 130
