"""The package's metadata: an SPDX licence, the integrations as extras, every dependency pinned."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            assert not requirement.extras, f"{line}: a constraints file cannot carry extras"
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line} is not an exact pin"
            pins[_canonical(requirement.name)] = specifier.version
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_licence_is_an_spdx_expression_with_its_file() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_the_classifiers_say_linux_only_and_name_no_licence() -> None:
    classifiers = PROJECT["classifiers"]
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression says it
    assert PROJECT["urls"]["Source"].startswith("https://")


def test_each_integration_is_an_extra_and_all_holds_all_but_local_whisper() -> None:
    expected = {
        "claude": {"anthropic"},
        "openai": {"openai"},
        "telegram": {"python-telegram-bot"},
        "email": {"imapclient", "aiosmtplib", "html2text"},
        "slack": {"slack-sdk"},
        "postgres": {"psycopg"},
        "redis": {"redis"},
        "ocr": {"pytesseract", "pillow"},
        "local-whisper": {"faster-whisper"},
        "whatsapp": set(),
    }
    for extra, names in expected.items():
        assert {_canonical(Requirement(item).name) for item in EXTRAS[extra]} == names, extra
    (everything,) = EXTRAS["all"]
    assert set(Requirement(everything).extras) == set(expected) - {"local-whisper"}


def test_integration_sdks_are_not_core_dependencies() -> None:
    core = {_canonical(Requirement(item).name) for item in PROJECT["dependencies"]}
    assert not core & {"anthropic", "openai", "python-telegram-bot", "imapclient", "slack-sdk", "redis"}
    assert {"sqlalchemy", "alembic", "pypdfium2", "pypdf", "python-docx", "openpyxl", "pillow"} <= core


def test_every_dependency_but_local_whisper_is_pinned_and_the_pin_satisfies_its_range() -> None:
    pins = _pins()
    wanted = list(PROJECT["dependencies"])
    for extra, items in EXTRAS.items():
        if extra not in ("all", "local-whisper"):
            wanted += items
    for item in wanted:
        requirement = Requirement(item)
        name = _canonical(requirement.name)
        assert name in pins, f"{requirement.name} has no pin in requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"pin {name}=={pins[name]} is outside {item}"
        if "binary" in requirement.extras:
            assert f"{name}-binary" in pins, f"{name}[binary] needs {name}-binary pinned too"


def test_make_installs_the_all_extra_constrained_by_the_pins() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert '-c requirements.txt -e ".[all]"' in makefile
    assert "--no-deps" not in makefile
