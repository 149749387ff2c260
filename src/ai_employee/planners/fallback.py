"""The one place where planning falls back to the template planner.

The pipeline calls `FallbackPlanner.plan` and always gets a plan: the primary planner's, or on
an API error, a timeout, an invalid answer or a spent budget, the template planner's, marked
`planner="template"` with `fallback_reason` saying why (that reason goes into the plan note
and the audit log). Configured secrets are redacted from every plan it returns.

A model planner's SDK takes a second to import, so the daemon does not wait for it: the primary
may be a `PendingPlanner`, built in a background thread, which the first plan waits for. A
primary that fails to build (off, not installed, broken) is logged once, and every plan is then
the template planner's with the reason.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime

import structlog

from ai_employee.config import Settings
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.model.plugins import PLANNERS_GROUP, PluginDisabled, load_factory
from ai_employee.model.services import LinkStatus
from ai_employee.planners.base import Planner
from ai_employee.planners.errors import BudgetExceeded, PlannerError, PlannerUnavailable
from ai_employee.planners.guard import redact
from ai_employee.planners.template import TemplatePlanner

log = structlog.get_logger(__name__)

#: How long stopping waits for a primary still being built, to close it.
CLOSE_WAIT_SECONDS = 5.0


class PlannerOff(PlannerError):
    """The primary planner could not be built; why was logged once, when its build failed."""


class PendingPlanner(Planner):
    """A planner built by `build` in a background thread started at once, so that importing its
    SDK holds up nothing. `plan` waits for the build, up to `wait_seconds`; a build that failed
    (`PluginDisabled`, an import error, anything) is logged once and every plan raises
    `PlannerOff` with the reason. `name` is known before the build: the daemon shows it."""

    local = False

    def __init__(self, name: str, build: Callable[[], Planner], *, wait_seconds: float) -> None:
        self.name = name  # type: ignore[misc]  # known without importing the planner
        self.wait_seconds = wait_seconds
        self._failure = ""
        # Set by the build thread only, never with an exception (nobody may be there to read it).
        self._built: Future[Planner | None] = Future()
        self._built.set_running_or_notify_cancel()  # so that nothing can cancel it
        threading.Thread(target=self._build, args=(build,), name=f"build planner {name}", daemon=True).start()

    @property
    def built(self) -> Planner | None:
        """The planner, once built (None while it is built, or if that failed)."""
        return self._built.result() if self._built.done() else None

    def _build(self, build: Callable[[], Planner]) -> None:
        planner: Planner | None = None
        try:
            planner = build()
        except PluginDisabled as reason:
            log.warning("planner off; using the template planner", planner=self.name, reason=str(reason))
            self._failure = f"planner {self.name} is off: {reason}"
        except ImportError as error:
            log.error(
                "planner failed to load; using the template planner", planner=self.name, error=str(error)
            )
            self._failure = f"planner {self.name} failed to load: {type(error).__name__}: {error}"
        except Exception as error:  # a broken plug-in must not stop the pipeline
            log.exception("planner failed to load; using the template planner", planner=self.name)
            self._failure = f"planner {self.name} failed to load: {type(error).__name__}"
        finally:
            if planner is None and not self._failure:
                self._failure = f"planner {self.name} failed to load"
            self._built.set_result(planner)

    async def _wait(self, seconds: float) -> bool:
        """Whether the build is over, waiting for it up to `seconds`."""
        if not self._built.done():
            waiting = asyncio.wrap_future(self._built)
            try:
                await asyncio.wait([waiting], timeout=seconds)
            finally:
                waiting.cancel()  # the build goes on; only this wait ends
        return self._built.done()

    def link(self) -> LinkStatus | None:
        planner = self.built
        return planner.link() if planner is not None else None

    async def plan(self, request: PlanRequest) -> PlanProposal:
        if not await self._wait(self.wait_seconds):
            message = f"timeout: planner {self.name} was not ready within {self.wait_seconds:g} s"
            raise PlannerUnavailable(message)
        planner = self.built
        if planner is None:
            raise PlannerOff(self._failure)
        return await planner.plan(request)

    async def aclose(self) -> None:
        if not await self._wait(CLOSE_WAIT_SECONDS):
            log.warning("planner still being built at stop; not closed", planner=self.name)
        planner = self.built
        if planner is not None:
            await planner.aclose()


class FallbackPlanner(Planner):
    local = False

    def __init__(
        self,
        primary: Planner,
        fallback: Planner | None = None,
        *,
        secrets: list[str] | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback or TemplatePlanner()
        self.secrets = secrets or []
        self.name = primary.name  # type: ignore[misc]  # the instance takes its primary's name
        self._budget_day_logged: str | None = None

    def link(self) -> LinkStatus | None:
        """The primary's: the template planner has no outside server."""
        return self.primary.link()

    async def plan(self, request: PlanRequest) -> PlanProposal:
        try:
            proposal = await self.primary.plan(request)
        except PlannerError as error:
            return await self._fall_back(request, str(error), error)
        except Exception as error:  # a bug in a planner must not stop the pipeline
            log.exception("planner crashed; using the template planner", action_id=request.action_id)
            return await self._fall_back(request, f"planner error: {type(error).__name__}", None)
        return self._clean(proposal)

    async def _fall_back(self, request: PlanRequest, reason: str, error: PlannerError | None) -> PlanProposal:
        if isinstance(error, BudgetExceeded):
            day = datetime.now(UTC).date().isoformat()
            if self._budget_day_logged != day:  # once a day, not once a message
                self._budget_day_logged = day
                log.warning("planning budget spent: using the template planner", reason=reason)
        elif not isinstance(error, PlannerOff):  # that was logged once, when the build failed
            log.warning(
                "planner failed; using the template planner",
                action_id=request.action_id,
                planner=self.primary.name,
                reason=reason,
            )
        proposal = (
            self.fallback.plan_local(request) if self.fallback.local else await self.fallback.plan(request)
        )
        proposal.planner = "template"
        proposal.fallback_reason = reason
        if error is not None and error.cost_usd:
            proposal.usage = error.usage  # a refused answer still cost tokens
            proposal.cost_usd = error.cost_usd
        return self._clean(proposal)

    def _clean(self, proposal: PlanProposal) -> PlanProposal:
        if self.secrets:
            proposal.params = redact(proposal.params, self.secrets)
            proposal.summary = redact(proposal.summary, self.secrets)
            proposal.steps = redact(proposal.steps, self.secrets)
        return proposal

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.fallback.aclose()


def template_planner(settings: Settings) -> Planner:
    """The template planner, loaded through its entry point like every planner: what plans when
    the chosen one is the template, or cannot be had, and the fallback of every other."""
    factory = load_factory(PLANNERS_GROUP, "template")
    if factory is None:
        raise RuntimeError("the template planner is not installed (pip install -e .)")
    planner: Planner = factory(settings)
    return planner
