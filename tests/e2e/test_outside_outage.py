"""Issue 19 end to end, for the servers reached when a plan is made or run: the real daemon with
Atlas (live mode) or the Claude API down in each way (refused, hanging, slow) behind an
`OutageProxy` on one fixed port.

In every case the daemon is visible and ready at once; a dropped file is planned; `status --json`
shows the trouble in plain words; when the server is back on the same port the next use works
(a failed Atlas plan moved back to Approved/ makes exactly one work order; a new file is planned
by Claude); `stop` ends the daemon within the grace time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, drop, frontmatter, note_result, notes, wait_for
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.atlas_server import threaded_atlas_with_pump
from tests.fakes.outage import Mode, OutageProxy
from tests.fakes.threaded import ThreadedFake

#: from `start` to daemon.json and /readyz 200, whatever the outside world does
STARTUP_SECONDS = 2.0
GRACE_SECONDS = 10.0
DEADLINES = {
    "AIE_SERVICES__CONNECT_TIMEOUT": "1",
    "AIE_ATLAS__TIMEOUT_SECONDS": "1",
    "AIE_PLANNER__TIMEOUT_SECONDS": "1",
    "AIE_PLANNER__MAX_RETRIES": "0",
    "AIE_SERVICES__INITIAL_BACKOFF": "0.05",
    "AIE_SERVICES__GRACE_SECONDS": str(GRACE_SECONDS),
}
WORDS = {
    "refused": "connection refused (nothing is listening)",
    "hanging": "no answer after 1 s",
    "slow": "no answer after 1 s",
}
EMAIL = "admin@example.com"
PASSWORD = "s3cret-atlas-pass"
API_KEY = "sk-ant-outage-e2e-0123456789abcdef"
PUMP = "Pump 3 on line 2 is leaking oil, needs fixing today"
SEALS = "Pump 7 on line 4 has a worn seal, please replace it this week"


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1].split("/", 1)[0])


def proxy_for(fake: ThreadedFake, mode: Mode) -> Iterator[OutageProxy]:
    proxy = OutageProxy(port_of(fake.fake.base_url), mode=mode).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def atlas() -> Iterator[ThreadedFake]:
    with threaded_atlas_with_pump(EMAIL, PASSWORD) as threaded:
        yield threaded


@pytest.fixture
def atlas_proxy(atlas: ThreadedFake, mode: Mode) -> Iterator[OutageProxy]:
    yield from proxy_for(atlas, mode)


@pytest.fixture
def claude_api() -> Iterator[ThreadedFake]:
    threaded = ThreadedFake(AnthropicFake(api_key=API_KEY))
    threaded.start()
    yield threaded
    threaded.stop()


@pytest.fixture
def claude_proxy(claude_api: ThreadedFake, mode: Mode) -> Iterator[OutageProxy]:
    yield from proxy_for(claude_api, mode)


def start_at_once(daemon: DaemonProcess) -> None:
    """Start it and see it visible (daemon.json) and ready (/readyz 200) within STARTUP_SECONDS."""
    started = time.monotonic()
    daemon.start(wait=False)
    assert daemon.process is not None
    pid = daemon.process.pid
    wait_for(lambda: (daemon.info() or {}).get("pid") == pid, timeout=30, message="daemon.json")
    visible = time.monotonic() - started
    wait_for(daemon.ready, timeout=30, message="/readyz 200")
    ready = time.monotonic() - started
    assert ready < STARTUP_SECONDS, f"visible after {visible:.2f} s, ready after {ready:.2f} s"


def status(daemon: DaemonProcess) -> tuple[dict[str, Any], str]:
    shown = daemon.cli("status", "--json", "--vault", str(daemon.vault), check=True).stdout
    return json.loads(shown), shown


def with_id(folder: Path, ident: str) -> Path | None:
    return next((path for path in notes(folder) if frontmatter(path).get("id") == ident), None)


def plan_mentioning(vault: Path, text: str) -> dict[str, Any]:
    def found() -> Path | None:
        return next((p for p in notes(vault / "Plans") if text in p.read_text(encoding="utf-8")), None)

    return frontmatter(wait_for(found, timeout=30, message=f"a plan mentioning {text!r}"))


def stop_within_the_grace(daemon: DaemonProcess) -> None:
    assert daemon.process is not None
    started = time.monotonic()
    daemon.cli("stop", "--vault", str(daemon.vault), check=True, timeout=GRACE_SECONDS + 5)
    daemon.process.wait(timeout=max(0.1, GRACE_SECONDS - (time.monotonic() - started)))


def test_atlas_down_shows_in_status_and_a_failed_plan_retried_once_it_is_back_makes_one_work_order(
    vault: Path, daemon_env: dict[str, str], atlas: ThreadedFake, atlas_proxy: OutageProxy, mode: Mode
) -> None:
    env = {
        **daemon_env,
        **DEADLINES,
        "AIE_PLANNER": "template",
        "ATLAS_BASE_URL": atlas_proxy.url,
        "ATLAS_EMAIL": EMAIL,
        "ATLAS_PASSWORD": PASSWORD,
    }
    daemon = DaemonProcess(vault, env, ["--live"])
    try:
        start_at_once(daemon)
        drop(vault, "pump.txt", PUMP)
        plan = plan_mentioning(vault, "Pump 3")
        assert plan["action"] == "atlas.work_order"
        daemon.cli("approve", str(plan["id"]), "--vault", str(vault), check=True)
        failed = wait_for(lambda: with_id(vault / "Failed", str(plan["id"])), timeout=60, message="Failed/")
        assert WORDS[mode] in str(frontmatter(failed)["error"])

        shown, raw = status(daemon)
        link = shown["executors"]["atlas.work_order"]
        assert link["state"] == "degraded"
        assert link["last_error"] == f"Atlas 127.0.0.1:{atlas_proxy.port}: {WORDS[mode]}"
        assert link["attempts"] >= 1 and link["target"] == f"Atlas 127.0.0.1:{atlas_proxy.port}"
        assert PASSWORD not in raw

        atlas_proxy.set_mode("up")
        os.rename(failed, vault / "Approved" / failed.name)
        done = wait_for(lambda: with_id(vault / "Done", str(plan["id"])), timeout=60, message="Done/")
        result = frontmatter(done)
        assert result["status"] == "done", result.get("error")
        orders = atlas.call(lambda: list(atlas.fake.work_orders.values()))  # type: ignore[attr-defined]
        shown = note_result(done)
        assert len(orders) == 1 and shown is not None and shown["work_order_id"] == orders[0]["id"]
        assert result["work_order"] == str(shown["custom_id"] or shown["work_order_id"])  # flat summary
        assert status(daemon)[0]["executors"]["atlas.work_order"]["state"] == "running"

        stop_within_the_grace(daemon)
    finally:
        daemon.kill()


def test_claude_down_falls_back_with_the_reason_shows_in_status_and_plans_again_once_it_is_back(
    vault: Path, daemon_env: dict[str, str], claude_proxy: OutageProxy, mode: Mode
) -> None:
    env = {**daemon_env, **DEADLINES, "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": claude_proxy.url}
    daemon = DaemonProcess(vault, env)
    try:
        start_at_once(daemon)
        drop(vault, "pump.txt", PUMP)
        fallback = plan_mentioning(vault, "Pump 3")
        assert fallback["planner"] == "template"
        assert "claude:" in fallback["planner_fallback_reason"]

        shown, raw = status(daemon)
        link = shown["planner_link"]
        assert link["state"] == "degraded"
        assert link["last_error"] == f"Claude 127.0.0.1:{claude_proxy.port}: {WORDS[mode]}"
        assert link["attempts"] >= 1
        assert API_KEY not in raw

        claude_proxy.set_mode("up")
        drop(vault, "seals.txt", SEALS)
        planned = plan_mentioning(vault, "Pump 7")
        assert str(planned["planner"]).startswith("claude:")
        assert status(daemon)[0]["planner_link"]["state"] == "running"

        stop_within_the_grace(daemon)
    finally:
        daemon.kill()
