"""Which port the control server takes: none configured, 8080 when free, else any free port (two
vaults on one machine do not fight over it); a configured port that is taken is an error that
names who holds it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ai_employee.config import load_settings
from ai_employee.control.port import DEFAULT_PORT, ControlPortError, open_port
from ai_employee.control.server import ControlServer
from ai_employee.observability.metrics import Metrics
from tests.fakes.common import ReadyHooks


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _server() -> ControlServer:
    return ControlServer(ReadyHooks(), Metrics(process_metrics=False), port=0, token="t" * 32)


def test_no_port_is_configured_by_default() -> None:
    assert load_settings(environ={}).health.port is None
    assert DEFAULT_PORT == 8080


async def test_with_no_port_configured_a_taken_default_falls_back_to_a_free_port(taken: int) -> None:
    first, second = _server(), _server()
    try:
        port = await open_port("127.0.0.1", None, first.start, default=taken)
        again = await open_port("127.0.0.1", None, second.start, default=taken)
    finally:
        await first.stop()
        await second.stop()

    assert port != taken and again != taken and port != again
    assert port > 0 and again > 0


async def test_with_no_port_configured_a_free_default_is_taken(taken: int) -> None:
    server = _server()
    try:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        assert await open_port("127.0.0.1", None, server.start, default=free) == free
    finally:
        await server.stop()


async def test_a_configured_port_that_is_taken_is_an_error_naming_the_port_and_how_to_choose(
    taken: int,
) -> None:
    server = _server()
    with pytest.raises(ControlPortError) as raised:
        await open_port("127.0.0.1", taken, server.start)

    message = str(raised.value)
    assert message.startswith(f"the control port 127.0.0.1:{taken} is taken by pid ")
    assert message.endswith(
        "choose another with --port N, HEALTH_SERVER_PORT=N or health.port in config.yaml (0 = any free port)"
    )
    assert server.addresses == []
