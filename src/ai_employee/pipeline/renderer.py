"""New actions as bytes: action notes, plan notes (planned here by a local planner) and their audit
lines, nothing written. In a burst this is most of the daemon's Python, so the pipeline may run it
in a helper process of its own (`RenderProcess`, decision 0007); the in-process `ActionRenderer`
and the helper run the same code.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ai_employee.helper_process import HelperProcess, serve
from ai_employee.model.plans import ActionSpec, PlanProposal, PlanRequest
from ai_employee.pipeline import rendering
from ai_employee.planners.base import Planner
from ai_employee.planners.template import TemplatePlanner
from ai_employee.vault.audit import audit_record
from ai_employee.vault.ledger import ActionRow, AuditRecord
from ai_employee.vault.notes import render_note

PLANNER_TEXT_CHARS = 20_000
_PROPOSAL_FIELDS = tuple(field.name for field in dataclasses.fields(PlanProposal))


@dataclass
class NewAction:
    """An action whose note is durable, with what the planner needs."""

    row: ActionRow
    text: str
    received: datetime
    subject: str | None = None
    trusted: bool = True
    planned: PlanProposal | None = None  # set when it was planned inline
    request: PlanRequest | None = None  # what the inline planner was asked (for the auto-approve policy)


@dataclass
class RenderedAction:
    """What a group commit writes for one new action: its notes and audit lines."""

    item: NewAction
    writes: list[tuple[str, bytes]]  # (absolute path, content)
    audit: list[AuditRecord]


def plan_request(item: NewAction, handbook: str, specs: Sequence[ActionSpec]) -> PlanRequest:
    return PlanRequest(
        action_id=item.row.action_id,
        title=item.row.title,
        text=item.text[:PLANNER_TEXT_CHARS],
        source=item.row.source,
        sender=item.row.sender,
        received=item.received,
        attachments=item.row.attachments,
        handbook=handbook,
        actions=specs,
        trusted_sender=item.trusted,
    )


class IntakeRenderer(Protocol):
    """Renders batches in the order they are sent; one thread sends and receives, and may send the
    next batch before it receives the last."""

    def send(self, actions: Sequence[NewAction], handbook: str, specs: Sequence[ActionSpec]) -> None: ...

    def receive(self) -> list[RenderedAction]: ...

    def close(self) -> None: ...

    @property
    def pid(self) -> int | None:
        """The helper process rendering, if any."""


def start_intake_renderer(root: Path, planner: Planner) -> IntakeRenderer:
    """The helper process where it can plan as the daemon would, else on the calling thread."""
    if sys.platform.startswith("linux") and RenderProcess.can_render_for(planner):
        return RenderProcess(root, planner)
    return ActionRenderer(root, planner)


class ActionRenderer:
    """Renders on the calling thread. `planner`: a local planner plans each action here."""

    def __init__(self, root: Path, planner: Planner) -> None:
        self._root = os.fspath(root)
        self._planner = planner
        self._done: deque[list[RenderedAction]] = deque()

    def send(self, actions: Sequence[NewAction], handbook: str, specs: Sequence[ActionSpec]) -> None:
        self._done.append(self.render_now(actions, handbook, specs))

    def receive(self) -> list[RenderedAction]:
        return self._done.popleft()

    def render_now(
        self, actions: Sequence[NewAction], handbook: str, specs: Sequence[ActionSpec]
    ) -> list[RenderedAction]:
        inline = self._planner.local
        rendered: list[RenderedAction] = []
        for item in actions:
            row = item.row
            empty = row.extra.get("empty") is True  # nothing in it: nothing to plan or approve
            if inline and not empty:
                item.request = plan_request(item, handbook, specs)
                item.planned = self._planner.plan_local(item.request)
            status = "done" if empty else "planned" if inline else "needs_action"
            writes = [(f"{self._root}/{row.note_rel}", self.action_text(item, status=status).encode("utf-8"))]
            audit = [
                audit_record(
                    "action.created",
                    row.action_id,
                    source=row.source,
                    title=row.title,
                    source_ref=row.source_ref,
                )
            ]
            if item.planned is not None:
                writes.append(self.plan_write(row, item.planned))
                audit.append(plan_audit(row, item.planned))
            rendered.append(RenderedAction(item, writes, audit))
        return rendered

    def close(self) -> None:
        self._done.clear()

    @property
    def pid(self) -> int | None:
        return None

    def action_text(self, item: NewAction, *, status: str) -> str:
        row = item.row
        return rendering.action_note(
            action_id=row.action_id,
            source=row.source,
            received=item.received,
            title=row.title,
            status=status,
            attachments=row.attachments,
            body_text=item.text,
            source_ref=row.source_ref,
            sender=row.sender,
            subject=item.subject,
            intent=item.planned.intent if item.planned else None,
            extra=dict(row.extra),
            plan_rel=row.plan_rel if status != "needs_action" else None,
        )

    def plan_write(self, row: ActionRow, proposal: PlanProposal) -> tuple[str, bytes]:
        properties = rendering.plan_properties(
            plan_id=row.plan_id, action_id=row.action_id, proposal=proposal, created=datetime.now(UTC)
        )
        note_stem = row.note_rel.rpartition("/")[2].removesuffix(".md")
        body = rendering.plan_body(proposal=proposal, plan_id=row.plan_id, action_note_stem=note_stem)
        return f"{self._root}/{row.plan_rel}", render_note(properties, body).encode("utf-8")


def plan_audit(row: ActionRow, proposal: PlanProposal) -> AuditRecord:
    return audit_record(
        "plan.created",
        row.plan_id,
        action_id=row.action_id,
        action=proposal.action,
        planner=proposal.planner,
        risk=proposal.risk,
        planner_fallback_reason=proposal.fallback_reason,
        usage=proposal.usage,
        cost_usd=proposal.cost_usd,
    )


class RenderProcess:
    """The same rendering in a helper process, for the template planner or a planner that does not
    plan inline (`can_render_for`). The daemon's GIL stays free meanwhile for the threads that
    write and publish."""

    @staticmethod
    def can_render_for(planner: Planner) -> bool:
        return type(planner) is TemplatePlanner or not planner.local

    def __init__(self, root: Path, planner: Planner) -> None:
        self._root = os.fspath(root)
        self._planner = planner
        self._helper = HelperProcess(__name__, "note renderer process")
        self._sent: deque[tuple[Sequence[NewAction], str, Sequence[ActionSpec]]] = deque()

    def send(self, actions: Sequence[NewAction], handbook: str, specs: Sequence[ActionSpec]) -> None:
        self._helper.send(
            (
                self._root,
                self._planner.local,
                handbook,
                [(spec.name, spec.description, spec.params_schema) for spec in specs],
                [_encode_action(item) for item in actions],
            )
        )
        self._sent.append((actions, handbook, specs))

    @property
    def pid(self) -> int | None:
        return self._helper.pid

    def receive(self) -> list[RenderedAction]:
        actions, handbook, specs = self._sent.popleft()
        rendered: list[RenderedAction] = []
        for item, (writes, audit, proposal) in zip(actions, self._helper.receive(), strict=True):
            if proposal is not None:
                item.planned = PlanProposal(*proposal)
                item.request = plan_request(item, handbook, specs)
            rendered.append(
                RenderedAction(
                    item,
                    [(os.fsdecode(path), data) for path, data in writes],
                    [AuditRecord(*record) for record in audit],
                )
            )
        return rendered

    def close(self) -> None:
        self._helper.close()


def _encode_action(item: NewAction) -> tuple[Any, ...]:
    row = item.row
    return (
        row.action_id,
        row.source,
        row.source_ref,
        row.title,
        row.note_rel,
        row.plan_id,
        row.plan_rel,
        list(row.attachments),
        row.sender,
        dict(row.extra),
        item.text,
        item.received.isoformat(),
        item.subject,
        item.trusted,
    )


def _decode_action(encoded: tuple[Any, ...]) -> NewAction:
    (action_id, source, source_ref, title, note_rel, plan_id, plan_rel, attachments, sender, extra) = encoded[
        :10
    ]
    text, received, subject, trusted = encoded[10:]
    row = ActionRow(
        action_id=action_id,
        source=source,
        source_ref=source_ref,
        state="claimed",
        note_rel=note_rel,
        plan_id=plan_id,
        plan_rel=plan_rel,
        attachments=attachments,
        title=title,
        sender=sender,
        extra=extra,
    )
    return NewAction(
        row=row, text=text, received=datetime.fromisoformat(received), subject=subject, trusted=trusted
    )


def _render_request(request: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The helper: one batch per request."""
    root, inline, handbook, specs, actions = request
    planner: Planner = TemplatePlanner() if inline else _NotPlanning()
    renderer = ActionRenderer(Path(root), planner)
    items = [_decode_action(encoded) for encoded in actions]
    answers: list[tuple[Any, ...]] = []
    for done in renderer.render_now(items, handbook, [ActionSpec(*spec) for spec in specs]):
        planned = done.item.planned
        answers.append(
            (
                [(os.fsencode(path), data) for path, data in done.writes],
                [(record.event_id, record.day, record.line) for record in done.audit],
                None if planned is None else tuple(getattr(planned, name) for name in _PROPOSAL_FIELDS),
            )
        )
    return answers


class _NotPlanning(Planner):
    """The daemon's planner is not local: the helper renders action notes only."""

    name = "none"

    async def plan(self, request: PlanRequest) -> PlanProposal:  # pragma: no cover - never called
        raise NotImplementedError


if __name__ == "__main__":
    serve(_render_request)
