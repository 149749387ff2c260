"""Fixtures for the email source tests: a real Dovecot, and doubles for the rest of the daemon.

Imported explicitly by the email test modules (tests/conftest.py is shared and left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.config import EmailSettings, ServicesSettings, Settings, VaultSettings
from ai_employee.model.messages import IncomingMessage
from ai_employee.model.services import ServiceContext
from ai_employee.sources.email import EmailSource
from tests.fakes.common import MemoryStore as MemoryState
from tests.fakes.common import NoActions, NoApprovals
from tests.fakes.dovecot import DovecotServer


@pytest.fixture(scope="module", name="dovecot")
def dovecot_fixture() -> Iterator[DovecotServer]:
    """One Dovecot for a test module; each test takes a fresh user (its own mailbox)."""
    server = DovecotServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(name="user")
def user_fixture(dovecot: DovecotServer) -> str:
    return dovecot.new_user()


@dataclass
class Submitted:
    message: IncomingMessage
    files: dict[str, bytes]  # attachment name -> content, read while submit ran (spool files go after)


class RecordingIntake:
    """An IntakeSink double: records each submit; can be made to block or to fail."""

    def __init__(self) -> None:
        self.submitted: list[Submitted] = []
        self.ids: dict[str, str] = {}
        self.gate: asyncio.Event | None = None  # set: submit waits for it
        self.entered = asyncio.Event()
        self.fail_next = 0

    async def submit(self, message: IncomingMessage) -> str:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise OSError(28, "No space left on device")
        files: dict[str, bytes] = {}
        for attachment in message.attachments:
            assert (attachment.data is None) != (attachment.path is None), "exactly one of data or path"
            files[attachment.filename] = (
                attachment.data if attachment.data is not None else attachment.path.read_bytes()  # type: ignore[union-attr]
            )
        self.submitted.append(Submitted(message, files))
        return self.ids.setdefault(message.source_ref, f"act-{len(self.ids) + 1}")

    def refs(self) -> list[str]:
        return [item.message.source_ref for item in self.submitted]


class _Routes:
    def add_route(self, method: str, path: str, handler: Any) -> None:
        raise AssertionError("the email source adds no routes")


@dataclass
class EmailHarness:
    dovecot: DovecotServer
    user: str
    vault: Path
    bus: InProcessEventBus
    intake: RecordingIntake = field(default_factory=RecordingIntake)
    state: MemoryState = field(default_factory=MemoryState)
    #: settings.services of the sources made here: short backoffs, so retries do not slow the tests
    services: dict[str, Any] = field(default_factory=lambda: {"initial_backoff": 0.1, "max_backoff": 0.5})

    def settings(self, **email: Any) -> Settings:
        values: dict[str, Any] = {
            "host": self.dovecot.host,
            "port": self.dovecot.port,
            "user": self.user,
            "password": self.dovecot.password,
            "ssl": False,
            "poll_interval_seconds": 300.0,
        }
        values.update(email)
        return Settings(
            vault=VaultSettings(path=self.vault),
            email=EmailSettings(**values),
            services=ServicesSettings(**self.services),
        )

    def context(self, **email: Any) -> ServiceContext:
        return ServiceContext(
            settings=self.settings(**email),
            bus=self.bus,
            intake=self.intake,
            vault_root=self.vault,
            state=self.state,
            approvals=NoApprovals(),
            routes=_Routes(),
            actions=NoActions(),
        )

    def source(self, *, source_options: Mapping[str, Any] | None = None, **email: Any) -> EmailSource:
        options: dict[str, Any] = {"idle_slice_seconds": 0.2}
        options.update(source_options or {})
        return EmailSource(self.context(**email), **options)

    def deliver(self, message: EmailMessage | bytes, **kwargs: Any) -> str:
        raw = message if isinstance(message, bytes) else message.as_bytes()
        return self.dovecot.deliver(self.user, raw, **kwargs).source_ref


@pytest.fixture(name="harness")
async def harness_fixture(dovecot: DovecotServer, user: str, tmp_path: Path) -> AsyncIterator[EmailHarness]:
    bus = InProcessEventBus()
    await bus.start()
    vault = tmp_path / "vault"
    vault.mkdir()
    try:
        yield EmailHarness(dovecot=dovecot, user=user, vault=vault, bus=bus)
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def running(
    source: EmailSource, *, ready: bool = True, timeout: float = 15.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Run the source as the orchestrator would; stop it (and check it stopped) on the way out."""
    task = asyncio.create_task(source.run())
    try:
        if ready:
            waiter = asyncio.create_task(source.ready.wait())
            await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task.done():
                task.result()
            assert source.ready.is_set(), "the email source did not get ready"
        yield task
    finally:
        await source.stop()
        await asyncio.wait({task}, timeout=10)
        assert task.done(), "the email source did not stop within 10 s of stop()"
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> float:
    """Wait until `condition` holds; returns the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
