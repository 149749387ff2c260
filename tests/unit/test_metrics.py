"""Metrics: Prometheus names and labels, a private registry per `Metrics`, process metrics."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ai_employee.observability.metrics import Metrics


def families(metrics: Metrics) -> dict[str, Metric]:
    body, _ = metrics.render()
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def sample_names(metrics: Metrics) -> set[str]:
    return {sample.name for family in families(metrics).values() for sample in family.samples}


COUNTERS = [
    ("files_detected", "aie_files_detected_total", {}),
    ("inputs_quarantined", "aie_inputs_quarantined_total", {"reason": "symlink"}),
    ("actions_created", "aie_actions_created_total", {"source": "file"}),
    ("plans_created", "aie_plans_created_total", {"planner": "template", "action": "vault.note"}),
    ("approvals", "aie_approvals_total", {"decision": "approved"}),
    ("plans_executed", "aie_plans_executed_total", {"action": "atlas.work_order", "dry_run": "true"}),
    ("plans_failed", "aie_plans_failed_total", {"action": "manus.research"}),
    ("watcher_overflows", "aie_watcher_overflows_total", {}),
    ("watcher_restarts", "aie_watcher_restarts_total", {}),
    ("reconcile_runs", "aie_reconcile_runs_total", {}),
    ("reconcile_found", "aie_reconcile_found_total", {"folder": "Inbox"}),
    ("service_restarts", "aie_service_restarts_total", {"service": "email"}),
    ("events_published", "aie_events_published_total", {"type": "action.created"}),
    ("planner_cost_usd", "aie_planner_cost_usd_total", {"planner": "claude"}),
    ("planner_tokens", "aie_planner_tokens_total", {"planner": "claude", "kind": "input"}),
]


@pytest.mark.parametrize(("attribute", "name", "labels"), COUNTERS, ids=[c[0] for c in COUNTERS])
def test_counter_renders_with_total_suffix_and_its_labels(
    attribute: str, name: str, labels: dict[str, str]
) -> None:
    metrics = Metrics(process_metrics=False)
    counter = getattr(metrics, attribute)
    (counter.labels(**labels) if labels else counter).inc(2)

    samples = [s for f in families(metrics).values() for s in f.samples if s.name == name]
    assert [(s.labels, s.value) for s in samples] == [(labels, 2.0)]


def test_counters_accept_fractional_amounts_for_money() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.planner_cost_usd.labels(planner="claude").inc(0.0123)

    (sample,) = families(metrics)["aie_planner_cost_usd"].samples
    assert sample.value == pytest.approx(0.0123)


def test_gauges_have_no_suffix_and_their_labels() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.service_up.labels(service="telegram").set(1)
    metrics.pending_approvals.set(7)

    found = families(metrics)
    assert found["aie_service_up"].type == "gauge"
    assert [(s.labels, s.value) for s in found["aie_service_up"].samples] == [({"service": "telegram"}, 1.0)]
    assert [s.value for s in found["aie_pending_approvals"].samples] == [7.0]


def test_step_duration_is_a_histogram_in_seconds_from_1ms_to_60s() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.step_duration_seconds.labels(step="intake").observe(0.004)

    family = families(metrics)["aie_step_duration_seconds"]
    assert family.type == "histogram"
    bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
    assert bounds[0] == 0.001
    assert bounds[-2:] == [60.0, float("inf")]
    assert {s.labels["step"] for s in family.samples} == {"intake"}


def test_batch_size_is_a_histogram_per_step() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.batch_size.labels(step="intake").observe(64)

    family = families(metrics)["aie_batch_size"]
    assert family.type == "histogram"
    (count,) = [s for s in family.samples if s.name == "aie_batch_size_count"]
    assert count.labels == {"step": "intake"} and count.value == 1.0


def test_every_own_metric_is_prefixed_and_follows_the_suffix_rules() -> None:
    metrics = Metrics(process_metrics=False)

    for name, family in families(metrics).items():
        assert name.startswith("aie_"), name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), name


def test_no_created_series_are_rendered() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.actions_created.labels(source="file").inc()

    assert not any(name.endswith("_created") for name in sample_names(metrics))


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.files_detected.inc()

    assert [s.value for s in families(first)["aie_files_detected"].samples] == [1.0]
    assert [s.value for s in families(second)["aie_files_detected"].samples] == [0.0]
    assert REGISTRY.get_sample_value("aie_files_detected_total") is None


def test_process_and_platform_metrics_are_in_the_private_registry() -> None:
    names = sample_names(Metrics())

    assert "process_resident_memory_bytes" in names
    assert "process_cpu_seconds_total" in names
    assert "python_info" in names


def test_render_answers_the_text_format_by_default() -> None:
    body, content_type = Metrics(process_metrics=False).render()

    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE aie_files_detected_total counter" in body


def test_render_answers_openmetrics_when_asked() -> None:
    body, content_type = Metrics(process_metrics=False).render("application/openmetrics-text; version=1.0.0")

    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_build_info_names_the_running_version() -> None:
    from ai_employee import __version__

    (sample,) = families(Metrics(process_metrics=False))["aie_build_info"].samples
    assert sample.labels == {"version": __version__} and sample.value == 1.0
