"""What the model fakes (Anthropic, OpenAI) share: scripted answers and a default "model".

A test scripts the next answers (`reply_plan`, `reply_raw`, ...) or sets `responder`, a
function from the untrusted message text to a plan (for fakes that must "comply" with an
injection). With nothing scripted the fake answers like a cautious model would: it runs the
template planner over the message it was sent, so demos and end-to-end runs get sensible plans.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ai_employee.model.plans import PlanRequest
from ai_employee.planners.template import TemplatePlanner

_BLOCK = re.compile(r"<untrusted_message>\n(.*)\n</untrusted_message>", re.DOTALL)

#: (the untrusted block the planner sent, the whole request body) -> the tool input to return
Responder = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass
class Scripted:
    """One scripted answer. `kind`: plan (one tool call), calls (several), text, raw (body as is)."""

    kind: str
    value: Any = None
    usage: tuple[int, int] | None = None
    stop: str | None = None
    status: int = 200
    content_type: str = "application/json"


def untrusted_block(prompt_text: str) -> str:
    found = _BLOCK.search(prompt_text)
    return found.group(1) if found else prompt_text


def template_responder(block: str, body: dict[str, Any]) -> dict[str, Any]:
    """Answer as the template planner would: a stand-in model that always follows the rules."""
    title, text = "", block
    head, blank, rest = block.partition("\n\n")
    lines = head.splitlines()
    if blank and lines and all(line.startswith(("From: ", "Subject: ", "Attachments: ")) for line in lines):
        text = rest
        for line in lines:
            if line.startswith("Subject: "):
                title = line.removeprefix("Subject: ")
    proposal = TemplatePlanner().plan_local(
        PlanRequest(
            action_id="act-fake",
            title=title,
            text=text,
            source="file",
            sender=None,
            received=datetime.now(UTC),
            attachments=[],
            handbook="",
            actions=[],
        )
    )
    return {
        "intent": proposal.intent,
        "confidence": max(proposal.confidence, 0.7),
        "action": proposal.action,
        "params": proposal.params,
        "risk": proposal.risk,
        "summary": proposal.summary,
        "steps": proposal.steps,
    }


class ModelScript:
    """The queue of scripted answers, shared by both fakes."""

    def __init__(self) -> None:
        self.queue: deque[Scripted] = deque()
        self.responder: Responder = template_responder

    def reply_plan(
        self, plan: dict[str, Any] | str, *, usage: tuple[int, int] | None = None, stop: str | None = None
    ) -> None:
        """The next answer is one `propose_plan` call with `plan` (a str: sent as is, e.g. invalid JSON)."""
        self.queue.append(Scripted("plan", plan, usage, stop))

    def reply_calls(
        self, calls: list[tuple[str, dict[str, Any] | str]], *, usage: tuple[int, int] | None = None
    ) -> None:
        """The next answer has these tool calls, (name, input) each: none, two, an unknown tool..."""
        self.queue.append(Scripted("calls", calls, usage))

    def reply_text(self, text: str, *, usage: tuple[int, int] | None = None) -> None:
        """The next answer is plain text, no tool call."""
        self.queue.append(Scripted("text", text, usage))

    def reply_raw(self, body: str, *, status: int = 200, content_type: str = "application/json") -> None:
        """The next answer is this body, as is (e.g. not JSON at all)."""
        self.queue.append(Scripted("raw", body, status=status, content_type=content_type))

    def next(self, prompt_text: str, body: dict[str, Any]) -> Scripted:
        if self.queue:
            return self.queue.popleft()
        return Scripted("plan", self.responder(untrusted_block(prompt_text), body))


def estimate_tokens(value: str) -> int:
    return max(1, len(value) // 4)
