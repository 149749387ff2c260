"""The program under test: our daemon (the real CLI, as a subprocess) or any peer command.

Our daemon is started as `python -m ai_employee start --vault V --port 0`; readiness is its
`daemon.json` naming its pid, and its control port gives metrics. A peer is any command line
with `{vault}` in it; the bench knows nothing of it but its pid (for memory) and its outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
import structlog

from tests.fakes.common import SERVICE_ENV_PREFIXES

log = structlog.get_logger(__name__)

OWN_OUTPUT = "{vault}/Plans/* plan.md"
_SECRETS_AND_SETTINGS = (*SERVICE_ENV_PREFIXES, "DATABASE_URL", "REDIS_URL", "HEALTH_SERVER_PORT")


def clean_env(settle_seconds: float) -> dict[str, str]:
    """The environment of the program under test: no keys (the template planner, no services)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SECRETS_AND_SETTINGS)}
    env["AIE_PLANNER"] = "template"
    env["AIE_VAULT__SETTLE_SECONDS"] = str(settle_seconds)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class TargetSpec:
    """What to start, and where its outputs appear."""

    command: str | None = None  # None: our own daemon
    output: str = OWN_OUTPUT
    settle_seconds: float = 2.0
    env: dict[str, str] = field(default_factory=dict)  # more environment (bench/store.py: the store)

    @property
    def own(self) -> bool:
        return self.command is None

    @property
    def label(self) -> str:
        return "ai-employee" if self.own else (self.command or "peer")

    def argv(self, vault: Path) -> list[str]:
        if self.command is None:
            return [sys.executable, "-m", "ai_employee", "start", "--vault", str(vault), "--port", "0"]
        text = self.command.replace("{vault}", shlex.quote(str(vault)))
        text = text.replace("{python}", shlex.quote(sys.executable))
        return shlex.split(text)

    def output_folder_and_pattern(self, vault: Path) -> tuple[Path, str]:
        """The glob's folder (no wildcard allowed above the file name) and its file-name pattern."""
        path = self.output.replace("{vault}", str(vault))
        folder, _, pattern = path.rpartition("/")
        if any(char in folder for char in "*?["):
            raise ValueError(f"--peer-output: wildcards only in the file name, not in folders: {self.output}")
        return Path(folder or "."), pattern or "*"


class MemorySampler:
    """Peak resident memory of a process tree: sampled every 50 ms, plus the kernel's VmHWM at the end."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        try:
            root = psutil.Process(self.pid)
            total = root.memory_info().rss
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return int(total)
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._sample())

    def high_water_mark(self) -> int:
        """VmHWM of the main process (exact, kernel-kept); 0 when it is gone."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
        return int(found.group(1)) * 1024 if found else 0

    def finish(self) -> int:
        self.peak = max(self.peak, self._sample(), self.high_water_mark())
        self._stop.set()
        self._thread.join(2.0)
        return self.peak


@dataclass
class Running:
    """A started program under test."""

    spec: TargetSpec
    vault: Path
    process: subprocess.Popen[bytes]
    started_ns: int
    log_path: Path
    memory: MemorySampler
    info: dict[str, object] = field(default_factory=dict)
    _profiler: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def daemon_json(self) -> dict[str, object] | None:
        try:
            data = json.loads((self.vault / ".ai-employee" / "daemon.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def wait_daemon_json(self, timeout: float) -> int | None:
        """Our daemon only: the bench-clock time at which it was ready (daemon.json names this
        process and `/readyz` answers 200: the vault path works), or None."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while time.monotonic() < deadline and self.alive():
            data = self.daemon_json()
            if data is not None and data.get("pid") == self.pid and self._ready(data):
                self.info = data
                return time.monotonic_ns()
            time.sleep(delay)
            delay = min(delay * 1.5, 0.02)
        return None

    @staticmethod
    def _ready(data: dict[str, object]) -> bool:
        host = data.get("host") or "127.0.0.1"
        try:
            with urllib.request.urlopen(f"http://{host}:{data.get('port')}/readyz", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:  # 503 (HTTPError) while it starts, or not listening yet
            return False

    def metrics(self) -> dict[str, float]:
        """Our daemon's Prometheus samples (name with labels -> value); empty for a peer."""
        port = self.info.get("port")
        host = self.info.get("host") or "127.0.0.1"
        if not isinstance(port, int):
            return {}
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
                text = response.read().decode("utf-8")
        except OSError as error:
            log.warning("metrics not available", error=str(error))
            return {}
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[name] = float(value)
        return samples

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def start_profiler(self, output: Path, rate: int = 200) -> bool:
        """Attach py-spy to the program (all its threads) until `stop_profiler`; False if py-spy is absent."""
        py_spy = Path(sys.executable).with_name("py-spy")
        command = str(py_spy) if py_spy.exists() else "py-spy"
        try:
            self._profiler = subprocess.Popen(
                [
                    command,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--threads",
                    "--idle",
                    "--subprocesses",
                    "--nonblocking",
                    "-o",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            log.warning("py-spy not found; no profile (pip install py-spy)")
            return False
        time.sleep(0.5)  # py-spy needs a moment to attach; started before the drop, not timed
        if self._profiler.poll() is not None:
            error = self._profiler.stderr.read().decode() if self._profiler.stderr else ""
            log.warning("py-spy could not attach", error=error.strip()[-500:])
            self._profiler = None
            return False
        return True

    def stop_profiler(self) -> None:
        profiler = self._profiler
        if profiler is None:
            return
        profiler.send_signal(signal.SIGINT)
        try:
            profiler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait()
        self._profiler = None

    def stop(self, timeout: float = 60.0) -> int:
        """Graceful stop (SIGTERM: our daemon lets in-flight work finish); peak memory in bytes."""
        self.stop_profiler()
        peak = self.memory.finish()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("the program did not stop on SIGTERM; killing it", pid=self.pid)
                self.process.kill()
                self.process.wait()
        return peak

    def kill(self) -> None:
        self.stop_profiler()
        if self.alive():
            self.process.kill()
            self.process.wait()


def start(spec: TargetSpec, vault: Path) -> Running:
    """Start the program on `vault`; its output goes to a log beside the vault.

    Raises OSError when the command cannot be started (not found, not executable).
    """
    log_path = vault.parent / "program-output.log"
    handle: IO[bytes]
    with log_path.open("ab") as handle:
        started = time.monotonic_ns()
        process = subprocess.Popen(
            spec.argv(vault),
            env={**clean_env(spec.settle_seconds), **spec.env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            # ours away from any ./config.yaml; a peer where the bench was started (relative paths)
            cwd=vault.parent if spec.own else None,
            start_new_session=True,
        )
    return Running(
        spec=spec,
        vault=vault,
        process=process,
        started_ns=started,
        log_path=log_path,
        memory=MemorySampler(process.pid),
    )


def overflow_lines(output: str) -> int:
    return output.count("inotify queue overflowed")
