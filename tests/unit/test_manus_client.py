"""ManusClient against the loopback Manus fake: auth, create, poll, results, retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ai_employee.clients.manus import (
    ManusClient,
    TaskWaitTimeout,
    credit_usage,
    final_text,
    output_files,
    task_mentions,
)
from ai_employee.clients.retry import RetryPolicy, ServiceAuthError, ServiceRejected, ServiceUnavailable
from tests.fakes.manus_server import ManusFake

FAST = RetryPolicy(attempts=4, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
KEY = "test-manus-key"


@pytest.fixture
async def fake() -> AsyncIterator[ManusFake]:
    server = ManusFake(KEY)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: ManusFake) -> AsyncIterator[ManusClient]:
    manus = ManusClient(KEY, fake.base_url, retry=FAST)
    yield manus
    await manus.aclose()


def body(prompt: str = "Find suppliers of pump seals", **extra: object) -> dict[str, object]:
    return {"prompt": prompt, "agentProfile": "manus-1.6", "taskMode": "agent", **extra}


async def test_create_sends_the_api_key_header(fake: ManusFake, client: ManusClient) -> None:
    created = await client.create_task(body())
    assert created["task_id"] == fake.only_task().id
    assert fake.requests_to("POST", "/v1/tasks")[0].headers["API_KEY"] == KEY


async def test_wrong_api_key_is_an_auth_error(fake: ManusFake) -> None:
    manus = ManusClient("wrong", fake.base_url, retry=FAST)
    with pytest.raises(ServiceAuthError, match="MANUS_API_KEY"):
        await manus.create_task(body())
    assert len(fake.requests_to("POST", "/v1/tasks")) == 1
    await manus.aclose()


async def test_unknown_create_field_is_refused_like_the_schema(client: ManusClient) -> None:
    with pytest.raises(ServiceRejected, match="additional properties not allowed: metadata"):
        await client.create_task(body(metadata={"plan": "x"}))


async def test_polling_returns_the_finished_task_with_answer_and_credits(
    fake: ManusFake, client: ManusClient
) -> None:
    created = await client.create_task(body())
    seen: list[str] = []

    def on_status(status: str, task: object) -> None:
        seen.append(status)
        if status == "pending":
            fake.start_task(created["task_id"])
        elif status == "running":
            fake.complete(created["task_id"], "Three suppliers found.", credits=17)

    task = await client.wait_for_task(
        created["task_id"], initial_seconds=0.001, max_seconds=0.01, timeout_seconds=10, on_status=on_status
    )
    assert seen == ["pending", "running", "completed"]
    assert final_text(task) == "Three suppliers found."
    assert credit_usage(task) == 17


async def test_wait_gives_up_at_its_deadline_and_says_the_task_goes_on(
    fake: ManusFake, client: ManusClient
) -> None:
    created = await client.create_task(body())
    with pytest.raises(TaskWaitTimeout, match="still pending"):
        await client.wait_for_task(
            created["task_id"], initial_seconds=0.01, max_seconds=0.02, timeout_seconds=0.1
        )


async def test_poll_rides_out_a_burst_of_server_errors(fake: ManusFake, client: ManusClient) -> None:
    created = await client.create_task(body())
    fake.complete(created["task_id"], "ok")
    fake.inject("GET", "/v1/tasks/.*", status=503, times=5)  # more than one call's retries
    task = await client.wait_for_task(
        created["task_id"], initial_seconds=0.001, max_seconds=0.01, timeout_seconds=10
    )
    assert task["status"] == "completed"


async def test_unknown_task_is_not_retried(fake: ManusFake, client: ManusClient) -> None:
    with pytest.raises(ServiceRejected, match="404: task not found"):
        await client.get_task("task_missing")
    assert len(fake.requests_to("GET", "/v1/tasks/task_missing")) == 1


async def test_429_on_create_is_retried(fake: ManusFake, client: ManusClient) -> None:
    fake.inject("POST", "/v1/tasks", status=429, times=2)
    await client.create_task(body())
    assert len(fake.tasks) == 1
    assert len(fake.requests_to("POST", "/v1/tasks")) == 3


async def test_create_with_marker_finds_the_task_after_a_dropped_answer(
    fake: ManusFake, client: ManusClient
) -> None:
    marker = "ai-employee plan: plan-7"
    fake.inject("POST", "/v1/tasks", drop="after")
    created = await client.create_task(body(f"Research\n\n{marker}"), marker=marker)
    assert len(fake.tasks) == 1
    assert created["task_id"] == fake.only_task().id
    assert fake.requests_to("GET", "/v1/tasks")[0].query["query"] == marker


async def test_create_without_marker_is_not_repeated_after_a_dropped_answer(
    fake: ManusFake, client: ManusClient
) -> None:
    fake.inject("POST", "/v1/tasks", drop="after")
    with pytest.raises(ServiceUnavailable, match="not repeated"):
        await client.create_task(body())
    assert len(fake.tasks) == 1


async def test_continuing_a_task_adds_a_turn_and_only_its_answer_counts(
    fake: ManusFake, client: ManusClient
) -> None:
    first = await client.create_task(body())
    fake.complete(first["task_id"], "first answer", files=[("a.txt", b"a", "text/plain")])
    again = await client.create_task(body("And their prices?", taskId=first["task_id"]))
    assert again["task_id"] == first["task_id"]
    fake.complete(first["task_id"], "second answer")
    task = await client.get_task(first["task_id"])
    assert final_text(task) == "second answer"
    assert output_files(task) == []
    assert task_mentions(task, "their prices")


async def test_download_does_not_send_the_api_key(fake: ManusFake, client: ManusClient) -> None:
    created = await client.create_task(body())
    fake.complete(created["task_id"], "see file", files=[("report.csv", b"a,b\n1,2\n", "text/csv")])
    task = await client.get_task(created["task_id"])
    [item] = output_files(task)
    assert await client.download(item["fileUrl"], max_bytes=1024) == b"a,b\n1,2\n"
    [request] = fake.file_requests()
    assert "API_KEY" not in request.headers


async def test_download_refuses_a_file_over_the_limit(fake: ManusFake, client: ManusClient) -> None:
    created = await client.create_task(body())
    fake.complete(created["task_id"], "big", files=[("big.bin", b"x" * 4096, "application/octet-stream")])
    [item] = output_files(await client.get_task(created["task_id"]))
    with pytest.raises(ServiceRejected, match="larger than"):
        await client.download(item["fileUrl"], max_bytes=1024)


async def test_list_filters_by_query(fake: ManusFake, client: ManusClient) -> None:
    await client.create_task(body("about pumps"))
    await client.create_task(body("about valves"))
    listing = await client.list_tasks(query="valves", limit=10)
    assert [task["instructions"] for task in listing["data"]] == ["about valves"]
