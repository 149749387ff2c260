"""Notes are Markdown with YAML frontmatter: the one parser and renderer.

Parsing is safe by construction: libyaml's C safe loader where available, anchors and
aliases refused (no alias bombs), frontmatter capped at 64 KiB. The note models, which check
the types, are in `vault.note_models` (pydantic is not needed to render a note).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import yaml

try:  # the C loader and dumper are 5-7x faster (DESIGN.md: 6 s vs 34 s per 100k notes)
    from yaml import CSafeDumper as SafeDumper
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover
    from yaml import SafeDumper, SafeLoader  # type: ignore[assignment]

MAX_FRONTMATTER_BYTES = 64 * 1024
FENCE = "---"


class NoteError(ValueError):
    """A note cannot be read; the message says why, for the human."""


def split_note(text: str) -> tuple[str, str]:
    """Return (frontmatter YAML, body). Raises NoteError without a frontmatter block."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.startswith(FENCE + "\n") and not text.startswith(FENCE + "\r\n"):
        raise NoteError("the note has no YAML frontmatter (it must start with a '---' line)")
    start = text.index("\n") + 1
    end = _closing_fence(text, start)
    if end < 0:
        if len(text) - start > MAX_FRONTMATTER_BYTES:  # the search stopped at the cap
            raise NoteError(
                f"the note's frontmatter is larger than {MAX_FRONTMATTER_BYTES // 1024} KiB"
                " (or is not closed by a '---' line)"
            )
        raise NoteError("the note's frontmatter is not closed by a '---' line")
    frontmatter = text[start:end]
    if len(frontmatter.encode("utf-8")) > MAX_FRONTMATTER_BYTES:
        raise NoteError(f"the note's frontmatter is larger than {MAX_FRONTMATTER_BYTES // 1024} KiB")
    after = text.find("\n", end)
    body = "" if after < 0 else text[after + 1 :]
    return frontmatter, body


def _closing_fence(text: str, start: int) -> int:
    if text.startswith(FENCE, start) and text[start + 3 : start + 4] in ("\n", "\r", ""):
        return start
    position = start
    limit = start + MAX_FRONTMATTER_BYTES + 8
    while True:
        found = text.find("\n" + FENCE, position, limit)
        if found < 0:
            return -1
        tail = text[found + 4 : found + 5]
        if tail in ("\n", "\r", ""):
            return found + 1
        position = found + 1


_ANCHOR_OR_ALIAS = re.compile(r"[&*]")


def parse_yaml_mapping(source: str) -> dict[str, Any]:
    """Parse YAML that must be a mapping, refusing anchors and aliases."""
    if _ANCHOR_OR_ALIAS.search(source):
        _refuse_anchors(source)
    try:
        loaded = yaml.load(source, Loader=SafeLoader)
    except yaml.YAMLError as error:
        raise NoteError(f"the frontmatter is not valid YAML: {_short_yaml_error(error)}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise NoteError("the frontmatter must be a mapping of properties")
    return {str(key): value for key, value in loaded.items()}


def _refuse_anchors(source: str) -> None:
    try:
        for event in yaml.parse(source, Loader=SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise NoteError("the frontmatter uses YAML anchors or aliases, which are not allowed")
    except yaml.YAMLError as error:
        raise NoteError(f"the frontmatter is not valid YAML: {_short_yaml_error(error)}") from error


def _short_yaml_error(error: yaml.YAMLError) -> str:
    text = str(error).replace("\n", " ")
    return text[:300]


def parse_note(text: str) -> tuple[dict[str, Any], str]:
    frontmatter, body = split_note(text)
    return parse_yaml_mapping(frontmatter), body


_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_./ -]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
#: Characters JSON leaves raw that YAML refuses (DEL, C1 controls, U+FFFE/U+FFFF) or reads as line
#: breaks (NEL, U+2028/9): text decoded as Latin-1 carries C1 controls. PyYAML escapes them.
_NOT_JSON_SAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufffe\uffff]")
#: json.dumps(value, ensure_ascii=False) for a str, without building an encoder per call
_json_string = json.JSONEncoder(ensure_ascii=False).encode


class _NeedsFullDumper(Exception):
    """A value the fast emitter does not handle; PyYAML's dumper takes the whole tree."""


#: Short strings already written as scalars: most values repeat from note to note (types,
#: statuses, sources, actions, the second a burst is in), and a lookup is a tenth of deciding again.
_STRING_SCALARS: dict[str, str] = {}
_STRING_SCALARS_MAX = 4096
_STRING_SCALAR_CACHED_CHARS = 80


def _scalar(value: Any) -> str:
    if type(value) is str:
        if len(value) > _STRING_SCALAR_CACHED_CHARS:
            return _string_scalar(value)
        written = _STRING_SCALARS.get(value)
        if written is None:
            written = _string_scalar(value)
            if len(_STRING_SCALARS) >= _STRING_SCALARS_MAX:
                _STRING_SCALARS.clear()
            _STRING_SCALARS[value] = written
        return written
    return _other_scalar(value)


def _string_scalar(value: str) -> str:
    if (
        _PLAIN.fullmatch(value)
        and not value.endswith((" ", "-", "."))
        and "  " not in value
        and " -" not in value
        and value.lower() not in _RESERVED_WORDS
    ):
        return value
    if _NOT_JSON_SAFE.search(value):
        raise _NeedsFullDumper
    # a JSON string is a valid YAML double-quoted scalar
    return _json_string(value)


def _other_scalar(value: Any) -> str:
    if isinstance(value, str):  # a subclass of str: decided each time, never cached
        return _string_scalar(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _NeedsFullDumper
        text = repr(value)
        if "e" in text and "." not in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    raise _NeedsFullDumper


def _emit(value: Any, indent: str, out: list[str]) -> None:
    """Block-style mapping entries or list items under `indent` (the caller wrote the key)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str or key not in _CHECKED_KEYS:
                _check_key(key)
            if isinstance(item, dict):
                if item:
                    out.append(f"{indent}{key}:\n")
                    _emit(item, indent + "  ", out)
                else:
                    out.append(f"{indent}{key}: {{}}\n")
            elif isinstance(item, list):
                if item:
                    out.append(f"{indent}{key}:\n")
                    _emit(item, indent, out)
                else:
                    out.append(f"{indent}{key}: []\n")
            else:
                out.append(f"{indent}{key}: {_scalar(item)}\n")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                raise _NeedsFullDumper
            out.append(f"{indent}- {_scalar(item)}\n")
    else:
        raise _NeedsFullDumper


#: Keys `_check_key` accepted (plain `str` only): notes use a few dozen, so each is checked once,
#: not once per note (bounded all the same: params may bring their own keys).
_CHECKED_KEYS: set[str] = set()
_CHECKED_KEYS_MAX = 4096


def _check_key(key: Any) -> None:
    """A key the fast emitter writes as it is: an identifier YAML does not read as a bool or null."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key.lower() in _RESERVED_WORDS:
        raise _NeedsFullDumper
    if type(key) is str and len(_CHECKED_KEYS) < _CHECKED_KEYS_MAX:
        _CHECKED_KEYS.add(key)


def dump_yaml(properties: dict[str, Any]) -> str:
    """Block-style YAML. Notes' properties are simple trees: a fast emitter writes them (the C dumper
    costs ~150 us a note, which a 10,000-file burst feels); anything it does not handle goes to
    PyYAML. Its output is checked to parse back to the same tree in the tests."""
    out: list[str] = []
    try:
        _emit(properties, "", out)
    except _NeedsFullDumper:
        return _dump_with_pyyaml(properties)
    return "".join(out)


class _NoAliasDumper(SafeDumper):
    """Never anchors and aliases: our own notes must pass our own parser, which refuses them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump_with_pyyaml(properties: dict[str, Any]) -> str:
    dumped: str = yaml.dump(
        properties,
        Dumper=_NoAliasDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=4096,
    )
    return dumped


def render_note(properties: dict[str, Any], body: str) -> str:
    if body and not body.startswith("\n"):
        body = "\n" + body
    if body and not body.endswith("\n"):
        body += "\n"
    return f"{FENCE}\n{dump_yaml(properties)}{FENCE}\n{body}"


#: Characters a wikilink's target cannot hold (Obsidian reads them as its own syntax).
_NOT_IN_WIKILINK = re.compile(r"[\[\]|#^]")


def wikilink(vault_relative: str, label: str | None = None) -> str:
    """A link Obsidian opens: `[[path]]` (a note without its .md), or, for a name holding one of
    `[ ] | # ^`, a Markdown link with the path percent-encoded (what Obsidian writes itself)."""
    if _NOT_IN_WIKILINK.search(vault_relative):
        text = (label or vault_relative.rpartition("/")[2]).replace("[", "\\[").replace("]", "\\]")
        return f"[{text}]({quote(vault_relative, safe='/')})"
    target = vault_relative[:-3] if vault_relative.endswith(".md") else vault_relative
    return f"[[{target}|{label}]]" if label else f"[[{target}]]"


def json_block(value: Any) -> str:
    return "```json\n" + _indented_json(value) + "\n```"


#: one value as `json_block` writes it (one encoder, not one per call)
_json_value = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _indented_json(value: Any) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=False, default=str)`. With an indent, json runs its
    pure-Python encoder; a flat mapping (what plans' params usually are) is written here from the C
    encoder's values instead, in the same layout, in a third of the time."""
    if type(value) is dict and value:
        members = []
        for key, item in value.items():
            if type(key) is not str or isinstance(item, (dict, list, tuple)):
                break
            members.append(f"  {_json_value(key)}: {_json_value(item)}")
        else:
            return "{\n" + ",\n".join(members) + "\n}"
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# --- note models -----------------------------------------------------------------------
