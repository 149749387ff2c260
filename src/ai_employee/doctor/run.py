"""Run every check: the local ones in order, the outside services at once, each with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from ai_employee import __version__
from ai_employee.config import Settings
from ai_employee.doctor import host, services
from ai_employee.doctor.report import Check, Report
from ai_employee.doctor.settings_check import load_for_doctor
from ai_employee.observability.logging import register_settings_secrets
from ai_employee.vault.layout import VaultLayout

DEFAULT_TIMEOUT = 10.0

ServiceCheck = Callable[[Settings, float], Awaitable[Check]]


def run_doctor(
    config: Path | None = None,
    vault: Path | None = None,
    *,
    seconds: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> Report:
    settings, config_check = load_for_doctor(config, vault, environ)
    register_settings_secrets(settings)  # no finding may carry a secret
    layout = VaultLayout(settings.vault.path.resolve())
    checks = [
        host.python_and_platform(),
        config_check,
        host.vault_folders(layout),
        host.disk_space(layout),
        host.inotify_watches(layout),
        host.ledger_schema(layout),
        host.state_databases(layout),
        host.ocr_engine(),
        host.control_port(settings, layout),
        host.daemon_state(layout),
    ]
    checks += asyncio.run(check_services(settings, seconds))
    return Report(__version__, str(layout.root), [check.redacted() for check in checks])


async def check_services(
    settings: Settings, seconds: float, checks: tuple[tuple[str, ServiceCheck], ...] = services.CHECKS
) -> list[Check]:
    """Every outside service at once; one that does not answer within `seconds` (plus a second for
    the client to give up by itself) is a failure that says so."""

    async def bounded(name: str, check: ServiceCheck) -> Check:
        try:
            return await asyncio.wait_for(check(settings, seconds), timeout=seconds + 1.0)
        except TimeoutError:
            return Check.fail(
                name, f"no answer within {seconds:g} s", "check that the server is up and reachable from here"
            )
        except Exception as error:  # a check must never take the others down
            return Check.fail(
                name, f"the check itself failed: {type(error).__name__}: {error}", "report this as a bug"
            )

    return list(await asyncio.gather(*(bounded(name, check) for name, check in checks)))
