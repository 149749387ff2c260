"""`doctor`'s local checks and its command: the config, the vault, inotify, the port, the ledger."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from ai_employee.cli import main
from ai_employee.config import load_settings
from ai_employee.doctor import host
from ai_employee.doctor.report import Status
from ai_employee.doctor.settings_check import load_for_doctor
from ai_employee.vault.layout import VaultLayout
from ai_employee.vault.ledger import SCHEMA_VERSION, Ledger
from tests.fakes.common import SERVICE_ENV_PREFIXES

SERVICE_VARIABLES = (*SERVICE_ENV_PREFIXES, "HEALTH_", "DATABASE_URL", "REDIS_URL", "WHATSAPP")


@pytest.fixture
def layout(tmp_path: Path) -> VaultLayout:
    vault = VaultLayout(tmp_path / "vault")
    vault.create()
    vault.handbook.write_text("# Handbook\n")
    return vault


def test_an_unknown_config_key_fails_and_names_the_close_one(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("vault:\n  settle_secnods: 2\nexecution:\n  dry_run: true\n")
    settings, check = load_for_doctor(config, tmp_path / "v", environ={})
    assert check.status is Status.FAIL
    assert "vault.settle_secnods (did you mean vault.settle_seconds?)" in check.detail
    assert settings.vault.path == tmp_path / "v"  # the other checks still run, on the right vault


def test_a_value_of_the_wrong_type_fails_with_the_field(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("health:\n  port: eighty\n")
    _settings, check = load_for_doctor(config, None, environ={})
    assert check.status is Status.FAIL and "health.port" in check.detail


def test_a_valid_config_is_ok(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("execution:\n  dry_run: true\n")
    _settings, check = load_for_doctor(config, None, environ={})
    assert check.status is Status.OK


def test_a_complete_vault_is_ok_and_a_missing_one_is_a_warning(layout: VaultLayout, tmp_path: Path) -> None:
    assert host.vault_folders(layout).status is Status.OK
    missing = host.vault_folders(VaultLayout(tmp_path / "nowhere"))
    assert missing.status is Status.WARN and "ai-employee init" in (missing.fix or "")


def test_a_state_folder_others_can_read_is_a_warning(layout: VaultLayout) -> None:
    layout.state_dir.chmod(0o755)
    check = host.vault_folders(layout)
    assert check.status is Status.WARN and "chmod 700" in (check.fix or "")


def test_inotify_limit_below_the_vault_folders_fails(layout: VaultLayout, tmp_path: Path) -> None:
    limit = tmp_path / "max_user_watches"
    folders = host.count_folders(layout.root)
    limit.write_text(f"{folders - 1}\n")
    failed = host.inotify_watches(layout, limit)
    assert failed.status is Status.FAIL and "sysctl" in (failed.fix or "")
    limit.write_text(f"{folders + 1}\n")
    assert host.inotify_watches(layout, limit).status is Status.WARN
    limit.write_text("524288\n")
    assert host.inotify_watches(layout, limit).status is Status.OK


def test_a_port_taken_by_another_program_fails(layout: VaultLayout) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        settings = load_settings(None, environ={}, overrides={("health", "port"): port})
        check = host.control_port(settings, layout)
    assert check.status is Status.FAIL and "HEALTH_SERVER_PORT" in (check.fix or "")
    assert host.control_port(settings, layout).status is Status.OK  # closed again: free


def test_ledger_schema_old_is_migrated_new_is_refused(layout: VaultLayout) -> None:
    assert "creates it" in host.ledger_schema(layout).detail
    Ledger(layout.state_dir / "state.db").close()
    assert host.ledger_schema(layout).detail == f"schema version {SCHEMA_VERSION} (current)"
    db = sqlite3.connect(layout.state_dir / "state.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    assert host.ledger_schema(layout).status is Status.FAIL


def test_ocr_engine_is_found_when_tesseract_is_installed() -> None:
    check = host.ocr_engine()
    if shutil.which("tesseract"):
        assert check.status is Status.OK and check.detail.startswith("tesseract")
    else:
        assert check.status is Status.WARN and "tesseract-ocr" in (check.fix or "")


def test_doctor_json_exits_1_when_a_check_fails_and_0_otherwise(
    layout: VaultLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):  # no credential of this machine may send the test outside
        if name.startswith(SERVICE_VARIABLES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text("health:\n  port: 0\n")
    runner = CliRunner()
    result = runner.invoke(main, ["doctor", "--vault", str(layout.root), "--config", str(good), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0, result.output
    assert report["ok"] is True and report["vault"] == str(layout.root)
    assert {"python", "config", "vault", "disk", "inotify", "ledger", "ocr", "port", "atlas", "redis"} <= {
        check["name"] for check in report["checks"]
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense: 1\n")
    result = runner.invoke(main, ["doctor", "--vault", str(layout.root), "--config", str(bad)])
    assert result.exit_code == 1
    assert "fail  config" in result.output and "fix:" in result.output


def test_other_state_databases_report_their_schema_revision(layout: VaultLayout) -> None:
    assert host.state_databases(layout).detail == "no other database in .ai-employee/ yet"
    db = sqlite3.connect(layout.state_dir / "audit.sqlite")
    db.execute("CREATE TABLE alembic_version (version_num TEXT PRIMARY KEY)")
    db.execute("INSERT INTO alembic_version VALUES ('0003_interventions')")
    db.commit()
    db.close()
    check = host.state_databases(layout)
    assert check.status is Status.OK and check.detail == "audit.sqlite at revision 0003_interventions"
