"""Score a planner on a set of messages with known intents: `python -m ai_employee.planners.score`.

    python -m ai_employee.planners.score --planner template
    ANTHROPIC_API_KEY=... python -m ai_employee.planners.score --planner claude
    python -m ai_employee.planners.score --planner openai --set my_messages.yaml --min 18

The set is a YAML list of `{id, text, expected: {intent}}` with optional `title`, `source`,
`sender` (default: the repository's tests/planning/golden_messages.yaml). Each message is planned
once, with the registered actions and the vault's Company_Handbook.md, exactly as the daemon
would; the model planners are scored on their own answers (no fallback: an error counts as
wrong). Prints one line per message, then the score and what it cost. Exit status 1 when the
score is below `--min`, 2 when the planner cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ai_employee.config import ConfigError, Settings, load_settings
from ai_employee.model.plans import ActionSpec, PlanRequest
from ai_employee.model.plugins import PluginDisabled
from ai_employee.planners.base import Planner
from ai_employee.planners.errors import PlannerError

DEFAULT_SET = Path(__file__).resolve().parents[3] / "tests" / "planning" / "golden_messages.yaml"


@dataclass
class Outcome:
    case_id: str
    expected: str
    intent: str
    action: str
    detail: str = ""

    @property
    def right(self) -> bool:
        return self.intent == self.expected


def load_set(path: Path) -> list[dict[str, Any]]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, list) or not all(
        isinstance(case, dict) and "text" in case and "expected" in case for case in loaded
    ):
        raise ValueError(f"{path}: expected a list of {{id, text, expected: {{intent}}}}")
    return loaded


def make_planner(kind: str, settings: Settings) -> Planner:
    from importlib.metadata import entry_points

    found = {entry.name: entry for entry in entry_points(group="ai_employee.planners")}
    if kind not in found:
        raise PluginDisabled(f"no planner named {kind!r} (have: {', '.join(sorted(found))})")
    planner = found[kind].load()(settings)
    if planner is None:
        raise PluginDisabled(f"planner {kind} is off")
    assert isinstance(planner, Planner)
    return planner


def registered_actions(settings: Settings) -> list[ActionSpec]:
    from ai_employee.model.registry import ExecutorRegistry

    return ExecutorRegistry.from_entry_points(settings).specs()


def read_handbook(settings: Settings) -> str:
    path = settings.vault.path / "Company_Handbook.md"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


async def score(
    planner: Planner, cases: Sequence[dict[str, Any]], actions: Sequence[ActionSpec], handbook: str
) -> tuple[list[Outcome], float]:
    outcomes: list[Outcome] = []
    cost = 0.0
    for index, case in enumerate(cases):
        case_id = str(case.get("id", index + 1))
        request = PlanRequest(
            action_id=f"act-score-{case_id}",
            title=str(case.get("title", "")),
            text=str(case["text"]),
            source=str(case.get("source", "file")),
            sender=case.get("sender"),
            received=datetime.now(UTC),
            attachments=[],
            handbook=handbook,
            actions=list(actions),
            trusted_sender=bool(case.get("trusted", True)),
        )
        expected = str(case["expected"]["intent"])
        try:
            proposal = await planner.plan(request)
        except PlannerError as error:
            cost += error.cost_usd or 0.0
            outcomes.append(Outcome(case_id, expected, "error", "-", str(error)))
            continue
        cost += proposal.cost_usd or 0.0
        detail = proposal.fallback_reason or ""
        outcomes.append(Outcome(case_id, expected, proposal.intent, proposal.action, detail))
    return outcomes, cost


def report(outcomes: Sequence[Outcome], cost: float, planner: str) -> str:
    width = max((len(outcome.case_id) for outcome in outcomes), default=2)
    lines = [
        f"{'ok' if o.right else 'XX'}  {o.case_id:<{width}}  expected {o.expected:<10} got {o.intent:<10} "
        f"{o.action}{'  (' + o.detail + ')' if o.detail else ''}"
        for o in outcomes
    ]
    right = sum(outcome.right for outcome in outcomes)
    lines.append(f"score: {right}/{len(outcomes)}  planner: {planner}  cost: ${cost:.4f}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ai_employee.planners.score",
        description="Score a planner on messages with known intents.",
    )
    parser.add_argument("--planner", choices=("template", "claude", "openai"), required=True)
    parser.add_argument(
        "--set",
        dest="set_file",
        type=Path,
        default=DEFAULT_SET,
        help="YAML list of messages with expected intents (default: the golden set)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="config file (default: AIE_CONFIG or ./config.yaml)"
    )
    parser.add_argument("--min", dest="minimum", type=int, default=0, help="exit 1 when fewer are right")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.config, overrides={("planner", "kind"): args.planner})
        cases = load_set(args.set_file)
        planner = make_planner(args.planner, settings)
    except (ConfigError, OSError, ValueError, PluginDisabled) as error:
        sys.stderr.write(f"score: {error}\n")
        return 2

    async def run() -> tuple[list[Outcome], float]:
        try:
            return await score(planner, cases, registered_actions(settings), read_handbook(settings))
        finally:
            await planner.aclose()

    outcomes, cost = asyncio.run(run())
    label = args.planner if args.planner == "template" else f"{args.planner}:{getattr(planner, 'model', '?')}"
    sys.stdout.write(report(outcomes, cost, label))
    return 0 if sum(outcome.right for outcome in outcomes) >= args.minimum else 1


if __name__ == "__main__":
    sys.exit(main())
