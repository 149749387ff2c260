"""Settings: one object, built once at start and passed in; nothing reads the environment deep inside.

Sources, lowest to highest precedence: defaults, `config.yaml` (with `${VAR}` and
`${VAR:-default}` expanded from the environment), `AIE_*` variables (nested with `__`,
e.g. `AIE_EXECUTION__DRY_RUN=false`), the contract's named variables (`AIE_VAULT`,
`AIE_LIVE`, `AIE_PLANNER`, `HEALTH_SERVER_PORT`, the service credentials), then CLI flags.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("aie_settings_environ", default=None)
_FILE_TREE: ContextVar[dict[str, Any] | None] = ContextVar("aie_settings_file_tree", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' `AIE_*` source, reading the environment it is handed."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None) -> None:
        self._environ = os.environ if environ is None else environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class _FileSource(PydanticBaseSettingsSource):
    """The expanded `config.yaml`: the lowest source after the defaults."""

    def __init__(self, settings_cls: type[BaseSettings], tree: dict[str, Any] | None) -> None:
        super().__init__(settings_cls)
        self._tree = tree or {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._tree.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._tree)


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


def expand_env(value: Any, environ: Mapping[str, str]) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string of a parsed YAML tree."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = environ.get(name)
            if found is None or (found == "" and default is not None):
                if default is None:
                    return ""
                return default
            return found

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {key: expand_env(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, environ) for item in value]
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VaultSettings(Section):
    path: Path = Path("AI_Employee_Vault")
    settle_seconds: float = Field(2.0, ge=0.0)
    reconcile_interval_seconds: float = Field(60.0, gt=0.0)
    batch_size: int = Field(64, ge=1, le=4096)
    max_body_bytes: int = Field(256 * 1024, ge=1024)  # text beyond this is linked, not copied


class ExecutionSettings(Section):
    dry_run: bool = True
    live_actions: list[str] = Field(default_factory=list)  # empty: every registered action
    auto_approve: list[str] = Field(default_factory=list)  # action types; default none
    concurrency: int = Field(8, ge=1, le=256)


class PlannerSettings(Section):
    kind: Literal["auto", "template", "claude", "openai"] = "auto"
    claude_model: str = "claude-sonnet-4-6"
    openai_model: str = "gpt-4.1-mini"
    timeout_seconds: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0)
    max_input_chars: int = Field(20_000, ge=100)
    daily_budget_usd: float = Field(5.0, ge=0)
    min_confidence: float = Field(0.6, ge=0, le=1)
    concurrency: int = Field(4, ge=1, le=64)


class HealthSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    check_interval_seconds: float = Field(30.0, gt=0)


class LoggingSettings(Section):
    level: str = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DatabaseSettings(Section):
    url: str | None = None  # None: SQLite in <vault>/.ai-employee/
    #: the audit store (tasks, checkpoints, interventions, artifacts); false: off
    store: bool = True


class ModelPrice(Section):
    input_per_mtok: float = Field(ge=0)  # USD per million input tokens
    output_per_mtok: float = Field(ge=0)  # USD per million output tokens


class CostSettings(Section):
    """What outside services cost, for the store, the notes, Dashboard.md and /metrics."""

    #: model name prefix -> price; the longest prefix wins, over the built-in table (planners/budget.py)
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    #: model name prefix -> context window in tokens, over the built-in table (planners/context.py)
    context_windows: dict[str, int] = Field(default_factory=dict)
    whisper_usd_per_minute: float = Field(0.006, ge=0)
    manus_usd_per_credit: float = Field(0.01, ge=0)


class AtlasSettings(Section):
    base_url: str | None = None
    email: str | None = None
    password: SecretStr | None = None
    timeout_seconds: float = 30.0


class ManusSettings(Section):
    api_key: SecretStr | None = None
    base_url: str = "https://api.manus.ai"
    default_profile: Literal["lite", "standard", "max"] = "standard"
    api_version: Literal["v1", "v2"] = "v1"
    poll_initial_seconds: float = 5.0
    poll_max_seconds: float = 60.0
    webhook_public_key: str | None = None


class OpenAISettings(Section):
    api_key: SecretStr | None = None
    base_url: str | None = None
    transcription_model: str = "whisper-1"


class AnthropicSettings(Section):
    api_key: SecretStr | None = None
    base_url: str | None = None


class TelegramSettings(Section):
    bot_token: SecretStr | None = None
    allowed_chat_ids: list[int] = Field(default_factory=list)
    api_base_url: str = "https://api.telegram.org"
    mode: Literal["polling", "webhook"] = "polling"
    webhook_secret: SecretStr | None = None
    webhook_url: str | None = None  # public URL Telegram posts to (webhook mode), ending in /telegram/webhook
    local_whisper_model: str | None = None

    @field_validator("allowed_chat_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [int(part) for part in value.replace(" ", "").split(",") if part]
        if isinstance(value, int):
            return [value]
        return value


class EmailSettings(Section):
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: SecretStr | None = None
    folder: str = "INBOX"
    ssl: bool = True
    poll_interval_seconds: float = 60.0
    after_intake: Literal["seen", "move"] = "seen"
    move_to_folder: str = "Processed"
    oauth2_token: SecretStr | None = None
    allowed_senders: list[str] = Field(default_factory=list)  # empty: everyone is trusted
    reply_enabled: bool = False
    reply_dry_run: bool = True
    smtp_host: str | None = None
    smtp_port: int = 587


class SlackSettings(Section):
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    channel: str | None = None
    api_base_url: str = "https://slack.com/api/"


class RedisSettings(Section):
    url: str | None = None


class ServicesSettings(Section):
    """How the daemon's services meet the outside world (docs/services.md)."""

    #: integrations whose outside server must be reachable for /readyz to say ready (e.g. ["email"]);
    #: the vault path (pipeline, watcher) is always required
    required: list[str] = Field(default_factory=list)
    #: the longest wait between two attempts to reach an outside server (jittered backoff)
    max_backoff: float = Field(60.0, gt=0)
    #: the first wait after a failure; it doubles up to `max_backoff`
    initial_backoff: float = Field(1.0, gt=0)
    #: connect, TLS handshake and login, each: a server that accepts and never answers costs this
    connect_timeout: float = Field(10.0, gt=0)
    #: one read or write once connected (an IDLE keepalive included)
    read_timeout: float = Field(60.0, gt=0)
    #: how long `stop` lets a service finish its in-flight work before it is cancelled
    grace_seconds: float = Field(30.0, gt=0)


class Settings(BaseSettings):
    """Everything configurable. Build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="AIE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    vault: VaultSettings = Field(default_factory=VaultSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    atlas: AtlasSettings = Field(default_factory=AtlasSettings)
    manus: ManusSettings = Field(default_factory=ManusSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    anthropic: AnthropicSettings = Field(default_factory=AnthropicSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    costs: CostSettings = Field(default_factory=CostSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: init (named variables, then flags), AIE_* nested variables, config.yaml.
        return (
            init_settings,
            _MappingEnvSource(settings_cls, _ENVIRON.get()),
            _FileSource(settings_cls, _FILE_TREE.get()),
        )

    @property
    def live(self) -> bool:
        return not self.execution.dry_run

    def planner_kind(self) -> str:
        if self.planner.kind != "auto":
            return self.planner.kind
        return "claude" if self.anthropic.api_key else "template"


# The contract's variables (CONTRACT.md §6), honoured as written: name -> settings path.
NAMED_VARIABLES: dict[str, tuple[str, ...]] = {
    "AIE_VAULT": ("vault", "path"),
    "AIE_PLANNER": ("planner", "kind"),
    "HEALTH_SERVER_PORT": ("health", "port"),
    "ANTHROPIC_API_KEY": ("anthropic", "api_key"),
    "CLAUDE_API_KEY": ("anthropic", "api_key"),
    "ANTHROPIC_BASE_URL": ("anthropic", "base_url"),
    "OPENAI_API_KEY": ("openai", "api_key"),
    "OPENAI_BASE_URL": ("openai", "base_url"),
    "ATLAS_BASE_URL": ("atlas", "base_url"),
    "ATLAS_EMAIL": ("atlas", "email"),
    "ATLAS_PASSWORD": ("atlas", "password"),
    "MANUS_API_KEY": ("manus", "api_key"),
    "MANUS_BASE_URL": ("manus", "base_url"),
    "MANUS_DEFAULT_PROFILE": ("manus", "default_profile"),
    "TELEGRAM_BOT_TOKEN": ("telegram", "bot_token"),
    "TELEGRAM_ALLOWED_CHAT_IDS": ("telegram", "allowed_chat_ids"),
    "TELEGRAM_API_BASE_URL": ("telegram", "api_base_url"),
    "IMAP_HOST": ("email", "host"),
    "IMAP_PORT": ("email", "port"),
    "IMAP_USER": ("email", "user"),
    "IMAP_PASSWORD": ("email", "password"),
    "IMAP_FOLDER": ("email", "folder"),
    "IMAP_SSL": ("email", "ssl"),
    "SLACK_BOT_TOKEN": ("slack", "bot_token"),
    "SLACK_SIGNING_SECRET": ("slack", "signing_secret"),
    "SLACK_CHANNEL": ("slack", "channel"),
    "SLACK_API_BASE_URL": ("slack", "api_base_url"),
    "DATABASE_URL": ("database", "url"),
    "REDIS_URL": ("redis", "url"),
}
# ANTHROPIC_API_KEY wins over its alias CLAUDE_API_KEY: later entries are applied first.
_APPLY_ORDER = ["CLAUDE_API_KEY", *[name for name in NAMED_VARIABLES if name != "CLAUDE_API_KEY"]]


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def read_config_file(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    expanded = expand_env(loaded, environ)
    assert isinstance(expanded, dict)
    return _drop_empty(expanded)


def _drop_empty(tree: dict[str, Any]) -> dict[str, Any]:
    """`${VAR}` of an unset variable expands to "": treat that as "not configured"."""
    cleaned: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            cleaned[key] = _drop_empty(value)
        elif value != "":
            cleaned[key] = value
    return cleaned


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> Settings:
    """Build the settings. `config_file` None: `AIE_CONFIG`, else `./config.yaml` if present."""
    env = dict(os.environ if environ is None else environ)
    if config_file is None and env.get("AIE_CONFIG"):
        config_file = Path(env["AIE_CONFIG"])
        if not config_file.is_file():
            raise ConfigError(f"AIE_CONFIG names {config_file}, which does not exist")
    if config_file is None and Path("config.yaml").is_file():
        config_file = Path("config.yaml")
    file_tree = read_config_file(config_file, env) if config_file is not None else {}
    tree: dict[str, Any] = {}
    for name in _APPLY_ORDER:
        value = env.get(name)
        if value:
            _set_path(tree, NAMED_VARIABLES[name], value)
    if env.get("AIE_LIVE", "").strip().lower() in {"1", "true", "yes", "on"}:
        _set_path(tree, ("execution", "dry_run"), False)
    for path, value in (overrides or {}).items():
        _set_path(tree, path, value)
    # AIE_* nested variables are read by pydantic-settings; keep the named ones out of its way.
    nested = {key: value for key, value in env.items() if key.startswith("AIE_") and "__" in key}
    token = _ENVIRON.set(nested)
    file_token = _FILE_TREE.set(file_tree)
    try:
        return Settings(**tree)
    except ValidationError as error:
        raise ConfigError(f"invalid configuration: {_describe(error)}") from error
    except ValueError as error:
        raise ConfigError(f"invalid configuration: {error}") from error
    finally:
        _FILE_TREE.reset(file_token)
        _ENVIRON.reset(token)


def _describe(error: ValidationError) -> str:
    """Field and reason only: the rejected value may be a secret."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    )
