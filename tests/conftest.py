"""Shared fixtures: a temporary vault and the real `ai-employee` daemon as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai_employee.vault.layout import Folder

REPO = Path(__file__).resolve().parent.parent
FOLDERS = tuple(folder.value for folder in Folder if folder != Folder.NOTES)


def require_services() -> bool:
    return os.environ.get("AIE_REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service is absent, or fail it when CI requires the services."""
    if require_services():
        pytest.fail(f"AIE_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, message: str = "condition") -> Any:
    """Poll `condition` until it is truthy or the deadline passes (tests wait on conditions, never sleep)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


async def eventually(condition: Callable[[], Any], timeout: float = 5.0, message: str = "condition") -> Any:
    """The async `wait_for`: re-check `condition` every couple of milliseconds until the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.002)
    return value


def notes(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix == ".md" and not path.name.startswith("."))


def audit_lines(vault: Path) -> list[dict[str, Any]]:
    """The audit log's complete lines; a line the daemon is still writing (no newline yet) is not
    read, so a test that polls while the daemon runs never parses half a line."""
    lines: list[dict[str, Any]] = []
    for log_file in sorted((vault / "Logs").glob("*.jsonl")):
        text = log_file.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]
        for raw in complete.splitlines():
            if raw.strip():
                lines.append(json.loads(raw))
    return lines


def frontmatter(path: Path) -> dict[str, Any]:
    from ai_employee.vault.notes import parse_note

    properties, _ = parse_note(path.read_text(encoding="utf-8"))
    return properties


def drop(vault: Path, name: str, content: bytes | str) -> Path:
    """Drop a file the way most apps do: write elsewhere, then rename into Inbox/."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    staging = vault / ".staging"
    staging.mkdir(exist_ok=True)
    temp = staging / name
    temp.write_bytes(data)
    target = vault / "Inbox" / name
    os.rename(temp, target)
    return target


class DaemonProcess:
    """The real CLI, `ai-employee start`, on a temporary vault with `--port 0`."""

    def __init__(self, vault: Path, env: dict[str, str], extra_args: list[str] | None = None) -> None:
        self.vault = vault
        self.env = env
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = vault.parent / "daemon-output.log"

    def cli(self, *args: str, check: bool = False, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ai_employee", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.vault.parent,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"ai-employee {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def start(self, wait: bool = True) -> DaemonProcess:
        previous = self.info()
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ai_employee",
                "start",
                "--vault",
                str(self.vault),
                "--port",
                "0",
                *self.extra_args,
            ],
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self.vault.parent,
        )
        log_file.close()
        if wait:
            pid = self.process.pid
            wait_for(
                lambda: (self.info() or {}).get("pid") == pid or self._died(),
                timeout=60,
                message="daemon.json of the new daemon",
            )
            if self._died():
                raise AssertionError(f"daemon exited early: {self.output()[-3000:]}")
            wait_for(lambda: self.ready() or self._died(), timeout=60, message="/readyz of the new daemon")
            if self._died():
                raise AssertionError(f"daemon exited early: {self.output()[-3000:]}")
        del previous
        return self

    def ready(self) -> bool:
        """`/readyz` answers 200: the vault path works (intake, planning, decisions, the watcher)."""
        info = self.info() or {}
        try:
            return httpx.get(f"http://127.0.0.1:{info['port']}/readyz", timeout=2).status_code == 200
        except (KeyError, httpx.HTTPError):
            return False

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def info(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.vault / ".ai-employee" / "daemon.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    root.mkdir()
    for folder in FOLDERS:
        (root / folder).mkdir()
    (root / "Company_Handbook.md").write_text("# Handbook\n\nSafety first.\n")
    return root


@pytest.fixture
def daemon_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("AIE_", "ANTHROPIC", "CLAUDE", "OPENAI", "ATLAS", "MANUS", "TELEGRAM", "IMAP", "SLACK", "REDIS")
        )
    }
    env["AIE_VAULT__SETTLE_SECONDS"] = "0.3"
    env["AIE_LOGGING__LEVEL"] = "info"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def daemon(vault: Path, daemon_env: dict[str, str]) -> Iterator[DaemonProcess]:
    process = DaemonProcess(vault, daemon_env)
    yield process
    process.kill()


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def note_result(path: Path) -> dict[str, Any] | None:
    """The full result of an executed plan: the JSON under its "## Result" heading (decision 0009:
    the result is read in the body; the properties hold flat summaries)."""
    text = path.read_text(encoding="utf-8")
    heading = text.rfind("\n## Result\n")
    if heading < 0:
        return None
    match = re.search(r"```json\n(.*?)\n```", text[heading:], re.DOTALL)
    return None if match is None else dict(json.loads(match.group(1)))


def require_ocr() -> None:
    """Skip (fail under AIE_REQUIRE_SERVICES=1) without Tesseract or a font to draw text with."""
    if shutil.which("tesseract") is None:
        skip_or_fail("Tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")
    if not any(
        Path(path).exists()
        for path in (
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        )
    ):
        skip_or_fail("no DejaVu font to draw text with (apt-get install fonts-dejavu-core)")
