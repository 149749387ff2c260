"""How a plan note carries its parameters, its outcome and its decision (decision 0009).

A plan's parameters are flat, typed properties, one per parameter, next to the plan's own
properties, so that Obsidian's Properties panel edits them. Which property is which:

- the plan's own keys (`PLAN_KEYS`), the keys starting with a reserved prefix
  (`RESERVED_PREFIXES`: `planner_`, `decided_`, `result_`, `executed_`, `aie_` and the doors'
  `slack_`, `telegram_`, `whatsapp_`, `email_`), the result summaries (`SUMMARY_KEYS`) and
  Obsidian's own (`tags`, `aliases`, `cssclasses`) are never parameters;
- every other property is a parameter of the action, so a misspelt one is refused at
  execution (the executors' params refuse unknown names) instead of being silently ignored;
- a parameter whose name is one of the above is written as `param_<name>` (and read back so);
- a nested value (a mapping, or a list holding mappings or lists) is one text property holding
  its JSON, decoded where the action's params expect a mapping or a list
  (`model.executor.Executor.validate`);
- an empty property is a parameter not given (its default applies).

Older notes kept the parameters in one nested `params` mapping and the result in a nested
`result` mapping: they are still read (`params_of`), and `vault.migrations` rewrites them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ai_employee.vault.notes import json_block

#: The plan's own properties (and the old nested forms): never parameters.
PLAN_KEYS = frozenset(
    {
        "id",
        "type",
        "action_id",
        "action",
        "status",
        "planner",
        "risk",
        "created",
        "intent",
        "confidence",
        "dry_run",
        "error",
        "rejection_reason",
        "params",  # the old nested form
        "result",  # the old nested form
    }
)
#: Properties Obsidian gives a meaning of its own.
OBSIDIAN_KEYS = frozenset({"tags", "aliases", "cssclasses"})
#: Flat summaries of a result (besides the `result_*` ones).
SUMMARY_KEYS = frozenset({"work_order", "manus_task"})
#: Prefixes of properties the daemon and its doors keep in a plan note (`slack_ts`, ...): a new
#: property of ours takes one of these, or a name in PLAN_KEYS, or it is read as a parameter.
RESERVED_PREFIXES = (
    "planner_",
    "decided_",
    "result_",
    "executed_",
    "aie_",
    "slack_",
    "telegram_",
    "whatsapp_",
    "email_",
)
#: What a parameter whose name is reserved is written as.
PARAM_PREFIX = "param_"
#: The decision stamps: who, through which door, when.
DECISION_KEYS = ("decided_by", "decided_via", "decided_at")


def is_reserved(name: str) -> bool:
    """A property that is never a parameter."""
    return (
        name in PLAN_KEYS
        or name in OBSIDIAN_KEYS
        or name in SUMMARY_KEYS
        or name.startswith(RESERVED_PREFIXES)
    )


def property_name(param: str) -> str:
    """The property a parameter is written as."""
    return PARAM_PREFIX + param if is_reserved(param) or param.startswith(PARAM_PREFIX) else param


def param_properties(params: Mapping[str, Any]) -> dict[str, Any]:
    """The flat properties that carry `params` (None values left out: an empty property is unset)."""
    flat: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        flat[property_name(str(name))] = _flat_value(value)
    return flat


def _flat_value(value: Any) -> Any:
    if isinstance(value, Mapping) or (
        isinstance(value, (list, tuple)) and any(isinstance(item, (Mapping, list, tuple)) for item in value)
    ):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, tuple):
        return list(value)
    return value


def params_of(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a plan note carries, in either form; empty properties left out."""
    nested = properties.get("params")
    if isinstance(nested, Mapping):
        return {str(name): value for name, value in nested.items() if value is not None}
    params: dict[str, Any] = {}
    for name, value in properties.items():
        if value is None:
            continue
        if name.startswith(PARAM_PREFIX) and len(name) > len(PARAM_PREFIX):
            params[name[len(PARAM_PREFIX) :]] = value
        elif not is_reserved(name):
            params[name] = value
    return params


def without_params(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's properties with every parameter (either form) taken out."""
    return {name: value for name, value in properties.items() if name != "params" and is_reserved(name)}


def with_params(properties: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """`properties` carrying exactly `params` as flat properties, placed after `action`."""
    kept = without_params(properties)
    flat = param_properties(params)
    ordered: dict[str, Any] = {}
    for name, value in kept.items():
        ordered[name] = value
        if name == "action":
            ordered.update(flat)
    for name, value in flat.items():
        ordered.setdefault(name, value)
    return ordered


# --- the result's flat summary --------------------------------------------------------------

#: result key -> summary property, first found wins per property
_SUMMARY_FROM_RESULT = (
    ("custom_id", "work_order"),
    ("work_order_id", "work_order"),
    ("task_id", "manus_task"),
    ("url", "result_url"),
    ("task_url", "result_url"),
    ("note", "result_note"),
    ("path", "result_path"),
    ("credit_usage", "result_credits"),
)


def result_summary(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The flat properties that summarise a result (its whole text goes in the body)."""
    summary: dict[str, Any] = {}
    if not result:
        return summary
    for key, name in _SUMMARY_FROM_RESULT:
        value = result.get(key)
        if name in summary or value is None or isinstance(value, (Mapping, list, bool)):
            continue
        summary[name] = str(value) if name == "work_order" else value
    return summary


def without_outcome(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The properties with an earlier run's outcome taken out (a retry writes its own)."""
    return {
        name: value
        for name, value in properties.items()
        if name not in ("result", "error", "executed_at", "dry_run")
        and name not in SUMMARY_KEYS
        and not name.startswith("result_")
    }


def without_decision(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The properties with an earlier decision taken out (so a new one is not credited to it)."""
    return {
        name: value
        for name, value in properties.items()
        if name not in DECISION_KEYS and name != "rejection_reason"
    }


# --- body sections -----------------------------------------------------------------------

SENT_HEADING = "## What will be sent"
SENT_INTRO = (
    "_Made from the properties above each time the plan changes: edit the properties, not this"
    " block. This is what runs when the plan is approved._"
)
#: what the intro says once the plan has run
SENT_INTRO_RAN = "_What ran: the properties above, as they were approved._"
DECIDE_HEADING = "## Decide"
DECISION_HEADING = "## Decision"


def sent_section(params: Mapping[str, Any], problem: str | None = None) -> str:
    """The "What will be sent" section: made from the properties, never read back."""
    lines = [
        SENT_HEADING,
        SENT_INTRO,
        "",
        json_block(dict(params)),
    ]
    if problem:
        lines += ["", f"> [!warning] As it stands this plan would fail: {problem}"]
    return "\n".join(lines) + "\n"


_HEADING = re.compile(r"^## ", re.MULTILINE)


#: Sections that are one paragraph: what a person writes after them is theirs, not the section's.
_ONE_PARAGRAPH = frozenset({"## Decide"})


def find_section(body: str, heading: str) -> tuple[int, int] | None:
    """(start, end) of the section under `heading` (a `## ` line) up to the next `## ` heading
    (for a one-paragraph section such as "Decide", to the end of its paragraph)."""
    match = re.search(rf"^{re.escape(heading)}[ \t]*$", body, re.MULTILINE)
    if match is None:
        return None
    start = match.start()
    if heading in _ONE_PARAGRAPH:
        blank = body.find("\n\n", match.end())
        following_heading = _HEADING.search(body, match.end())
        ends = [len(body)]
        if blank >= 0:
            ends.append(blank + 1)
        if following_heading is not None:
            ends.append(following_heading.start())
        return start, min(ends)
    following = _HEADING.search(body, match.end())
    in_fence = _fenced_headings(body, match.end())
    while following is not None and following.start() in in_fence:
        following = _HEADING.search(body, following.end())
    return start, len(body) if following is None else following.start()


def _fenced_headings(body: str, start: int) -> set[int]:
    """Offsets of `## ` lines inside ``` fences after `start` (they are not headings)."""
    inside: set[int] = set()
    fenced = False
    offset = start
    for line in body[start:].splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and line.startswith("## "):
            inside.add(offset)
        offset += len(line)
    return inside


def replace_section(body: str, heading: str, section: str, *, before: str | None = None) -> str:
    """`body` with the section under `heading` replaced by `section` (which carries its heading).

    A missing section is put before the section `before` when there is one, else at the end."""
    if section and not section.endswith("\n"):
        section += "\n"
    found = find_section(body, heading)
    if found is not None:
        start, end = found
        tail = body[end:]
        return (
            body[:start] + section + ("\n" if tail and section and not tail.startswith("\n") else "") + tail
        )
    if before is not None:
        anchor = find_section(body, before)
        if anchor is not None:
            return body[: anchor[0]] + section + ("\n" if section else "") + body[anchor[0] :]
    if not section:
        return body
    return body.rstrip("\n") + "\n\n" + section
