"""Slack down for a whole burst: what it costs the burst, and whether every checkpoint arrives once
Slack is back (issue 12).

Three modes, each on a fresh vault with a freshly started daemon, in rotation (each run starts
with another mode) so that drift of the machine spreads over all of them:
- `none`: no Slack configured (checkpoints to the log);
- `up`:   Slack (the loopback fake, tests/fakes/slack.py) up throughout;
- `down`: Slack up at start (connected), gone for the whole burst, back once every plan exists.

Timed: first drop -> the N-th plan in Plans/ (the burst's throughput), and the CPU the daemon's
process tree spent meanwhile (steadier than wall time on a shared machine). For `down`, then: Slack
back -> every item's thread opened and its "Waiting for approval" checkpoint posted (nothing
lost). Run from the repository's root:

    PYTHONPATH=src python -m bench.slack_outage --files 1000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.drops import Dropper, make_vault
from bench.target import MemorySampler, Running, TargetSpec, clean_env
from tests.fakes.slack import CHANNEL_ID, CHANNEL_NAME, SIGNING_SECRET, FakeSlack
from tests.fakes.threaded import ThreadedFake

MODES = ("none", "up", "down")
SETTLE_SECONDS = 2.0


@dataclass
class Run:
    mode: str
    files: int
    burst_seconds: float
    cpu_seconds: float = 0.0  # the daemon's process tree, user + system, first drop -> N-th plan
    drain_seconds: float | None = None  # down: Slack back -> every checkpoint posted
    threads: int = 0
    checkpoints_missing: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def files_per_second(self) -> float:
        return self.files / self.burst_seconds if self.burst_seconds else 0.0


def _plans(vault: Path) -> int:
    with os.scandir(vault / "Plans") as entries:
        return sum(1 for entry in entries if entry.name.endswith(" plan.md"))


def _wait(condition: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the helper processes), so far."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _start_daemon(vault: Path, env: dict[str, str]) -> Running:
    spec = TargetSpec(settle_seconds=SETTLE_SECONDS)
    log_path = vault.parent / "program-output.log"
    with log_path.open("ab") as handle:
        started = time.monotonic_ns()
        process = subprocess.Popen(
            spec.argv(vault),
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=vault.parent,
            start_new_session=True,
        )
    running = Running(spec, vault, process, started, log_path, MemorySampler(process.pid))
    if running.wait_daemon_json(120) is None:
        running.kill()
        raise RuntimeError(f"the daemon did not start: {running.output()[-2000:]}")
    return running


def _slack_env(fake: FakeSlack) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CHANNEL": CHANNEL_NAME,
        "SLACK_API_BASE_URL": fake.base_url,
        "SLACK_ALLOWED_USER_IDS": "U0BENCH01",
        "AIE_SERVICES__MAX_BACKOFF": "2",  # back within 2 s of Slack's return
    }


def _waiting_posted(slack: ThreadedFake[FakeSlack]) -> tuple[int, int]:
    """(threads opened, threads whose "Waiting for approval" checkpoint is posted)."""

    def count() -> tuple[int, int]:
        fake = slack.fake
        tops = {
            post["ts"] for post in fake.posts if post["channel"] == CHANNEL_ID and not post.get("thread_ts")
        }
        waiting = {
            post["thread_ts"]
            for post in fake.posts
            if post.get("thread_ts") in tops and "Waiting for approval" in json.dumps(post.get("attachments"))
        }
        return len(tops), len(waiting)

    return slack.call(count)


def run_once(mode: str, files: int, workdir: Path, number: int) -> Run:
    vault = make_vault(workdir / f"{mode}-{number}" / "vault")
    env = clean_env(SETTLE_SECONDS)
    slack: ThreadedFake[FakeSlack] | None = None
    if mode != "none":
        slack = ThreadedFake(FakeSlack())
        slack.start()
        env.update(_slack_env(slack.fake))
    running = _start_daemon(vault, env)
    try:
        # fully started (plug-ins imported: a second of CPU that must not fall into the burst)
        _wait(lambda: '"daemon started"' in running.output(), 120, "the daemon's plug-ins", interval=0.1)
        if slack is not None:
            _wait(lambda: slack.call(lambda: bool(slack.fake.calls)), 60, "the daemon reaching Slack")
        dropper = Dropper(vault)
        indexes = dropper.stage(range(files))
        dropper.settle_disk()
        if slack is not None and mode == "down":
            slack.call_async(slack.fake.go_away)
        cpu_before = _cpu_seconds(running.pid)
        started = time.monotonic()
        dropper.drop_all(indexes)
        _wait(lambda: _plans(vault) >= files, 600, f"{files} plans")
        burst = time.monotonic() - started
        result = Run(mode, files, burst, _cpu_seconds(running.pid) - cpu_before)
        if slack is not None:
            if mode == "down":
                slack.call_async(slack.fake.come_back)
            back = time.monotonic()
            _wait(lambda: _waiting_posted(slack)[1] >= files, 900, "every checkpoint in Slack", interval=0.5)
            result.drain_seconds = time.monotonic() - back
            threads, waiting = _waiting_posted(slack)
            result.threads = threads
            result.checkpoints_missing = files - waiting
        return result
    finally:
        running.stop()
        if slack is not None:
            slack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="aie-slack-bench-"))
    results: list[Run] = []
    try:
        for number in range(args.runs):
            order = MODES[number % len(MODES) :] + MODES[: number % len(MODES)]  # no mode always first
            for mode in order:
                result = run_once(mode, args.files, workdir, number)
                results.append(result)
                print(
                    f"run {number + 1} {mode:>4}: {result.files_per_second:7.0f} files/s,"
                    f" {result.cpu_seconds:5.2f} CPU s"
                    + (f", drain {result.drain_seconds:.1f} s" if result.drain_seconds is not None else "")
                    + (
                        f", threads {result.threads}, missing {result.checkpoints_missing}"
                        if mode != "none"
                        else ""
                    ),
                    flush=True,
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        "\n| mode | median files/s | vs none | median CPU s of the daemon | vs none"
        " | drain after Slack is back | checkpoints missing |"
    )
    print("|---|---|---|---|---|---|---|")
    baseline = statistics.median(r.files_per_second for r in results if r.mode == "none")
    cpu_baseline = statistics.median(r.cpu_seconds for r in results if r.mode == "none")
    for mode in MODES:
        runs = [r for r in results if r.mode == mode]
        rate = statistics.median(r.files_per_second for r in runs)
        cpu = statistics.median(r.cpu_seconds for r in runs)
        drains = [r.drain_seconds for r in runs if r.drain_seconds is not None]
        drain = f"{statistics.median(drains):.1f} s" if drains else "-"
        missing = sum(r.checkpoints_missing for r in runs) if mode != "none" else "-"
        print(
            f"| {mode} | {rate:.0f} | {100 * (rate / baseline - 1):+.1f} % | {cpu:.2f}"
            f" | {100 * (cpu / cpu_baseline - 1):+.1f} % | {drain} | {missing} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
