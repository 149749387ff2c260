"""Findings and how they are shown: text for a person, JSON for a machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ai_employee.observability.logging import redact_text


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, name: str, detail: str, **data: Any) -> Check:
        return cls(name, Status.OK, detail, None, data)

    @classmethod
    def warn(cls, name: str, detail: str, fix: str, **data: Any) -> Check:
        return cls(name, Status.WARN, detail, fix, data)

    @classmethod
    def fail(cls, name: str, detail: str, fix: str, **data: Any) -> Check:
        return cls(name, Status.FAIL, detail, fix, data)

    def redacted(self) -> Check:
        """The same finding with every registered secret, URL password and bearer scrubbed."""
        fix = None if self.fix is None else redact_text(self.fix)
        return Check(self.name, self.status, redact_text(self.detail), fix, self.data)

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "status": self.status.value, "detail": self.detail}
        if self.fix is not None:
            entry["fix"] = self.fix
        if self.data:
            entry["data"] = self.data
        return entry


@dataclass
class Report:
    version: str
    vault: str
    checks: list[Check]

    @property
    def failed(self) -> bool:
        return any(check.status is Status.FAIL for check in self.checks)

    def counts(self) -> dict[str, int]:
        return {status.value: sum(1 for c in self.checks if c.status is status) for status in Status}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "vault": self.vault,
            "ok": not self.failed,
            "summary": self.counts(),
            "checks": [check.to_dict() for check in self.checks],
        }

    def to_text(self) -> str:
        width = max((len(check.name) for check in self.checks), default=10)
        lines = [f"ai-employee doctor {self.version}, vault {self.vault}", ""]
        for check in self.checks:
            lines.append(f"  {check.status.value:<4}  {check.name:<{width}}  {check.detail}")
            if check.fix:
                lines.append(f"  {'':<4}  {'':<{width}}  fix: {check.fix}")
        counts = self.counts()
        lines += ["", f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"]
        return "\n".join(lines)
