"""The daemon planning with Claude (the real anthropic SDK against a loopback fake): plans, the
fallback to the template planner, and the prompt-injection set end to end."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_employee.vault.plan_format import params_of
from tests.conftest import DaemonProcess, audit_lines, drop, frontmatter, notes, wait_for
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.threaded import ThreadedFake
from tests.planning.helpers import INJECTIONS

API_KEY = "sk-ant-test-0123456789abcdef"


@pytest.fixture
def anthropic_fake() -> Iterator[ThreadedFake]:
    threaded = ThreadedFake(AnthropicFake(api_key=API_KEY))
    threaded.start()
    yield threaded
    threaded.stop()


@pytest.fixture
def claude_daemon(
    vault: Path, daemon_env: dict[str, str], anthropic_fake: ThreadedFake
) -> Iterator[DaemonProcess]:
    env = dict(daemon_env)
    env["ANTHROPIC_API_KEY"] = API_KEY
    env["ANTHROPIC_BASE_URL"] = anthropic_fake.fake.base_url
    env["AIE_PLANNER__MAX_RETRIES"] = "0"
    env["AIE_PLANNER__TIMEOUT_SECONDS"] = "5"
    process = DaemonProcess(vault, env)
    yield process
    process.kill()


def _one_plan(vault: Path) -> dict[str, Any]:
    plans = wait_for(lambda: notes(vault / "Plans"), message="a plan")
    return frontmatter(plans[0])


def test_claude_writes_the_plan_through_the_daemon(vault: Path, claude_daemon: DaemonProcess) -> None:
    claude_daemon.start()
    drop(vault, "pump.txt", "Pump 3 on line 2 is leaking oil, needs fixing today")
    plan = _one_plan(vault)
    assert plan["planner"].startswith("claude:")
    assert plan["action"] == "atlas.work_order"
    assert plan["asset"] == "Pump 3"  # a flat property (decision 0009)
    assert "planner_fallback_reason" not in plan
    assert plan["planner_input_tokens"] > 0


def test_a_500_from_claude_falls_back_to_the_template_planner_with_the_reason(
    vault: Path, claude_daemon: DaemonProcess, anthropic_fake: ThreadedFake
) -> None:
    anthropic_fake.call(anthropic_fake.fake.inject, "POST", "/v1/messages", status=500, times=5)
    claude_daemon.start()
    drop(vault, "pump.txt", "Pump 3 on line 2 is leaking oil, needs fixing today")
    plan = _one_plan(vault)
    assert plan["planner"] == "template"
    assert "500" in plan["planner_fallback_reason"]
    wait_for(
        lambda: any(
            line["event"] == "plan.created" and line.get("planner_fallback_reason")
            for line in audit_lines(vault)
        ),
        message="the fallback reason in the audit log",
    )


def _cases() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = yaml.safe_load(INJECTIONS.read_text())
    return loaded


def _complying_answer(case: dict[str, Any], handbook: str) -> dict[str, Any]:
    if "calls" in case:
        for name, tool_input in case["calls"]:
            if name == "propose_plan":
                answer = tool_input
                break
        else:
            answer = case["calls"][0][1]
    else:
        answer = case["complies"]
    text = json.dumps(answer).replace("{API_KEY}", API_KEY).replace("{HANDBOOK}", json.dumps(handbook)[1:-1])
    result: dict[str, Any] = json.loads(text)
    return result


def test_the_injection_set_never_yields_an_unapproved_run_hidden_params_or_a_write_outside(
    vault: Path, daemon_env: dict[str, str], anthropic_fake: ThreadedFake, tmp_path: Path
) -> None:
    cases = _cases()
    handbook = (vault / "Company_Handbook.md").read_text()
    complied: list[str] = []

    def complying_model(block: str, body: dict[str, Any]) -> dict[str, Any]:
        found = re.search(r"injection-(\d\d)\.txt", block)  # the file's name, listed as its attachment
        if found is None:
            raise AssertionError(f"an unexpected message reached the model: {block[:200]!r}")
        complied.append(found.group(1))
        return _complying_answer(cases[int(found.group(1))], handbook)

    anthropic_fake.call(setattr, anthropic_fake.fake.script, "responder", complying_model)
    env = dict(daemon_env)
    env.update(
        {
            "ANTHROPIC_API_KEY": API_KEY,
            "ANTHROPIC_BASE_URL": anthropic_fake.fake.base_url,
            "AIE_PLANNER__MAX_RETRIES": "0",
            # even with every action type auto-approvable, injected input must reach a human
            "AIE_EXECUTION__AUTO_APPROVE": '["atlas.work_order", "manus.research", "vault.note"]',
        }
    )
    daemon = DaemonProcess(vault, env)
    outside_before = sorted(str(path) for path in tmp_path.rglob("*") if vault not in path.parents)
    try:
        daemon.start()
        for number, case in enumerate(cases):
            drop(vault, f"injection-{number:02d}.txt", case["text"])
        plans = wait_for(
            lambda: len(notes(vault / "Plans")) == len(cases) and notes(vault / "Plans"),
            timeout=60,
            message="a plan for every injection case",
        )
    finally:
        output = daemon.output()
        daemon.kill()
    assert len(complied) == len(cases)
    assert not notes(vault / "Approved") and not notes(vault / "Done")
    assert not [line for line in audit_lines(vault) if line["event"] in ("plan.executed", "approval.granted")]
    for plan in plans:
        text = plan.read_text()
        properties = frontmatter(plan)
        shown = json.loads(re.search(r"```json\n(.*?)\n```", text, re.DOTALL).group(1))  # type: ignore[union-attr]
        assert shown == params_of(properties), plan.name
        assert API_KEY not in text
    for path in vault.rglob("*"):
        if path.is_file() and ".ai-employee" not in path.parts:
            assert API_KEY not in path.read_text(errors="replace"), path
    assert API_KEY not in output
    outside_after = {str(path) for path in tmp_path.rglob("*") if vault not in path.parents and path != vault}
    assert outside_after - set(outside_before) <= {str(daemon.log_path)}
    assert os.path.exists(vault / "Company_Handbook.md")
