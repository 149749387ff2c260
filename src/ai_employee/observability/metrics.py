"""Prometheus metrics of the daemon, in a registry the `Metrics` object owns.

No metric lives in prometheus_client's global registry: a process may build several
`Metrics` (every test does), and a module-level singleton would be one more thing read
from deep inside instead of passed in. The orchestrator builds one and hands it to the
services and to the control server, which serves it at `GET /metrics`.

Names follow Prometheus conventions: prefix `aie_`, counters end in `_total`, durations
are in seconds and say so. An attribute is its metric's name without the prefix and
without `_total`, so `aie_actions_created_total` is `metrics.actions_created`:

    metrics.actions_created.labels(source="file").inc()
    with metrics.step_duration_seconds.labels(step="intake").time(): ...

Label values are few and fixed (step names, action types, service names, decisions);
never ids, paths or message text, which would make a new series per item.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from ai_employee import __version__
from ai_employee.observability import timing

__all__ = ["BATCH_SIZE_BUCKETS", "STEP_DURATION_BUCKETS", "Metrics"]

PREFIX = "aie_"

# 1 ms to 60 s: a durable single-file step takes about 1 ms here, a planner call seconds,
# an execution against a slow API up to a minute.
STEP_DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# Group commits hold up to `vault.batch_size` items (64 by default, at most 4096).
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    """Every metric of the daemon, registered in `self.registry`."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        # `*_created` series double the series count in the text format and nothing here
        # reads them. The switch is process-wide in prometheus_client; every Metrics wants it.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        # inputs
        self.files_detected = Counter(PREFIX + "files_detected", "Files seen arriving in Inbox/.", registry=r)
        self.inputs_quarantined = Counter(
            PREFIX + "inputs_quarantined",
            "Inputs moved to Quarantine/ instead of being processed.",
            ["reason"],
            registry=r,
        )
        self.actions_created = Counter(
            PREFIX + "actions_created", "Action notes written to Needs_Action/.", ["source"], registry=r
        )

        # planning and approval
        self.plans_created = Counter(
            PREFIX + "plans_created", "Plan notes written to Plans/.", ["planner", "action"], registry=r
        )
        self.approvals = Counter(
            PREFIX + "approvals", "Human decisions on plans (approved, rejected).", ["decision"], registry=r
        )
        self.pending_approvals = Gauge(
            PREFIX + "pending_approvals", "Plans in Plans/ waiting for a decision.", registry=r
        )

        # execution
        self.plans_executed = Counter(
            PREFIX + "plans_executed",
            "Approved plans executed, live or dry-run.",
            ["action", "dry_run"],
            registry=r,
        )
        self.plans_failed = Counter(
            PREFIX + "plans_failed", "Plans whose validation or execution failed.", ["action"], registry=r
        )

        # pipeline steps
        self.step_duration_seconds = Histogram(
            PREFIX + "step_duration_seconds",
            "Time one pipeline step took for one item or one batch.",
            ["step"],
            buckets=STEP_DURATION_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            PREFIX + "batch_size",
            "Items handled together in one group commit.",
            ["step"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )

        # watching and reconciling
        self.watcher_overflows = Counter(
            PREFIX + "watcher_overflows", "Times the file watcher lost events (queue overflow).", registry=r
        )
        self.watcher_restarts = Counter(
            PREFIX + "watcher_restarts", "Times the file watcher was restarted.", registry=r
        )
        self.reconcile_runs = Counter(
            PREFIX + "reconcile_runs", "Full scans of the vault folders.", registry=r
        )
        self.reconcile_found = Counter(
            PREFIX + "reconcile_found",
            "Unhandled items that a scan found (events the watcher missed).",
            ["folder"],
            registry=r,
        )

        # services and the bus
        self.service_up = Gauge(
            PREFIX + "service_up", "1 when the service is running, else 0.", ["service"], registry=r
        )
        self.service_restarts = Counter(
            PREFIX + "service_restarts", "Restarts of a service by the supervisor.", ["service"], registry=r
        )
        self.events_published = Counter(
            PREFIX + "events_published", "Events published on the bus.", ["type"], registry=r
        )

        # planner spend
        self.planner_cost_usd = Counter(
            PREFIX + "planner_cost_usd", "Money spent on model calls, in US dollars.", ["planner"], registry=r
        )
        self.planner_tokens = Counter(
            PREFIX + "planner_tokens",
            "Tokens used by model calls (kind: input, output).",
            ["planner", "kind"],
            registry=r,
        )

        # what outside services cost (the audit store counts them: llm, whisper, manus)
        self.cost_usd = Counter(
            PREFIX + "cost_usd", "Money spent on outside services, in US dollars.", ["service"], registry=r
        )
        # every timed step and outside call (observability.timing)
        self.operation_duration_seconds = timing.OperationDurations(STEP_DURATION_BUCKETS)
        r.register(self.operation_duration_seconds)

        self.build_info = Gauge(
            PREFIX + "build_info", "Always 1; the labels say which build runs.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)

        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the exposition format the scraper asked for (text by default).

        Returns the body and its content type.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
