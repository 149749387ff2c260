"""One version, in one place, and a CHANGELOG that knows it."""

from __future__ import annotations

import re
import tomllib

from ai_employee import __version__
from tests.conftest import REPO


def test_the_package_metadata_takes_the_version_from_ai_employee() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ai_employee.__version__"}


def test_the_changelog_keeps_a_changelog_with_the_current_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog")
    assert "## [Unreleased]" in changelog
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.MULTILINE)
    assert __version__ in released
