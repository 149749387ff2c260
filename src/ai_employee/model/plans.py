"""What a plan is: the actions on offer, the request a planner reads, the proposal it writes.

Planners only write plans: none of them has a way to change anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Intent = Literal["work_order", "research", "note", "reply", "unknown"]
Risk = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class ActionSpec:
    """What a planner may propose: an action name, what it does and its params' JSON schema."""

    name: str
    description: str
    params_schema: dict[str, Any]


@dataclass(frozen=True)
class PlanRequest:
    action_id: str
    title: str
    text: str  # the message text, transcript or file content: untrusted data
    source: str  # file | email | telegram
    sender: str | None
    received: datetime
    attachments: Sequence[str]  # vault-relative paths
    handbook: str  # Company_Handbook.md, the rules the plan must follow
    actions: Sequence[ActionSpec]
    trusted_sender: bool = True  # False when the input came from outside the allowlists


@dataclass
class PlanProposal:
    action: str
    params: dict[str, Any]
    intent: Intent
    confidence: float
    risk: Risk
    summary: str
    steps: list[str] = field(default_factory=list)
    planner: str = "template"  # template | claude:<model> | openai:<model>
    usage: dict[str, int] | None = None  # input_tokens, output_tokens
    cost_usd: float | None = None
    fallback_reason: str | None = None
    context_used: float | None = None  # share of the model's context window the prompt filled (0..1)
