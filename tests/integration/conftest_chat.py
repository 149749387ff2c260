"""Doubles shared by the chat doors' harnesses (Telegram, WhatsApp, Slack): one copy each."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from ai_employee.bus.inprocess import InProcessEventBus
from ai_employee.config import Settings
from ai_employee.model.events import Event, EventType
from ai_employee.model.messages import IncomingMessage
from ai_employee.model.services import ServiceContext
from tests.fakes.common import MemoryStore

__all__ = ["MemoryStore", "RecordingIntake", "ServiceHarness", "StoredAction"]

DEADLINE = 10.0


@dataclass
class StoredAction:
    action_id: str
    message: IncomingMessage
    files: dict[str, bytes]


class RecordingIntake:
    """IntakeSink: idempotent per (source, source_ref); reads the attachments before returning.

    `fail_next` makes the next submits fail as a full disk would; `day` is the action ids' date."""

    def __init__(self, day: str = "20261121") -> None:
        self.actions: list[StoredAction] = []
        self.calls = 0
        self.fail_next = 0
        self._day = day
        self._by_ref: dict[tuple[str, str], str] = {}

    async def submit(self, message: IncomingMessage) -> str:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("No space left on device")
        key = (message.source, message.source_ref)
        if key in self._by_ref:
            return self._by_ref[key]
        files: dict[str, bytes] = {}
        for attachment in message.attachments:
            if attachment.path is not None:
                files[attachment.filename] = attachment.path.read_bytes()
            else:
                files[attachment.filename] = attachment.data or b""
        action_id = f"act-{self._day}-101500-{len(self.actions) + 1:06x}"
        self.actions.append(StoredAction(action_id, message, files))
        self._by_ref[key] = action_id
        return action_id


@dataclass(kw_only=True)
class ServiceHarness:
    """What a harness of running services shares: its bus, state, events seen and running
    (service, task) pairs; their context, stop one, the events of a type.

    The subclass (a dataclass) adds the fakes, the `vault` and the `intake` it gives the services."""

    bus: InProcessEventBus = field(default_factory=InProcessEventBus)
    store: MemoryStore = field(default_factory=MemoryStore)
    events: list[Event] = field(default_factory=list)
    running: list[tuple[Any, asyncio.Task[None]]] = field(default_factory=list)

    async def open(self) -> None:
        """Make the vault, start the bus and record every event on it."""
        self.vault.mkdir()
        await self.bus.start()
        self.bus.subscribe(None, self.events.append, name="test.recorder")

    async def close(self) -> None:
        """Stop the services still running (whatever their runs raise), then the bus."""
        for service, task in list(self.running):
            await service.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, DEADLINE)
        await self.bus.close()

    def service_context(
        self, settings: Settings, *, approvals: Any, routes: Any, actions: Any
    ) -> ServiceContext:
        """The context the services get: this harness's bus, intake, vault and state."""
        return ServiceContext(
            settings=settings,
            bus=self.bus,
            intake=self.intake,
            vault_root=self.vault,
            state=self.store,
            approvals=approvals,
            routes=routes,
            actions=actions,
        )

    async def stop(self, service: Any) -> None:
        for index, (candidate, task) in enumerate(self.running):
            if candidate is service:
                await service.stop()
                await asyncio.wait_for(task, DEADLINE)
                del self.running[index]
                return

    def of_type(self, event_type: EventType) -> list[Event]:
        return [event for event in self.events if event.type == event_type]
