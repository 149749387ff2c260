"""Settings: one object, built once at start and passed in; nothing reads the environment deep inside.

Sources, lowest to highest precedence: defaults, `config.yaml` (with `${VAR}` and
`${VAR:-default}` expanded from the environment), `AIE_*` variables (nested with `__`,
e.g. `AIE_EXECUTION__DRY_RUN=false`), the contract's named variables (`AIE_VAULT`,
`AIE_LIVE`, `AIE_PLANNER`, `HEALTH_SERVER_PORT`, the service credentials), then CLI flags.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
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
    max_write_wait: float = Field(600.0, ge=0.0)  # seconds a file held open for writing is waited for


class DocumentSettings(Section):
    """Reading documents (PDF, scans, photos, Office files) in worker processes, with limits."""

    ocr_languages: str = "eng"  # Tesseract language codes joined by "+", e.g. "eng+deu"
    workers: int = Field(2, ge=1, le=32)  # worker processes reading documents at once
    timeout_seconds: float = Field(60.0, gt=0)  # per file; the worker is killed after it
    max_file_mb: float = Field(100.0, gt=0)  # larger files are kept, not read
    max_pages: int = Field(50, ge=1)  # pages read from a PDF
    max_ocr_pages: int = Field(20, ge=0)  # scanned pages read by OCR
    max_chars: int = Field(100_000, ge=1000)  # text kept in the note per document
    max_memory_mb: int = Field(1024, ge=128)  # address space of a worker (RLIMIT_AS)
    max_image_pixels: int = Field(60_000_000, ge=1_000_000)  # larger images are not decoded
    tesseract_cmd: str = "tesseract"  # the Tesseract program (a name on PATH or a path)


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
    #: None (not configured): 8080 if it is free, else any free port; 0: any free port. The port in
    #: use is in <vault>/.ai-employee/daemon.json (docs/decisions/0011-control-port-default.md).
    port: int | None = Field(None, ge=0, le=65535)
    check_interval_seconds: float = Field(30.0, gt=0)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return "warning" if value == "warn" else value
        return value


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
    admin_chat_id: int | None = None  # where supervision alerts go in Telegram (TELEGRAM_ADMIN_CHAT_ID)
    #: an update the bot fails to take this often (not for a lost link) goes to Quarantine/
    max_update_attempts: int = Field(5, ge=1, le=1000)

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
    app_token: SecretStr | None = None  # xapp-: Socket Mode (no public URL needed)
    allowed_user_ids: list[str] = Field(default_factory=list)  # who may approve, reject and ask
    alert_channel: str | None = None  # default: `channel`
    #: at most one post per thread this often; checkpoints in between coalesce (the latest wins)
    min_interval: float = Field(2.0, ge=0)
    #: the largest file shared with a message that is fetched as an attachment
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1)

    @field_validator("allowed_user_ids", mode="before")
    @classmethod
    def _split_users(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.replace(" ", "").split(",") if part]
        return value


class SupervisionSettings(Section):
    """What the supervisor watches and when it alerts (docs/slack.md)."""

    #: a plan waiting for a decision longer than this (seconds; default 24 h) is an alert
    stale_after: float = Field(24 * 3600.0, gt=0)
    #: how often the health of services and dependencies is looked at (seconds)
    check_interval: float = Field(30.0, gt=0)
    #: a service must be down (failed, retrying, degraded) this long before it is an alert
    down_after: float = Field(60.0, ge=0)
    #: restarts within `restart_window` that make "restarting in a loop"
    restart_loop: int = Field(3, ge=1)
    restart_window: float = Field(600.0, gt=0)
    #: free space on the vault's filesystem below this share (percent) is an alert
    disk_min_free_percent: float = Field(5.0, ge=0, le=100)
    #: an execution (a Manus task, a work order) running longer than this (seconds) is an alert
    task_limit: float = Field(3600.0, gt=0)
    #: the share of failed executions among the last `failure_window` that is an alert
    failure_rate: float = Field(0.5, gt=0, le=1)
    failure_window: int = Field(20, ge=1)
    failure_min: int = Field(5, ge=1)


class RedisSettings(Section):
    url: str | None = None


class WhatsAppSettings(Section):
    """The WhatsApp Business Cloud API input and door (docs/whatsapp.md)."""

    access_token: SecretStr | None = None
    phone_number_id: str | None = None
    app_secret: SecretStr | None = None
    verify_token: SecretStr | None = None
    #: wa_ids (digits only) or business-scoped user ids ("US.1349...") whose messages are heard
    allowed_numbers: list[str] = Field(default_factory=list)
    api_base_url: str = "https://graph.facebook.com/v27.0"
    #: an approved template for replies outside the 24-hour window (its body takes one parameter)
    reply_template: str | None = None
    reply_template_language: str = "en"
    #: media larger than this are not fetched (the note says so)
    max_media_bytes: int = Field(25 * 1024 * 1024, ge=1024)

    @field_validator("allowed_numbers", mode="before")
    @classmethod
    def _split_numbers(cls, value: Any) -> Any:
        if isinstance(value, str | int):
            value = str(value).split(",")
        if isinstance(value, list):
            cleaned = (str(part).strip() for part in value)
            # a number as people write it ("+49 151-123") becomes its wa_id ("49151123"); a user id stays
            ids = (part if "." in part else "".join(ch for ch in part if ch.isdigit()) for part in cleaned)
            return [part for part in ids if part]
        return value


class WebhooksSettings(Section):
    """A listener of its own for the webhook routes only (off unless `port` is set), so that a
    reverse proxy or tunnel can expose them without /status, /tasks, /metrics or /control."""

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)


class BusSettings(Section):
    """Where the slow steps' work runs (docs/distributed.md): in the daemon, or on workers that
    read it from Redis Streams (`redis`; `auto`: when `REDIS_URL` is set)."""

    backend: Literal["auto", "inprocess", "redis"] = "auto"
    #: the daemons and workers that share work; keys are `aie:<namespace>:...`
    namespace: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: seconds a claimed message may sit without a heartbeat before another worker takes it over
    claim_idle: float = Field(30.0, gt=0)
    #: deliveries after which a message goes to the dead-letter stream instead of running again
    max_deliveries: int = Field(5, ge=1, le=100)
    #: jobs one daemon keeps in the streams at once; the rest wait in the daemon (back-pressure)
    max_in_flight: int = Field(256, ge=1, le=100_000)
    #: acknowledged entries kept per stream before they are trimmed (`MAXLEN ~`)
    maxlen: int = Field(10_000, ge=100)
    #: seconds between worker heartbeats (and lease renewals)
    heartbeat_seconds: float = Field(2.0, gt=0)
    #: attachments up to this size travel inside Redis; larger ones through `shared_path`
    inline_attachment_bytes: int = Field(4 * 1024 * 1024, ge=0, le=256 * 1024 * 1024)
    #: a folder every worker and the daemon mount (NFS, SMB, a volume) for larger attachments
    shared_path: Path | None = None
    #: actions whose live runs go to workers (their effect is outside, they write no vault file)
    remote_actions: list[str] = Field(default_factory=lambda: ["atlas.work_order"])
    #: seconds results and fences are kept, so that a restarted daemon finds what was done
    result_ttl: float = Field(7 * 86400.0, gt=0)
    #: a step's lag (jobs no worker has read) from which the `workers` service reports trouble
    lag_alert: int = Field(1000, ge=1)
    #: seconds a stopping worker lets its running jobs finish; what still runs then is left
    #: to be taken over after `claim_idle` (a second SIGTERM or Ctrl-C stops at once)
    stop_grace: float = Field(20.0, ge=0)

    def enabled(self, redis_url: str | None) -> bool:
        return self.backend == "redis" or (self.backend == "auto" and bool(redis_url))


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
    whatsapp: WhatsAppSettings = Field(default_factory=WhatsAppSettings)
    webhooks: WebhooksSettings = Field(default_factory=WebhooksSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    supervision: SupervisionSettings = Field(default_factory=SupervisionSettings)
    documents: DocumentSettings = Field(default_factory=DocumentSettings)
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
    "WHATSAPP_ACCESS_TOKEN": ("whatsapp", "access_token"),
    "WHATSAPP_PHONE_NUMBER_ID": ("whatsapp", "phone_number_id"),
    "WHATSAPP_APP_SECRET": ("whatsapp", "app_secret"),
    "WHATSAPP_VERIFY_TOKEN": ("whatsapp", "verify_token"),
    "WHATSAPP_ALLOWED_NUMBERS": ("whatsapp", "allowed_numbers"),
    "WHATSAPP_API_BASE_URL": ("whatsapp", "api_base_url"),
    "SLACK_APP_TOKEN": ("slack", "app_token"),
    "SLACK_ALLOWED_USER_IDS": ("slack", "allowed_user_ids"),
    "SLACK_ALERT_CHANNEL": ("slack", "alert_channel"),
    "TELEGRAM_ADMIN_CHAT_ID": ("telegram", "admin_chat_id"),
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


CONFIG_FILE = "config.yaml"
DEFAULT_VAULT = Path("AI_Employee_Vault")


def find_config_file(environ: Mapping[str, str], vault: str | Path | None = None) -> Path | None:
    """The config file when none is named: `$AIE_CONFIG`; else the vault's own `config.yaml` when
    the vault is named (`--vault`, `$AIE_VAULT`); else `./config.yaml`; else the default vault's."""
    if environ.get("AIE_CONFIG"):
        named = Path(environ["AIE_CONFIG"])
        if not named.is_file():
            raise ConfigError(f"AIE_CONFIG names {named}, which does not exist")
        return named
    vault = vault or environ.get("AIE_VAULT") or None
    candidates = [Path(vault) / CONFIG_FILE] if vault else []
    candidates += [Path(CONFIG_FILE), DEFAULT_VAULT / CONFIG_FILE]
    return next((path for path in candidates if path.is_file()), None)


def is_vault_config(path: Path) -> bool:
    """A config.yaml beside a Company_Handbook.md is that vault's own (what `init` writes)."""
    return path.name == CONFIG_FILE and (path.parent / "Company_Handbook.md").is_file()


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> Settings:
    """Build the settings. `config_file` None: see `find_config_file`. A vault's own config
    without `vault.path` is the config of the vault it sits in."""
    env = dict(os.environ if environ is None else environ)
    vault_flag = (overrides or {}).get(("vault", "path"))
    if config_file is None:
        config_file = find_config_file(env, vault_flag)
    file_tree = read_config_file(config_file, env) if config_file is not None else {}
    if config_file is not None and is_vault_config(config_file):
        vault_section = file_tree.setdefault("vault", {})
        if isinstance(vault_section, dict):
            vault_section.setdefault("path", str(config_file.parent))
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
    token = _ENVIRON.set(_nested_variables(env))
    file_token = _FILE_TREE.set(file_tree)
    try:
        return Settings(**tree)
    except ValidationError as error:
        raise ConfigError(f"invalid configuration: {_describe(error)}") from error
    except SettingsError as error:
        raise ConfigError(
            f"invalid configuration: {error}; write a list as JSON (AIE_EXECUTION__AUTO_APPROVE="
            "'[\"vault.note\"]') or comma-separated (AIE_EXECUTION__AUTO_APPROVE=vault.note,manus.research)"
        ) from error
    except ValueError as error:
        raise ConfigError(f"invalid configuration: {error}") from error
    finally:
        _FILE_TREE.reset(file_token)
        _ENVIRON.reset(token)


def _nested_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The `AIE_SECTION__KEY` variables, checked against the settings: a name that sets nothing is
    an error (a typo would otherwise be ignored without a word), and a list may be written
    comma-separated as well as in JSON."""
    nested: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith("AIE_") or "__" not in name:
            continue
        parts = name[len("AIE_") :].lower().split("__")
        section = Settings.model_fields.get(parts[0])
        if section is None:
            raise ConfigError(
                f"unknown setting {name}: there is no section {parts[0]!r} "
                f"(sections: {', '.join(Settings.model_fields)}); see docs/configuration.md"
            )
        model = section.annotation
        if len(parts) >= 2 and isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(parts[1])
            if field is None:
                raise ConfigError(
                    f"unknown setting {name}: {parts[0]} has no key {parts[1]!r} "
                    f"(keys: {', '.join(model.model_fields)}); see docs/configuration.md"
                )
            if len(parts) == 2 and _is_list(field.annotation) and not value.lstrip().startswith("["):
                value = json.dumps([item.strip() for item in value.split(",") if item.strip()])
        nested[name] = value
    return nested


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(get_origin(argument) is list for argument in get_args(annotation))


def _describe(error: ValidationError) -> str:
    """Field and reason only: the rejected value may be a secret."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    )
