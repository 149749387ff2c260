"""`make run` runs the daemon on the bundled AI_Employee_Vault/: nothing it writes there may be a
tracked file, or every run leaves the checkout dirty."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ai_employee.vault.layout import DASHBOARD, STATE_DIR, Folder

REPO = Path(__file__).resolve().parents[2]
VAULT = "AI_Employee_Vault"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)


@pytest.fixture(autouse=True)
def _checkout() -> None:
    if shutil.which("git") is None or _git("rev-parse", "--is-inside-work-tree").returncode != 0:
        pytest.skip("not a git checkout")


def test_the_bundled_vault_tracks_only_the_handbook_and_the_folder_keepers() -> None:
    tracked = _git("ls-files", VAULT).stdout.split()

    assert f"{VAULT}/Company_Handbook.md" in tracked
    assert [path for path in tracked if not path.endswith("/.gitkeep")] == [f"{VAULT}/Company_Handbook.md"]


@pytest.mark.parametrize(
    "written",
    [
        DASHBOARD,
        "config.yaml",
        f"{STATE_DIR}/daemon.json",
        *(f"{folder.value}/20261207-101500 pump-3 a1b2c3.md" for folder in Folder),
    ],
)
def test_what_the_daemon_writes_in_the_bundled_vault_is_ignored(written: str) -> None:
    assert _git("check-ignore", "--no-index", "-q", f"{VAULT}/{written}").returncode == 0
