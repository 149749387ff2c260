"""The scenarios of issue 3, each run on a fresh vault with a freshly started program.

- burst: N files renamed into Inbox/ at once; first drop -> N-th output, against the raw limit
  measured in the same run.
- latency: single files dropped 50 ms apart into an idle program; drop -> its output. Then (our
  daemon only) plans moved to Approved/ one at a time; move -> the plan in Done/.
- large-vault: a vault with a long history in Done/ (and the ledger) and files waiting in
  Inbox/ before the start; start -> ready, -> first output, -> all; then single drops again, to
  show that nothing costs O(vault) per event.
- overload: a burst larger than the inotify queue; every file must be planned exactly once.

Nothing is deleted between timed phases (but the few thousand files a large-vault run leaves for
the next one: `_large_vault`): every run's folder, and the raw limit's, stays until the bench
ends, when bench/cli.py removes the workdir as a whole. On ext4 without a journal, the inode
allocator scans past every free inode deleted in the last minute on each file create
(`recently_deleted()` in fs/ext4/ialloc.c), so for about a minute after a mass delete a create
costs 100-600 µs instead of ~20 µs, and a phase timed in that window measures the delete.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bench import profile as profiling
from bench.drops import (
    FOLDERS,
    NOTE_TEXT,
    STAGING,
    Dropped,
    Dropper,
    fill_done,
    fill_ledger_only,
    index_of,
    make_vault,
)
from bench.inotify import IN_CREATE, IN_MOVED_TO, Arrivals, now_ns
from bench.raw import measure_raw_limit
from bench.results import RunResult, Target
from bench.target import Running, TargetSpec, overflow_lines, start

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: the issue's figures for the full run, small ones for the smoke run."""

    smoke: bool
    runs: int
    burst: int
    latency_drops: int
    latency_interval: float
    approvals: int
    large_notes: int
    large_inbox: int
    large_drops_after: int
    overload: int
    overload_runs: int
    settle_seconds: float


FULL = Sizes(
    smoke=False,
    runs=3,
    burst=10_000,
    latency_drops=200,
    latency_interval=0.05,
    approvals=100,
    large_notes=100_000,
    large_inbox=1_000,
    large_drops_after=40,
    overload=60_000,
    overload_runs=3,
    settle_seconds=2.0,
)
SMOKE = Sizes(
    smoke=True,
    runs=1,
    burst=300,
    latency_drops=20,
    latency_interval=0.05,
    approvals=5,
    large_notes=2_000,
    large_inbox=100,
    large_drops_after=5,
    overload=1_500,
    overload_runs=1,
    settle_seconds=0.3,
)


@dataclass
class Bench:
    sizes: Sizes
    spec: TargetSpec
    workdir: Path
    profile_dir: Path | None = None
    profiles: dict[str, object] = field(default_factory=dict)
    profile_texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[Bench, int], list[RunResult]]
    targets: dict[str, list[Target]]  # per result name (a scenario may yield two rows)

    def runs(self, sizes: Sizes) -> int:
        return sizes.overload_runs if self.name == "overload" else sizes.runs


# --- shared steps -------------------------------------------------------------------------------


def run_dir(bench: Bench, name: str, run: int) -> Path:
    """A new folder for one run, kept until the bench ends (see the module docstring)."""
    path = bench.workdir / f"{name}-{run}"
    path.mkdir(parents=True)
    return path


@contextmanager
def started(bench: Bench, vault: Path) -> Iterator[Running]:
    running = start(bench.spec, vault)
    try:
        yield running
    finally:
        running.kill()


def output_arrivals(bench: Bench, vault: Path) -> Arrivals:
    folder, pattern = bench.spec.output_folder_and_pattern(vault)
    folder.mkdir(parents=True, exist_ok=True)
    return Arrivals(folder, pattern)


@contextmanager
def profiled(bench: Bench, running: Running, name: str, run: int, result: RunResult) -> Iterator[None]:
    """With --profile, py-spy records the program during this block of the first run."""
    path = bench.profile_dir / f"{name}.pyspy.txt" if bench.profile_dir is not None else None
    recording = path is not None and run == 0 and running.start_profiler(path)
    try:
        yield
    finally:
        if recording and path is not None:
            running.stop_profiler()
            if path.exists():
                summary = profiling.summarize(path)
                text = profiling.render(summary)
                bench.profiles[name] = summary.as_dict()
                bench.profile_texts.append(f"{name}, run {run}:\n{text}")
                path.with_suffix(".summary.txt").write_text(text + "\n", encoding="utf-8")
                result.notes.append(f"profile: {path}")


def _tail(running: Running, chars: int = 2000) -> str:
    return running.output()[-chars:]


def become_ready(bench: Bench, running: Running, arrivals: Arrivals, result: RunResult) -> bool:
    """Ours: daemon.json names the process. Any program: a warm-up file yields its output."""
    if bench.spec.own and running.wait_daemon_json(90) is None:
        result.problems.append(f"the daemon did not become ready; its output ends: {_tail(running)}")
        return False
    mark = arrivals.mark()
    staging = running.vault / STAGING
    staging.mkdir(exist_ok=True)
    probe = staging / "warm-up.txt"
    probe.write_text("Warm-up note before the measurement\n", encoding="utf-8")
    os.rename(probe, running.vault / "Inbox" / probe.name)
    if not arrivals.wait_count(mark + 1, 90, alive=running.alive):
        result.problems.append(f"no output for the warm-up file within 90 s; output ends: {_tail(running)}")
        return False
    return True


def match(dropped: Sequence[Dropped], arrived: Sequence[tuple[str, int]], result: RunResult) -> list[int]:
    """Pair outputs with inputs (by key, or by order when outputs carry no key); fill latencies.

    Returns the arrival times of the matched outputs. Missing and duplicate outputs are problems.
    """
    keyed: dict[int, list[tuple[str, int]]] = defaultdict(list)
    unkeyed: list[tuple[str, int]] = []
    for name, stamp in arrived:
        index = index_of(name)
        if index is None:
            unkeyed.append((name, stamp))
        else:
            keyed[index].append((name, stamp))
    times: list[int] = []
    latencies: list[float] = []
    missing = duplicated = 0
    if keyed or not unkeyed:
        wanted = {item.index for item in dropped}
        for item in dropped:
            outputs = keyed.get(item.index, [])
            if not outputs:
                missing += 1
                continue
            if len(outputs) > 1:
                duplicated += 1
            times.append(outputs[0][1])
            latencies.append((outputs[0][1] - item.at_ns) / 1e6)
        strays = sum(len(outputs) for index, outputs in keyed.items() if index not in wanted)
        if strays:
            result.problems.append(f"{strays} outputs for inputs that were never dropped")
    else:
        ordered = sorted(unkeyed, key=lambda pair: pair[1])
        for item, (_, stamp) in zip(dropped, ordered, strict=False):
            times.append(stamp)
            latencies.append((stamp - item.at_ns) / 1e6)
        missing = max(0, len(dropped) - len(ordered))
        if len(ordered) > len(dropped):
            result.problems.append(f"{len(ordered) - len(dropped)} more outputs than inputs")
        result.notes.append("outputs carry no key: matched to inputs by order of arrival")
    result.figures["inputs_without_output"] = missing
    result.figures["inputs_with_two_outputs"] = duplicated
    if missing:
        result.problems.append(f"{missing} of {len(dropped)} inputs produced no output")
    if duplicated:
        result.problems.append(f"{duplicated} inputs produced more than one output")
    result.completed = len(latencies)
    result.latencies_ms = latencies
    return times


def _inbox_left(vault: Path) -> int:
    with os.scandir(vault / "Inbox") as entries:
        return sum(1 for entry in entries if not entry.name.startswith("."))


def _finish(bench: Bench, running: Running, result: RunResult) -> None:
    """Stop gracefully; record peak memory and, for ours, the watcher's overflows."""
    if bench.spec.own and running.alive():
        metrics = running.metrics()
        overflows = metrics.get("aie_watcher_overflows_total")
        if overflows is not None:
            result.figures["watcher_overflows"] = overflows
    if not running.alive():
        result.problems.append(f"the program exited early ({running.process.returncode}): {_tail(running)}")
    result.peak_rss_bytes = running.stop()
    if bench.spec.own:
        result.figures["overflow_log_lines"] = overflow_lines(running.output())


# --- burst --------------------------------------------------------------------------------------


def run_burst(bench: Bench, run: int) -> list[RunResult]:
    """The raw limit is measured just before and just after the daemon's burst, and their mean is
    this run's yardstick: the disk of a shared machine drifts within a minute, and bracketing the
    burst in time keeps the ratio about the daemon, not about the drift."""
    files = bench.sizes.burst
    result = RunResult("burst", run, files)
    raw_result = RunResult("raw limit", run, files)
    directory = run_dir(bench, "burst", run)
    before = measure_raw_limit(directory / "raw-before", files).files_per_second
    vault = make_vault(directory / "vault")
    with started(bench, vault) as running, output_arrivals(bench, vault) as arrivals:
        if not become_ready(bench, running, arrivals, result):
            return [result]
        dropper = Dropper(vault)
        indexes = dropper.stage(range(files))
        dropper.settle_disk()
        mark = arrivals.mark()
        with profiled(bench, running, "burst", run, result):
            dropped = dropper.drop_all(indexes)
            timeout = max(60.0, files / 100)
            arrivals.wait_count(mark + files, timeout, alive=running.alive)
        result.figures["drop_seconds"] = (dropped[-1].at_ns - dropped[0].at_ns) / 1e9
        times = match(dropped, arrivals.since(mark), result)
        if times:
            result.seconds = (max(times) - dropped[0].at_ns) / 1e9
        if arrivals.overflowed:
            result.notes.append("the bench's own inotify queue overflowed: times of late outputs are coarse")
        left = _inbox_left(vault)
        if left and result.completed < files:
            result.notes.append(f"{left} files still in Inbox/ at the deadline")
        _finish(bench, running, result)
    after = measure_raw_limit(directory / "raw-after", files).files_per_second
    raw = (before + after) / 2
    raw_result.completed = files
    raw_result.seconds = files / raw
    raw_result.raw_files_per_second = raw
    raw_result.figures.update(before_files_per_second=before, after_files_per_second=after)
    result.raw_files_per_second = raw
    return [raw_result, result]


# --- latency and approval -----------------------------------------------------------------------


def _plan_action(path: Path) -> str | None:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            head = handle.read(2048)
    except OSError:
        return None
    found = re.search(r"^action: *(\S+)", head, re.MULTILINE)
    return found.group(1) if found else None


def run_latency(bench: Bench, run: int) -> list[RunResult]:
    sizes = bench.sizes
    result = RunResult("latency", run, sizes.latency_drops)
    results = [result]
    directory = run_dir(bench, "latency", run)
    vault = make_vault(directory / "vault")
    with started(bench, vault) as running, output_arrivals(bench, vault) as arrivals:
        if not become_ready(bench, running, arrivals, result):
            return results
        dropper = Dropper(vault)
        indexes = dropper.stage(range(sizes.latency_drops), text=NOTE_TEXT)
        dropper.settle_disk()
        mark = arrivals.mark()
        with profiled(bench, running, "latency", run, result):
            dropped = dropper.drop_paced(indexes, sizes.latency_interval)
            arrivals.wait_count(mark + len(dropped), 30, alive=running.alive)
            match(dropped, arrivals.since(mark), result)
            if bench.spec.own and sizes.approvals:
                results.append(_approvals(bench, running, arrivals.since(mark), run))
        _finish(bench, running, result)
        if len(results) > 1:
            results[1].peak_rss_bytes = result.peak_rss_bytes
    return results


def _approvals(bench: Bench, running: Running, plans: Sequence[tuple[str, int]], run: int) -> RunResult:
    """Move plans to Approved/ one at a time, 50 ms apart; time until each is in Done/."""
    sizes = bench.sizes
    vault = running.vault
    chosen = [name for name, _ in plans][: sizes.approvals]
    result = RunResult("approval", run, len(chosen))
    not_notes = [name for name in chosen if _plan_action(vault / "Plans" / name) != "vault.note"]
    if not_notes:
        result.problems.append(f"{len(not_notes)} plans are not vault.note plans (e.g. {not_notes[0]})")
    with Arrivals(vault / "Done", "* plan.md", IN_MOVED_TO | IN_CREATE) as done:
        mark = done.mark()
        moved: list[tuple[str, int]] = []
        begin = time.monotonic()
        for number, name in enumerate(chosen):
            delay = begin + number * sizes.latency_interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp = now_ns()
            os.rename(vault / "Plans" / name, vault / "Approved" / name)
            moved.append((name, stamp))
        done.wait_count(mark + len(chosen), 30, alive=running.alive)
        finished = dict(done.since(mark))
    latencies = [(finished[name] - stamp) / 1e6 for name, stamp in moved if name in finished]
    result.latencies_ms = latencies
    result.completed = len(latencies)
    if len(latencies) < len(chosen):
        result.problems.append(f"{len(chosen) - len(latencies)} approved plans did not reach Done/")
    wrong = [name for name in finished if "status: done" not in _head(vault / "Done" / name)]
    if wrong:
        result.problems.append(f"{len(wrong)} plans in Done/ are not marked done (e.g. {wrong[0]})")
    return result


def _head(path: Path, size: int = 4096) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return handle.read(size)
    except OSError:
        return ""


# --- large vault --------------------------------------------------------------------------------


_VARIABLE = (
    "Inbox",
    "Needs_Action",
    "Plans",
    "Approved",
    "Rejected",
    "Failed",
    "Quarantine",
    "Attachments",
    "Logs",
    "Notes",
    ".ai-employee",
    STAGING,
)


def _large_vault(bench: Bench, result: RunResult) -> Path:
    """The vault with a history, filled once per bench and reset between runs (Done/ is kept).

    Filling 100,000 notes takes longer than a run; the daemon never writes to Done/ in this
    scenario, so a run leaves it as it found it, and only what a run created is cleared.
    """
    vault = bench.workdir / "large-vault" / "vault"
    notes = bench.sizes.large_notes
    if vault.exists():
        # What the previous run created is moved out of the vault, not deleted: nothing is deleted
        # between timed phases (ext4 without a journal; see the module docstring).
        aside = bench.workdir / f"large-vault-run-{result.run}-created"
        aside.mkdir()
        for name in (*_VARIABLE, "Dashboard.md"):
            if os.path.lexists(vault / name):
                os.rename(vault / name, aside / name)
        for name in FOLDERS:
            (vault / name).mkdir(exist_ok=True)
        with os.scandir(vault / "Done") as entries:
            intact = sum(1 for _ in entries) == notes
        if intact:
            fill_ledger_only(vault, notes)
            return vault
        vault.parent.rename(bench.workdir / f"large-vault-{result.run}-spoiled")  # not deleted
    make_vault(vault)
    log.info("filling a vault with a history", notes=notes)
    started_fill = time.monotonic()
    fill_done(vault, notes)
    result.figures["fill_seconds"] = time.monotonic() - started_fill
    return vault


def run_large_vault(bench: Bench, run: int) -> list[RunResult]:
    sizes = bench.sizes
    result = RunResult("large-vault", run, sizes.large_inbox)
    vault = _large_vault(bench, result)
    result.figures["vault_notes"] = sizes.large_notes
    dropper = Dropper(vault)
    waiting = dropper.drop_all(dropper.stage(range(sizes.large_inbox)))
    # Files waiting while nothing ran are older than the settle time, as they would be.
    newest = max(os.lstat(vault / "Inbox" / item.name).st_ctime for item in waiting)
    pause = newest + sizes.settle_seconds + 0.05 - time.time()
    if pause > 0:
        time.sleep(pause)
    _run_large_vault(bench, run, vault, dropper, waiting, result)
    return [result]


def _run_large_vault(
    bench: Bench, run: int, vault: Path, dropper: Dropper, waiting: list[Dropped], result: RunResult
) -> None:
    sizes = bench.sizes
    with output_arrivals(bench, vault) as arrivals, started(bench, vault) as running:
        began = running.started_ns
        if bench.spec.own:
            ready = running.wait_daemon_json(60)
            if ready is None:
                result.problems.append(f"the daemon did not become ready: {_tail(running)}")
                return
            result.figures["ready_seconds"] = (ready - began) / 1e9
        arrivals.wait_count(1, 60, alive=running.alive)
        arrivals.wait_count(len(waiting), 120, alive=running.alive)
        arrived = arrivals.since(0)
        keyed = [(name, stamp) for name, stamp in arrived if index_of(name) is not None]
        if keyed:
            result.figures["first_output_seconds"] = (min(s for _, s in keyed) - began) / 1e9
        result.completed = len({index_of(name) for name, _ in keyed})
        if keyed and result.completed >= len(waiting):
            result.seconds = (max(s for _, s in keyed) - began) / 1e9
            result.figures["all_planned_seconds"] = result.seconds
        else:
            result.problems.append(
                f"{len(waiting) - result.completed} of {len(waiting)} waiting files produced no output"
            )
        if len(keyed) > result.completed:
            result.problems.append(f"{len(keyed) - result.completed} waiting files produced two outputs")
        # Per event, after the start: single drops into the large vault (compare with 'latency').
        if sizes.large_drops_after:
            after = RunResult("large-vault", run, sizes.large_drops_after)
            base = 900_000
            indexes = dropper.stage(range(base, base + sizes.large_drops_after), text=NOTE_TEXT)
            mark = arrivals.mark()
            with profiled(bench, running, "large-vault", run, result):
                dropped = dropper.drop_paced(indexes, sizes.latency_interval)
                arrivals.wait_count(mark + len(dropped), 30, alive=running.alive)
            match(dropped, arrivals.since(mark), after)
            result.latencies_ms = after.latencies_ms
            result.problems += [f"single drops after the start: {p}" for p in after.problems]
        _finish(bench, running, result)


# --- overload -----------------------------------------------------------------------------------


_FIELD = re.compile(r"^(id|action_id|source_ref): *(.*)$", re.MULTILINE)


def _scalar(text: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        try:
            value = json.loads(text)
            return str(value)
        except ValueError:
            return text.strip('"')
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return text


def _fields(path: Path) -> dict[str, str]:
    head = _head(path, 2048)
    end = head.find("\n---", 3)
    block = head[: end if end > 0 else len(head)]
    return {key: _scalar(value) for key, value in _FIELD.findall(block)}


def verify_exactly_once(vault: Path, dropped: Sequence[Dropped], result: RunResult) -> None:
    """On disk, after the daemon stopped: one action note per dropped file, one plan per action."""
    names = {item.name for item in dropped}
    actions: dict[str, str] = {}
    refs: dict[str, int] = defaultdict(int)
    ids: set[str] = set()
    duplicates = 0
    for entry in os.scandir(vault / "Needs_Action"):
        if entry.name.startswith(".") or not entry.name.endswith(".md"):
            continue
        fields = _fields(Path(entry.path))
        action_id, ref = fields.get("id", ""), fields.get("source_ref", "")
        if action_id in ids:
            duplicates += 1
        ids.add(action_id)
        actions[action_id] = ref
        refs[ref] += 1
    plans_of: dict[str, int] = defaultdict(int)
    for entry in os.scandir(vault / "Plans"):
        if entry.name.startswith(".") or not entry.name.endswith(" plan.md"):
            continue
        fields = _fields(Path(entry.path))
        plan_id = fields.get("id", "")
        if plan_id in ids:
            duplicates += 1
        ids.add(plan_id)
        plans_of[fields.get("action_id", "")] += 1
    ours = {action_id for action_id, ref in actions.items() if ref in names}
    missing_actions = len(names - set(refs))
    twice = sum(1 for ref, count in refs.items() if ref in names and count > 1)
    missing_plans = sum(1 for action_id in ours if plans_of.get(action_id, 0) == 0)
    extra_plans = sum(1 for action_id in ours if plans_of.get(action_id, 0) > 1)
    result.figures["action_notes"] = sum(count for ref, count in refs.items() if ref in names)
    result.figures["plans"] = sum(plans_of.get(action_id, 0) for action_id in ours)
    for count, what in (
        (missing_actions, "dropped files have no action note"),
        (twice, "dropped files have more than one action note"),
        (missing_plans, "actions have no plan"),
        (extra_plans, "actions have more than one plan"),
        (duplicates, "ids appear on more than one note"),
    ):
        if count:
            result.problems.append(f"{count} {what}")
    left = _inbox_left(vault)
    if left:
        result.problems.append(f"{left} files left in Inbox/")
    result.figures["lost_or_duplicated"] = missing_actions + twice + missing_plans + extra_plans + duplicates


def run_overload(bench: Bench, run: int) -> list[RunResult]:
    files = bench.sizes.overload
    result = RunResult("overload", run, files)
    directory = run_dir(bench, "overload", run)
    vault = make_vault(directory / "vault")
    with started(bench, vault) as running, output_arrivals(bench, vault) as arrivals:
        if not become_ready(bench, running, arrivals, result):
            return [result]
        dropper = Dropper(vault)
        log.info("staging the files of the overload", files=files)
        indexes = dropper.stage(range(files))
        dropper.settle_disk()
        mark = arrivals.mark()
        dropped = dropper.drop_all(indexes)
        result.figures["drop_seconds"] = (dropped[-1].at_ns - dropped[0].at_ns) / 1e9
        arrivals.wait_count(mark + files, max(120.0, files / 100), alive=running.alive)
        times = match(dropped, arrivals.since(mark), result)
        if times:
            result.seconds = (max(times) - dropped[0].at_ns) / 1e9
        result.figures["bench_queue_overflowed"] = int(arrivals.overflowed)
        _finish(bench, running, result)
    if bench.spec.own:
        verify_exactly_once(vault, dropped, result)
    else:
        result.figures["lost_or_duplicated"] = (result.figures["inputs_without_output"] or 0) + (
            result.figures["inputs_with_two_outputs"] or 0
        )
    return [result]


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "burst",
            "N files renamed into Inbox/ at once; first drop -> N-th plan; raw limit in the same run",
            run_burst,
            {
                "burst": [
                    Target("files_per_second", 1000, True, "files/s >= 1,000"),
                    Target("ratio_to_raw", 0.5, True, "ratio to raw limit >= 0.5"),
                ]
            },
        ),
        Scenario(
            "latency",
            "single files 50 ms apart into an idle daemon -> plan; then approvals -> Done/",
            run_latency,
            {
                "latency": [
                    Target("p50_ms", 10, False, "drop -> plan p50 <= 10 ms"),
                    Target("p99_ms", 50, False, "drop -> plan p99 <= 50 ms"),
                ],
                "approval": [Target("p50_ms", 10, False, "approve -> Done/ p50 <= 10 ms")],
            },
        ),
        Scenario(
            "large-vault",
            "history in Done/ + files waiting in Inbox/ at start -> ready, first plan, all planned",
            run_large_vault,
            {
                "large-vault": [
                    Target("first_output_seconds", 5, False, "start -> first plan <= 5 s"),
                    Target("all_planned_seconds", 10, False, "start -> all planned <= 10 s"),
                    Target("peak_rss_mb", 150, False, "peak RSS <= 150 MB"),
                    Target("p50_ms", 10, False, "single drop after start p50 <= 10 ms"),
                ]
            },
        ),
        Scenario(
            "overload",
            "a burst beyond the inotify queue; every file planned exactly once",
            run_overload,
            {
                "overload": [
                    Target("lost_or_duplicated", 0, False, "files lost or planned twice = 0", speed=False)
                ]
            },
        ),
    )
}
