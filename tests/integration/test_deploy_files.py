"""The deploy artefacts are valid for the tools that read them: systemd's units, compose, the image.

`systemd-analyze verify` loads each unit as systemd would (unknown directives and bad values are
reported); the only thing the test changes is where ExecStart's binary is, because this machine
has the package in a venv, not in /usr/local/bin. A broken copy of a unit is verified too, to
show the check is not vacuous.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, skip_or_fail

UNITS = REPO / "deploy" / "systemd"
INSTALLED_BINARY = "/usr/local/bin/ai-employee"


def _systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        skip_or_fail("systemd-analyze is not installed (apt-get install systemd)")
    assert binary is not None
    return binary


def _units_for_this_machine(target: Path, *, break_it: bool = False) -> list[Path]:
    """Copies of the units whose ExecStart names this environment's ai-employee."""
    here = Path(sys.executable).parent / "ai-employee"
    if not here.exists():
        pytest.skip(
            f"no ai-employee console script beside {sys.executable} to stand in for {INSTALLED_BINARY}"
        )
    copies = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        assert f"ExecStart={INSTALLED_BINARY} " in text
        text = text.replace(INSTALLED_BINARY, str(here))
        if break_it:
            text = text.replace("ProtectSystem=strict", "ProtectSystem=sometimes")
        copy = target / unit.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def _verify(binary: str, folder: Path) -> subprocess.CompletedProcess[str]:
    names = [path.name.replace("@.service", "@default.service") for path in sorted(folder.glob("*.service"))]
    return subprocess.run(
        [binary, "verify", "--man=no", *(str(folder / name) for name in names)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )


def _complaints(output: str, folder: Path) -> list[str]:
    """What verify said about our units (it may also grumble about the host's own units)."""
    ours = ("ai-employee.service", "ai-employee-worker@")
    return [line for line in output.splitlines() if any(name in line for name in ours)]


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    binary = _systemd_analyze()
    _units_for_this_machine(tmp_path)
    result = _verify(binary, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _complaints(result.stdout + result.stderr, tmp_path) == []


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    binary = _systemd_analyze()
    _units_for_this_machine(tmp_path, break_it=True)
    result = _verify(binary, tmp_path)
    complaints = _complaints(result.stdout + result.stderr, tmp_path)
    broken = [line for line in complaints if "protect system value" in line.lower()]
    assert any("ai-employee.service" in line for line in broken), complaints
    assert any("ai-employee-worker@" in line for line in broken), complaints


def test_the_daemon_unit_is_a_hardened_notify_service() -> None:
    unit = (UNITS / "ai-employee.service").read_text()
    for directive in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "EnvironmentFile=",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/ai-employee",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ):
        assert re.search(rf"^{re.escape(directive)}", unit, re.MULTILINE), directive
    worker = (UNITS / "ai-employee-worker@.service").read_text()
    assert "ExecStart=/usr/local/bin/ai-employee worker --namespace %i" in worker


def _compose() -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        return [legacy]
    skip_or_fail("neither `docker compose` nor docker-compose is installed (apt-get install docker-compose)")
    raise AssertionError("unreachable")


def test_compose_file_validates_with_docker_compose_config() -> None:
    result = subprocess.run(
        [*_compose(), "-f", str(REPO / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    services = resolved["services"]
    assert set(services) == {"daemon", "worker", "postgres", "redis"}
    assert services["daemon"]["environment"]["DATABASE_URL"].startswith("postgresql://")
    assert services["worker"]["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert services["worker"]["command"][:1] == ["worker"]
    assert any(
        str(volume).endswith("/vault") or ":/vault" in str(volume) for volume in services["daemon"]["volumes"]
    )


def test_dockerfile_runs_as_a_user_with_the_vault_as_a_volume_and_a_liveness_check() -> None:
    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", " ")  # continuation lines joined
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert re.search(r"^USER (?!root\b)\w+", dockerfile, re.MULTILINE)
    assert re.search(r'^VOLUME \["/vault"\]', dockerfile, re.MULTILINE)
    healthcheck = re.search(r"^HEALTHCHECK .*", dockerfile, re.MULTILINE)
    assert healthcheck is not None and "/livez" in healthcheck.group(0)
    assert re.search(r'^CMD \["start"\]', dockerfile, re.MULTILINE)
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        for name in copied.split():
            assert (REPO / name).exists(), f"the Dockerfile copies {name}, which the repo lacks"
