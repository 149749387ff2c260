"""The command line without a daemon: flags and config values are checked with clear messages,
`init` says where its config went, `--help` names the services."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ai_employee.cli import main
from ai_employee.config import load_settings


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in ("AIE_CONFIG", "AIE_VAULT", "AIE_LOGGING__LEVEL", "HEALTH_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def test_an_unknown_log_level_flag_is_a_usage_error_naming_the_choices(runner: CliRunner) -> None:
    result = runner.invoke(main, ["start", "--vault", "V", "--log-level", "loud"])

    assert result.exit_code == 2
    assert "'loud' is not one of 'debug', 'info', 'warning', 'error', 'critical'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_unknown_log_level_in_the_environment_is_one_clear_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["start", "--vault", "V"], env={"AIE_LOGGING__LEVEL": "loud"})

    assert result.exit_code == 1
    assert "logging.level: Input should be 'debug', 'info', 'warning', 'error' or 'critical'" in result.output
    assert "Traceback" not in result.output


def test_a_port_out_of_range_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["start", "--vault", "V", "--port", "70000"])

    assert result.exit_code == 2
    assert "70000 is not in the range 0<=x<=65535" in result.output


def test_a_misspelt_setting_variable_is_named_instead_of_ignored(runner: CliRunner) -> None:
    result = runner.invoke(main, ["status", "--vault", "V"], env={"AIE_EXECUTION__DRYRUN": "false"})

    assert result.exit_code == 1
    assert "unknown setting AIE_EXECUTION__DRYRUN: execution has no key 'dryrun'" in result.output


def test_a_list_setting_may_be_written_comma_separated() -> None:
    settings = load_settings(environ={"AIE_EXECUTION__AUTO_APPROVE": "vault.note, manus.research"})

    assert settings.execution.auto_approve == ["vault.note", "manus.research"]


def test_log_level_is_case_insensitive_and_warn_means_warning() -> None:
    assert load_settings(environ={"AIE_LOGGING__LEVEL": "WARN"}).logging.level == "warning"


def test_init_writes_the_config_into_the_vault_and_says_where(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("vault:\n  path: Elsewhere\n", encoding="utf-8")

    result = runner.invoke(main, ["init", "MyVault"])

    assert result.exit_code == 0, result.output
    written = tmp_path / "MyVault" / "config.yaml"
    assert f"wrote the config {written}" in result.output
    assert "dry_run: true" in written.read_text(encoding="utf-8")
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == "vault:\n  path: Elsewhere\n"


def test_the_vaults_own_config_is_read_when_the_vault_is_named(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("vault:\n  settle_seconds: 9\n", encoding="utf-8")
    assert runner.invoke(main, ["init", "MyVault"]).exit_code == 0
    config = tmp_path / "MyVault" / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("settle_seconds: 2", "settle_seconds: 4"))

    named = load_settings(environ={}, overrides={("vault", "path"): "MyVault"})
    by_variable = load_settings(environ={"AIE_VAULT": "MyVault"})

    assert named.vault.settle_seconds == 4
    assert by_variable.vault.settle_seconds == 4
    assert load_settings(environ={}).vault.settle_seconds == 9  # no vault named: ./config.yaml


def test_a_vault_config_read_by_path_is_the_config_of_its_vault(runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(main, ["init", "MyVault"]).exit_code == 0

    settings = load_settings(tmp_path / "MyVault" / "config.yaml", environ={})

    assert settings.vault.path == tmp_path / "MyVault"


def test_init_keeps_a_config_that_is_there_and_says_so(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "MyVault").mkdir()
    (tmp_path / "MyVault" / "config.yaml").write_text("vault:\n  settle_seconds: 5\n", encoding="utf-8")

    result = runner.invoke(main, ["init", "MyVault"])

    assert f"kept the config {tmp_path / 'MyVault' / 'config.yaml'}" in result.output
    kept = (tmp_path / "MyVault" / "config.yaml").read_text(encoding="utf-8")
    assert kept == "vault:\n  settle_seconds: 5\n"


def test_restart_help_lists_the_service_names(runner: CliRunner) -> None:
    result = runner.invoke(main, ["restart", "--help"])

    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    assert "Restart only these services: pipeline, watcher, dashboard," in flat
    assert "email" in flat and "telegram" in flat  # the plug-ins', by their entry-point names


def test_start_help_offers_the_console_log_format(runner: CliRunner) -> None:
    result = runner.invoke(main, ["start", "--help"])

    assert "--log-format [auto|json|console]" in result.output


def test_a_vault_path_that_is_a_file_is_one_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("x", encoding="utf-8")

    result = runner.invoke(main, ["start", "--vault", "not-a-folder", "--port", "0"])

    assert result.exit_code == 1
    path = tmp_path / "not-a-folder"
    assert result.output == f"Error: the vault {path} cannot be used: File exists ({path})\n"
