"""The performance tracker: `timer()` and `timed_operation` measure, and feed the histogram once
the metrics are bound."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ai_employee.observability import timing
from ai_employee.observability.metrics import Metrics


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    made = Metrics(process_metrics=False)
    timing.bind(made.operation_duration_seconds)
    yield made
    timing.bind(None)


def rendered(metrics: Metrics) -> str:
    return metrics.render()[0].decode()


def test_a_timer_measures_the_block_and_observes_it(metrics: Metrics) -> None:
    with timing.timer("plan") as timed:
        sum(range(10_000))
    assert timed.seconds > 0 and timed.ms == round(timed.seconds * 1000, 3)
    assert metrics.operation_duration_seconds.count("plan") == 1
    assert 'aie_operation_duration_seconds_count{operation="plan"} 1.0' in rendered(metrics)


def test_a_timer_records_the_time_of_a_block_that_raised(metrics: Metrics) -> None:
    timed = timing.timer("execute")
    with pytest.raises(ValueError), timed:
        raise ValueError("boom")
    assert timed.seconds >= 0
    assert metrics.operation_duration_seconds.count("execute") == 1


def test_the_decorator_times_functions_and_coroutines_and_keeps_their_results(metrics: Metrics) -> None:
    @timing.timed_operation("add")
    def add(a: int, b: int) -> int:
        return a + b

    @timing.timed_operation("fetch")
    async def fetch() -> str:
        return "answer"

    assert add(1, 2) == 3
    assert asyncio.run(fetch()) == "answer"
    assert add.__name__ == "add"
    counts = (
        metrics.operation_duration_seconds.count("add"),
        metrics.operation_duration_seconds.count("fetch"),
    )
    assert counts == (1, 1)


def test_buckets_are_cumulative_and_the_sum_is_the_total_time(metrics: Metrics) -> None:
    metrics.operation_duration_seconds.add([("step", 0.0005), ("step", 0.02), ("step", 100.0)])
    text = rendered(metrics)
    assert 'aie_operation_duration_seconds_bucket{le="0.001",operation="step"} 1.0' in text
    assert 'aie_operation_duration_seconds_bucket{le="0.025",operation="step"} 2.0' in text
    assert 'aie_operation_duration_seconds_bucket{le="+Inf",operation="step"} 3.0' in text
    assert 'aie_operation_duration_seconds_sum{operation="step"} 100.0205' in text


def test_without_bound_metrics_a_timer_only_measures() -> None:
    timing.bind(None)
    with timing.timer("alone") as timed:
        pass
    assert timed.seconds >= 0
