"""Which planner the daemon gets, and a model planner built off the start path (issue 19).

`build_planner` returns at once: a model planner's module and SDK (a second to import) are built
in a background thread, the first plan waits for them, and a primary that cannot be built leaves
the template planner planning, with the reason, logged once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ai_employee.config import Settings, load_settings
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.model.plugins import PluginDisabled
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.model.services import LinkStatus, ServiceState
from ai_employee.planners import claude as claude_planner
from ai_employee.planners.base import Planner
from ai_employee.planners.choice import build_planner, build_wait_seconds
from ai_employee.planners.fallback import FallbackPlanner, PendingPlanner
from ai_employee.planners.template import TemplatePlanner
from ai_employee.vault.ledger import Ledger
from tests.planning.helpers import make_request
from tests.planning.llm_harness import Harness, running

ROOT = Path(__file__).resolve().parents[2]
PUMP = "Pump 3 on line 2 is leaking oil, needs fixing today"
WORK_ORDER = {
    "intent": "work_order",
    "confidence": 0.92,
    "action": "atlas.work_order",
    "params": {"title": "Pump 3 leaking oil on line 2", "description": PUMP, "priority": "HIGH"},
    "risk": "high",
    "summary": "Oil leak on Pump 3, line 2: urgent repair.",
    "steps": ["Create a HIGH priority work order for Pump 3."],
}


class StubPlanner(Planner):
    """A primary that plans as the template planner would, under its own name."""

    name = "stub"

    def __init__(self) -> None:
        self.closed = False

    async def plan(self, request: PlanRequest) -> PlanProposal:
        proposal = TemplatePlanner().plan_local(request)
        proposal.planner = "stub:model"
        return proposal

    def link(self) -> LinkStatus | None:
        return LinkStatus(ServiceState.RUNNING, "Stub", datetime.now(UTC))

    async def aclose(self) -> None:
        self.closed = True


class Gate:
    """A build that waits until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.built: StubPlanner | None = None

    def build(self) -> Planner:
        assert self.opened.wait(10), "the test never opened the gate"
        self.built = StubPlanner()
        return self.built


def pending(build: Callable[[], Planner], wait_seconds: float = 10.0) -> FallbackPlanner:
    return FallbackPlanner(PendingPlanner("stub", build, wait_seconds=wait_seconds), TemplatePlanner())


def settings_for(tmp_path: Path, environ: dict[str, str], **planner: Any) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text("", encoding="utf-8")
    overrides = {("planner", key): value for key, value in planner.items()}
    return load_settings(config, environ=environ, overrides=overrides)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "state.db")


@pytest.fixture(params=["claude", "openai"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(request.param, tmp_path) as started:
        yield started


# --- build_planner ----------------------------------------------------------------------------

SPY = """
import asyncio, json, sys, threading, time

importers = {}

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("anthropic", "ai_employee.planners.claude"):
            importers.setdefault(name, threading.current_thread().name)
        return None

sys.meta_path.insert(0, Spy())

from pathlib import Path
from ai_employee.config import load_settings
from ai_employee.model.registry import ExecutorRegistry
from ai_employee.planners.choice import build_planner
from ai_employee.vault.ledger import Ledger
from tests.planning.helpers import make_request

tmp = Path(sys.argv[1])
(tmp / "config.yaml").write_text("", encoding="utf-8")
environ = {"ANTHROPIC_API_KEY": "sk-ant-test-0123456789", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
settings = load_settings(tmp / "config.yaml", environ=environ, overrides={("planner", "max_retries"): 0})
planner = build_planner(settings, ExecutorRegistry(), Ledger(tmp / "state.db"))
seen = {"name": planner.name, "local": planner.local, "link_before": planner.link()}

async def first_plan():
    proposal = await planner.plan(make_request("Pump 3 on line 2 is leaking oil"))
    link = planner.link()
    await planner.aclose()
    return proposal, link

proposal, link = asyncio.run(first_plan())
seen.update(
    importers=importers,
    planner=proposal.planner,
    reason=proposal.fallback_reason,
    link_after=link.state.value if link else None,
)
print(json.dumps(seen))
"""


def test_the_model_planners_sdk_is_imported_in_the_background_not_by_build_planner(tmp_path: Path) -> None:
    # A fresh Python: this one has imported the SDKs already.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIE_", "ANTHROPIC"))}
    done = subprocess.run(
        [sys.executable, "-c", SPY, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])

    assert seen["importers"] == {
        "ai_employee.planners.claude": "build planner claude",
        "anthropic": "build planner claude",
    }
    assert seen["name"] == "claude"
    assert seen["local"] is False
    assert seen["link_before"] is None
    # the first plan waited for the Claude planner: it tried the (unreachable) API
    assert seen["planner"] == "template"
    assert "cannot reach" in seen["reason"]
    assert seen["link_after"] == "degraded"


async def test_with_the_api_up_the_first_plan_is_the_models(harness: Harness, ledger: Ledger) -> None:
    harness.fake.script.reply_plan(WORK_ORDER)
    settings = harness.settings(kind=harness.provider)
    planner = build_planner(settings, ExecutorRegistry(), ledger)

    assert isinstance(planner, FallbackPlanner)
    assert planner.name == harness.provider  # what status shows as "planner", as before
    assert planner.local is False
    proposal = await planner.plan(make_request(PUMP))

    model = settings.planner.claude_model if harness.provider == "claude" else settings.planner.openai_model
    assert proposal.planner == f"{harness.provider}:{model}"
    assert proposal.fallback_reason is None
    link = planner.link()
    assert link is not None and link.state is ServiceState.RUNNING
    await planner.aclose()


def test_the_template_kind_is_the_template_planner(tmp_path: Path, ledger: Ledger) -> None:
    planner = build_planner(settings_for(tmp_path, {}), ExecutorRegistry(), ledger)  # auto, no key

    assert type(planner) is TemplatePlanner
    assert planner.local is True


async def test_a_claude_planner_without_a_key_falls_back_with_the_reason(
    tmp_path: Path, ledger: Ledger
) -> None:
    settings = settings_for(tmp_path, {}, kind="claude")

    with capture_logs() as logs:
        planner = build_planner(settings, ExecutorRegistry(), ledger)
        first = await planner.plan(make_request(PUMP))
        second = await planner.plan(make_request(PUMP))

    assert planner.name == "claude"
    for proposal in (first, second):
        assert proposal.planner == "template"
        assert proposal.fallback_reason is not None
        assert proposal.fallback_reason.startswith("planner claude is off: no Anthropic API key")
    assert [entry["event"] for entry in logs if "template planner" in entry["event"]] == [
        "planner off; using the template planner"
    ]
    assert planner.link() is None
    await planner.aclose()


def test_a_plan_waits_for_the_build_as_long_as_a_model_call_may_take(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, {"ANTHROPIC_API_KEY": "sk-ant-test-0123456789"}, max_retries=2)

    assert build_wait_seconds(settings) == claude_planner.create(settings).outer_deadline()


# --- PendingPlanner -----------------------------------------------------------------------------


async def test_the_first_plan_waits_for_the_primary_being_built() -> None:
    gate = Gate()
    planner = pending(gate.build)

    planning = asyncio.create_task(planner.plan(make_request(PUMP)))
    await asyncio.sleep(0.2)
    assert not planning.done()
    assert planner.link() is None  # nothing built yet
    gate.opened.set()
    proposal = await asyncio.wait_for(planning, 10)

    assert proposal.planner == "stub:model"
    assert proposal.fallback_reason is None
    link = planner.link()
    assert link is not None and link.target == "Stub"
    await planner.aclose()
    assert gate.built is not None and gate.built.closed


async def test_a_primary_not_built_within_the_deadline_falls_back_then_plans_once_built() -> None:
    gate = Gate()
    planner = pending(gate.build, wait_seconds=0.1)

    late = await planner.plan(make_request(PUMP))
    gate.opened.set()
    await asyncio.sleep(0.2)
    built = await planner.plan(make_request(PUMP))

    assert late.planner == "template"
    assert late.fallback_reason == "timeout: planner stub was not ready within 0.1 s"
    assert built.planner == "stub:model"
    await planner.aclose()


def _disabled() -> Planner:
    raise PluginDisabled("no stub key (set STUB_KEY)")


def _not_installed() -> Planner:
    raise ModuleNotFoundError("No module named 'stub_sdk'")


def _broken() -> Planner:
    raise RuntimeError("the stub's own words, maybe with sk-secret")


@pytest.mark.parametrize(
    ("build", "reason", "logged"),
    [
        (
            _disabled,
            "planner stub is off: no stub key (set STUB_KEY)",
            "planner off; using the template planner",
        ),
        (
            _not_installed,
            "planner stub failed to load: ModuleNotFoundError: No module named 'stub_sdk'",
            "planner failed to load; using the template planner",
        ),
        (
            _broken,
            "planner stub failed to load: RuntimeError",
            "planner failed to load; using the template planner",
        ),
    ],
    ids=["off", "not installed", "broken"],
)
async def test_a_primary_that_fails_to_build_falls_back_to_the_template_planner_with_the_reason(
    build: Callable[[], Planner], reason: str, logged: str
) -> None:
    with capture_logs() as logs:
        planner = pending(build)
        proposals = [await planner.plan(make_request(PUMP)) for _ in range(3)]

    for proposal in proposals:
        assert proposal.planner == "template"
        assert proposal.fallback_reason == reason
        assert proposal.action  # a plan all the same
    assert [entry["event"] for entry in logs if "template planner" in entry["event"]] == [logged]  # once
    assert planner.name == "stub"
    assert planner.link() is None
    await planner.aclose()


async def test_stopping_waits_for_a_build_in_progress_and_closes_what_it_built() -> None:
    gate = Gate()
    planner = pending(gate.build)

    closing = asyncio.create_task(planner.aclose())
    await asyncio.sleep(0.1)
    assert not closing.done()
    gate.opened.set()
    await asyncio.wait_for(closing, 10)

    assert gate.built is not None and gate.built.closed
