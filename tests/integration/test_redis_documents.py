"""Documents read by workers over Redis Streams (decision 0025): a worker reads a document as the
daemon would (its own `DocumentReader`), a document it cannot read comes back as a failed reading,
and the daemon reads in process whatever no worker could. A real Redis on loopback, the worker in
this process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_employee.bus.redis_work import RedisWork
from ai_employee.bus.work_codec import EXTRACT
from ai_employee.config import DocumentSettings, Settings
from ai_employee.documents.extraction import Extraction
from ai_employee.documents.pool import DocumentReader
from ai_employee.documents.remote import WorkerReader
from ai_employee.pipeline.documents import InboxDocuments
from bench import sample_documents as samples
from tests.conftest import eventually
from tests.integration.test_redis_work import (  # noqa: F401 (fixtures)
    RunningWorker,
    daemon_work,
    make_settings,
    namespace,
    redis_url,
)

REPORT = ["Pump 3 on line 2 leaks oil", "Replace the seal before Friday"]


async def started(settings: Settings) -> RedisWork:
    work = daemon_work(settings)
    await work.start()
    return work


@pytest.fixture
async def settings(redis_url: str, namespace: str) -> Settings:  # noqa: F811 (the fixtures above)
    return make_settings(redis_url, namespace)


@pytest.fixture
async def work(settings: Settings) -> AsyncIterator[RedisWork]:
    runner = await started(settings)
    yield runner
    await runner.close()


@pytest.fixture
def local(settings: Settings) -> Iterator[DocumentReader]:
    reader = DocumentReader(settings.documents)
    yield reader
    reader.close()


class ExtractWorker(RunningWorker):
    """A worker running `extract`, entered once the daemon's status lists it."""

    def __init__(self, settings: Settings, work: RedisWork) -> None:
        super().__init__(settings, [EXTRACT])
        self.work = work

    async def __aenter__(self) -> ExtractWorker:
        await super().__aenter__()
        await eventually(lambda: self.work.workers_up(EXTRACT))
        return self

    @property
    def read_count(self) -> int:
        reader = self.worker._step_handlers.reader
        assert reader is not None
        return reader.read_count


def drop(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def read_on_worker(work: RedisWork, path: Path) -> Extraction:
    wire = await asyncio.wait_for(work.extract(path, path.name, reading_seconds=10), 15)
    assert wire is not None, "a worker answered"
    return Extraction.from_wire(tuple(wire))


async def test_a_pdf_read_by_a_worker_gives_the_same_reading_as_the_daemons_own_reader(
    settings: Settings, work: RedisWork, local: DocumentReader, tmp_path: Path
) -> None:
    pdf = drop(tmp_path, "report.pdf", samples.text_pdf(REPORT))
    async with ExtractWorker(settings, work):
        remote = await read_on_worker(work, pdf)
    assert remote == await asyncio.to_thread(local.read, pdf, "report.pdf")
    assert remote.kind == "pdf" and "Replace the seal before Friday" in remote.text


async def test_a_docx_attachment_is_read_by_a_worker_with_its_content_type(
    settings: Settings, work: RedisWork, tmp_path: Path
) -> None:
    docx = drop(tmp_path, "blob", samples.docx_bytes("Work order", REPORT))
    content_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    async with ExtractWorker(settings, work):
        wire = await asyncio.wait_for(work.extract(docx, "order", content_type, reading_seconds=10), 15)
    assert wire is not None
    got = Extraction.from_wire(tuple(wire))
    assert got.kind == "docx" and "Pump 3 on line 2 leaks oil" in got.text


async def test_an_encrypted_pdf_comes_back_from_the_worker_as_a_failed_reading_with_its_problem(
    settings: Settings, work: RedisWork, tmp_path: Path
) -> None:
    locked = drop(tmp_path, "locked.pdf", samples.encrypted_pdf("Secret text"))
    async with ExtractWorker(settings, work):
        got = await read_on_worker(work, locked)
    assert got.method == "none" and got.problem == "encrypted PDF (it needs a password)"


async def test_a_truncated_pdf_comes_back_from_the_worker_as_damaged(
    settings: Settings, work: RedisWork, tmp_path: Path
) -> None:
    cut = drop(tmp_path, "cut.pdf", samples.text_pdf(REPORT * 3)[:300])
    async with ExtractWorker(settings, work):
        got = await read_on_worker(work, cut)
    assert got.problem is not None and got.problem.startswith("damaged or not a PDF")


async def test_the_same_document_asked_twice_is_read_once(
    settings: Settings, work: RedisWork, tmp_path: Path
) -> None:
    data = samples.text_pdf(REPORT)
    async with ExtractWorker(settings, work) as worker:
        first = await read_on_worker(work, drop(tmp_path, "a.pdf", data))
        again = await read_on_worker(work, drop(tmp_path, "b.pdf", data))
        assert worker.read_count == 1
    assert again == first


async def test_a_documents_bytes_stay_in_redis_only_while_the_daemon_waits_for_its_reading(
    settings: Settings, work: RedisWork, tmp_path: Path
) -> None:
    data = samples.text_pdf(REPORT)
    async with ExtractWorker(settings, work):
        await read_on_worker(work, drop(tmp_path, "report.pdf", data))
    left_ms = await work.streams.redis.pttl(work.streams.keys.blob(hashlib.sha256(data).hexdigest()))
    waited_at_most_ms = (settings.bus.claim_idle + 2 * 10) * 1000  # reading_seconds=10
    assert 0 < left_ms <= waited_at_most_ms < settings.bus.result_ttl * 1000


async def test_with_no_worker_reading_documents_the_daemon_reads_them_at_once(
    work: RedisWork, local: DocumentReader, tmp_path: Path
) -> None:
    pdf = drop(tmp_path, "report.pdf", samples.text_pdf(REPORT))
    reader = WorkerReader(work, local)
    got = await asyncio.wait_for(asyncio.wrap_future(reader.submit(pdf, "report.pdf")), 10)
    assert "Pump 3 on line 2 leaks oil" in got.text
    assert reader.remote_count == 0 and local.read_count == 1


async def test_a_document_too_large_to_travel_is_read_in_the_daemon(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.redis.url is not None
    # over bus.inline_attachment_bytes, and no bus.shared_path
    small = make_settings(settings.redis.url, settings.bus.namespace, inline_attachment_bytes=64)
    work = await started(small)
    local = DocumentReader(small.documents)
    try:
        async with ExtractWorker(small, work) as worker:
            reader = WorkerReader(work, local)
            pdf = drop(tmp_path, "report.pdf", samples.text_pdf(REPORT))
            got = await asyncio.to_thread(reader.read, pdf, "report.pdf")
            assert worker.read_count == 0
        assert "Pump 3 on line 2 leaks oil" in got.text and local.read_count == 1
    finally:
        local.close()
        await work.close()


async def test_a_document_the_worker_fails_on_is_read_in_the_daemon(
    settings: Settings, work: RedisWork, local: DocumentReader, tmp_path: Path
) -> None:
    from ai_employee.worker.service import Worker

    async def broken(message: Any, token: int) -> tuple[str, dict[str, Any]]:
        raise RuntimeError("the reader crashed")

    worker = Worker(settings, steps=[EXTRACT], concurrency=1, handlers={EXTRACT: broken})
    running = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: work.workers_up(EXTRACT))
        reader = WorkerReader(work, local)
        pdf = drop(tmp_path, "report.pdf", samples.text_pdf(REPORT))
        got = await asyncio.to_thread(reader.read, pdf, "report.pdf")
    finally:
        worker.request_stop()
        assert await asyncio.wait_for(running, 10) == 0
    assert "Pump 3 on line 2 leaks oil" in got.text and local.read_count == 1


async def test_inbox_documents_and_spooled_attachments_are_read_by_a_worker_when_configured(
    settings: Settings, work: RedisWork, tmp_path: Path
) -> None:
    documents = InboxDocuments(65536, DocumentSettings())
    documents.read_on_workers(work)
    inbox = tmp_path / "Inbox"
    inbox.mkdir()
    pdf = drop(inbox, "report.pdf", samples.text_pdf(REPORT))
    spool = drop(tmp_path, "spooled", samples.docx_bytes("Work order", REPORT))
    try:
        async with ExtractWorker(settings, work) as worker:
            assert await asyncio.to_thread(documents.describe, pdf, "report.pdf", pdf.stat()) is None
            assert await asyncio.to_thread(documents.wait, 15)
            described = await asyncio.to_thread(documents.describe, pdf, "report.pdf", pdf.stat())
            attachment = documents.reader.submit(spool, "order.docx", spooled=True)
            read = await asyncio.wait_for(asyncio.wrap_future(attachment), 15)
            assert worker.read_count == 2
    finally:
        documents.close()
    assert described is not None and described.document is not None
    assert "Replace the seal before Friday" in described.document.text
    assert read.kind == "docx" and not spool.exists(), "the spooled copy is removed once read"
