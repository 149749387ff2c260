"""Named one-shot timers on the event loop, for the pipeline's "look again once it has been still"
(an Inbox file still being written, a plan note being edited): a timer, not a poll loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class SettleTimers:
    """One timer per name: starting a name's timer again replaces the one that was waiting."""

    def __init__(self) -> None:
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._handles

    def start(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        """Call `callback` after `delay` seconds (loop thread only)."""
        self.cancel(name)

        def fire() -> None:
            self._handles.pop(name, None)
            callback()

        self._handles[name] = asyncio.get_running_loop().call_later(delay, fire)

    def cancel(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
