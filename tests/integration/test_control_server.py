"""The control port on a real loopback socket: probes, metrics, status, commands, webhooks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from ai_employee.control.server import TOKEN_HEADER, ControlServer, path_params
from ai_employee.model.services import ServiceDisabledError
from ai_employee.observability.metrics import Metrics

TOKEN = "test-control-token-0123456789"


class FakeDaemon:
    """Stands in for the orchestrator behind the `ControlHooks` protocol."""

    def __init__(self) -> None:
        self.ready = True
        self.stop_requests = 0
        self.restarted: list[str] = []
        self.services = {"email": {"state": "running"}, "telegram": {"state": "off"}}
        self.fail_status = False

    def status(self) -> dict[str, Any]:
        if self.fail_status:
            raise RuntimeError("status broke: /secret/path")
        return {
            "running": True,
            "pid": 4242,
            "dry_run": True,
            "services": self.services,
            "vault": {"Inbox": 0},
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.ready, {"services": {"email": "up" if self.ready else "down"}}

    def request_stop(self) -> None:
        self.stop_requests += 1

    async def restart_service(self, name: str) -> None:
        if name not in self.services:
            raise KeyError(name)
        if self.services[name]["state"] == "disabled":
            raise ServiceDisabledError(name, "SLACK_BOT_TOKEN is not set")
        self.restarted.append(name)


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(process_metrics=False)


@pytest.fixture
async def server(daemon: FakeDaemon, metrics: Metrics) -> AsyncIterator[ControlServer]:
    control = ControlServer(daemon, metrics, port=0, token=TOKEN)
    await control.start()
    yield control
    await control.stop()


@pytest.fixture
async def client(server: ControlServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5.0) as http:
        yield http


# -- probes -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/livez", "/health"])
async def test_liveness_answers_ok(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_is_200_with_detail_when_ready(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "detail": {"services": {"email": "up"}}}


async def test_readiness_is_503_with_detail_when_not_ready(
    client: httpx.AsyncClient, daemon: FakeDaemon
) -> None:
    daemon.ready = False

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "detail": {"services": {"email": "down"}}}


async def test_head_is_answered_for_get_routes(client: httpx.AsyncClient) -> None:
    response = await client.head("/livez")

    assert response.status_code == 200


# -- metrics and status -------------------------------------------------------------------


async def test_metrics_are_served_in_prometheus_text_format(
    client: httpx.AsyncClient, metrics: Metrics
) -> None:
    metrics.actions_created.labels(source="file").inc()

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'aie_actions_created_total{source="file"} 1.0' in response.text


async def test_status_is_the_hooks_status_as_json(client: httpx.AsyncClient, daemon: FakeDaemon) -> None:
    response = await client.get("/status")

    assert response.status_code == 200
    assert response.json() == daemon.status()


async def test_a_failing_hook_answers_json_500_without_a_traceback(
    client: httpx.AsyncClient, daemon: FakeDaemon
) -> None:
    daemon.fail_status = True

    response = await client.get("/status")

    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert "Traceback" not in response.text and "/secret/path" not in response.text


async def test_unknown_path_answers_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")

    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


async def test_wrong_method_answers_json_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/control/stop", headers={TOKEN_HEADER: TOKEN})

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"error": "Method Not Allowed"}


# -- commands and their token -------------------------------------------------------------


async def test_stop_with_the_token_is_accepted_and_requested(
    client: httpx.AsyncClient, daemon: FakeDaemon
) -> None:
    response = await client.post("/control/stop", headers={TOKEN_HEADER: TOKEN})

    assert response.status_code == 202
    assert response.json() == {"status": "stopping"}
    assert daemon.stop_requests == 1


@pytest.mark.parametrize(
    "headers", [{}, {TOKEN_HEADER: "wrong"}, {TOKEN_HEADER: ""}], ids=["none", "wrong", "empty"]
)
async def test_stop_without_the_right_token_is_forbidden(
    client: httpx.AsyncClient, daemon: FakeDaemon, headers: dict[str, str]
) -> None:
    response = await client.post("/control/stop", headers=headers)

    assert response.status_code == 403
    assert "error" in response.json()
    assert daemon.stop_requests == 0


async def test_restart_of_a_known_service_answers_200(client: httpx.AsyncClient, daemon: FakeDaemon) -> None:
    response = await client.post("/control/services/email/restart", headers={TOKEN_HEADER: TOKEN})

    assert response.status_code == 200
    assert response.json() == {"status": "restarted", "service": "email"}
    assert daemon.restarted == ["email"]


async def test_restart_of_an_unknown_service_answers_404(
    client: httpx.AsyncClient, daemon: FakeDaemon
) -> None:
    response = await client.post("/control/services/fax/restart", headers={TOKEN_HEADER: TOKEN})

    assert response.status_code == 404
    assert response.json() == {
        "error": "unknown service",
        "service": "fax",
        "services": ["email", "telegram"],
    }
    assert daemon.restarted == []


async def test_restart_of_a_disabled_service_answers_409_with_its_reason_and_the_valid_names(
    client: httpx.AsyncClient, daemon: FakeDaemon
) -> None:
    daemon.services["slack"] = {"state": "disabled"}

    response = await client.post("/control/services/slack/restart", headers={TOKEN_HEADER: TOKEN})

    assert response.status_code == 409
    assert response.json() == {
        "error": "service is off",
        "service": "slack",
        "reason": "SLACK_BOT_TOKEN is not set",
        "services": ["email", "telegram"],
    }
    assert daemon.restarted == []


async def test_restart_without_the_token_is_forbidden(client: httpx.AsyncClient, daemon: FakeDaemon) -> None:
    response = await client.post("/control/services/email/restart", headers={TOKEN_HEADER: "x" + TOKEN})

    assert response.status_code == 403
    assert daemon.restarted == []


def test_an_empty_token_is_refused(daemon: FakeDaemon, metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="token"):
        ControlServer(daemon, metrics, port=0, token="")


# -- webhook routes -----------------------------------------------------------------------


async def test_a_route_added_after_start_is_served(server: ControlServer, client: httpx.AsyncClient) -> None:
    received: list[bytes] = []

    async def slack(request: web.Request) -> web.StreamResponse:
        received.append(await request.read())
        return web.json_response({"ok": True})

    server.add_route("POST", "/webhooks/slack/interactions", slack)
    response = await client.post("/webhooks/slack/interactions", content=b"payload=1")

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert received == [b"payload=1"]


async def test_a_route_added_before_start_is_served(daemon: FakeDaemon, metrics: Metrics) -> None:
    async def hello(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="hi")

    control = ControlServer(daemon, metrics, port=0, token=TOKEN)
    control.add_route("GET", "/webhooks/hello", hello)
    await control.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{control.port}") as http:
            response = await http.get("/webhooks/hello")
    finally:
        await control.stop()

    assert response.text == "hi"


async def test_route_parameters_are_passed_to_the_handler(
    server: ControlServer, client: httpx.AsyncClient
) -> None:
    async def telegram(request: web.Request) -> web.StreamResponse:
        return web.json_response(dict(path_params(request)))

    server.add_route("POST", "/webhooks/telegram/{bot}", telegram)
    response = await client.post("/webhooks/telegram/main")

    assert response.json() == {"bot": "main"}


async def test_adding_a_route_again_replaces_its_handler(
    server: ControlServer, client: httpx.AsyncClient
) -> None:
    async def old(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="old")

    async def new(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="new")

    server.add_route("POST", "/webhooks/x", old)
    server.add_route("POST", "/webhooks/x", new)

    assert (await client.post("/webhooks/x")).text == "new"


async def test_a_removed_route_answers_404(server: ControlServer, client: httpx.AsyncClient) -> None:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(text="here")

    server.add_route("POST", "/webhooks/gone", handler)
    assert server.remove_route("POST", "/webhooks/gone")

    assert (await client.post("/webhooks/gone")).status_code == 404


def test_built_in_routes_cannot_be_replaced(daemon: FakeDaemon, metrics: Metrics) -> None:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response()

    control = ControlServer(daemon, metrics, port=0, token=TOKEN)

    with pytest.raises(ValueError, match="built-in"):
        control.add_route("POST", "/control/stop", handler)
    assert not control.remove_route("GET", "/metrics")


async def test_a_failing_webhook_answers_json_500(server: ControlServer, client: httpx.AsyncClient) -> None:
    async def broken(_request: web.Request) -> web.StreamResponse:
        raise RuntimeError("boom")

    server.add_route("POST", "/webhooks/broken", broken)
    response = await client.post("/webhooks/broken")

    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}


# -- binding ------------------------------------------------------------------------------


async def test_port_zero_picks_a_free_port(server: ControlServer) -> None:
    assert server.port > 0


async def test_it_listens_on_127_0_0_1_only(server: ControlServer) -> None:
    assert server.addresses == [("127.0.0.1", server.port)]
    # Another loopback address reaches a wildcard bind, but not a socket bound to 127.0.0.1.
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.2", server.port)


async def test_stop_closes_the_port(daemon: FakeDaemon, metrics: Metrics) -> None:
    control = ControlServer(daemon, metrics, port=0, token=TOKEN)
    port = await control.start()

    await control.stop()
    await control.stop()

    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
