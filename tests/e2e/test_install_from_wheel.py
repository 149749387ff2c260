"""Install without the repo: the built wheel, in a fresh venv, runs init, start, status and stop.

The wheel is built as a user builds it (`python -m build --wheel`, isolated) from a copy of the
project's files, and installed with pip into a new venv outside the repo. Its dependencies are
the ones this test environment already has (a `.pth` line points the new venv at them, after
its own site-packages): resolving them from an index would take a minute here, and what this
test is about is the wheel itself (code, package data, entry points, console script) working
with no repo in sight. That the installed metadata's requirements are all met is checked too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ai_employee import __version__
from tests.conftest import REPO
from tests.fakes.common import SERVICE_ENV_PREFIXES

PROJECT_FILES = ("pyproject.toml", "README.md", "CHANGELOG.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in PROJECT_FILES:
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (found,) = out.glob("ai_employee-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz-test-dependencies.pth").write_text("\n".join(sorted(shared)) + "\n")
    return root


def _env() -> dict[str, str]:
    outside = (*SERVICE_ENV_PREFIXES, "PYTHON")
    keep = {key: value for key, value in os.environ.items() if not key.startswith(outside)}
    return {**keep, "AIE_VAULT__SETTLE_SECONDS": "0.3", "PYTHONUNBUFFERED": "1"}


def test_the_wheel_carries_every_file_of_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "src" / "ai_employee"
    expected = {
        path.relative_to(REPO / "src").as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert expected - names == set()
    assert f"ai_employee-{__version__}.dist-info/entry_points.txt" in names


def test_installed_wheel_runs_init_start_status_stop_outside_the_repo(venv: Path, tmp_path: Path) -> None:
    env = _env()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "ai-employee"), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )

    _assert_installed_outside_the_repo(venv, tmp_path, env)
    assert run("init", "Vault").returncode == 0
    vault = tmp_path / "Vault"
    assert (vault / "Inbox").is_dir() and (vault / "config.yaml").is_file()  # init writes it into the vault
    started = run("start", "--vault", str(vault), "--port", "0", "--detach")
    try:
        assert started.returncode == 0, started.stderr + started.stdout
        status = run("status", "--vault", str(vault), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        data = json.loads(status.stdout)
        assert data["running"] is True and data["version"] == __version__
        stopped = run("stop", "--vault", str(vault))
        assert stopped.returncode == 0, stopped.stderr
        assert run("status", "--vault", str(vault)).returncode == 3
    finally:
        info = vault / ".ai-employee" / "daemon.json"
        if info.exists():
            with contextlib.suppress(ProcessLookupError, ValueError, KeyError):
                os.kill(json.loads(info.read_text())["pid"], signal.SIGKILL)


def _assert_installed_outside_the_repo(venv: Path, cwd: Path, env: dict[str, str]) -> None:
    """The package imported is the venv's, its version is __version__, its requirements are met."""
    script = (
        "import json, sys, ai_employee, importlib.metadata as m\n"
        "needed = [r for r in m.requires('ai-employee') or [] if 'extra ==' not in r]\n"
        "names = [r.split(';')[0] for r in needed]\n"
        "found = {}\n"
        "for text in names:\n"
        "    name = text.split('>')[0].split('<')[0].split('=')[0].split('[')[0].strip()\n"
        "    try: found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: found[name] = None\n"
        "print(json.dumps({'file': ai_employee.__file__, 'version': m.version('ai-employee'),"
        " 'requires': needed, 'found': found}))\n"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    facts = json.loads(out.stdout)
    assert facts["file"].startswith(str(venv)), facts["file"]
    assert facts["version"] == __version__
    unmet = []
    for text in facts["requires"]:
        requirement = Requirement(text)
        version = facts["found"].get(requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            unmet.append(text)
    assert unmet == []
