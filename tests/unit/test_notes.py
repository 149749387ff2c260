"""Notes: the one frontmatter parser and renderer, its safety limits, and the plan model."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ai_employee.vault.note_models import read_plan
from ai_employee.vault.notes import (
    MAX_FRONTMATTER_BYTES,
    NoteError,
    parse_note,
    parse_yaml_mapping,
    render_note,
)

PLAN: dict[str, Any] = {
    "id": "plan-20261121-101500-a1b2c3",
    "type": "plan",
    "action_id": "act-20261121-101500-a1b2c3",
    "action": "vault.note",
    "params": {"title": "Pump 3", "content": "leaking"},
    "status": "pending_approval",
    "planner": "template",
    "risk": "low",
    "created": "2026-11-21T10:15:02+00:00",
}


def plan_text(**changes: Any) -> str:
    properties = {**PLAN, **changes}
    return render_note({key: value for key, value in properties.items() if value is not None}, "# Plan\n")


def test_rendered_note_parses_back_to_the_same_properties_and_body() -> None:
    properties = {
        "id": "act-1",
        "title": "Pump 3: leaking — «urgent»",
        "attachments": ["[[Attachments/x]]"],
        "params": {"n": 3, "ok": True, "nested": {"a": [1, 2]}},
        "empty": "",
    }
    body = "# Title\n\nLine one\n---\nnot a fence for the parser once the frontmatter is closed\n"
    parsed, parsed_body = parse_note(render_note(properties, body))
    assert parsed == properties
    assert parsed_body.strip("\n") == body.strip("\n")


def test_rewriting_a_parsed_note_changes_nothing() -> None:
    """Notes are rewritten at each status change; strings that look like dates, numbers or booleans
    must stay strings, and the body must not grow blank lines."""
    text = render_note(
        {"id": "x", "received": "2026-11-21T10:15:00+00:00", "code": "007", "flag": "yes"}, "# Title\n\nbody"
    )
    properties, body = parse_note(text)
    assert properties == {"id": "x", "received": "2026-11-21T10:15:00+00:00", "code": "007", "flag": "yes"}
    assert render_note(properties, body) == text


TRICKY_CHARACTERS = [chr(code) for code in range(0x300)] + [
    "\u2028",
    "\u2029",
    "\ufeff",
    "\ufffe",
    "\uffff",
    "\u3000",
    "\U0001f600",
    "\uff1a",
    "\uff03",
]


def test_every_character_in_a_property_survives_rendering_and_parsing() -> None:
    """Text decoded as Latin-1 carries C1 controls (0x80-0x9f); web text carries U+2028. A note
    holding them must still parse, or its plan can never run."""
    broken = []
    for character in TRICKY_CHARACTERS:
        for text in (character, f"a{character}b", f"{character}x", f"x{character}"):
            properties = {"title": text, "params": {"content": text, "tags": [text]}}
            try:
                parsed, _ = parse_note(render_note(properties, "body"))
            except NoteError as error:
                broken.append(f"{text!r}: {error}")
                continue
            if parsed != properties:
                broken.append(f"{text!r}: read back as {parsed['title']!r}")
    assert broken == []


@pytest.mark.parametrize(
    "value",
    [
        "yes",
        "No",
        "ON",
        "null",
        "~",
        "true",
        "1",
        "-1",
        "0x1f",
        "1e3",
        "1.5",
        ".inf",
        "2026-11-21",
        "10:15",
        "a: b",
        "- item",
        "#tag",
        "[[Link]]",
        "{x}",
        "&anchor",
        "*alias",
        "!tag",
        "%x",
        "@x",
        "`x`",
        "x ",
        " x",
        "",
        "a  b",
        "Pump 3 - line 2",
        "ends with -",
        "ends with.",
        "'quoted'",
        '"quoted"',
        "multi\nline",
        "tab\there",
        "back\\slash",
    ],
)
def test_strings_that_look_like_other_yaml_types_stay_strings(value: str) -> None:
    properties = {"value": value, "nested": {"value": value}, "list": [value]}
    parsed, _ = parse_note(render_note(properties, ""))
    assert parsed == properties


def test_note_without_frontmatter_is_refused() -> None:
    with pytest.raises(NoteError, match="no YAML frontmatter"):
        parse_note("# Just markdown\n")


def test_note_with_unclosed_frontmatter_is_refused() -> None:
    with pytest.raises(NoteError, match="not closed"):
        parse_note("---\nid: x\ntitle: y\n")


def test_empty_frontmatter_is_an_empty_mapping() -> None:
    assert parse_note("---\n---\nbody") == ({}, "body")


def test_byte_order_mark_and_windows_line_endings_are_accepted() -> None:
    properties, body = parse_note("\ufeff---\r\nid: x\r\ntitle: y\r\n---\r\nbody\r\n")
    assert properties == {"id": "x", "title": "y"}
    assert body.strip() == "body"


def test_frontmatter_larger_than_64_kib_is_refused_and_says_so() -> None:
    text = "---\nk: " + "x" * (MAX_FRONTMATTER_BYTES + 10) + "\n---\nbody\n"
    with pytest.raises(NoteError, match="larger than 64 KiB"):
        parse_note(text)


def test_frontmatter_over_64_kib_in_bytes_but_not_in_characters_is_refused() -> None:
    text = "---\nk: " + "é" * (MAX_FRONTMATTER_BYTES // 2 + 100) + "\n---\nbody\n"
    with pytest.raises(NoteError, match="larger than 64 KiB"):
        parse_note(text)


def test_anchor_and_alias_are_refused() -> None:
    with pytest.raises(NoteError, match="anchors or aliases"):
        parse_note("---\nbase: &b {title: x}\nparams: *b\n---\n")


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    text = "---\n" + "\n".join(lines) + "\n---\n"
    started = time.perf_counter()
    with pytest.raises(NoteError, match="anchors or aliases"):
        parse_note(text)
    assert time.perf_counter() - started < 0.5


def test_ampersand_and_asterisk_in_plain_values_are_not_mistaken_for_aliases() -> None:
    assert parse_yaml_mapping("title: R&D *urgent* & more\n") == {"title": "R&D *urgent* & more"}


def test_frontmatter_that_is_a_list_is_refused() -> None:
    with pytest.raises(NoteError, match="must be a mapping"):
        parse_note("---\n- a\n- b\n---\n")


def test_frontmatter_that_is_a_scalar_is_refused() -> None:
    with pytest.raises(NoteError, match="must be a mapping"):
        parse_note("---\njust text\n---\n")


def test_invalid_yaml_is_refused_with_a_short_reason() -> None:
    with pytest.raises(NoteError, match="not valid YAML") as caught:
        parse_note("---\nparams: {title: [unclosed\n---\n")
    assert len(str(caught.value)) < 400


def test_python_tags_are_not_constructed() -> None:
    with pytest.raises(NoteError, match="not valid YAML"):
        parse_note("---\nx: !!python/object/apply:os.system ['true']\n---\n")


def test_valid_plan_is_read() -> None:
    plan, properties, body = read_plan(plan_text())
    assert plan.id == PLAN["id"]
    assert plan.params == {"title": "Pump 3", "content": "leaking"}
    assert properties["status"] == "pending_approval"
    assert body.strip() == "# Plan"


def test_plan_missing_a_required_property_is_refused_naming_it() -> None:
    with pytest.raises(NoteError, match="action_id: Field required"):
        read_plan(plan_text(action_id=None))


def test_plan_with_params_that_are_not_a_mapping_is_refused() -> None:
    with pytest.raises(NoteError, match="params"):
        read_plan(plan_text(params="title: x"))


def test_plan_with_unknown_risk_is_refused() -> None:
    with pytest.raises(NoteError, match="risk"):
        read_plan(plan_text(risk="extreme"))


def test_plan_id_with_path_characters_is_refused() -> None:
    with pytest.raises(NoteError, match="id must be letters"):
        read_plan(plan_text(id="../../etc/passwd"))


def test_note_of_another_type_is_not_a_plan() -> None:
    with pytest.raises(NoteError, match="not a plan note"):
        read_plan(plan_text(type="action"))
