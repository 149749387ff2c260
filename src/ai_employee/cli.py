"""The `ai-employee` command line (CONTRACT.md section 4).

Exit codes: 0 success; 1 error (bad config, daemon failed); 2 usage; 3 no daemon running;
4 no plan with that id (or a short id naming several); 5 the plan was already decided.
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
from ai_employee.config import (
    CONFIG_FILE,
    LOG_FORMATS,
    LOG_LEVELS,
    ConfigError,
    Settings,
    is_vault_config,
    load_settings,
)
from ai_employee.control.port import ControlPortError
from ai_employee.daemon import (
    LOCK_FILE,
    STATE_DB,
    AlreadyRunning,
    DaemonInfo,
    pid_alive,
    run_daemon,
    service_names,
)
from ai_employee.model.ids import action_id_for
from ai_employee.model.services import Decider
from ai_employee.store.errors import StoreUnavailable
from ai_employee.vault.backup import BackupError, backup_state, default_archive_name, restore_state
from ai_employee.vault.decisions import Decisions
from ai_employee.vault.layout import HANDBOOK, VaultLayout
from ai_employee.vault.ledger import Ledger, LedgerTooNew
from ai_employee.vault.migrations import migrate_vault
from ai_employee.vault.plan_refs import PlanRefError, resolve_plan, waiting_plans

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
    """Create a vault skeleton and its config (PATH/config.yaml, read by `start --vault PATH`)."""
    layout = VaultLayout(path.resolve())
    layout.create()
    handbook = layout.handbook
    if not handbook.exists():
        handbook.write_text(DEFAULT_HANDBOOK, encoding="utf-8")
    config = layout.root / CONFIG_FILE
    if config.exists():
        click.echo(f"kept the config {config}")
    else:
        config.write_text(DEFAULT_CONFIG, encoding="utf-8")
        click.echo(f"wrote the config {config}")
    here = Path(CONFIG_FILE).resolve()
    if here.is_file() and here != config and not is_vault_config(here):
        click.echo(
            f"note: {here} is read instead when no vault is named; "
            f"name this one: ai-employee start --vault {path}"
        )
    click.echo(f"vault ready at {layout.root}; start it with: ai-employee start --vault {path}")


@main.command()
@vault_option
@config_option
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Log level (default: config logging.level, info).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default=None,
    help="console: one readable line per event; json: JSON lines; auto (default): console on a "
    "terminal, JSON otherwise.",
)
@click.option("--live", is_flag=True, default=False, help="Live mode: executors send for real.")
@click.option("--detach", is_flag=True, default=False, help="Run in the background; return once ready.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Control port (0 = any free port; default: config health.port, else 8080 if free, else any).",
)
def start(
    vault: Path | None,
    config: Path | None,
    log_level: str | None,
    log_format: str | None,
    live: bool,
    detach: bool,
    port: int | None,
) -> None:
    """Run the daemon (in the foreground unless --detach)."""
    overrides: dict[str, Any] = {"logging.level": log_level, "logging.format": log_format}
    overrides["health.port"] = port
    if live:
        overrides["execution.dry_run"] = False
    settings = _settings(config, vault, **overrides)
    if settings.bus.backend == "redis" and not settings.redis.url:
        raise click.ClickException("bus.backend is redis, but REDIS_URL (redis.url) is not set")
    layout = VaultLayout(settings.vault.path.resolve())
    running = _running(layout)
    if running is not None:
        raise click.ClickException(f"a daemon is already running on {layout.root} (pid {running.pid})")
    try:
        layout.create()
    except OSError as error:  # CrossDeviceError too: state folders on two filesystems
        why = error.strerror or str(error)
        where = f" ({error.filename})" if error.filename else ""
        raise click.ClickException(f"the vault {layout.root} cannot be used: {why}{where}") from None
    argv = _start_argv(vault, config, log_level, log_format, live, port)
    if detach:
        _start_detached(layout, argv)
        return
    try:
        code = run_daemon(settings, argv=argv)
    except (AlreadyRunning, LedgerTooNew, ControlPortError, StoreUnavailable) as error:
        raise click.ClickException(str(error)) from None
    sys.exit(code)


def _start_argv(
    vault: Path | None,
    config: Path | None,
    log_level: str | None,
    log_format: str | None,
    live: bool,
    port: int | None,
) -> list[str]:
    argv = ["start"]
    if vault is not None:
        argv += ["--vault", str(vault.resolve())]
    if config is not None:
        argv += ["--config", str(config.resolve())]
    if log_level:
        argv += ["--log-level", log_level]
    if log_format:
        argv += ["--log-format", log_format]
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
            why = _last_error(log_path)
            raise click.ClickException(f"the daemon exited with {process.returncode}{why}; see {log_path}")
        info = DaemonInfo.read(layout)
        if info is not None and info.pid == process.pid:
            click.echo(f"started: pid {info.pid}, control port {info.port}, log {log_path}")
            return
        time.sleep(0.05)  # waiting for another process to come up; there is no event to wait on
    raise click.ClickException(f"the daemon did not become ready within {timeout:g}s; see {log_path}")


def _last_error(log_path: Path) -> str:
    """The `Error: ...` line a failed start wrote last, as `: <why>`."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines[-50:] if line.startswith("Error: ")]
    return ": " + errors[-1].removeprefix("Error: ") if errors else ""


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
            if data["vault"]:
                _echo_counts(data["vault"])
            click.echo("Start one with: ai-employee start --vault " + str(layout.root))
        sys.exit(EXIT_NOT_RUNNING)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    live = data.get("live_actions") or []
    if data.get("dry_run", True):
        mode = "dry-run (nothing leaves the machine)"
    else:
        mode = "LIVE: " + (", ".join(live) if live else "no action can run live") + " send for real"
    port = f", control port {data.get('control_port')}" if data.get("control_port") else ""
    click.echo(f"running: pid {data.get('pid')}, {mode}, planner {data.get('planner')}{port}")
    click.echo(f"vault: {layout.root}")
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
                state = "available, live" if executor.get("live") else "available, dry-run"
            click.echo(f"  {name:<18} {state}")
    _echo_counts(data.get("vault", {}))
    if data.get("distributed"):
        _echo_distributed(data["distributed"])


def _echo_distributed(bus: dict[str, Any]) -> None:
    """Workers, stream lag per step and dead letters (REDIS_URL: docs/distributed.md)."""
    click.echo(
        f"redis: {bus.get('redis')}, namespace {bus.get('namespace')}, {bus.get('in_flight', 0)} jobs out"
    )
    workers = bus.get("workers") or []
    click.echo(f"workers: {len(workers)}" + ("" if workers else " (none: slow steps wait)"))
    for entry in workers:
        state = "up" if entry.get("up") else "DOWN"
        click.echo(
            f"  {entry.get('host')}:{entry.get('pid')} {state:<4} steps {','.join(entry.get('steps', []))}, "
            f"in flight {entry.get('in_flight')}, last heartbeat {entry.get('last_heartbeat')} s ago"
        )
    for step, stream in sorted((bus.get("streams") or {}).items()):
        click.echo(f"  stream {step:<8} lag {stream.get('lag')}, pending {stream.get('pending')}")
    dead = bus.get("dead_letters") or {}
    if dead.get("count"):
        click.echo(f"dead letters: {dead['count']}")
        for entry in dead.get("recent", [])[:5]:
            click.echo(f"  {entry.get('step')} {entry.get('job')}: {entry.get('note')}")


def _echo_counts(counts: dict[str, int]) -> None:
    """The folders' counts, and first what waits for a person."""
    waiting = counts.get("Plans", 0)
    plans = "plan waits" if waiting == 1 else "plans wait"
    click.echo(f"{waiting} {plans} for a decision in Plans/ (ai-employee approve ID, or move to Approved/)")
    click.echo("folders: " + ", ".join(f"{folder} {count}" for folder, count in counts.items()))


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


class _ServicesOption(click.Option):
    """`--services`, whose help lists the service names (read when help is shown, not at import)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = (
            f"Restart only these services: {', '.join(service_names())}. Repeat it, separate names "
            "by commas, or list them after it (--services email telegram)."
        )
        return super().get_help_record(ctx)


@main.command()
@vault_option
@config_option
@click.option("--services", "services", multiple=True, cls=_ServicesOption, metavar="NAME")
@click.argument("more_services", nargs=-1, metavar="[NAME]...")
def restart(
    vault: Path | None, config: Path | None, services: tuple[str, ...], more_services: tuple[str, ...]
) -> None:
    """Restart the daemon, or only the named services."""
    layout = _layout(config, vault)
    info = _running(layout)
    if info is None:
        click.echo(f"No daemon is running for the vault {layout.root}.")
        sys.exit(EXIT_NOT_RUNNING)
    given = (*services, *more_services)
    names = [name.strip() for value in given for name in value.split(",") if name.strip()]
    if names:
        _restart_services(info, names)
        return
    _stop(info, 60.0)
    _start_detached(layout, info.argv or ["start", "--vault", str(layout.root)])


def _restart_services(info: DaemonInfo, names: list[str]) -> None:
    with _http(info) as client:
        for name in names:
            response = client.post(f"/control/services/{name}/restart", timeout=60.0)
            if response.status_code in (404, 409):
                body = response.json()
                valid = ", ".join(body.get("services", [])) or "none"
                if response.status_code == 404:
                    why = f"no service named {name}"
                else:
                    why = f"{name} is off ({body.get('reason') or 'disabled'}), so it cannot be restarted"
                raise click.ClickException(f"{why}; services you can restart: {valid}")
            response.raise_for_status()
            click.echo(f"restarted {name}")


@main.command()
@click.argument("plan_id")
@vault_option
@config_option
def approve(plan_id: str, vault: Path | None, config: Path | None) -> None:
    """Approve a plan: the same as moving it to Approved/.

    PLAN_ID: the full id, the 6-character short id in the file name, or the note's file name or path."""
    layout = _layout(config, vault)
    _decide(Decisions(layout).approve(_plan_id(layout, plan_id), _cli_decider()))


@main.command()
@click.argument("plan_id")
@click.option("--reason", default=None, help="Why; kept in the note.")
@vault_option
@config_option
def reject(plan_id: str, reason: str | None, vault: Path | None, config: Path | None) -> None:
    """Reject a plan: the same as moving it to Rejected/.

    PLAN_ID: the full id, the 6-character short id in the file name, or the note's file name or path."""
    layout = _layout(config, vault)
    _decide(Decisions(layout).reject(_plan_id(layout, plan_id), reason, _cli_decider()))


def _plan_id(layout: VaultLayout, ref: str) -> str:
    """The plan a person named (full id, short id, file name or path); exit 4 when none or several."""
    try:
        return resolve_plan(layout, ref).plan_id
    except PlanRefError as error:
        click.echo(str(error), err=True)
        sys.exit(EXIT_NOT_FOUND)


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
            action_id = _item_in_vault(layout, item_id) or resolve_item_id(engine, item_id)
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


def _item_in_vault(layout: VaultLayout, ref: str) -> str | None:
    """The action id of the plan `ref` names in the vault (the resolver approve/reject use); None
    when the vault has no such plan (the store may still know the item: a note moved away)."""
    try:
        return action_id_for(resolve_plan(layout, ref).plan_id)
    except PlanRefError as error:
        if len(error.candidates) > 1:  # an ambiguous short id: say which plans it names
            click.echo(str(error), err=True)
            sys.exit(EXIT_NOT_FOUND)
        return None


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


@main.command(name="list")
@vault_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_plans(vault: Path | None, config: Path | None, as_json: bool) -> None:
    """What waits for a decision: plans in Plans/ (and failed ones in Failed/, to retry).

    Works with the daemon stopped; reads only Plans/ and Failed/."""
    layout = _layout(config, vault)
    now = datetime.now(UTC)
    plans = waiting_plans(layout)
    if as_json:
        click.echo(json.dumps([plan.as_json(layout, now) for plan in plans], indent=2, ensure_ascii=False))
        return
    if not plans:
        click.echo(f"Nothing waits for a decision in {layout.root}.")
        return
    rows = [("SHORT", "AGE", "ACTION", "RISK", "TITLE")]
    for plan in plans:
        title = plan.title if plan.folder.value == "Plans" else f"{plan.title} (failed: retry or leave)"
        rows.append((plan.short_id, _age(plan.age_seconds(now)), plan.action, plan.risk, title))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
        )
    click.echo(
        "\nDecide: ai-employee approve SHORT  |  ai-employee reject SHORT --reason '...'  (or move the note)"
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@main.command()
@vault_option
@config_option
@click.option(
    "--to",
    "target",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Archive to write (default: ai-employee-backup-<vault>-<time>.tar.gz here).",
)
def backup(vault: Path | None, config: Path | None, target: Path | None) -> None:
    """Back up the daemon's state (.ai-employee/); safe while the daemon runs."""
    layout = _layout(config, vault)
    archive = target or Path(default_archive_name(layout.root))
    try:
        result = backup_state(layout.state_dir, archive, version=__version__)
    except BackupError as error:
        raise click.ClickException(str(error)) from error
    counts = f"{len(result.databases)} database(s) and {len(result.files)} file(s)"
    click.echo(f"backed up {counts} to {result.archive}")
    for name in result.skipped:
        click.echo(f"  left out (too large to be state): {name}", err=True)


@main.command()
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@vault_option
@config_option
def restore(archive: Path, vault: Path | None, config: Path | None) -> None:
    """Restore the daemon's state from a backup; refused while the daemon runs."""
    layout = _layout(config, vault)
    running = _running(layout)
    if running is not None:
        raise click.ClickException(
            f"a daemon is running on {layout.root} (pid {running.pid}): stop it first (ai-employee stop)"
        )
    try:
        result = restore_state(archive, layout.state_dir, lock_path=layout.state_dir / LOCK_FILE)
    except BackupError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"restored {len(result.restored)} file(s) into {layout.state_dir}")
    if result.set_aside is not None:
        click.echo(f"the state it replaced is kept in {result.set_aside}")


@main.command()
@vault_option
@config_option
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
def migrate(vault: Path | None, config: Path | None, dry_run: bool) -> None:
    """Bring notes written by older versions to the current format (the daemon does it at start).

    Rewrites the notes of Plans/, Approved/ and Failed/ that need it (docs/decisions/)."""
    layout = _layout(config, vault)
    if not layout.root.is_dir():
        raise click.ClickException(f"no vault at {layout.root}")
    in_flight: set[str] = set()
    database = layout.state_dir / STATE_DB
    if database.is_file():  # a plan on its way to running keeps the note that was approved
        ledger = Ledger(database)
        try:
            in_flight = {execution.plan_id for execution in ledger.open_executions()}
        finally:
            ledger.close()
    notes = migrate_vault(layout, dry_run=dry_run, in_flight=in_flight.__contains__)
    for note in notes:
        verb = "would change" if dry_run and note.skipped is None else "changed"
        if note.skipped is not None:
            verb = f"left as it is ({note.skipped})"
        click.echo(f"{note.path}: {verb}")
        for change in note.changes:
            click.echo(f"  - {change}")
    done = sum(1 for note in notes if note.skipped is None)
    if dry_run:
        click.echo(f"{done} note(s) would be migrated; nothing was changed (without --dry-run to do it).")
    else:
        click.echo(f"{done} note(s) migrated.")


@main.command()
@vault_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds each outside service may take."
)
def doctor(vault: Path | None, config: Path | None, as_json: bool, timeout: float) -> None:
    """Check the machine, the vault, the config and every configured service; exit 1 if one fails."""
    from ai_employee.doctor import run_doctor  # the SDKs it calls take seconds to import: only here

    report = run_doctor(config, vault, seconds=timeout)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    sys.exit(EXIT_ERROR if report.failed else 0)


@main.command()
@config_option
@click.option(
    "--namespace", default=None, help="The daemons to work for (config bus.namespace, default 'default')."
)
@click.option(
    "--steps",
    default="extract,plan,execute",
    show_default=True,
    help="Comma-separated steps to run: extract, transcribe (needs OPENAI_API_KEY), plan, execute.",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 1024), default=4, show_default=True, help="Jobs at once."
)
@click.option("--log-level", default=None, help="debug, info, warning, error.")
def worker(
    config: Path | None, namespace: str | None, steps: str, concurrency: int, log_level: str | None
) -> None:
    """With REDIS_URL: do the slow steps for the daemons of a namespace; never touches a vault folder."""
    from ai_employee.worker.service import run_worker

    settings = _settings(config, None, **{"logging.level": log_level})
    if not settings.redis.url:
        raise click.ClickException("a worker needs REDIS_URL (or redis.url in the config)")
    chosen = [step.strip() for step in steps.split(",") if step.strip()]
    try:
        sys.exit(run_worker(settings, steps=chosen, concurrency=concurrency, namespace=namespace))
    except ValueError as error:
        raise click.ClickException(str(error)) from error


DEFAULT_CONFIG = """\
# ai-employee configuration of the vault this file sits in (`ai-employee start --vault <this
# folder>` reads it). ${VAR} and ${VAR:-default} come from the environment; AIE_* variables
# override (nested with __, e.g. AIE_EXECUTION__DRY_RUN=false). Secrets never go in this file.
vault:
  settle_seconds: 2
  reconcile_interval_seconds: 60
execution:
  dry_run: true          # nothing leaves the machine until this is false (or --live)
  live_actions: []       # empty: every registered action may run live
  auto_approve: []       # action types approved without a human; default none
planner:
  kind: ${AIE_PLANNER:-auto}
health:
  port: ${HEALTH_SERVER_PORT}   # unset: 8080 if free, else any free port (in .ai-employee/daemon.json)
logging:
  level: info            # debug, info, warning, error, critical
  format: auto           # auto: readable on a terminal, JSON lines otherwise; json; console
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
