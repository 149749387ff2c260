"""The daemon under systemd's Type=notify: READY=1 when /readyz turns 200, WATCHDOG=1, STOPPING=1.

The test is the service manager: it listens on a datagram socket in the abstract namespace (as
systemd's own `@`-sockets are) and hands its name to the real daemon in NOTIFY_SOCKET.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DaemonProcess


class NotifyListener:
    """Reads every datagram as it arrives, from a thread, as systemd does."""

    def __init__(self) -> None:
        self.name = f"aie-notify-test-{secrets.token_hex(6)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._arrived = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._arrived:
                self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
                self._arrived.notify_all()

    def receive_until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        with self._arrived:
            if not self._arrived.wait_for(done, timeout=timeout):
                raise AssertionError(f"timed out after {timeout}s; got {self.messages}")

    def first(self, key: str) -> dict[str, str]:
        self.receive_until(lambda: self.count(key) > 0)
        return next(message for message in self.messages if key in message)

    def count(self, key: str) -> int:
        return sum(1 for message in list(self.messages) if key in message)

    def index(self, key: str) -> int:
        return next(i for i, message in enumerate(self.messages) if key in message)

    def close(self) -> None:
        self._closed = True
        self._reader.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    notify = NotifyListener()
    yield notify
    notify.close()


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
