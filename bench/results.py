"""Results: one run of a scenario, the median over runs, targets, the table and the JSON file."""

from __future__ import annotations

import json
import math
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


def percentile(values: Sequence[float], share: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class RunResult:
    """One run of one scenario."""

    scenario: str
    run: int
    files: int
    completed: int = 0
    seconds: float | None = None  # first drop (or start) -> last output
    latencies_ms: list[float] = field(default_factory=list)
    peak_rss_bytes: int | None = None
    raw_files_per_second: float | None = None
    figures: dict[str, float | int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def files_per_second(self) -> float | None:
        if self.seconds is None or self.seconds <= 0 or not self.completed:
            return None
        return self.completed / self.seconds

    @property
    def ratio_to_raw(self) -> float | None:
        fps = self.files_per_second
        if fps is None or not self.raw_files_per_second:
            return None
        return fps / self.raw_files_per_second

    def numbers(self) -> dict[str, float | int | None]:
        """Every figure of this run by name (what the medians are taken of)."""
        return {
            "files": self.files,
            "completed": self.completed,
            "seconds": self.seconds,
            "files_per_second": self.files_per_second,
            "p50_ms": percentile(self.latencies_ms, 0.50),
            "p95_ms": percentile(self.latencies_ms, 0.95),
            "p99_ms": percentile(self.latencies_ms, 0.99),
            "max_ms": max(self.latencies_ms) if self.latencies_ms else None,
            "peak_rss_mb": None if self.peak_rss_bytes is None else self.peak_rss_bytes / 1e6,
            "raw_files_per_second": self.raw_files_per_second,
            "ratio_to_raw": self.ratio_to_raw,
            **self.figures,
        }

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "run": self.run,
            **self.numbers(),
            "problems": self.problems,
            "notes": self.notes,
        }
        if len(self.latencies_ms) <= 1000:  # in drop order: shows a queue building up, or a stall
            document["latencies_ms"] = [round(value, 2) for value in self.latencies_ms]
        return document


@dataclass(frozen=True)
class Target:
    """A figure the issue asks for: `metric` compared with `limit` (`at_least` or not)."""

    metric: str
    limit: float
    at_least: bool
    label: str
    speed: bool = True  # a smoke run judges correctness targets only

    def met(self, value: float | int | None) -> bool | None:
        if value is None:
            return None
        return value >= self.limit if self.at_least else value <= self.limit


@dataclass
class ScenarioResult:
    name: str
    description: str
    runs: list[RunResult]
    targets: list[Target] = field(default_factory=list)

    def median(self, metric: str) -> float | None:
        values = [value for run in self.runs if (value := run.numbers().get(metric)) is not None]
        return statistics.median(values) if values else None

    @property
    def problems(self) -> list[str]:
        return [f"run {run.run}: {problem}" for run in self.runs for problem in run.problems]

    def verdicts(self) -> list[tuple[Target, float | None, bool | None]]:
        verdicts = []
        for target in self.targets:
            value = self.median(target.metric)
            verdicts.append((target, value, target.met(value)))
        return verdicts

    def as_dict(self) -> dict[str, Any]:
        metrics = sorted({name for run in self.runs for name in run.numbers()})
        return {
            "description": self.description,
            "median": {name: self.median(name) for name in metrics},
            "targets": [
                {
                    "label": target.label,
                    "metric": target.metric,
                    "limit": target.limit,
                    "at_least": target.at_least,
                    "value": value,
                    "met": met,
                }
                for target, value, met in self.verdicts()
            ],
            "correct": not self.problems,
            "problems": self.problems,
            "runs": [run.as_dict() for run in self.runs],
        }


def machine() -> dict[str, Any]:
    memory = psutil.virtual_memory().total
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": psutil.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory / 1e9, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def revision(repo: Path) -> dict[str, Any]:
    """The commit measured, and whether src/ had changes not yet committed (figures belong to code)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "src_changed": None}
    return {"commit": commit, "src_changed": bool(dirty)}


def filesystem(path: Path) -> dict[str, Any]:
    """The filesystem the vaults were on (from /proc/mounts: the longest mount point above `path`)."""
    best = ("", "", "")
    where = str(path.resolve())
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind, *_ = line.split()
            inside = where == mount or where.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best[1]):
                best = (device, mount, kind)
    except OSError:
        pass
    return {"device": best[0], "mount": best[1], "type": best[2]}


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(scenarios: Sequence[ScenarioResult]) -> str:
    """The main table: one row per scenario, medians over its runs."""
    header = (
        "scenario",
        "runs",
        "files",
        "files/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "peak RSS MB",
        "ratio to raw",
        "correct",
    )
    rows: list[tuple[str, ...]] = [header]
    for result in scenarios:
        rows.append(
            (
                result.name,
                str(len(result.runs)),
                _fmt(result.median("files"), ",.0f"),
                _fmt(result.median("files_per_second"), ",.0f"),
                _fmt(result.median("p50_ms"), ".1f"),
                _fmt(result.median("p95_ms"), ".1f"),
                _fmt(result.median("p99_ms"), ".1f"),
                _fmt(result.median("peak_rss_mb"), ".0f"),
                _fmt(result.median("ratio_to_raw"), ".2f"),
                "yes" if not result.problems else "NO",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells))
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def verdict_lines(scenarios: Sequence[ScenarioResult], *, speed: bool) -> list[str]:
    lines: list[str] = []
    for result in scenarios:
        for target, value, met in result.verdicts():
            shown = "-" if value is None else f"{value:,.2f}"
            if not speed and target.speed:
                state = "(smoke: not judged)"
            else:
                state = {True: "met", False: "MISSED", None: "no figure"}[met]
            lines.append(f"{result.name:<12} {target.label:<46} {shown:>12}  {state}")
    return lines


def figure_lines(scenarios: Sequence[ScenarioResult], skip: Callable[[str], bool]) -> list[str]:
    """The scenario-specific figures (medians) that do not fit the table."""
    lines: list[str] = []
    for result in scenarios:
        metrics = sorted({name for run in result.runs for name in run.figures})
        shown = [f"{name}={_fmt(result.median(name), ',.3g')}" for name in metrics if not skip(name)]
        if shown:
            lines.append(f"{result.name:<12} " + ", ".join(shown))
    return lines


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
