"""The intake of Inbox bursts as a pipeline of threads and helper processes (decision 0007).

The loop hands out batches of names; the preparer thread reads them and has the renderer helper
render their notes; the vault worker claims each batch and has the writer helper commit it. Each
stage holds one batch while the next is on its way, so reading, rendering, ledger work and disk
work of successive batches overlap and the three processes use both cores.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ai_employee.observability.metrics import Metrics
from ai_employee.pipeline.intake import BegunIntake, IntakeOutcome, IntakeSteps, PreparedIntake

Answer = Callable[[IntakeOutcome | BaseException], None]


class IntakeFlow:
    def __init__(self, intake: IntakeSteps, *, worker: ThreadPoolExecutor, metrics: Metrics) -> None:
        self.intake = intake
        self.metrics = metrics
        self._worker = worker
        self._preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aie-prepare")
        self._unbegun = 0
        self._unread = 0
        self._counts_lock = threading.Lock()
        self._render_held: tuple[PreparedIntake, Answer] | None = None
        self._held: tuple[BegunIntake, Answer] | None = None

    async def start(self) -> None:
        """Start (or restart) both helpers, each from the thread that will use it."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            loop.run_in_executor(self._preparer, self._start_renderer),
            loop.run_in_executor(self._worker, self._start_committer),
        )

    def close(self) -> None:
        self._preparer.shutdown(wait=True)

    def next_batch(self, taken: dict[str, bool]) -> asyncio.Future[IntakeOutcome]:
        """Hand a batch of Inbox names (name -> arrived by rename) to the preparer; its outcome
        once written."""
        renamed = {name for name, was_renamed in taken.items() if was_renamed}
        self.metrics.batch_size.labels(step="intake").observe(len(taken))
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[IntakeOutcome] = loop.create_future()

        def settle(result: IntakeOutcome | BaseException) -> None:
            if not outcome.done():
                if isinstance(result, BaseException):
                    outcome.set_exception(result)
                else:
                    outcome.set_result(result)

        def answer(result: IntakeOutcome | BaseException) -> None:
            loop.call_soon_threadsafe(settle, result)

        def prepare() -> None:
            started = time.perf_counter()
            more = self._count_unread(-1) > 0
            try:
                prepared = self.intake.read_intake(list(taken), renamed)
                self.intake.start_render(prepared)
            except BaseException as error:
                self._finish_render_held()
                self._intake_failed(answer, error)
                return
            finally:
                self.metrics.step_duration_seconds.labels(step="prepare").observe(
                    time.perf_counter() - started
                )
            self._finish_render_held()
            self._render_held = (prepared, answer)
            if not more:
                self._finish_render_held()

        self._count_unread(1)
        self._count_unbegun(1)
        self._preparer.submit(prepare)
        return outcome

    def _start_renderer(self) -> None:
        """On the preparer, at each (re)start: a batch held by the run before is finished first, so
        that the renderer's answers stay in the order of its requests."""
        self._finish_render_held()
        self.intake.start_intake_renderer()

    def _start_committer(self) -> None:
        """On the worker, at each (re)start: likewise for the writer. Recovery, queued after this,
        then runs while the writer has nothing in hand (it removes stale temp files)."""
        self._finish_held()
        self.intake.start_committer()

    def _finish_render_held(self) -> None:
        """On the preparer: the batch whose notes are being rendered goes to the worker once they are
        back. It is held while the next batch is read, so that reading one overlaps rendering the
        other; the last one is finished at once."""
        held, self._render_held = self._render_held, None
        if held is None:
            return
        prepared, answer = held
        try:
            self.intake.finish_render(prepared)
        except BaseException as error:
            self._intake_failed(answer, error)
            return
        self._worker.submit(self._commit_intake, prepared, answer)

    def _intake_failed(self, answer: Answer, error: BaseException) -> None:
        """A batch that will not reach the worker: answer the loop, and let the worker finish the
        batch it may be holding for this one."""
        answer(error)
        self._count_unbegun(-1)
        self._worker.submit(self._finish_held)

    def _commit_intake(self, prepared: PreparedIntake, answer: Answer) -> None:
        """On the worker: begin this batch's commit, then finish the one before it, so that the
        ledger work of one overlaps the writer's disk work on the other. A batch is held only
        while another is on its way; the last one is finished at once."""
        started = time.perf_counter()
        remaining = self._count_unbegun(-1)
        try:
            begun = self.intake.begin_intake(prepared)
        except BaseException as error:
            answer(error)
            self._finish_held()
            return
        finally:
            self.metrics.step_duration_seconds.labels(step="intake").observe(time.perf_counter() - started)
        self._finish_held()
        self._held = (begun, answer)
        if remaining == 0:
            self._finish_held()

    def _finish_held(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        begun, answer = held
        started = time.perf_counter()
        try:
            answer(self.intake.finish_intake(begun))
        except BaseException as error:
            answer(error)
        finally:
            self.metrics.step_duration_seconds.labels(step="intake").observe(time.perf_counter() - started)

    def _count_unread(self, change: int) -> int:
        """Batches handed to the preparer that it has not started to read; the count after `change`."""
        with self._counts_lock:
            self._unread += change
            return self._unread

    def _count_unbegun(self, change: int) -> int:
        """Batches handed to the preparer whose commit has not begun; the count after `change`."""
        with self._counts_lock:
            self._unbegun += change
            return self._unbegun
