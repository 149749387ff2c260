"""The `ai-employee` command line (CONTRACT.md section 4).

Exit codes: 0 success; 1 error (bad config, daemon failed); 2 usage; 3 no daemon running;
4 no plan with that id; 5 the plan was already decided.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

from ai_employee import __version__
from ai_employee.config import ConfigError, Settings, load_settings
from ai_employee.daemon import AlreadyRunning, DaemonInfo, pid_alive, run_daemon
from ai_employee.model.services import Decider
from ai_employee.store.errors import StoreUnavailable
from ai_employee.vault.decisions import Decisions
from ai_employee.vault.layout import HANDBOOK, VaultLayout

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3
EXIT_NOT_FOUND = 4
EXIT_ALREADY_DECIDED = 5

vault_option = click.option(
    "--vault",
    "vault",
    type=click.Path(path_type=Path),
    default=None,
    help="Vault folder (default: config vault.path, $AIE_VAULT, ./AI_Employee_Vault).",
)
config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Config file (default: $AIE_CONFIG, ./config.yaml).",
)


def _settings(config: Path | None, vault: Path | None, **overrides: Any) -> Settings:
    values: dict[tuple[str, ...], Any] = {}
    if vault is not None:
        values[("vault", "path")] = str(vault)
    for key, value in overrides.items():
        if value is not None:
            values[tuple(key.split("."))] = value
    try:
        return load_settings(config, overrides=values)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error


def _layout(config: Path | None, vault: Path | None) -> VaultLayout:
    return VaultLayout(_settings(config, vault).vault.path.resolve())


def _running(layout: VaultLayout) -> DaemonInfo | None:
    info = DaemonInfo.read(layout)
    if info is None or not pid_alive(info.pid):
        return None
    return info


def _http(info: DaemonInfo) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://{info.host}:{info.port}", timeout=10.0, headers={"X-AIE-Token": info.token}
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ai-employee")
def main() -> None:
    """ai-employee: an AI employee that works out of an Obsidian vault."""


@main.command()
@click.argument("path", type=click.Path(path_type=Path), default=Path("AI_Employee_Vault"))
def init(path: Path) -> None:
    """Create a vault skeleton and a config."""
    layout = VaultLayout(path.resolve())
    layout.create()
    handbook = layout.handbook
    if not handbook.exists():
        handbook.write_text(DEFAULT_HANDBOOK, encoding="utf-8")
    config = Path("config.yaml")
    if not config.exists():
        config.write_text(DEFAULT_CONFIG.format(vault=path.as_posix()), encoding="utf-8")
        click.echo(f"wrote {config}")
    click.echo(f"vault ready at {layout.root}")


@main.command()
@vault_option
@config_option
@click.option("--log-level", default=None, help="debug, info, warning, error.")
@click.option("--live", is_flag=True, default=False, help="Live mode: executors send for real.")
@click.option("--detach", is_flag=True, default=False, help="Run in the background; return once ready.")
@click.option("--port", type=int, default=None, help="Control port (0 = any free port).")
def start(
    vault: Path | None, config: Path | None, log_level: str | None, live: bool, detach: bool, port: int | None
) -> None:
    """Run the daemon (in the foreground unless --detach)."""
    overrides: dict[str, Any] = {"logging.level": log_level, "health.port": port}
    if live:
        overrides["execution.dry_run"] = False
    settings = _settings(config, vault, **overrides)
    layout = VaultLayout(settings.vault.path.resolve())
    running = _running(layout)
    if running is not None:
        raise click.ClickException(f"a daemon is already running on {layout.root} (pid {running.pid})")
    argv = _start_argv(vault, config, log_level, live, port)
    if detach:
        _start_detached(layout, argv)
        return
    try:
        code = run_daemon(settings, argv=argv)
    except (AlreadyRunning, StoreUnavailable) as error:
        raise click.ClickException(str(error)) from error
    sys.exit(code)


def _start_argv(
    vault: Path | None, config: Path | None, log_level: str | None, live: bool, port: int | None
) -> list[str]:
    argv = ["start"]
    if vault is not None:
        argv += ["--vault", str(vault.resolve())]
    if config is not None:
        argv += ["--config", str(config.resolve())]
    if log_level:
        argv += ["--log-level", log_level]
    if live:
        argv.append("--live")
    if port is not None:
        argv += ["--port", str(port)]
    return argv


def _start_detached(layout: VaultLayout, argv: list[str], timeout: float = 60.0) -> None:
    layout.create()
    log_path = layout.state_dir / "daemon.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "ai_employee", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=os.getcwd(),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"the daemon exited with {process.returncode}; see {log_path}")
        info = DaemonInfo.read(layout)
        if info is not None and info.pid == process.pid:
            click.echo(f"started: pid {info.pid}, control port {info.port}, log {log_path}")
            return
        time.sleep(0.05)  # waiting for another process to come up; there is no event to wait on
    raise click.ClickException(f"the daemon did not become ready within {timeout:g}s; see {log_path}")


@main.command()
@vault_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(vault: Path | None, config: Path | None, as_json: bool) -> None:
    """Show whether the daemon runs, its services and the vault's counts (exit 3 if not running)."""
    settings = _settings(config, vault)
    layout = VaultLayout(settings.vault.path.resolve())
    info = _running(layout)
    data: dict[str, Any] | None = None
    if info is not None:
        try:
            with _http(info) as client:
                response = client.get("/status")
                response.raise_for_status()
                data = response.json()
        except httpx.HTTPError:
            data = None
    if data is None:
        data = {
            "running": False,
            "pid": None,
            "dry_run": settings.execution.dry_run,
            "services": {},
            "vault": layout.counts() if layout.root.is_dir() else {},
        }
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            click.echo(f"No daemon is running for the vault {layout.root}.")
            click.echo("Start one with: ai-employee start --vault " + str(layout.root))
        sys.exit(EXIT_NOT_RUNNING)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    mode = "dry-run" if data.get("dry_run") else "LIVE"
    click.echo(f"running: pid {data.get('pid')}, {mode}, planner {data.get('planner')}, vault {layout.root}")
    click.echo("services:")
    for name, service in sorted(data.get("services", {}).items()):
        click.echo(f"  {name:<12} {service.get('state'):<10} {_trouble(service)}")
    planner_link = data.get("planner_link")
    if planner_link and planner_link.get("state") != "running":
        click.echo(f"planner: {planner_link.get('state')} {_trouble(planner_link)}")
    executors = data.get("executors", {})
    if executors:
        click.echo("actions:")
        for name, executor in sorted(executors.items()):
            if not executor.get("available"):
                state = "unavailable: " + str(executor.get("detail", ""))
            elif executor.get("state") in ("degraded", "retrying"):
                state = f"{executor['state']}: {_trouble(executor)}"
            else:
                state = "available"
            click.echo(f"  {name:<18} {state}")
    click.echo("vault: " + ", ".join(f"{folder} {count}" for folder, count in data.get("vault", {}).items()))


def _trouble(entry: dict[str, Any]) -> str:
    """What status says of a service or link: its trouble in plain words, the attempts so far and
    when the next one is; otherwise its detail."""
    if entry.get("state") in ("connecting", "retrying", "degraded") and entry.get("last_error"):
        words = str(entry["last_error"])
        if entry.get("attempts"):
            words += f" (attempt {entry['attempts']}"
            next_attempt = entry.get("next_attempt")
            if next_attempt:
                seconds = (datetime.fromisoformat(next_attempt) - datetime.now(UTC)).total_seconds()
                words += f", next in {max(seconds, 0):.0f} s"
            words += ")"
        return words
    return str(entry.get("detail") or entry.get("last_error") or "")


@main.command()
@vault_option
@config_option
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for in-flight work."
)
def stop(vault: Path | None, config: Path | None, timeout: float) -> None:
    """Stop the daemon gracefully; waits for in-flight work (exit 3 if none runs)."""
    layout = _layout(config, vault)
    info = _running(layout)
    if info is None:
        click.echo(f"No daemon is running for the vault {layout.root}.")
        sys.exit(EXIT_NOT_RUNNING)
    _stop(info, timeout)
    click.echo(f"stopped (pid {info.pid})")


def _stop(info: DaemonInfo, timeout: float) -> None:
    try:
        with _http(info) as client:
            client.post("/control/stop").raise_for_status()
    except httpx.HTTPError:
        os.kill(info.pid, 15)
    deadline = time.monotonic() + timeout
    while pid_alive(info.pid):
        if time.monotonic() > deadline:
            raise click.ClickException(f"the daemon (pid {info.pid}) did not stop within {timeout:g}s")
        time.sleep(0.05)  # waiting for another process to exit


@main.command()
@vault_option
@config_option
@click.option("--services", "services", multiple=True, help="Restart only these services (repeatable).")
def restart(vault: Path | None, config: Path | None, services: tuple[str, ...]) -> None:
    """Restart the daemon, or only the named services."""
    layout = _layout(config, vault)
    info = _running(layout)
    if info is None:
        click.echo(f"No daemon is running for the vault {layout.root}.")
        sys.exit(EXIT_NOT_RUNNING)
    if services:
        names = [name for value in services for name in value.split(",") if name]
        with _http(info) as client:
            for name in names:
                response = client.post(f"/control/services/{name}/restart", timeout=60.0)
                if response.status_code == 404:
                    raise click.ClickException(f"no service named {name}")
                response.raise_for_status()
                click.echo(f"restarted {name}")
        return
    _stop(info, 60.0)
    _start_detached(layout, info.argv or ["start", "--vault", str(layout.root)])


@main.command()
@click.argument("plan_id")
@vault_option
@config_option
def approve(plan_id: str, vault: Path | None, config: Path | None) -> None:
    """Approve a plan: the same as moving it to Approved/."""
    _decide(Decisions(_layout(config, vault)).approve(plan_id, _cli_decider()))


@main.command()
@click.argument("plan_id")
@click.option("--reason", default=None, help="Why; kept in the note.")
@vault_option
@config_option
def reject(plan_id: str, reason: str | None, vault: Path | None, config: Path | None) -> None:
    """Reject a plan: the same as moving it to Rejected/."""
    _decide(Decisions(_layout(config, vault)).reject(plan_id, reason, _cli_decider()))


@main.command()
@click.argument("item_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--since", default=None, help="List items since: 7d, 12h, 30m, 2w or a date.")
@click.option("--status", "status_filter", default=None, help="List items with this status (e.g. failed).")
@click.option("--action", default=None, help="List items of this action (e.g. atlas.work_order).")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many items.")
@vault_option
@config_option
def history(
    item_id: str | None,
    as_json: bool,
    since: str | None,
    status_filter: str | None,
    action: str | None,
    limit: int,
    vault: Path | None,
    config: Path | None,
) -> None:
    """An item's whole story (by id, short id or file name), or a list of items; works while stopped."""
    # here, not at the top: every other command starts without SQLAlchemy's imports
    from ai_employee.store.database import open_store
    from ai_employee.store.history import list_lines, story_lines
    from ai_employee.store.queries import BadQuery, list_tasks, parse_since, resolve_item_id, story

    settings = _settings(config, vault)
    if not settings.database.store:
        raise click.ClickException("the audit store is off (database.store: false)")
    layout = VaultLayout(settings.vault.path.resolve())
    try:
        engine = open_store(settings.database.url, layout.state_dir)
    except StoreUnavailable as error:
        raise click.ClickException(str(error)) from error
    try:
        if item_id is not None:
            action_id = resolve_item_id(engine, item_id)
            found = story(engine, action_id) if action_id else None
            if found is None:
                click.echo(f"{item_id}: no item with that id in the audit store", err=True)
                sys.exit(EXIT_NOT_FOUND)
            click.echo(json.dumps(found, indent=2, default=str) if as_json else "\n".join(story_lines(found)))
            return
        try:
            since_at = parse_since(since)
        except BadQuery as error:
            raise click.UsageError(str(error)) from error
        tasks = list_tasks(engine, status=status_filter, since=since_at, action=action, limit=limit)
        click.echo(json.dumps(tasks, indent=2, default=str) if as_json else "\n".join(list_lines(tasks)))
    finally:
        engine.dispose()


def _cli_decider() -> Decider:
    """The person at this terminal: the OS user, through the CLI door."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = f"uid {os.getuid()}"
    return Decider(who, "cli")


def _decide(result: Any) -> None:
    if result.outcome in ("approved", "rejected"):
        click.echo(f"{result.outcome} {result.plan_id}: {result.detail}")
        return
    click.echo(f"{result.plan_id}: {result.detail}", err=True)
    sys.exit(EXIT_NOT_FOUND if result.outcome == "not_found" else EXIT_ALREADY_DECIDED)


DEFAULT_CONFIG = """\
# ai-employee configuration. ${{VAR}} and ${{VAR:-default}} come from the environment;
# AIE_* variables override (nested with __, e.g. AIE_EXECUTION__DRY_RUN=false).
vault:
  path: {vault}
  settle_seconds: 2
  reconcile_interval_seconds: 60
execution:
  dry_run: true          # nothing leaves the machine until this is false (or --live)
  live_actions: []       # empty: every registered action may run live
  auto_approve: []       # action types approved without a human; default none
planner:
  kind: ${{AIE_PLANNER:-auto}}
health:
  port: ${{HEALTH_SERVER_PORT:-8080}}
"""

DEFAULT_HANDBOOK = f"""\
# Company Handbook

Rules the planner follows. Edit freely: the daemon reads this file ({HANDBOOK}) and never writes it.

- Safety first: anything with smoke, fire, a leak of oil or chemicals, or a person at risk is priority HIGH.
- Work orders name the asset as it is called on the floor ("Pump 3", "Conveyor 2") and the line or area.
- Research tasks use the standard profile unless someone asks for a deep dive.
- Never send anything to anyone outside the company without a human approving it.
- When in doubt, write a note and ask.
"""
