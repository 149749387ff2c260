"""Checks on untrusted input and on what a model answered.

A model that reads an email can be talked into anything the email asks. It has no tool that
acts, so what an injection can reach is the plan: its params (shown to the human, who approves
them), and whether the plan is approved without a human. These checks keep that small:
- `injection_signals`: the message tries to instruct the assistant. Such a plan is marked high
  risk with a warning, and is never auto-approved.
- `answer_problems`: the model's answer carries a credential, a chunk of the handbook, or a path
  that leaves the vault or targets the daemon's state folders. Such an answer is refused and the
  template planner plans instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, SecretStr

from ai_employee.vault.layout import Folder

#: Enough of a message to find an attempt; the whole capped input is checked by the LLM planners.
SCAN_CHARS = 20_000

_INJECTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern, re.IGNORECASE | re.DOTALL))
    for label, pattern in (
        (
            "asks to ignore instructions",
            r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}?"
            r"\b(?:instructions?|rules?|prompts?|directions?|guidelines?|policy|policies|handbook)\b",
        ),
        ("addresses the system prompt", r"\b(?:system|developer)\s+(?:prompt|message|instructions?)\b"),
        (
            "claims a new role",
            r"\byou\s+are\s+now\b|\bnew\s+instructions?\b|\bact\s+as\s+(?:an?\s+)?(?:admin|root)",
        ),
        (
            "forges a delimiter",
            r"<\s*/?\s*(?:untrusted_message|company_handbook|system|assistant|tool_use|tool|instructions?)\b",
        ),
        (
            "asks for approval",
            r"\bauto[\s_-]?approv\w*|\bpre[\s_-]?approved\b|\balready\s+approved\b|\bapprove\s+(?:this|it|the\s+plan)"
            r"|\bmark\w*\s+(?:it|this|the\s+plan)\s+(?:as\s+)?approved\b|\brequires_approval\b"
            r"|\b(?:skip|bypass|without)\s+(?:the\s+)?(?:human\s+)?(?:approval|review)\b|\bno\s+approval\b",
        ),
        (
            "asks to reveal secrets",
            r"\b(?:reveal|print|repeat|output|show|leak|send|include|tell|share|copy|paste|dump|list|email)\b.{0,60}?"
            r"\b(?:api[\s_-]?keys?|secrets?|tokens?|passwords?|credentials?|handbook|system\s+prompt"
            r"|your\s+instructions|environment\s+variables?|env\s+vars?|config(?:uration)?\s+file)\b",
        ),
        (
            "names a path outside the vault",
            r"(?:\.\./|\.\.\\|(?<![\w.])/(?:etc|root|home|usr|var|tmp)/|~/|\.ssh\b|\.ai-employee\b"
            r"|\b[A-Za-z]:\\)",
        ),
        (
            "names a state folder",
            r"\b(?:Approved|Needs_Action|Plans|Rejected|Done|Failed|Quarantine|Logs)(?:/|\s+folder\b)",
        ),
        (
            "carries plan properties",
            r"(?m)^\s*(?:type:\s*plan|status:\s*approved|requires_approval:|approved:\s*true)\s*$",
        ),
        (
            "asks to run a command",
            r"\b(?:shell|terminal|command\s+line)\s+tool\b|\b(?:run|execute)\b[^\n]{0,40}?"
            r"(?:`|\bcurl\b|\bwget\b|\bbash\b|\bsudo\b|\bpowershell\b|\|\s*sh\b)",
        ),
        (
            "asks for more than one action",
            r"\b(?:second|another|additional|extra|two|multiple)\s+(?:actions?|plans?|tool\s+calls?|work\s+orders)\b"
            r"|\b(?:also|additionally|then)\s+(?:call|run|execute|invoke)\b",
        ),
        (
            "asks to switch the action",
            r"\b(?:do\s+not|don't|never|no\s+need\s+to)\s+(?:create|open|file|make|raise|log)\b.{0,80}?\binstead\b",
        ),
        (
            "asks to send to an address",
            r"\b(?:send|forward|email|mail|cc|bcc|assign|deliver|post|upload)\b[^\n]{0,80}?"
            r"(?:[\w.+-]+@[\w-]+(?:\.[\w-]+)+|https?://)",
        ),
        (
            "tells the planner what to do",
            r"\b(?:planner|ai\s+(?:employee|assistant|agent)|language\s+model|llm|claude|gpt|chatgpt)\b[^\n]{0,40}?"
            r"\b(?:must|should|shall|will|needs?\s+to|has\s+to)\b",
        ),
    )
)


def injection_signals(*texts: str) -> list[str]:
    """Labels of the ways `texts` try to instruct the assistant; empty for an ordinary message."""
    found: list[str] = []
    for text in texts:
        head = text[:SCAN_CHARS]
        for label, pattern in _INJECTION_PATTERNS:
            if label not in found and pattern.search(head):
                found.append(label)
    return found


# Credentials of services we talk to, by shape, for answers that carry one we never gave the model.
_KEY_SHAPES = re.compile(
    r"sk-ant-[A-Za-z0-9_-]{10,}|\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}|\bxox[abprse]-[A-Za-z0-9-]{10,}"
    r"|\b\d{6,12}:[A-Za-z0-9_-]{30,}\b|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
)

#: Vault folders the daemon owns: a model must not aim a write at them (a note in Approved/ could
#: pass for an approved plan), nor at dot-folders (.ai-employee holds the state database).
STATE_FOLDERS = frozenset(folder.value.lower() for folder in Folder if folder != Folder.NOTES)
_PATH_KEYS = frozenset({"folder", "path", "file", "filename", "file_name", "directory", "dir", "target"})


def collect_secrets(settings: BaseModel) -> list[str]:
    """Every configured secret value (SecretStr fields, any depth), longest first."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, SecretStr):
            value = node.get_secret_value()
            if len(value) >= 6:
                found.add(value)
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))

    walk(settings)
    return sorted(found, key=len, reverse=True)


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON-like tree, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def answer_problems(
    answer: Any,
    *,
    secrets: Iterable[str],
    message: str,
    handbook: str,
) -> list[str]:
    """Why a model's answer must be refused (empty: nothing found). Never echoes a secret."""
    problems: list[str] = []
    texts = list(strings_in(answer))
    joined = "\n".join(texts)
    if any(secret in joined for secret in secrets):
        problems.append("the answer contains a configured credential")
    else:
        shapes = {match.group(0) for match in _KEY_SHAPES.finditer(joined)}
        if any(shape not in message for shape in shapes):
            problems.append("the answer contains something shaped like a credential")
    if handbook_leak(joined, handbook):
        problems.append("the answer copies a large part of the company handbook")
    params = answer.get("params") if isinstance(answer, dict) else None
    if isinstance(params, dict):
        problems.extend(path_problems(params))
    return problems


def handbook_leak(text: str, handbook: str) -> bool:
    """True when `text` quotes the handbook at length (300+ characters, or half of a short one).

    A plan may quote a rule; it must not carry the handbook to an outside service.
    """
    lines = {line.strip() for line in handbook.splitlines() if len(line.strip()) >= 30}
    if not lines:
        return False
    copied = sum(len(line) for line in lines if line in text)
    total = sum(len(line) for line in lines)
    return copied >= 300 or (total >= 60 and copied * 2 >= total)


def path_problems(params: dict[str, Any]) -> list[str]:
    """Path-like params must stay inside the vault and out of its state and hidden folders."""
    problems: list[str] = []
    for key, value in params.items():
        if key.lower() not in _PATH_KEYS or not isinstance(value, str):
            continue
        raw = value.strip()
        parts = [part for part in raw.replace("\\", "/").split("/") if part not in ("", ".")]
        if (
            raw.startswith(("/", "\\", "~"))
            or re.match(r"^[A-Za-z]:", raw)
            or "\x00" in raw
            or any(part == ".." or part.startswith(".") for part in parts)
        ):
            problems.append(f"params.{key} leads outside the vault or into a hidden folder")
        elif parts and parts[0].lower() in STATE_FOLDERS:
            problems.append(f"params.{key} targets the daemon's state folder {parts[0]}")
    return problems


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """A copy of a JSON-like tree with every configured secret replaced by [REDACTED]."""
    secrets = list(secrets)
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "[REDACTED]")
        return value
    if isinstance(value, dict):
        return {key: redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item, secrets) for item in value]
    return value
