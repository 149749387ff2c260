"""Which port the control server listens on, and, when the port is taken, who holds it.

Not configured (`health.port` unset): 8080 when it is free, else any free port, so that two vaults
on one machine do not fight over 8080; the port in use is in `<vault>/.ai-employee/daemon.json`,
where `status`, `stop` and `restart` read it (docs/decisions/0011-control-port-default.md). A port
that was configured and is taken stops the start with one line that says so.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import structlog

from ai_employee.vault.layout import STATE_DIR

log = structlog.get_logger(__name__)

DEFAULT_PORT = 8080
LOCK_NAME = "daemon.lock"  # what a daemon holds open in <vault>/.ai-employee/ while it runs

HOW_TO_CHOOSE = (
    "choose another with --port N, HEALTH_SERVER_PORT=N or health.port in config.yaml (0 = any free port)"
)


class ControlPortError(Exception):
    """The control port cannot be opened; the message says which, why and what to do."""


async def open_port(
    host: str, configured: int | None, bind: Callable[[int], Awaitable[int]], *, default: int = DEFAULT_PORT
) -> int:
    """Bind with `bind(port)` (which returns the bound port): the configured port, or the default
    port falling back to any free one when none is configured."""
    wanted = default if configured is None else configured
    try:
        return await bind(wanted)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise ControlPortError(
                f"cannot listen on {host}:{wanted}: {error.strerror or error}; check health.host "
                f"and health.port (--port N, HEALTH_SERVER_PORT=N)"
            ) from None
        if configured is not None:
            raise ControlPortError(
                f"the control port {host}:{wanted} is taken{_by(wanted)}; {HOW_TO_CHOOSE}"
            ) from None
    port = await bind(0)
    log.warning(
        f"port {wanted} is taken{_by(wanted)}; the control port is {port} "
        "(written to .ai-employee/daemon.json)",
        port=port,
    )
    return port


def _by(port: int) -> str:
    holder = port_holder(port)
    return f" by {holder}" if holder else " by another program"


def port_holder(port: int) -> str | None:
    """Who listens on `port`, in words: the pid and the vault of an ai-employee daemon, or the
    pid and name of another program; None when this user cannot tell (another user's process)."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for connection in connections:
        address = connection.laddr
        if connection.status != psutil.CONN_LISTEN or not isinstance(address, tuple) or not address:
            continue
        if address[1] == port and connection.pid is not None:
            return describe_process(connection.pid)
    return None


def describe_process(pid: int) -> str:
    try:
        process = psutil.Process(pid)
        for opened in process.open_files():
            path = Path(opened.path)
            if path.name == LOCK_NAME and path.parent.name == STATE_DIR:
                return f"pid {pid}, the ai-employee daemon of the vault {path.parent.parent}"
        return f"pid {pid} ({process.name()})"
    except psutil.Error:
        return f"pid {pid}"
