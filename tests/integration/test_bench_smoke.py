"""The benchmark harness, in its short smoke form: it must run every scenario against the real
daemon and find every file planned exactly once (speed is not judged here: see `make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

SCENARIO_ROWS = {"raw limit", "burst", "latency", "approval", "large-vault", "overload"}


def _bench(tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    output = tmp / "result.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIE_")}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--json",
            str(output),
            "--workdir",
            str(tmp / "work"),
            "--results-dir",
            str(tmp / "results"),
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert output.exists(), f"no JSON written (exit {completed.returncode}): {completed.stderr[-3000:]}"
    return completed, json.loads(output.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return _bench(tmp_path_factory.mktemp("bench"))


def test_smoke_run_of_every_scenario_finds_every_file_planned_exactly_once(
    smoke: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    completed, result = smoke
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert result["correct"] is True, result
    assert set(result["scenarios"]) == SCENARIO_ROWS
    for name, scenario in result["scenarios"].items():
        assert scenario["problems"] == [], (name, scenario["problems"])
        for run in scenario["runs"]:
            assert run["completed"] == run["files"], (name, run)
    overload = result["scenarios"]["overload"]["runs"][0]
    assert overload["plans"] == overload["action_notes"] == overload["files"]
    assert overload["lost_or_duplicated"] == 0


def test_smoke_run_prints_the_table_and_reports_the_figures_the_issue_asks_for(
    smoke: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    completed, result = smoke
    header = next(line for line in completed.stdout.splitlines() if line.startswith("scenario"))
    for column in ("files", "files/s", "p50 ms", "p95 ms", "p99 ms", "peak RSS MB", "ratio to raw"):
        assert column in header
    burst = result["scenarios"]["burst"]["median"]
    assert burst["files_per_second"] > 0 and burst["raw_files_per_second"] > 0
    assert burst["ratio_to_raw"] > 0
    assert result["scenarios"]["latency"]["median"]["p99_ms"] is not None
    large = result["scenarios"]["large-vault"]["median"]
    assert large["ready_seconds"] > 0 and large["first_output_seconds"] > 0
    assert large["peak_rss_mb"] > 0
    assert "watcher_overflows" in result["scenarios"]["overload"]["median"]
    assert result["barriers_ms"]["fsync_file_ms"] > 0


def test_peer_mode_times_another_program_by_its_output_files(tmp_path: Path) -> None:
    completed, result = _bench(
        tmp_path,
        "-s",
        "burst",
        "-s",
        "latency",
        "--peer",
        "{python} -m bench.peer_example {vault} --interval 0.02",
        "--peer-output",
        "{vault}/Plans/*.md",
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert set(result["scenarios"]) == {"raw limit", "burst", "latency"}  # approval is ours only
    for name in ("burst", "latency"):
        run = result["scenarios"][name]["runs"][0]
        assert run["completed"] == run["files"] and run["problems"] == [], run
        assert run["p50_ms"] > 0
