"""The rules of Company_Handbook.md that the template planner can apply, read from the handbook's
own words.

The model planners read the whole handbook and follow it; the template planner has no model, so it
reads the rules it can: each list item (`-`, `*`, `+` or `1.`, wrapped lines included) that names a
level of priority or risk ("is **HIGH** priority", "are high-risk", "risk: high") and the words it
applies to, either quoted ("next shutdown", `boiler`, “deep dive”) or listed before the level
("Anything involving smoke, fire, a leak of oil or chemicals is HIGH priority"). A quoted phrase
must appear as written; a listed term matches when each of its words appears in any common form
("leak of oil" matches "leaking oil"; articles and small words do not count). The other list
items are rules only a person or a model can apply: a plan names those that share a word with its
message, so that the approver checks them (docs/planning.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from ai_employee.planners import template_words as vocabulary

Priority = Literal["LOW", "MEDIUM", "HIGH"]
Level = Literal["low", "medium", "high"]

MAX_RULE_CHARS = 160

_ITEM = re.compile(r"^\s{0,3}(?:[-*+]|\d{1,3}[.)])\s+(?P<text>.+)$")
_LEVEL = r"(?P<level>high|medium|low)"
_KIND = r"(?P<kind>priority|risk)"
# "HIGH priority", "high-risk"; then "priority: high", "risk is high" (not "at risk is HIGH priority")
_LEVEL_FIRST = re.compile(rf"\b{_LEVEL}[\s-]+{_KIND}\b", re.IGNORECASE)
_KIND_FIRST = re.compile(
    rf"\b{_KIND}\s*(?:is|=|:|of)?\s*{_LEVEL}\b(?![\s-]+(?:priority|risk)\b)", re.IGNORECASE
)
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|`([^`]+)`")
_EMPHASIS = re.compile(r"\*\*|__|(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)")
# what leads into the list of terms: "Anything involving", "Messages about", "Reports that mention"
_LEAD_IN = re.compile(
    r"^(?:(?:anything|everything|any|all|every|each|a|an|the)\s+)?"
    r"(?:(?:message|request|report|email|mail|note|item|ticket|issue|problem|call|order|case)s?\s+)?"
    r"(?:that\s+|which\s+)?"
    r"(?:involving|involves?|mentioning|mentions?|about|with|containing|contains?|regarding|concerning|"
    r"on)\s+",
    re.IGNORECASE,
)
_VERB_OUT = re.compile(
    r"\s+(?:is|are|means|mean|gets?|counts?\s+as|should\s+be|must\s+be|always\s+is|are\s+always|"
    r"is\s+always|becomes?|=|:|->|→)\s*$",
    re.IGNORECASE,
)
_AFTER_LEVEL = re.compile(
    r"^\W*(?:for|when|whenever|if|on)\s+(?:anything\s+|messages?\s+)?(?:about\s+|involving\s+)?(.+)$"
)
_SPLIT = re.compile(r"\s*(?:,|;|\(|\)|/|\bor\b|\band\b)\s*", re.IGNORECASE)


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_SMALL_WORDS = _word_set(
    "a an the of at in on to for by with from into any anything everything some all this that these "
    "those its it is are be as or and our your their his her who what when where which someone "
    "something message messages request requests report reports"
)
# words too common in a handbook to say that a rule concerns a message
_COMMON = _SMALL_WORDS | _word_set(
    "never always only must should will would can could may plan plans note notes work order "
    "orders human person people company team use used make made gets get give goes go name "
    "called call write written same day days unless else other another first need needs "
    "everyone nobody anyone one two three say says tell"
)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
_SUFFIXES = ("ings", "ing", "ies", "es", "ed", "s", "e", "y")
_MIN_STEM = 3


@dataclass(frozen=True)
class Term:
    """What a rule applies to: a quoted phrase (as `_Scan.padded` holds it, " word word "), or
    the words of a listed term, each as the set of its forms."""

    phrase: str | None
    words: tuple[frozenset[str], ...]
    label: str

    def found_in(self, words: frozenset[str], padded: str) -> bool:
        if self.phrase is not None:
            return self.phrase in padded
        return bool(self.words) and all(not forms.isdisjoint(words) for forms in self.words)


@dataclass(frozen=True)
class LevelRule:
    """A rule that sets a priority or a risk level for the messages its terms match."""

    text: str
    kind: Literal["priority", "risk"]
    level: Level
    terms: tuple[Term, ...]

    @property
    def priority(self) -> Priority:
        return "HIGH" if self.level == "high" else "LOW" if self.level == "low" else "MEDIUM"

    def matched_term(self, words: frozenset[str], padded: str) -> Term | None:
        return next((term for term in self.terms if term.found_in(words, padded)), None)


@dataclass(frozen=True)
class Matched:
    rule: LevelRule
    term: Term


@dataclass(frozen=True)
class OtherRule:
    """A rule the template planner cannot apply, with the forms of its significant words."""

    text: str
    words: frozenset[str]


@dataclass(frozen=True)
class HandbookRules:
    levels: tuple[LevelRule, ...]
    others: tuple[OtherRule, ...]

    def matching(self, words: frozenset[str], padded: str) -> list[Matched]:
        """The level rules one of whose terms the message holds, in the handbook's order."""
        found: list[Matched] = []
        for rule in self.levels:
            term = rule.matched_term(words, padded)
            if term is not None:
                found.append(Matched(rule, term))
        return found

    def others_concerning(self, words: frozenset[str], limit: int = 3) -> list[str]:
        """The rules it cannot apply that share a significant word with the message."""
        return [rule.text for rule in self.others if not rule.words.isdisjoint(words)][:limit]


EMPTY = HandbookRules((), ())


@lru_cache(maxsize=8)
def parse_handbook(text: str) -> HandbookRules:
    """The handbook's rules; parsed once per version of the handbook."""
    if not text.strip():
        return EMPTY
    levels: list[LevelRule] = []
    others: list[OtherRule] = []
    for item in _items(text):
        rule = _level_rule(item)
        if rule is not None:
            levels.append(rule)
        else:
            unquoted = _QUOTED.sub(" ", item)  # quoted words are examples ("Pump 3"), not the subject
            words = frozenset(
                form for word in _words(unquoted) if word not in _COMMON for form in _forms(word)
            )
            if words:
                others.append(OtherRule(_clip(item), words))
    return HandbookRules(tuple(levels), tuple(others))


def _items(text: str) -> list[str]:
    """List items, with their wrapped lines joined, emphasis removed."""
    items: list[list[str]] = []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        found = _ITEM.match(line)
        if found:
            items.append([found.group("text").strip()])
        elif not line.strip() or line.lstrip().startswith("#"):
            items.append([])  # a blank line or a heading ends an item
        elif items and items[-1]:
            items[-1].append(line.strip())  # a wrapped line (indented or not) continues it
    return [_EMPHASIS.sub("", " ".join(parts)).strip() for parts in items if parts]


def _level_rule(item: str) -> LevelRule | None:
    found = _LEVEL_FIRST.search(item) or _KIND_FIRST.search(item)
    if found is None:
        return None
    kind: Literal["priority", "risk"] = "priority" if found.group("kind").lower() == "priority" else "risk"
    level: Level = "high"
    if found.group("level").lower() == "low":
        level = "low"
    elif found.group("level").lower() == "medium":
        level = "medium"
    terms = _quoted_terms(item) or _listed_terms(item, found.start(), found.end())
    if not terms:
        return None
    return LevelRule(_clip(item), kind, level, terms)


def _quoted_terms(item: str) -> tuple[Term, ...]:
    terms: list[Term] = []
    for found in _QUOTED.finditer(item):
        quoted = next(group for group in found.groups() if group is not None)
        padded = " ".join(quoted.lower().translate(vocabulary.TABLE).split())
        if padded:
            terms.append(Term(phrase=f" {padded} ", words=(), label=quoted.strip()))
    return tuple(terms)


def _listed_terms(item: str, level_start: int, level_end: int) -> tuple[Term, ...]:
    subject = _VERB_OUT.sub("", item[:level_start].strip())
    subject = subject.rsplit(": ", 1)[-1]  # "Safety first: anything with smoke ..."
    subject = _LEAD_IN.sub("", subject)
    if not _words(subject):  # "Risk is high for anything about ammonia"
        after = _AFTER_LEVEL.match(item[level_end:].strip())
        subject = after.group(1).rstrip(".!") if after else ""
    terms: list[Term] = []
    for part in _SPLIT.split(subject):
        words = [word for word in _words(part) if word not in _SMALL_WORDS]
        if words:
            forms = tuple(frozenset(_forms(word)) for word in words)
            terms.append(Term(phrase=None, words=forms, label=_ARTICLE.sub("", part.strip())))
    return tuple(terms)


def _words(text: str) -> list[str]:
    return [
        token.strip(vocabulary.STRIP)
        for token in text.lower().translate(vocabulary.TABLE).split()
        if token.strip(vocabulary.STRIP)
    ]


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            return word[: -len(suffix)]
    return word


def _forms(word: str) -> set[str]:
    """The forms a word may take in a message: "leak" -> leak, leaks, leaking, leaked, ..."""
    stem = _stem(word)
    forms = {word, stem}
    for suffix in ("s", "es", "ed", "ing", "e", "er", "ers", "y", "ies"):
        forms.add(stem + suffix)
    if stem.endswith("y"):
        forms.add(stem[:-1] + "ies")
    return forms


def _clip(text: str) -> str:
    text = " ".join(text.split()).rstrip(".")
    return text if len(text) <= MAX_RULE_CHARS else text[: MAX_RULE_CHARS - 1].rstrip() + "…"
