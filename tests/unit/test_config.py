"""Settings: `${VAR}` expansion, the contract's named variables, AIE_* overrides, precedence, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_employee.config import ConfigError, expand_env, load_settings


@pytest.fixture(autouse=True)
def _no_stray_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings falls back to ./config.yaml; run where there is none."""
    monkeypatch.chdir(tmp_path)


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_dollar_var_is_expanded_from_the_environment(tmp_path: Path) -> None:
    path = config_file(tmp_path, "atlas:\n  base_url: ${MY_ATLAS}/api\n")
    settings = load_settings(path, environ={"MY_ATLAS": "https://cmms.example.com"})
    assert settings.atlas.base_url == "https://cmms.example.com/api"


def test_default_is_used_when_the_variable_is_unset(tmp_path: Path) -> None:
    path = config_file(tmp_path, "planner:\n  kind: ${SOME_PLANNER:-openai}\n")
    assert load_settings(path, environ={}).planner.kind == "openai"


def test_default_is_used_when_the_variable_is_empty(tmp_path: Path) -> None:
    path = config_file(tmp_path, "planner:\n  kind: ${SOME_PLANNER:-openai}\n")
    assert load_settings(path, environ={"SOME_PLANNER": ""}).planner.kind == "openai"


def test_set_variable_beats_its_default(tmp_path: Path) -> None:
    path = config_file(tmp_path, "planner:\n  kind: ${SOME_PLANNER:-openai}\n")
    assert load_settings(path, environ={"SOME_PLANNER": "template"}).planner.kind == "template"


def test_unset_variable_without_default_means_not_configured(tmp_path: Path) -> None:
    path = config_file(tmp_path, "atlas:\n  email: ${NOBODY_SET_THIS}\nmanus:\n  base_url: ${NOR_THIS}\n")
    settings = load_settings(path, environ={})
    assert settings.atlas.email is None
    assert settings.manus.base_url == "https://api.manus.ai"  # the model's default, not ""


def test_expansion_reaches_strings_inside_lists_and_leaves_other_types_alone() -> None:
    tree = {"a": ["${X}", 3, {"b": "x=${X:-no}"}], "c": True}
    assert expand_env(tree, {"X": "yes"}) == {"a": ["yes", 3, {"b": "x=yes"}], "c": True}


def test_aie_vault_sets_the_vault_path() -> None:
    assert load_settings(environ={"AIE_VAULT": "/srv/vault"}).vault.path == Path("/srv/vault")


def test_aie_live_1_turns_live_mode_on() -> None:
    settings = load_settings(environ={"AIE_LIVE": "1"})
    assert settings.live
    assert settings.execution.dry_run is False


def test_dry_run_is_the_default() -> None:
    settings = load_settings(environ={})
    assert not settings.live
    assert settings.execution.dry_run is True


def test_aie_live_0_keeps_dry_run() -> None:
    assert load_settings(environ={"AIE_LIVE": "0"}).execution.dry_run is True


def test_aie_planner_chooses_the_planner() -> None:
    assert load_settings(environ={"AIE_PLANNER": "openai"}).planner_kind() == "openai"


def test_planner_defaults_to_claude_when_an_anthropic_key_is_set() -> None:
    assert load_settings(environ={"ANTHROPIC_API_KEY": "sk-ant-test"}).planner_kind() == "claude"
    assert load_settings(environ={}).planner_kind() == "template"


def test_health_server_port_zero_means_any_free_port() -> None:
    assert load_settings(environ={"HEALTH_SERVER_PORT": "0"}).health.port == 0


def test_telegram_allowed_chat_ids_are_comma_separated_integers() -> None:
    settings = load_settings(environ={"TELEGRAM_ALLOWED_CHAT_IDS": "12345, -1001234567890,"})
    assert settings.telegram.allowed_chat_ids == [12345, -1001234567890]


def test_aie_nested_variable_overrides_a_setting() -> None:
    settings = load_settings(environ={"AIE_EXECUTION__DRY_RUN": "false", "AIE_VAULT__SETTLE_SECONDS": "0.3"})
    assert settings.execution.dry_run is False
    assert settings.vault.settle_seconds == 0.3


def test_aie_nested_variable_beats_the_config_file_and_keeps_its_other_keys(tmp_path: Path) -> None:
    path = config_file(tmp_path, "vault:\n  path: /srv/vault\n  settle_seconds: 5\n")
    settings = load_settings(path, environ={"AIE_VAULT__SETTLE_SECONDS": "0.3"})
    assert settings.vault.settle_seconds == 0.3
    assert settings.vault.path == Path("/srv/vault")


def test_named_variable_beats_an_aie_nested_variable() -> None:
    settings = load_settings(environ={"AIE_HEALTH__PORT": "9000", "HEALTH_SERVER_PORT": "0"})
    assert settings.health.port == 0


def test_command_line_flag_beats_every_environment_variable() -> None:
    settings = load_settings(
        environ={"AIE_LOGGING__LEVEL": "info", "HEALTH_SERVER_PORT": "8080"},
        overrides={("logging", "level"): "debug", ("health", "port"): 0},
    )
    assert settings.logging.level == "debug"
    assert settings.health.port == 0


def test_anthropic_api_key_beats_its_alias_claude_api_key() -> None:
    settings = load_settings(environ={"CLAUDE_API_KEY": "from-alias", "ANTHROPIC_API_KEY": "from-main"})
    assert settings.anthropic.api_key is not None
    assert settings.anthropic.api_key.get_secret_value() == "from-main"


def test_claude_api_key_alone_is_honoured() -> None:
    settings = load_settings(environ={"CLAUDE_API_KEY": "from-alias"})
    assert settings.anthropic.api_key is not None
    assert settings.anthropic.api_key.get_secret_value() == "from-alias"


def test_aie_config_names_the_config_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, "vault:\n  settle_seconds: 7\n")
    assert load_settings(environ={"AIE_CONFIG": str(path)}).vault.settle_seconds == 7


def test_aie_config_naming_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"AIE_CONFIG": str(tmp_path / "missing.yaml")})


def test_out_of_range_value_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    path = config_file(tmp_path, "vault:\n  settle_seconds: -1\n")
    with pytest.raises(ConfigError, match=r"vault\.settle_seconds: .*greater than or equal to 0"):
        load_settings(path, environ={})


def test_unknown_key_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = config_file(tmp_path, "vault:\n  settle_secnds: 1\n")
    with pytest.raises(ConfigError, match=r"vault\.settle_secnds: Extra inputs are not permitted"):
        load_settings(path, environ={})


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = config_file(tmp_path, "vault: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_settings(path, environ={})


def test_config_that_is_not_a_mapping_is_a_config_error(tmp_path: Path) -> None:
    path = config_file(tmp_path, "- vault\n- planner\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(path, environ={})


def test_bad_chat_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"telegram\.allowed_chat_ids"):
        load_settings(environ={"TELEGRAM_ALLOWED_CHAT_IDS": "12,abc"})


def test_config_error_never_repeats_the_rejected_value(tmp_path: Path) -> None:
    """A value in the wrong place may be a secret; the message names the field only."""
    path = config_file(tmp_path, "telegram:\n  bot_token: [s3cr3t-token-value]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "telegram.bot_token" in str(caught.value)
    assert "s3cr3t-token-value" not in str(caught.value)
