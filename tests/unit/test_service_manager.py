"""sd_notify without libsystemd: the messages, the watchdog period, READY=1 exactly once."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from ai_employee.observability.service_manager import Notifier, ServiceManagerReporter, describe


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    yield address, sock
    sock.close()


def test_notifier_sends_key_value_lines_to_a_path_socket(path_socket: tuple[str, socket.socket]) -> None:
    address, sock = path_socket
    assert Notifier(address).status("starting: 0 running")
    assert sock.recv(1024) == b"STATUS=starting: 0 running"


def test_notifier_reaches_an_abstract_socket_named_with_an_at_sign() -> None:
    name = f"aie-unit-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).watchdog()
        assert sock.recv(1024) == b"WATCHDOG=1"


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready("ready")


def test_a_gone_socket_is_not_an_error(tmp_path: Path) -> None:
    assert not Notifier(str(tmp_path / "nobody-listens")).stopping()


def test_watchdog_period_comes_from_watchdog_usec_for_this_pid_only() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ(env, pid=42).watchdog_seconds == 30.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "42"}, pid=42).watchdog_seconds == 30.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "7"}, pid=42).watchdog_seconds is None
    assert Notifier.from_environ({"NOTIFY_SOCKET": "/run/x"}).watchdog_seconds is None


def test_status_line_names_the_services_that_do_not_run() -> None:
    services = {"pipeline": "running", "watcher": "running", "email": "retrying", "slack": "disabled"}
    assert describe(True, services) == "ready: 2 running, email retrying"
    assert describe(False, {}) == "starting: 0 running"


async def test_reporter_sends_ready_once_when_readiness_first_holds(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, sock = path_socket
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"ready": False, "services": {"pipeline": "starting"}}

    def readiness() -> tuple[bool, Mapping[str, Any]]:
        return state["ready"], state["services"]

    async def receive() -> bytes:
        return await asyncio.wait_for(loop.sock_recv(sock, 1024), timeout=5)

    reporter = ServiceManagerReporter(Notifier(address), readiness, idle_seconds=60)
    reporter.start()
    assert await receive() == b"STATUS=starting: 0 running, pipeline starting"
    state.update(ready=True, services={"pipeline": "running"})
    reporter.poke()
    assert (await receive()).decode().startswith("READY=1\nSTATUS=ready: 1 running\nMAINPID=")
    reporter.poke()
    await asyncio.sleep(0.05)
    reporter.stopping()
    assert (await receive()).startswith(b"STOPPING=1\nSTATUS=stopping")
    await reporter.aclose()
    with pytest.raises(BlockingIOError):
        sock.recv(1024)  # READY=1 went once, nothing after STOPPING=1


def test_a_full_listener_queue_does_not_block_the_sender(path_socket: tuple[str, socket.socket]) -> None:
    address, _sock = path_socket
    notifier = Notifier(address)
    results = [notifier.watchdog() for _ in range(1000)]  # nobody reads: the queue fills up
    assert results[0] and not results[-1]
    started = time.monotonic()
    assert not notifier.send("STATUS=still full", wait=0.2)  # waits a little for room, no more
    assert 0.15 < time.monotonic() - started < 2


def test_stopping_waits_for_room_in_a_queue_that_is_being_read(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, sock = path_socket
    notifier = Notifier(address)
    while notifier.watchdog():
        pass  # the queue is full now
    reader = threading.Timer(0.2, lambda: sock.recv(1024))
    reader.start()
    assert notifier.stopping()  # not dropped: sent once the reader made room
    reader.join()
