"""The wire form of distributed work: plan requests and proposals, execution jobs and results as
JSON objects. Nothing here names a vault path a worker would write: an execution job carries the
executor's name, its validated params and the attachments by content (`AttachmentRef`)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ai_employee.model.jobs import ExecutionJob, ExecutionResult
from ai_employee.model.plans import ActionSpec, PlanProposal, PlanRequest
from ai_employee.model.transcription import Transcript

PLAN = "plan"
EXECUTE = "execute"
EXTRACT = "extract"
TRANSCRIBE = "transcribe"


class WireError(ValueError):
    """A message that cannot be read: it goes to the dead-letter stream at once."""


def plan_job_key(request: PlanRequest) -> str:
    """One key per item and input: a transcript that re-plans an item is a new job."""
    digest = hashlib.sha256(f"{request.title}\n{request.text}".encode()).hexdigest()[:16]
    return f"plan:{request.action_id}:{digest}"


def execute_job_key(job: ExecutionJob) -> str:
    """One key per approved content and attempt: a retry after a failure is a new job."""
    return f"execute:{job.plan_id}:{job.digest[:16]}:{job.attempt}"


def encode_plan_request(request: PlanRequest) -> dict[str, Any]:
    return {
        "action_id": request.action_id,
        "title": request.title,
        "text": request.text,
        "source": request.source,
        "sender": request.sender,
        "received": request.received.isoformat(),
        "attachments": list(request.attachments),
        "handbook": request.handbook,
        "actions": [asdict(spec) for spec in request.actions],
        "trusted_sender": request.trusted_sender,
    }


def decode_plan_request(body: dict[str, Any]) -> PlanRequest:
    try:
        return PlanRequest(
            action_id=str(body["action_id"]),
            title=str(body["title"]),
            text=str(body["text"]),
            source=str(body["source"]),
            sender=body.get("sender"),
            received=datetime.fromisoformat(str(body["received"])),
            attachments=[str(name) for name in body.get("attachments", [])],
            handbook=str(body.get("handbook", "")),
            actions=[ActionSpec(**spec) for spec in body.get("actions", [])],
            trusted_sender=bool(body.get("trusted_sender", True)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"unreadable plan request: {error}") from error


def encode_proposal(proposal: PlanProposal) -> dict[str, Any]:
    return asdict(proposal)


def decode_proposal(body: dict[str, Any]) -> PlanProposal:
    try:
        return PlanProposal(**body)
    except TypeError as error:
        raise WireError(f"unreadable plan proposal: {error}") from error


@dataclass(frozen=True)
class AttachmentRef:
    """An attachment by content: inside Redis (`blob`, its SHA-256) or in the shared folder
    (`shared`, a path relative to `bus.shared_path`)."""

    name: str  # vault-relative, as the action lists it
    size: int
    sha256: str
    where: str  # blob | shared


@dataclass
class RemoteJob:
    """What a worker needs to run an approved job, and nothing of the vault."""

    plan_id: str
    action_id: str
    action: str
    params: dict[str, Any]
    attempt: int
    live: bool
    dry_run: bool
    action_title: str = ""
    attachments: list[AttachmentRef] = field(default_factory=list)


def encode_job(
    job: ExecutionJob, *, live: bool, dry_run: bool, attachments: list[AttachmentRef]
) -> dict[str, Any]:
    return {
        "plan_id": job.plan_id,
        "action_id": job.action_id,
        "action": job.executor.name,
        "params": job.params.model_dump(mode="json"),
        "attempt": job.attempt,
        "live": live,
        "dry_run": dry_run,
        "action_title": job.action_title,
        "attachments": [asdict(ref) for ref in attachments],
    }


def decode_job(body: dict[str, Any]) -> RemoteJob:
    try:
        return RemoteJob(
            plan_id=str(body["plan_id"]),
            action_id=str(body["action_id"]),
            action=str(body["action"]),
            params=dict(body["params"]),
            attempt=int(body["attempt"]),
            live=bool(body["live"]),
            dry_run=bool(body["dry_run"]),
            action_title=str(body.get("action_title", "")),
            attachments=[AttachmentRef(**ref) for ref in body.get("attachments", [])],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"unreadable execution job: {error}") from error


def extract_job_key(ref: AttachmentRef, content_type: str | None) -> str:
    """One key per content and what its reading depends on besides (the name's suffix, which
    tells the kind, and the content type): the same document asked twice is read once."""
    base = ref.name.rpartition("/")[2]
    suffix = base.rpartition(".")[2].lower() if "." in base else ""
    how = hashlib.sha256(f"{suffix}\n{content_type or ''}".encode()).hexdigest()[:8]
    return f"extract:{ref.sha256}:{how}"


def encode_extract(ref: AttachmentRef, content_type: str | None) -> dict[str, Any]:
    """A document to read, asked of a worker: the file by content, and its content type."""
    return {"file": asdict(ref), "content_type": content_type}


def decode_extract(body: dict[str, Any]) -> tuple[AttachmentRef, str | None]:
    try:
        content_type = body.get("content_type")
        return AttachmentRef(**body["file"]), str(content_type) if content_type is not None else None
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"unreadable extract request: {error}") from error


def encode_result(result: ExecutionResult) -> dict[str, Any]:
    return {"dry_run": result.dry_run, "result": result.result, "error": result.error}


def decode_result(body: dict[str, Any]) -> ExecutionResult:
    result = body.get("result")
    error = body.get("error")
    return ExecutionResult(
        dry_run=bool(body.get("dry_run", False)),
        result=result if isinstance(result, dict) else None,
        error=str(error) if error is not None else None,
    )


# --- transcribe: a voice note by content, and its transcript -------------------------------------


@dataclass(frozen=True)
class TranscribeRequest:
    audio: AttachmentRef  # the voice note by content (`name` is its file name)
    content_type: str | None
    duration_seconds: float | None  # what the sender reported


def transcribe_job_key(sha256: str) -> str:
    """One key per audio: the same voice note asked twice is transcribed once."""
    return f"transcribe:{sha256}"


def encode_transcribe(request: TranscribeRequest) -> dict[str, Any]:
    return {
        "audio": asdict(request.audio),
        "content_type": request.content_type,
        "duration_seconds": request.duration_seconds,
    }


def decode_transcribe(body: dict[str, Any]) -> TranscribeRequest:
    try:
        duration = body.get("duration_seconds")
        content_type = body.get("content_type")
        return TranscribeRequest(
            audio=AttachmentRef(**body["audio"]),
            content_type=str(content_type) if content_type is not None else None,
            duration_seconds=float(duration) if duration is not None else None,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"unreadable transcribe request: {error}") from error


def encode_transcript(transcript: Transcript) -> dict[str, Any]:
    return asdict(transcript)


def decode_transcript(body: dict[str, Any]) -> Transcript:
    try:
        return Transcript(
            text=str(body["text"]),
            duration_seconds=float(body["duration_seconds"]),
            cost_usd=float(body["cost_usd"]),
            engine=str(body["engine"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"unreadable transcript: {error}") from error
