"""An approved plan as a job to run, what running it gave, and how its item ended.

`ExecutionJob` is what the execution step hands to the work (`executors.run.run_job`);
`ExecutionResult` is what the work hands back to be committed; `Finished` is the item's end,
which the pipeline announces. None of them holds a path to write: the daemon commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ai_employee.model.executor import ActionParams, Executor


@dataclass
class ExecutionJob:
    plan_id: str
    action_id: str
    name: str  # file name in Approved/
    digest: str
    properties: dict[str, Any]
    body: str
    executor: Executor
    params: ActionParams
    attempt: int
    action_title: str = ""
    attachments: list[str] = field(default_factory=list)
    resumed: bool = False


@dataclass(frozen=True)
class ExecutionResult:
    """What a run gave: a result mapping (in dry-run, the requests it would send) or an error."""

    dry_run: bool
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Finished:
    plan_id: str
    action_id: str
    action: str
    status: str  # done | failed
    dry_run: bool | None
    result: dict[str, Any] | None
    error: str | None
    final_rel: str
    attempt: int = 0  # which execution of the plan this was (1 the first; more after a retry)
    duration_ms: float | None = None  # how long the run took, when it ran
    repeat: bool = False  # this execution's result was recorded before: nothing new to announce
