"""The watcher: a watchdog observer on Inbox/, Approved/ and Rejected/ (arrivals) and on Plans/
(a person's edits of a waiting plan), supervised.

It only hints the pipeline ("look at this name"); the reconciler makes up for whatever it
misses. watchdog drops events silently on an inotify queue overflow (it only logs a
warning), and a dead emitter thread stops all events: the first is caught from watchdog's
log record and answered with a rescan; the second ends `run()` so the orchestrator restarts
the watcher, and every (re)start rescans.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver

from ai_employee.model.bus import EventBus
from ai_employee.model.events import Event, EventType
from ai_employee.model.services import HealthReport, Service
from ai_employee.observability.metrics import Metrics
from ai_employee.vault.layout import WATCHED, Folder, VaultLayout, is_ignored_name
from ai_employee.vault.writes import OpenWrites

log = structlog.get_logger(__name__)

Hint = Callable[[Folder, str, bool], None]

# Arrivals only (inotify IN_CREATE, IN_MOVED_*): a file written in place is looked at again when
# its settle time is up, so its writes need no events, and our own link/unlink of claimed files
# (IN_ATTRIB, IN_DELETE) never reaches Python.
_WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,  # IN_CLOSE_WRITE: a file created in Inbox/ is complete only once closed (OpenWrites)
]


class _Router(FileSystemEventHandler):
    """Runs on watchdog's thread: classify and hand over, nothing more."""

    def __init__(self, folders: dict[str, Folder], hint: Hint, writes: OpenWrites | None = None) -> None:
        self._folders = folders
        self._hint = hint
        self._writes = writes

    def _route(
        self, path: str | bytes, renamed: bool, *, created: bool = False, closed: bool = False
    ) -> None:
        text = os.fsdecode(path)
        if not text:
            return
        parent, _, name = text.rpartition("/")
        folder = self._folders.get(parent)
        if folder is None or not name:
            return
        if folder is Folder.INBOX and self._writes is not None:
            if created:
                self._writes.opened(name)
            elif closed:
                self._writes.closed(name)
        elif closed:
            return  # only Inbox/ files wait for their writer
        self._hint(folder, name, renamed)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, (FileMovedEvent, DirMovedEvent)):
            self._route(event.dest_path, True)
        elif isinstance(event, FileCreatedEvent):
            self._route(event.src_path, False, created=True)
        elif isinstance(event, DirCreatedEvent):
            self._route(event.src_path, False)
        elif isinstance(event, FileClosedEvent):
            self._route(event.src_path, False, closed=True)


# Plans/: a person's edits only. Obsidian (and most editors) write a note in place: IN_CLOSE_WRITE.
# Moves are not watched there: every plan the daemon writes arrives by rename, and watchdog spends
# ~90 us of Python per event (+0.9 s of CPU in a 10,000-file burst, measured); an edit that arrives
# by rename (a sync tool) is seen at the next rescan (start, watcher restart). Decision 0010.
_PLAN_EDIT_EVENTS: list[type[FileSystemEvent]] = [FileClosedEvent]


class _PlanEditRouter(_Router):
    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent):
            path = os.fsdecode(event.src_path)
            if not is_ignored_name(path.rpartition("/")[2]):  # our temp files are dot-files
                self._route(path, False)


class _OverflowListener(logging.Handler):
    """watchdog reports an inotify queue overflow only as a log record; listen for it."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._on_overflow()


class WatcherService(Service):
    name = "watcher"
    required = True

    def __init__(
        self,
        layout: VaultLayout,
        *,
        hint: Hint,
        rescan: Callable[[], None],
        bus: EventBus,
        metrics: Metrics,
        liveness_check_seconds: float = 5.0,
        writes: OpenWrites | None = None,
    ) -> None:
        super().__init__()
        self.layout = layout
        self._hint = hint
        self._rescan = rescan
        self._bus = bus
        self._metrics = metrics
        self._check = liveness_check_seconds
        self._stop = asyncio.Event()
        self._observer: InotifyObserver | None = None
        self._starts = 0
        self.overflows = 0
        self._writes = writes

    def _overflowed(self) -> None:  # watchdog's thread
        self.overflows += 1
        self._metrics.watcher_overflows.inc()
        log.warning("inotify queue overflowed; rescanning the watched folders")
        self._bus.publish(
            Event(type=EventType.WATCHER_OVERFLOW, payload={"overflows": self.overflows}, source="watcher")
        )
        self._rescan()

    async def run(self) -> None:
        self._stop.clear()
        self.layout.create()  # a folder deleted under us is recreated before watching again
        folders = {str(self.layout.folder(folder)): folder for folder in WATCHED}
        observer = InotifyObserver(generate_full_events=True)
        router = _Router(folders, self._hint, self._writes)
        for path in folders:
            observer.schedule(router, path, recursive=False, event_filter=_WATCHED_EVENTS)
        plans = str(self.layout.folder(Folder.PLANS))
        observer.schedule(
            _PlanEditRouter({plans: Folder.PLANS}, self._hint),
            plans,
            recursive=False,
            event_filter=_PLAN_EDIT_EVENTS,
        )
        listener = _OverflowListener(self._overflowed)
        # the overflow warning must reach us whatever level the user's logging is at
        watchdog_log = logging.getLogger("watchdog.observers.inotify_c")
        watchdog_log.setLevel(logging.WARNING)
        watchdog_log.addHandler(listener)
        observer.start()
        self._observer = observer
        self._starts += 1
        if self._starts > 1:
            self._metrics.watcher_restarts.inc()
        self._rescan()  # whatever arrived while nobody watched
        self.ready.set()
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self._check)
                except TimeoutError:
                    problem = self._problem(observer)
                    if problem:
                        raise RuntimeError(problem) from None
        finally:
            watchdog_log.removeHandler(listener)
            observer.stop()
            await asyncio.to_thread(observer.join, 5.0)
            self._observer = None

    def _problem(self, observer: InotifyObserver) -> str | None:
        if not observer.is_alive():
            return "the watchdog observer thread died"
        for emitter in list(observer.emitters):
            if not emitter.is_alive():
                return f"the watch on {emitter.watch.path} stopped"
        for folder in (*WATCHED, Folder.PLANS):
            if not self.layout.folder(folder).is_dir():
                return f"{folder.value}/ disappeared"
        return None

    async def stop(self) -> None:
        self._stop.set()

    async def health(self) -> HealthReport:
        observer = self._observer
        if observer is None:
            return HealthReport(healthy=False, detail="not watching")
        problem = self._problem(observer)
        return HealthReport(
            healthy=problem is None,
            detail=problem or "watching " + ", ".join(f.value for f in (*WATCHED, Folder.PLANS)),
            data={"overflows": self.overflows, "starts": self._starts},
        )
