"""The daemon under systemd's Type=notify: READY=1 when /readyz turns 200, WATCHDOG=1, STOPPING=1.

The test is the service manager: it listens on a datagram socket in the abstract namespace (as
systemd's own `@`-sockets are) and hands its name to the real daemon in NOTIFY_SOCKET.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DaemonProcess


class NotifyListener:
    def __init__(self) -> None:
        self.name = f"aie-notify-test-{secrets.token_hex(6)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.messages: list[dict[str, str]] = []

    def receive_until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s; got {self.messages}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def first(self, key: str) -> dict[str, str]:
        self.receive_until(lambda: self.count(key) > 0)
        return next(message for message in self.messages if key in message)

    def count(self, key: str) -> int:
        return sum(1 for message in self.messages if key in message)

    def index(self, key: str) -> int:
        return next(i for i, message in enumerate(self.messages) if key in message)


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    notify = NotifyListener()
    yield notify
    notify.sock.close()


def test_daemon_tells_systemd_ready_then_watchdog_pings_then_stopping(
    vault: Path, daemon_env: dict[str, str], listener: NotifyListener
) -> None:
    env = {**daemon_env, "NOTIFY_SOCKET": "@" + listener.name, "WATCHDOG_USEC": "300000"}
    daemon = DaemonProcess(vault, env).start(wait=False)
    try:
        ready = listener.first("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("ready: ")
        assert ready["MAINPID"] == str(daemon.process.pid)  # type: ignore[union-attr]
        info = daemon.info()
        assert info is not None
        assert httpx.get(f"http://127.0.0.1:{info['port']}/readyz", timeout=5).status_code == 200

        listener.receive_until(lambda: listener.count("WATCHDOG") >= 3, timeout=30)
        assert all(m["WATCHDOG"] == "1" for m in listener.messages if "WATCHDOG" in m)

        assert daemon.terminate() == 0
        stopping = listener.first("STOPPING")
        assert stopping["STOPPING"] == "1"
        assert listener.index("READY") < listener.index("STOPPING")
    finally:
        daemon.kill()
