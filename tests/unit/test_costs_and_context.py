"""Prices from the config over the built-in table; a planner prompt's share of the model's window,
and a long input cut to fit."""

from __future__ import annotations

from datetime import UTC, datetime

from ai_employee.model.plans import ActionSpec, PlanRequest
from ai_employee.planners.budget import Price, cost_usd, price_of
from ai_employee.planners.context import context_window, input_chars_that_fit


def test_a_price_from_the_config_wins_over_the_built_in_table() -> None:
    mine = {"claude-sonnet-4": Price(1.0, 2.0)}
    assert price_of("claude-sonnet-4-6", mine) == Price(1.0, 2.0)
    assert price_of("claude-sonnet-4-6") == Price(3.0, 15.0)
    assert cost_usd("claude-sonnet-4-6", {"input_tokens": 1_000_000, "output_tokens": 500_000}, mine) == 2.0


def test_context_windows_come_from_the_table_and_the_config() -> None:
    assert context_window("claude-haiku-4-5") == 200_000
    assert context_window("claude-haiku-4-5", {"claude-haiku": 50_000}) == 50_000
    assert context_window("some-new-model") == 128_000


def test_the_input_is_cut_to_what_fits_beside_the_rest_of_the_prompt() -> None:
    assert input_chars_that_fit(fixed_tokens=1_000, window=10_000, wanted_chars=50_000) == (8_500 - 1_000) * 4
    assert input_chars_that_fit(fixed_tokens=1_000, window=1_000_000, wanted_chars=20_000) == 20_000
    assert input_chars_that_fit(fixed_tokens=9_000, window=10_000, wanted_chars=20_000) == 0


def request(text: str) -> PlanRequest:
    return PlanRequest(
        action_id="act-20261207-101500-a1b2c3",
        title="Long report",
        text=text,
        source="file",
        sender=None,
        received=datetime.now(UTC),
        attachments=[],
        handbook="Safety first.",
        actions=[ActionSpec("vault.note", "Write a note", {"type": "object", "properties": {}})],
    )


def test_a_long_input_is_cut_with_a_marker_and_the_share_of_the_window_is_known() -> None:
    import anthropic

    from ai_employee.config import load_settings
    from ai_employee.planners.claude import create

    settings = load_settings(environ={"AIE_PLANNER": "claude"})
    settings.costs.context_windows["claude-sonnet-4-6"] = 6_000
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url="http://127.0.0.1:9")  # never called
    planner = create(settings, client=client)
    user, used = planner._fit(request("word " * 20_000), "system prompt", {"type": "object"})
    assert "more characters not shown]" in user
    assert 0.7 < used <= 0.86
