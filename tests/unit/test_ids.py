"""Ids and file names: readable, sortable, and safe whatever name or title came in."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from ai_employee.model.ids import (
    new_action_id,
    note_stem,
    plan_id_for,
    safe_file_name,
    short_id,
    slugify,
    stable_action_id,
)

WHEN = datetime(2026, 11, 21, 10, 15, 0, tzinfo=UTC)


def test_action_id_carries_date_time_and_a_short_random_part() -> None:
    action_id = new_action_id(WHEN)
    assert re.fullmatch(r"act-20261121-101500-[0-9a-f]{6}", action_id)
    assert new_action_id(WHEN) != action_id


def test_stable_action_id_is_the_same_for_the_same_message_and_differs_for_another() -> None:
    assert stable_action_id(WHEN, "email:7:42") == stable_action_id(WHEN, "email:7:42")
    assert stable_action_id(WHEN, "email:7:42") != stable_action_id(WHEN, "email:7:43")


def test_plan_id_and_short_id_follow_the_action_id() -> None:
    assert plan_id_for("act-20261121-101500-a1b2c3") == "plan-20261121-101500-a1b2c3"
    assert short_id("plan-20261121-101500-a1b2c3") == "a1b2c3"


def test_slug_joins_words_with_dashes_in_lower_case() -> None:
    assert slugify("Pump 3  leaking on_line 2") == "pump-3-leaking-on-line-2"


def test_slug_keeps_unicode_letters() -> None:
    assert slugify("Café Über Straße") == "café-über-straße"
    assert slugify("日本語のメモ") == "日本語のメモ"


def test_slug_never_starts_with_a_dash() -> None:
    assert slugify("--rm -rf /") == "rm-rf"


@pytest.mark.parametrize("title", ["..", "../../etc/passwd", "a/../b", "..\\..\\x"])
def test_slug_has_no_path_parts(title: str) -> None:
    slug = slugify(title)
    assert "/" not in slug and "\\" not in slug and ".." not in slug
    assert not slug.startswith((".", "-"))


@pytest.mark.parametrize("title", ["", "   ", "..", "-.-", "!!!"])
def test_slug_of_nothing_usable_is_untitled(title: str) -> None:
    assert slugify(title) == "untitled"


def test_slug_is_capped_without_a_trailing_dash() -> None:
    slug = slugify("word " * 40)
    assert len(slug) <= 48
    assert not slug.endswith("-")


def test_safe_name_keeps_spaces() -> None:
    assert safe_file_name("pump 3 photo.jpg") == "pump 3 photo.jpg"


def test_safe_name_keeps_unicode() -> None:
    assert safe_file_name("naïve résumé 日本.pdf") == "naïve résumé 日本.pdf"


@pytest.mark.parametrize("name", ["..", "../x", "../../etc/passwd", "a/b", "a\\b", "..\\x"])
def test_safe_name_is_one_path_component(name: str) -> None:
    safe = safe_file_name(name)
    assert "/" not in safe and "\\" not in safe
    assert safe not in (".", "..")
    assert not safe.startswith(".")


def test_safe_name_of_dots_only_is_file() -> None:
    assert safe_file_name("..") == "file"


def test_safe_name_drops_a_leading_dot_so_the_file_is_not_hidden() -> None:
    assert safe_file_name(".bashrc") == "bashrc"


def test_safe_name_keeps_a_leading_dash_as_plain_text() -> None:
    assert safe_file_name("--help.txt") == "--help.txt"


def test_safe_name_replaces_control_and_wikilink_breaking_characters() -> None:
    assert safe_file_name('a\x00b:c*d?"<>|#^[e].txt') == "a_b_c_d_e_.txt"


def test_long_safe_name_is_capped_in_bytes_and_keeps_its_extension() -> None:
    safe = safe_file_name("é" * 200 + ".pdf")
    assert len(safe.encode("utf-8")) <= 150
    assert safe.endswith(".pdf")
    safe.encode("utf-8").decode("utf-8")  # no half character


def test_note_stem_is_sortable_and_readable() -> None:
    stem = note_stem("act-20261121-101500-a1b2c3", "Pump 3: leaking!")
    assert stem == "20261121-101500 pump-3-leaking a1b2c3"


def test_note_stem_of_a_hostile_title_is_still_one_plain_name() -> None:
    stem = note_stem("act-20261121-101500-a1b2c3", "--../../.obsidian")
    assert stem == "20261121-101500 obsidian a1b2c3"
