"""The pipeline service: turns hints (watcher events, reconciler scans, source messages) into
batched steps on one worker thread, and plans and executions into tasks. It only wires the
steps (`pipeline.steps`), the intake flow (`pipeline.intake_flow`) and the announcer
(`pipeline.announcer`) together.

Events are hints: a hint only says "look at this name"; the step then reads the folder and
the ledger, so a lost, duplicated or stale hint is harmless.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import structlog

from ai_employee.config import Settings
from ai_employee.documents.extraction import Extraction
from ai_employee.model.bus import EventBus
from ai_employee.model.events import Event, EventType
from ai_employee.model.messages import IncomingMessage
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.model.services import HealthReport, Service
from ai_employee.model.work import WorkRunner
from ai_employee.observability.metrics import Metrics
from ai_employee.observability.timing import timer
from ai_employee.pipeline.announcer import Announcer
from ai_employee.pipeline.decisions import DecisionOutcome
from ai_employee.pipeline.intake import IntakeOutcome
from ai_employee.pipeline.intake_flow import IntakeFlow
from ai_employee.pipeline.jobs import JobRunner
from ai_employee.pipeline.renderer import NewAction
from ai_employee.pipeline.settle_timers import SettleTimers
from ai_employee.pipeline.steps import VaultSteps
from ai_employee.pipeline.work import InProcessWork
from ai_employee.planners.base import Planner
from ai_employee.vault.layout import WATCHED, Folder, VaultLayout, is_ignored_name

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

AUDIT_FLUSH_SECONDS = 1.0
#: Inbox batches taken from the hints and not yet written: being prepared, waiting for the worker,
#: being written, and one spare so that a slow turn of the loop does not leave the preparer idle.
INTAKE_BATCHES_IN_FLIGHT = 4
TRANSCRIPT_PROPERTIES = frozenset(
    {"transcription", "duration_seconds", "transcript_cost_usd", "transcribed_by", "transcription_model"}
)

AutoApprovePolicy = Callable[[PlanProposal, PlanRequest | None, Settings], bool]


def never_auto_approve(proposal: PlanProposal, request: PlanRequest | None, settings: Settings) -> bool:
    return False


class PipelineService(Service):
    name = "pipeline"
    required = True

    def __init__(
        self,
        steps: VaultSteps,
        *,
        bus: EventBus,
        metrics: Metrics,
        settings: Settings,
        planner: Planner,
        auto_approve: AutoApprovePolicy = never_auto_approve,
        approve: Callable[[str], object] | None = None,
        work: WorkRunner | None = None,
    ) -> None:
        super().__init__()
        self.steps = steps
        self.bus = bus
        self.metrics = metrics
        self.settings = settings
        self.planner = planner
        self.work: WorkRunner = work if work is not None else InProcessWork(planner)
        self._auto_approve = auto_approve
        self._approve = approve
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aie-vault")
        self.intake_flow = IntakeFlow(steps.intake, worker=self._worker, metrics=metrics)
        # a document read by a worker comes back as a hint, and the next batch takes it with its text
        steps.intake.documents.on_read = lambda name: self.hint_threadsafe(Folder.INBOX, name)
        self.announce = Announcer(bus, metrics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: dict[str, bool] = {}  # name -> arrived by rename
        self._approved: dict[str, None] = {}
        self._rejected: dict[str, None] = {}
        self._plans: dict[str, None] = {}  # Plans/ notes edited (settled) to refresh
        self._plan_timers = SettleTimers()  # Plans/ notes being edited
        self._timers = SettleTimers()  # Inbox files not yet still
        self._wake = asyncio.Event()
        self._incoming: list[tuple[Folder, str, bool]] = []
        self._incoming_lock = threading.Lock()
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._planning = asyncio.Semaphore(self.work.concurrency("plan", settings.planner.concurrency))
        self._reconcile_handle: asyncio.TimerHandle | None = None
        self._last_audit_flush = 0.0
        self._processed = 0
        self.jobs = JobRunner(
            steps,
            settings=settings,
            metrics=metrics,
            work=self.work,
            announce=self.announce,
            worker=self._worker,
            spawn=self._spawn,
            wake=self._wake.set,
        )

    # --- hints -------------------------------------------------------------------------------

    def hint(self, folder: Folder, name: str, renamed: bool = False) -> None:
        """Look at `folder/name` soon. Loop thread only; see `hint_threadsafe`."""
        if folder == Folder.INBOX:
            self._inbox[name] = self._inbox.get(name, False) or renamed
            if name not in self._timers or renamed:
                self._timers.cancel(name)
        elif folder == Folder.APPROVED:
            self._approved[name] = None
        elif folder == Folder.REJECTED:
            self._rejected[name] = None
        elif folder == Folder.PLANS:
            self._plan_edited(name)
            return
        else:
            return
        self._wake.set()

    def _plan_edited(self, name: str) -> None:
        """A plan note written in Plans/: refresh it once it has been still for the settle time
        (a person typing in Obsidian saves every few seconds)."""

        def settled() -> None:
            self._plans[name] = None
            self._wake.set()

        self._plan_timers.start(name, self.settings.vault.settle_seconds, settled)

    def hint_threadsafe(self, folder: Folder, name: str, renamed: bool = False) -> None:
        """From the watcher's thread. Hints are collected and handed over in bulk: one wake-up of the
        loop per burst of events, not one per file."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._incoming_lock:
            first = not self._incoming
            self._incoming.append((folder, name, renamed))
        if first:
            loop.call_soon_threadsafe(self._take_incoming)

    def _take_incoming(self) -> None:
        with self._incoming_lock:
            incoming, self._incoming = self._incoming, []
        for folder, name, renamed in incoming:
            self.hint(folder, name, renamed)

    def request_reconcile(self) -> None:
        """Thread-safe: rescan the watched folders (after a watcher restart or overflow)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self._spawn(self.reconcile()))

    async def reconcile(self, plans: bool = True, *, after_recovery: bool = False) -> int:
        """List the watched folders and hint every entry; O(entries in those folders), not O(vault).

        `plans`: Plans/ too (at start and when the watcher (re)starts: edits nobody saw); its notes
        are read again only if they changed since they were last looked at. `after_recovery`: the
        first rescan, once recovery finished what a crash interrupted (its event says so: observers
        that catch up from the ledger wait for it)."""
        found = await self._in_thread(_list_watched, self.steps.layout, plans)
        total = 0
        for folder, names in found.items():
            for name in names:
                if folder == Folder.PLANS:
                    self._plans[name] = None
                else:
                    self.hint(folder, name)
            total += len(names)
            if names:
                self.metrics.reconcile_found.labels(folder=folder.value).inc(len(names))
        self.metrics.reconcile_runs.inc()
        self.announce.publish(
            EventType.RECONCILE_COMPLETED, {"found": total, "after_recovery": after_recovery}
        )
        return total

    # --- the service ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        subscription = self.bus.subscribe(
            EventType.TRANSCRIPTION_COMPLETED, self._on_transcript, name="pipeline-transcripts"
        )
        try:
            await self._run()
        finally:
            self.bus.unsubscribe(subscription)

    def _on_transcript(self, event: Event) -> None:
        action_id = event.payload.get("action_id") or event.correlation_id
        transcript = event.payload.get("transcript")
        if isinstance(action_id, str) and isinstance(transcript, str):
            properties = {key: value for key, value in event.payload.items() if key in TRANSCRIPT_PROPERTIES}
            self._spawn(self._replan(action_id, transcript, properties))

    async def _replan(self, action_id: str, transcript: str, properties: dict[str, Any]) -> None:
        item = await self._in_thread(self.steps.apply_transcript, action_id, transcript, properties)
        if item is not None:
            self.announce.publish(
                EventType.ACTION_UPDATED,
                {"action_id": action_id, "reason": "transcript"},
                correlation_id=action_id,
            )
            await self._plan(item)

    async def _run(self) -> None:
        await self.intake_flow.start()
        to_plan, approved = await self._in_thread(self.steps.recover)
        for item in to_plan:
            self._spawn(self._plan(item))
        for name in approved:
            self.hint(Folder.APPROVED, name)
        await self.reconcile(after_recovery=True)
        self._schedule_reconcile()
        self.ready.set()
        log.info("pipeline ready", planner=self.planner.name, dry_run=self.settings.execution.dry_run)
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()
            if self.steps.audit_dirty:
                await self._flush_audit()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._in_thread(self.steps.flush_audit)

    async def stop(self) -> None:
        self._stopping = True
        if self._reconcile_handle is not None:
            self._reconcile_handle.cancel()
        self._timers.cancel_all()
        self._plan_timers.cancel_all()
        self._wake.set()

    async def health(self) -> HealthReport:
        # files seen and not yet taken; plans waiting for a human are Plans/ in `status`, not these
        queued = len(self._inbox) + len(self._approved) + len(self._rejected)
        return HealthReport(
            healthy=True,
            detail=f"{queued} files queued, {len(self._tasks)} steps in flight",
            data={
                "queued": queued,
                "in_flight": len(self._tasks),
                "processed": self._processed,
                "helpers": self.steps.helper_pids(),
            },
        )

    def close(self) -> None:
        self.intake_flow.close()
        self._worker.shutdown(wait=True)
        self.steps.committer.close()
        self.steps.intake_renderer.close()
        self.steps.intake.documents.close()

    def _schedule_reconcile(self) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            if not self._stopping:
                self._spawn(self.reconcile(plans=False))
                self._schedule_reconcile()

        self._reconcile_handle = loop.call_later(self.settings.vault.reconcile_interval_seconds, fire)

    async def _flush_audit(self) -> None:
        self._last_audit_flush = time.monotonic()
        await self._timed("audit", self.steps.flush_audit)

    async def _drain(self) -> None:
        """Batches until nothing is pending. Intake runs as a pipeline: the preparer thread reads and
        renders batch N+1 while the vault worker writes batch N (its disk work in the writer child
        process) and the loop publishes the events of batch N-1. A prepared batch goes straight
        from the preparer to the worker's queue; the loop only hands out names and takes results."""
        in_flight: deque[asyncio.Future[IntakeOutcome]] = deque()
        try:
            while not self._stopping and (
                self._inbox or self._approved or self._rejected or self._plans or in_flight
            ):
                self._hand_out(in_flight)
                if self.steps.audit_dirty and time.monotonic() - self._last_audit_flush > AUDIT_FLUSH_SECONDS:
                    self._spawn(self._flush_audit())  # queued on the worker behind the batches
                await self._decide()
                if in_flight:
                    outcome = await in_flight.popleft()
                    self._hand_out(in_flight)  # keep the preparer busy before publishing
                    self._after_intake(outcome)
        finally:  # stopping: what was taken is written in full
            for finished in await asyncio.gather(*in_flight, return_exceptions=True):
                if isinstance(finished, IntakeOutcome):
                    self._after_intake(finished)

    def _hand_out(self, in_flight: deque[asyncio.Future[IntakeOutcome]]) -> None:
        while self._inbox and not self._stopping and len(in_flight) < INTAKE_BATCHES_IN_FLIGHT:
            in_flight.append(self._intake_next())

    async def _decide(self) -> None:
        if self._rejected:
            names = list(self._rejected)
            self._rejected.clear()
            decided = await self._timed("rejection", self.steps.examine_rejected, names)
            self._after_decisions(decided)
        if self._approved:
            names = list(_take(self._approved, self.settings.vault.batch_size))
            decided = await self._timed("approval", self.steps.examine_approved, names)
            self._after_decisions(decided)
        if self._plans:  # last, a batch at a time: a person's decisions and new input go first
            names = list(_take(self._plans, self.settings.vault.batch_size))
            await self._timed("plan_refresh", self.steps.refresh_plans, names)

    def _intake_next(self) -> asyncio.Future[IntakeOutcome]:
        """Hand the next batch of Inbox names to the intake flow; its outcome once written."""
        return self.intake_flow.next_batch(_take(self._inbox, self.settings.vault.batch_size))

    async def _timed(self, step: str, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        timing = timer(step)
        try:
            with timing:
                return await self._in_thread(function, *args, **kwargs)
        finally:
            self.metrics.step_duration_seconds.labels(step=step).observe(timing.seconds)

    async def _in_thread(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: function(*args, **kwargs))

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pipeline task failed", error=repr(task.exception()))

    # --- intake ----------------------------------------------------------------------------------

    def _after_intake(self, outcome: IntakeOutcome) -> None:
        for name, delay in outcome.deferred:
            self._defer(name, delay)
        for quarantined in outcome.quarantined:
            self.announce.quarantined(quarantined.name, quarantined.reason)
        for item in outcome.actions:
            self._action_created(item)

    def _action_created(self, item: NewAction) -> None:
        self._processed += 1
        self.announce.action_created(item)
        if item.planned is not None:
            self._plan_created(item, item.planned, item.request)
        elif item.row.extra.get("empty") is not True:  # an empty file or folder: nothing to plan
            self._spawn(self._plan(item))

    def _plan_created(
        self,
        item: NewAction,
        proposal: PlanProposal,
        request: PlanRequest | None,
        duration_ms: float | None = None,
    ) -> None:
        self.announce.plan_created(item, proposal, duration_ms)
        if self._approve is not None and self._auto_approve(proposal, request, self.settings):
            log.info("plan auto-approved by config", plan_id=item.row.plan_id, action=proposal.action)
            self._approve(item.row.plan_id)

    async def _plan(self, item: NewAction) -> None:
        async with self._planning:
            request = await self._in_thread(self.steps.plan_request, item)
            with timer("plan") as timing:
                proposal = await self.work.plan(request)
            await self._in_thread(self.steps.write_plans, [(item, proposal)])
        self._plan_created(item, proposal, request, timing.ms)
        self._wake.set()  # the loop appends the audit lines

    def _defer(self, name: str, delay: float) -> None:
        """Look again once the file has been still for the settle time (a timer, not a poll loop)."""
        self._timers.start(name, max(delay, 0.01) + 0.01, lambda: self.hint(Folder.INBOX, name))

    # --- submit (IntakeSink for email, Telegram) -------------------------------------------------

    async def submit(self, message: IncomingMessage) -> str:
        documents: list[Extraction | None] = []
        if message.attachments and not await self._in_thread(self.steps.intake.is_taken, message):
            # read in the reading workers while the vault worker goes on with other files
            futures = self.steps.intake.read_message_documents(message)
            for future in futures:
                extraction: Extraction | None = None
                if future is not None:
                    extraction = await asyncio.wrap_future(future)
                documents.append(extraction)
        item, action_id = await self._in_thread(self.steps.intake_message, message, documents)
        if item is not None:
            self._action_created(item)
            self._wake.set()  # the loop appends the audit lines
        return action_id

    # --- decisions and execution -----------------------------------------------------------------

    def _after_decisions(self, outcome: DecisionOutcome) -> None:
        for name, delay in outcome.deferred:
            asyncio.get_running_loop().call_later(max(delay, 0.01) + 0.01, self.hint, Folder.APPROVED, name)
        self.announce.decisions(outcome)
        for job in outcome.jobs:
            self.jobs.start(job)
        for action_id in outcome.reread:
            self._spawn(self._reread(action_id))

    async def _reread(self, action_id: str) -> None:
        """An approved plan's files changed after they were read: read them and plan again."""
        item = await self._in_thread(self.steps.reread, action_id)
        self.announce.publish(
            EventType.ACTION_UPDATED,
            {"action_id": action_id, "reason": "attachment changed"},
            correlation_id=action_id,
        )
        if item is not None and item.planned is not None:
            self._plan_created(item, item.planned, item.request)
        elif item is not None:
            await self._plan(item)
        self._wake.set()  # the loop appends the audit lines


def _take(pending: dict[str, T], limit: int) -> dict[str, T]:
    taken: dict[str, T] = {}
    for name in list(itertools.islice(pending, limit)):
        taken[name] = pending.pop(name)
    return taken


def _list_watched(layout: VaultLayout, plans: bool = False) -> dict[Folder, list[str]]:
    found: dict[Folder, list[str]] = {}
    for folder in (*WATCHED, Folder.PLANS) if plans else WATCHED:
        try:
            with os.scandir(layout.folder(folder)) as entries:
                found[folder] = [entry.name for entry in entries if not is_ignored_name(entry.name)]
        except FileNotFoundError:
            found[folder] = []
    return found
