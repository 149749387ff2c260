"""The config: read as the daemon reads it, every unknown key and bad value named with its fix."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ai_employee.config import ConfigError, Settings, load_settings, read_config_file
from ai_employee.doctor.report import Check


def config_file_of(config: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file the daemon would read (the same rule as load_settings)."""
    if config is not None:
        return config
    if environ.get("AIE_CONFIG"):
        return Path(environ["AIE_CONFIG"])
    return Path("config.yaml") if Path("config.yaml").is_file() else None


def unknown_keys(tree: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """Each key of the file that no setting has, with the closest known name when there is one."""
    found: list[str] = []
    fields = model.model_fields
    for key, value in tree.items():
        path = f"{prefix}{key}"
        field = fields.get(str(key))
        if field is None:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            found.append(f"{path}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
            continue
        annotation = field.annotation
        if isinstance(value, Mapping) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(unknown_keys(value, annotation, prefix=f"{path}."))
    return found


def load_for_doctor(
    config: Path | None, vault: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, Check]:
    """The settings to check the rest with, and the finding about the config itself. A broken config
    still yields settings (the defaults and the environment, with --vault), so every other check runs."""
    env = dict(os.environ if environ is None else environ)
    overrides: dict[tuple[str, ...], Any] = {} if vault is None else {("vault", "path"): str(vault)}
    path = config_file_of(config, env)
    where = str(path) if path is not None else "no config file (defaults and the environment)"
    problems: list[str] = []
    if path is not None:
        try:
            problems = [f"unknown key {key}" for key in unknown_keys(read_config_file(path, env), Settings)]
        except ConfigError as error:
            return _fallback(vault, env), Check.fail(
                "config", str(error), f"fix {path}, then run doctor again"
            )
    try:
        settings = load_settings(path, environ=env, overrides=overrides)
    except ConfigError as error:
        detail = "; ".join([*problems, str(error)]) if problems else str(error)
        return _fallback(vault, env), Check.fail(
            "config", f"{where}: {detail}", "correct or remove those keys (docs/configuration.md lists them)"
        )
    if problems:  # cannot happen while every section forbids extra keys; kept for sections that allow them
        return settings, Check.warn(
            "config", f"{where}: {'; '.join(problems)}", "remove or rename those keys"
        )
    return settings, Check.ok("config", f"{where}: valid", file=None if path is None else str(path))


def _fallback(vault: Path | None, environ: Mapping[str, str]) -> Settings:
    """Defaults plus the contract's variables, without the broken file (and without broken variables)."""
    overrides: dict[tuple[str, ...], Any] = {} if vault is None else {("vault", "path"): str(vault)}
    for attempt in (dict(environ), {key: value for key, value in environ.items() if key == "AIE_VAULT"}):
        try:
            return load_settings(Path(os.devnull), environ=attempt, overrides=overrides)
        except ConfigError:
            continue
    return Settings()
