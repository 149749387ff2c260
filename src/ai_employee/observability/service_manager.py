"""Telling the service manager (systemd) how the daemon is: sd_notify(3) in a few lines, no libsystemd.

Under `Type=notify` systemd sets `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace)
and, with `WatchdogSec=`, `WATCHDOG_USEC` (and `WATCHDOG_PID`). The daemon sends `READY=1` once,
at the moment `/readyz` would first answer 200; `STATUS=` lines whenever what it would say
changes; `WATCHDOG=1` every half watchdog period from a loop on the event loop, so a hung loop
stops the pings and systemd restarts the daemon; `STOPPING=1` when it begins a graceful stop.

Without `NOTIFY_SOCKET` (a terminal, a container, a test) nothing is sent and nothing is waited for.
A failed send is logged once and never stops the daemon: the service manager is a listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger(__name__)

#: what readiness returns: whether the daemon is ready, and each service's state by name
Readiness = Callable[[], tuple[bool, Mapping[str, Any]]]
#: how long READY=1, STATUS= or STOPPING=1 may wait for room in a listener's full queue
SEND_WAIT_SECONDS = 1.0


class Notifier:
    """One datagram per message to `NOTIFY_SOCKET`; a no-op without one."""

    def __init__(self, address: str | None, *, watchdog_seconds: float | None = None) -> None:
        self.address = address
        self.watchdog_seconds = watchdog_seconds
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        """The notifier systemd asked for through the environment of this process."""
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
        if usec.isdigit() and int(usec) > 0 and for_us:
            watchdog = int(usec) / 1_000_000
        return cls(address, watchdog_seconds=watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str, wait: float = SEND_WAIT_SECONDS) -> bool:
        """Send `KEY=value` lines as one message; False if there is no socket or it failed.

        A listener whose queue is full makes the send wait at most `wait` seconds (0: not at all),
        so the event loop is never held for long; a watchdog ping is not worth waiting for."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(wait if wait > 0 else 0.0)
                sock.sendto(message, target)
        except OSError as error:
            if not self._warned:
                log.warning("service manager unreachable", socket=self.address, error=str(error))
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1", wait=0)

    def stopping(self, status: str = "stopping: letting in-flight work finish") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")


def describe(ready: bool, services: Mapping[str, Any]) -> str:
    """The STATUS= line: ready or starting, then how many services run and which do not."""
    running = sorted(name for name, state in services.items() if state == "running")
    others = sorted(
        f"{name} {state}" for name, state in services.items() if state not in ("running", "disabled")
    )
    words = f"{'ready' if ready else 'starting'}: {len(running)} running"
    return words + (", " + ", ".join(others) if others else "")


class ServiceManagerReporter:
    """The daemon's side of the conversation: READY=1 once, STATUS= on change, WATCHDOG=1 on time.

    `poke()` (from a service event) makes it look at readiness now; without pokes it looks every
    watchdog half-period (or `idle_seconds` when there is no watchdog).
    """

    def __init__(self, notifier: Notifier, readiness: Readiness, *, idle_seconds: float = 5.0) -> None:
        self._notifier = notifier
        self._readiness = readiness
        self._idle = idle_seconds
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_status: str | None = None
        self.ready_sent = False
        self.stopping_sent = False
        self._closed = False

    def start(self) -> None:
        if self._notifier.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="service-manager")

    def poke(self) -> None:
        self._changed.set()

    async def _run(self) -> None:
        watchdog = self._notifier.watchdog_seconds
        loop = asyncio.get_running_loop()
        next_ping = loop.time()
        while not self._closed:  # pings go on through a graceful stop, until the daemon closes this
            self.report()
            if watchdog is not None and loop.time() >= next_ping:
                self._notifier.watchdog()
                next_ping = loop.time() + watchdog / 2
            timeout = self._idle if watchdog is None else max(0.0, next_ping - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=timeout)
            self._changed.clear()

    def report(self) -> None:
        """Look at readiness now: READY=1 the first time it holds, STATUS= if the words changed."""
        if self.stopping_sent:
            return
        ready, services = self._readiness()
        status = describe(ready, services)
        if ready and not self.ready_sent:
            self.ready_sent = True
            self._last_status = status
            self._notifier.ready(status)
            log.info("service manager told: ready")
        elif status != self._last_status:
            self._last_status = status
            self._notifier.status(status)

    def stopping(self) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            self._notifier.stopping()
            self._changed.set()

    async def aclose(self) -> None:
        """End the loop by its flag, not by cancelling it: wait_for of Python 3.11 can swallow a
        cancellation that meets its timeout, and the loop would go on."""
        self._closed = True
        self._changed.set()
        if self._task is not None:
            await self._task
            self._task = None
