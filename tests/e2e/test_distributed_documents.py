"""Documents read by a worker process (decision 0025): a daemon with REDIS_URL and an
`ai-employee worker --steps extract` turn a dropped PDF into an action note with its text."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench import sample_documents as samples
from tests.conftest import DaemonProcess, drop, frontmatter, notes, skip_or_fail, wait_for
from tests.e2e.test_distributed import WorkerProcess, _workers_up
from tests.integration.test_redis_work import SHARED_REDIS


@pytest.fixture
def namespaced_env(daemon_env: dict[str, str]) -> Iterator[dict[str, str]]:
    client = redis.Redis.from_url(SHARED_REDIS, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        skip_or_fail(f"Redis is not reachable at {SHARED_REDIS}: {error}")
    namespace = f"i15-docs-{uuid.uuid4().hex[:8]}"
    yield {
        **daemon_env,
        "REDIS_URL": SHARED_REDIS,
        "AIE_BUS__NAMESPACE": namespace,
        "AIE_BUS__HEARTBEAT_SECONDS": "0.25",
        "AIE_BUS__CLAIM_IDLE": "2",
        "AIE_LOGGING__LEVEL": "warning",
    }
    keys = list(client.scan_iter(match=f"aie:{{{namespace}}}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_a_pdf_dropped_into_the_inbox_is_read_by_a_worker_into_its_action_note(
    vault: Path, namespaced_env: dict[str, str], tmp_path: Path
) -> None:
    daemon = DaemonProcess(vault, namespaced_env).start()
    worker = WorkerProcess(namespaced_env, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: _workers_up(daemon), timeout=30, message="the worker in the daemon's status")
        drop(vault, "inspection.pdf", samples.text_pdf(["Inspection of pump 3", "The seal leaks oil"]))
        actions = vault / "Needs_Action"
        (note,) = wait_for(
            lambda: [n for n in notes(actions) if frontmatter(n)["source_ref"] == "inspection.pdf"],
            timeout=30,
            message="the action note of inspection.pdf",
        )
        assert "The seal leaks oil" in note.read_text()
        (up,) = wait_for(
            lambda: [w for w in _workers_up(daemon) if w["done"] >= 1], timeout=10, message="a job done"
        )
        assert up["done"] == 1, "the worker read it (the daemon did not)"
        assert worker.terminate() == 0
        daemon.terminate()
    finally:
        worker.kill()
