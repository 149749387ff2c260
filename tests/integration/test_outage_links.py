"""Atlas, Manus and the model APIs down in each way (refused, hanging, slow): each call costs a
bounded wait, the link says why in plain words, and the next call after the server is back
works and says so.

Each server is a loopback fake behind an `OutageProxy` on one fixed port; the daemon's own
settings build the executors and planners (`create(settings)`), with small deadlines.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_employee.clients.retry import RetryPolicy, ServiceUnavailable
from ai_employee.clients.whisper import AudioFile, OpenAITranscriber
from ai_employee.config import Settings, load_settings
from ai_employee.executors import atlas as atlas_executor
from ai_employee.executors import manus as manus_executor
from ai_employee.executors import vault_note
from ai_employee.model.executor import ExecutionContext, ExecutionError
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.model.services import ServiceState
from ai_employee.planners import claude as claude_planner
from ai_employee.planners import openai as openai_planner
from ai_employee.planners.fallback import FallbackPlanner
from ai_employee.planners.guard import collect_secrets
from ai_employee.planners.template import TemplatePlanner
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.atlas_server import AtlasFake
from tests.fakes.journal import FileJournal
from tests.fakes.manus_server import ManusFake
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.openai_transcription import FakeOpenAITranscription
from tests.fakes.outage import Mode, OutageProxy
from tests.planning.helpers import make_request

MODES: list[Mode] = ["refused", "hanging", "slow"]
#: what the link says for each outage: nothing listens, or it listens and never answers in time
WORDS = {
    "refused": "connection refused (nothing is listening)",
    "hanging": "no answer after 0.3 s",
    "slow": "no answer after 0.3 s",
}
DEADLINES = {
    "AIE_SERVICES__CONNECT_TIMEOUT": "0.3",
    "AIE_SERVICES__READ_TIMEOUT": "0.3",  # Manus
    "AIE_ATLAS__TIMEOUT_SECONDS": "0.3",
    "AIE_PLANNER__TIMEOUT_SECONDS": "0.3",
    "AIE_PLANNER__MAX_RETRIES": "1",
    "AIE_PLANNER__CLAUDE_MODEL": "claude-sonnet-4-6",
    "AIE_SERVICES__INITIAL_BACKOFF": "0.02",
}
#: the executors' clients try 5 times (clients/retry.py), each within connect + read
CLIENT_ATTEMPTS = 5
EMAIL = "admin@example.com"
PASSWORD = "s3cret-atlas-pass"
MANUS_KEY = "manus-secret-key-0123456789"
ANTHROPIC_KEY = "sk-ant-outage-0123456789abcdef"
OPENAI_KEY = "sk-outage-openai-0123456789abcdef"
PLAN = "plan-20261121-101500-a1b2c3"
ACTION = "act-20261121-101500-a1b2c3"


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1].split("/", 1)[0])


def settings_for(tmp_path: Path, environ: dict[str, str]) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text("", encoding="utf-8")
    return load_settings(config, environ={**DEADLINES, **environ})


def bound(settings: Settings, attempts: int, *, slack: float = 1.5) -> float:
    """The longest a call may take: every attempt within its connect and read deadlines, the
    waits between attempts, and some slack for a loaded machine."""
    per_attempt = settings.services.connect_timeout + max(
        settings.atlas.timeout_seconds, settings.services.read_timeout, settings.planner.timeout_seconds
    )
    waits = sum(min(30.0, settings.services.initial_backoff * 2**n) for n in range(attempts)) * 2
    return attempts * per_attempt + waits + slack


def context(tmp_path: Path) -> ExecutionContext:
    return ExecutionContext(
        plan_id=PLAN,
        action_id=ACTION,
        vault_root=tmp_path,
        live=True,
        journal=FileJournal(tmp_path / "journal.json"),
    )


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Mode:
    chosen: Mode = request.param
    return chosen


def proxy_for(base_url: str, mode: Mode) -> Iterator[OutageProxy]:
    proxy = OutageProxy(port_of(base_url), mode=mode).start()
    try:
        yield proxy
    finally:
        proxy.stop()


# --- Atlas -----------------------------------------------------------------------------------


@pytest.fixture
async def atlas() -> AsyncIterator[AtlasFake]:
    fake = AtlasFake(email=EMAIL, password=PASSWORD)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def atlas_proxy(atlas: AtlasFake, mode: Mode) -> Iterator[OutageProxy]:
    yield from proxy_for(atlas.base_url, mode)


def atlas_settings(tmp_path: Path, proxy: OutageProxy) -> Settings:
    return settings_for(
        tmp_path, {"ATLAS_BASE_URL": proxy.url, "ATLAS_EMAIL": EMAIL, "ATLAS_PASSWORD": PASSWORD}
    )


def work_order() -> atlas_executor.WorkOrderParams:
    return atlas_executor.WorkOrderParams(title="Pump 3 leaking on line 2", priority="HIGH")


async def test_an_unreachable_atlas_costs_a_bounded_wait_and_status_says_why(
    atlas_proxy: OutageProxy, mode: Mode, tmp_path: Path
) -> None:
    settings = atlas_settings(tmp_path, atlas_proxy)
    executor = atlas_executor.create(settings)
    started = time.monotonic()
    with pytest.raises(ExecutionError) as failure:
        await executor.execute(work_order(), context(tmp_path))
    assert time.monotonic() - started < bound(settings, CLIENT_ATTEMPTS)
    assert failure.value.retryable

    shown = ExecutorRegistry([executor]).status()["atlas.work_order"]
    assert shown["state"] == "degraded"
    assert shown["target"] == f"Atlas 127.0.0.1:{atlas_proxy.port}"
    assert shown["last_error"] == f"Atlas 127.0.0.1:{atlas_proxy.port}: {WORDS[mode]}"
    assert shown["attempts"] == CLIENT_ATTEMPTS
    assert PASSWORD not in json.dumps(shown) and EMAIL not in json.dumps(shown)
    await executor.aclose()


async def test_atlas_back_on_its_port_makes_the_work_order_and_the_link_runs_again(
    atlas: AtlasFake, atlas_proxy: OutageProxy, tmp_path: Path
) -> None:
    executor = atlas_executor.create(atlas_settings(tmp_path, atlas_proxy))
    with pytest.raises(ExecutionError):
        await executor.execute(work_order(), context(tmp_path))

    atlas_proxy.set_mode("up")
    result = await executor.execute(work_order(), context(tmp_path))

    assert [order["id"] for order in atlas.work_orders.values()] == [result["work_order_id"]]
    link = executor.link()
    assert link is not None and link.state is ServiceState.RUNNING and link.attempts == 0
    await executor.aclose()


async def test_a_gateway_saying_atlas_is_down_degrades_the_link_like_a_refused_connection(
    atlas: AtlasFake, tmp_path: Path
) -> None:
    atlas.inject("POST", "/auth/signin", status=502, body={}, times=CLIENT_ATTEMPTS)
    executor = atlas_executor.create(
        settings_for(
            tmp_path, {"ATLAS_BASE_URL": atlas.base_url, "ATLAS_EMAIL": EMAIL, "ATLAS_PASSWORD": PASSWORD}
        )
    )
    with pytest.raises(ExecutionError):
        await executor.execute(work_order(), context(tmp_path))
    link = executor.link()
    assert link is not None and link.state is ServiceState.DEGRADED
    assert link.last_error == f"Atlas 127.0.0.1:{port_of(atlas.base_url)}: answered HTTP 502 (bad gateway)"
    await executor.aclose()


def test_executors_not_called_yet_show_idle_without_credentials_disabled_and_local_running(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, {"MANUS_API_KEY": MANUS_KEY})
    registry = ExecutorRegistry(
        [atlas_executor.create(settings), manus_executor.create(settings), vault_note.create(settings)]
    )
    shown = registry.status()
    assert {name: entry["state"] for name, entry in shown.items()} == {
        "atlas.work_order": "disabled",
        "manus.research": "idle",
        "vault.note": "running",
    }
    assert all(entry["last_error"] is None and entry["attempts"] == 0 for entry in shown.values())


# --- Manus -----------------------------------------------------------------------------------


@pytest.fixture
async def manus() -> AsyncIterator[ManusFake]:
    fake = ManusFake(MANUS_KEY, auto_finish_after_polls=1, auto_answer="Acme sells seals.")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def manus_proxy(manus: ManusFake, mode: Mode) -> Iterator[OutageProxy]:
    yield from proxy_for(manus.base_url, mode)


def research() -> manus_executor.ResearchParams:
    return manus_executor.ResearchParams(prompt="Find suppliers of pump seals")


async def test_an_unreachable_manus_costs_a_bounded_wait_then_its_return_runs_the_task(
    manus: ManusFake, manus_proxy: OutageProxy, mode: Mode, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path,
        {
            "MANUS_API_KEY": MANUS_KEY,
            "MANUS_BASE_URL": manus_proxy.url,
            "AIE_MANUS__POLL_INITIAL_SECONDS": "0.01",
            "AIE_MANUS__POLL_MAX_SECONDS": "0.05",
        },
    )
    executor = manus_executor.create(settings)
    started = time.monotonic()
    with pytest.raises(ExecutionError):
        await executor.execute(research(), context(tmp_path))
    assert time.monotonic() - started < bound(settings, CLIENT_ATTEMPTS)
    link = executor.link()
    assert link is not None and link.state is ServiceState.DEGRADED
    assert link.last_error == f"Manus 127.0.0.1:{manus_proxy.port}: {WORDS[mode]}"
    assert MANUS_KEY not in json.dumps(link.to_dict())

    manus_proxy.set_mode("up")
    result = await executor.execute(research(), context(tmp_path))

    assert result["status"] == "completed" and manus.created == 1
    link = executor.link()
    assert link is not None and link.state is ServiceState.RUNNING
    await executor.aclose()


# --- the model APIs --------------------------------------------------------------------------


@pytest.fixture(params=["claude", "openai"])
async def model_api(request: pytest.FixtureRequest) -> AsyncIterator[AnthropicFake | OpenAIFake]:
    fake: AnthropicFake | OpenAIFake = (
        AnthropicFake(api_key=ANTHROPIC_KEY) if request.param == "claude" else OpenAIFake(api_key=OPENAI_KEY)
    )
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def model_proxy(model_api: AnthropicFake | OpenAIFake, mode: Mode) -> Iterator[OutageProxy]:
    yield from proxy_for(model_api.base_url, mode)


def model_planner(
    tmp_path: Path, fake: AnthropicFake | OpenAIFake, proxy: OutageProxy
) -> tuple[FallbackPlanner, Settings, str]:
    """The daemon's planner (the model's, the template planner behind it) through the proxy."""
    if isinstance(fake, AnthropicFake):
        environ: dict[str, Any] = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": proxy.url}
        settings = settings_for(tmp_path, environ)
        primary: Any = claude_planner.create(settings)
        label = "Claude"
    else:
        environ = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{proxy.url}/v1"}
        settings = settings_for(tmp_path, environ)
        primary = openai_planner.create(settings)
        label = "OpenAI"
    return FallbackPlanner(primary, TemplatePlanner(), secrets=collect_secrets(settings)), settings, label


PUMP = "Pump 3 on line 2 is leaking oil, needs fixing today"


async def test_an_unreachable_model_api_costs_a_bounded_wait_and_the_template_planner_plans(
    model_api: AnthropicFake | OpenAIFake, model_proxy: OutageProxy, mode: Mode, tmp_path: Path
) -> None:
    planner, settings, label = model_planner(tmp_path, model_api, model_proxy)
    started = time.monotonic()
    proposal = await planner.plan(make_request(PUMP))
    assert time.monotonic() - started < bound(settings, settings.planner.max_retries + 1)

    assert proposal.planner == "template" and proposal.action == "atlas.work_order"
    assert proposal.fallback_reason is not None
    link = planner.link()
    assert link is not None and link.state is ServiceState.DEGRADED
    assert link.target == f"{label} 127.0.0.1:{model_proxy.port}"
    assert link.last_error == f"{label} 127.0.0.1:{model_proxy.port}: {WORDS[mode]}"
    assert link.attempts == 1  # the SDK's own retries are inside one call
    shown = json.dumps(link.to_dict())
    assert ANTHROPIC_KEY not in shown and OPENAI_KEY not in shown
    await planner.aclose()


async def test_the_model_api_back_on_its_port_plans_again_and_the_link_runs_again(
    model_api: AnthropicFake | OpenAIFake, model_proxy: OutageProxy, tmp_path: Path
) -> None:
    planner, _, _ = model_planner(tmp_path, model_api, model_proxy)
    assert (await planner.plan(make_request(PUMP))).planner == "template"

    model_proxy.set_mode("up")
    proposal = await planner.plan(make_request(PUMP))

    assert proposal.planner.startswith(planner.name) and proposal.fallback_reason is None
    link = planner.link()
    assert link is not None and link.state is ServiceState.RUNNING and link.attempts == 0
    await planner.aclose()


def test_a_planner_reports_no_link_before_its_first_call(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, {"ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    planner = FallbackPlanner(claude_planner.create(settings), TemplatePlanner())
    assert planner.link() is None
    assert TemplatePlanner().link() is None


# --- Whisper ---------------------------------------------------------------------------------


@pytest.fixture
async def transcription() -> AsyncIterator[FakeOpenAITranscription]:
    fake = FakeOpenAITranscription()
    await fake.start()
    yield fake
    await fake.stop()


async def test_an_unreachable_transcription_api_costs_a_bounded_wait_then_its_return_transcribes(
    transcription: FakeOpenAITranscription, mode: Mode
) -> None:
    proxy = OutageProxy(transcription.port, mode=mode).start()
    retry = RetryPolicy(attempts=2, initial_seconds=0.01, max_seconds=0.02, jitter_seconds=0.01)
    client = OpenAITranscriber(
        api_key=transcription.api_key,
        base_url=f"{proxy.url}/v1",
        timeout_seconds=0.3,
        connect_timeout=0.3,
        retry=retry,
    )
    audio = AudioFile("voice.ogg", b"OggS-voice" * 10, "audio/ogg", 3)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await client.transcribe(audio)
        assert time.monotonic() - started < 2 * 0.6 + 1.5
        link = client.link()
        assert link is not None and link.state is ServiceState.DEGRADED
        assert link.last_error == f"Whisper 127.0.0.1:{proxy.port}: {WORDS[mode]}"
        assert transcription.api_key not in json.dumps(link.to_dict())

        proxy.set_mode("up")
        assert (await client.transcribe(audio)).text == transcription.default_text
        link = client.link()
        assert link is not None and link.state is ServiceState.RUNNING
    finally:
        await client.aclose()
        proxy.stop()
