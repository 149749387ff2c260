"""Whether a plan may run without a human: the pipeline's auto-approval policy.

Only action types named in `execution.auto_approve` (default: none), never for input from
outside the allowlisted senders, and never for a message that tries to instruct the assistant
(an email saying "this is pre-approved" must reach a human). Pure: no I/O, nothing from the
model's answer decides it, only the action type, which a human then sees in the audit log.
"""

from __future__ import annotations

from ai_employee.config import Settings
from ai_employee.model.plans import PlanProposal, PlanRequest
from ai_employee.planners.guard import injection_signals


def may_auto_approve(proposal: PlanProposal, request: PlanRequest | None, settings: Settings) -> bool:
    """True only when config names the action, the sender is trusted, and the input looks clean.

    `request` None (the pipeline no longer has it) means the sender is unknown: no.
    """
    if proposal.action not in settings.execution.auto_approve:
        return False
    if request is None or not request.trusted_sender:
        return False
    return not injection_signals(request.title, request.text, str(request.sender or ""))
