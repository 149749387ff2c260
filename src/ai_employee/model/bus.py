"""The bus interface that every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ai_employee.model.events import Event, EventType

EventHandler = Callable[[Event], None] | Callable[[Event], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    event_type: EventType | None  # None: every event
    name: str


class EventBus(ABC):
    """Publish/subscribe. Events are hints; no component may depend on one arriving.

    A failing subscriber is logged and isolated: it never breaks the publisher or the
    other subscribers.
    """

    @abstractmethod
    def subscribe(
        self, event_type: EventType | None, handler: EventHandler, *, name: str | None = None
    ) -> Subscription: ...

    @abstractmethod
    def unsubscribe(self, subscription: Subscription) -> None: ...

    @abstractmethod
    def publish(self, event: Event) -> None:
        """Deliver to sync subscribers now and schedule async ones. Thread-safe."""

    @abstractmethod
    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - a deadline, not a cancel scope
        """Wait until the async subscribers scheduled so far have finished.

        Raises TimeoutError when they have not finished within `timeout` seconds.
        """

    @abstractmethod
    def history(self, limit: int | None = None, correlation_id: str | None = None) -> Sequence[Event]: ...

    @abstractmethod
    def stats(self) -> dict[str, Any]: ...

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Bind to the running loop, connect to a broker: whatever the backend needs."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what start took."""
