"""The template planner: keyword rules, no model, no I/O.

It is the planner of last resort (every other planner falls back to it) and the one the
pipeline may run inline during intake, so it must stay pure CPU, deterministic and well
under a millisecond per message. It reads only the first `SCAN_CHARS` of a message, splits
them into words once (`str.translate` + `split`) and answers from set lookups; the regular
expressions it runs start with a literal (a word, or the space before a phrase), which
CPython's `re` finds with a fast substring search instead of trying every position, and each
list of phrases is one alternation, searched once.

Rules, in order:
1. a research request in the imperative ("please compare...", "research...") -> `manus.research`;
2. equipment plus a fault ("pump 3 is leaking") -> `atlas.work_order`;
3. any other research wording -> `manus.research`;
4. everything else -> a `vault.note` for the human.
A proposal naming an action that is not registered becomes a note that says so.

Company_Handbook.md overrides these rules where the template planner can read it
(`planners.handbook_rules`): a handbook rule sets a work order's priority and raises a plan's
risk, and the plan's steps say which rule did it; a rule it cannot apply and that concerns the
message is named in the steps, for the approver to check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ai_employee.model.plans import Intent, PlanProposal, PlanRequest, Risk
from ai_employee.planners import template_words as vocabulary
from ai_employee.planners.base import Planner
from ai_employee.planners.handbook_rules import HandbookRules, Matched, parse_handbook

#: Only this much of a message is examined (a burst of 10,000 files must not make the planner
#: read megabytes); text copied into params is capped by the params models' own limits.
SCAN_CHARS = 4096
TITLE_CHARS = 80
NOTE_TITLE_CHARS = 120
COPY_CHARS = 8000

WORK_ORDER = "atlas.work_order"
RESEARCH = "manus.research"
NOTE = "vault.note"


@dataclass(frozen=True)
class _Scan:
    """The first `SCAN_CHARS` of title + text, lowercased, once in three shapes."""

    lower: str  # keeps punctuation: sentence starts
    padded: str  # " word word ... ": phrase lookups by substring, patterns anchored on a space
    words: frozenset[str]

    @classmethod
    def of(cls, text: str) -> _Scan:
        lower = text.lower()
        tokens = lower.translate(vocabulary.TABLE).split()
        words = frozenset(token.strip(vocabulary.STRIP) for token in tokens)
        return cls(lower=lower, padded=" " + " ".join(tokens) + " ", words=words)

    def any_word(self, words: frozenset[str]) -> bool:
        return not self.words.isdisjoint(words)

    def any_phrase(self, phrases: re.Pattern[str]) -> bool:
        return phrases.search(self.padded) is not None

    def has(self, term: str) -> bool:
        return term in self.words if " " not in term else f" {term} " in self.padded


class TemplatePlanner(Planner):
    """Rule-based planner: the fallback of every other planner, and cheap enough to run inline."""

    name = "template"
    local = True

    async def plan(self, request: PlanRequest) -> PlanProposal:
        return self.plan_local(request)

    def plan_local(self, request: PlanRequest) -> PlanProposal:
        text = request.text[:SCAN_CHARS]
        title = _clean_line(request.title[:400])
        # The title (a subject line, often) names the equipment as often as the body does.
        scan = _Scan.of(f"{title}\n{text}" if title else text)

        equipment = (
            scan.any_word(vocabulary.EQUIPMENT_WORDS)
            or scan.any_phrase(vocabulary.EQUIPMENT_PHRASES)
            or ("line" in scan.words and vocabulary.LOCATION_PATTERNS["line"].search(scan.padded) is not None)
        )
        fault = scan.any_word(vocabulary.FAULT_WORDS) or scan.any_phrase(vocabulary.FAULT_PHRASES)
        research = (
            scan.any_word(vocabulary.RESEARCH_WORDS)
            or scan.any_phrase(vocabulary.RESEARCH_PHRASES)
            or ("find" in scan.words and scan.any_word(vocabulary.FINDABLE))
        )

        handbook = parse_handbook(request.handbook)
        matched = handbook.matching(scan.words, scan.padded)
        proposal: PlanProposal
        if research and _imperative_research(scan):
            proposal = _research(request, text, title, confidence=0.8)
        elif equipment and fault and not scan.any_phrase(vocabulary.RESOLVED_PHRASES):
            proposal = _work_order(text, title, scan, [m for m in matched if m.rule.kind == "priority"])
        elif research:
            proposal = _research(request, text, title, confidence=0.65)
        else:
            proposal = _note(request, text, title, intent="note", confidence=0.5)

        allowed = {spec.name for spec in request.actions}
        if allowed and proposal.action not in allowed:
            proposal = _note(
                request,
                text,
                title,
                intent="unknown",
                confidence=0.3,
                why=f"This looks like a {proposal.intent.replace('_', ' ')} request, but the action "
                f"{proposal.action} is not available: a human should decide what to do.",
            )
        return _follow_handbook(proposal, handbook, matched, scan)


def create(settings: Any) -> TemplatePlanner:
    """Entry point `template`: always available, needs no configuration."""
    return TemplatePlanner()


def _imperative_research(scan: _Scan) -> bool:
    """A research verb that opens a sentence, after at most a greeting and a "please"."""
    lower = scan.lower
    for verb in vocabulary.IMPERATIVE_VERBS:
        if not scan.has(verb) or (verb == "find" and not scan.any_word(vocabulary.FINDABLE)):
            continue
        start = 0
        for _ in range(5):  # the first few occurrences are enough
            position = lower.find(verb, start)
            if position < 0:
                break
            start = position + len(verb)
            if (position > 0 and lower[position - 1].isalnum()) or lower[start : start + 1].isalnum():
                continue
            window = lower[max(0, position - 80) : position]
            cut = max(window.rfind("."), window.rfind("!"), window.rfind("?"), window.rfind("\n"))
            if cut < 0 and position > 80:
                continue
            if vocabulary.POLITE_PREFIX.fullmatch(window[cut + 1 :]):
                return True
    return False


_RISKS: tuple[Risk, ...] = ("low", "medium", "high")
_PRIORITIES = ("LOW", "MEDIUM", "HIGH")


def _follow_handbook(
    proposal: PlanProposal, handbook: HandbookRules, matched: list[Matched], scan: _Scan
) -> PlanProposal:
    """The handbook's risk rules, its priority rules on a plan that is not a work order (where
    the template planner cannot follow them, the plan says so), and the rules it cannot apply."""
    for match in matched:
        rule, quoted = match.rule, f"“{match.rule.text}” (it mentions “{match.term.label}”)"
        if rule.kind == "risk":
            if _RISKS.index(rule.level) > _RISKS.index(proposal.risk):
                proposal.risk = rule.level
                proposal.steps.append(f"Risk {rule.level}, by the company handbook: {quoted}.")
            elif rule.level != proposal.risk:
                proposal.steps.append(
                    f"The company handbook says risk {rule.level}: {quoted}; the template planner "
                    f"never lowers a plan's risk, which stays {proposal.risk}."
                )
        elif proposal.action != WORK_ORDER:
            if rule.level == "high":
                proposal.risk = "high"
            proposal.steps.append(
                f"The company handbook makes this {rule.priority} priority: {quoted}; the template planner "
                f"found no equipment fault to open a work order for, so this plan is a {proposal.action}: "
                "decide whether a work order is needed."
            )
    for text in handbook.others_concerning(scan.words):
        proposal.steps.append(
            f"Not checked by the template planner, check it yourself: the handbook's “{text}”."
        )
    return proposal


def _handbook_priority(priority: str, ruled: list[Matched], hazard: bool) -> tuple[str, str | None]:
    """The priority after the handbook's priority rules (the highest one that matched), and the
    step that says which rule set it. A rule may lower any priority but a hazard's HIGH."""
    if not ruled:
        return priority, None
    top = max(ruled, key=lambda match: _PRIORITIES.index(match.rule.priority))
    quoted = f"“{top.rule.text}” (it mentions “{top.term.label}”)"
    wanted = top.rule.priority
    if hazard and _PRIORITIES.index(wanted) < _PRIORITIES.index(priority):
        return priority, (
            f"Priority kept {priority}: the message names a hazard, although the company handbook says "
            f"{wanted}: {quoted}."
        )
    return wanted, f"Priority {wanted}, by the company handbook: {quoted}."


def _work_order(text: str, title: str, scan: _Scan, ruled: list[Matched]) -> PlanProposal:
    asset = _find_asset(scan)
    location = _find_location(scan)
    if location and asset and location.lower() == asset.lower():
        location = None

    hazard = scan.any_word(vocabulary.HAZARD_WORDS) or scan.any_phrase(vocabulary.HAZARD_PHRASES)
    if hazard:
        priority = "HIGH"
    elif scan.any_word(vocabulary.NOT_URGENT_WORDS) or scan.any_phrase(vocabulary.NOT_URGENT_PHRASES):
        priority = "LOW"
    elif (
        scan.any_word(vocabulary.URGENT_WORDS)
        or scan.any_phrase(vocabulary.URGENT_PHRASES)
        or ("production" in scan.words and scan.any_word(vocabulary.STOPPED_WORDS))
    ):
        priority = "HIGH"
    else:
        priority = "MEDIUM"
    priority, by_handbook = _handbook_priority(priority, ruled, hazard)

    wo_title = _work_order_title(scan, asset, location, fallback=_subject(title, text))
    params: dict[str, Any] = {
        "title": wo_title,
        "description": _clip(text.strip() or title, COPY_CHARS),
        "priority": priority,
    }
    if asset:
        params["asset"] = asset
    if location:
        params["location"] = location

    risk: Risk = "high" if priority == "HIGH" else "medium"
    where = f" at {location}" if location else ""
    return PlanProposal(
        action=WORK_ORDER,
        params=params,
        intent="work_order",
        confidence=0.85 if asset else 0.7,
        risk=risk,
        summary=f"Maintenance request: {wo_title} (priority {priority}).",
        steps=[
            f"Create a {priority} priority work order in Atlas CMMS titled {wo_title!r}.",
            f"Attach it to asset {asset!r}{where}." if asset else "No asset number found: set it if known.",
            "A technician inspects and repairs, then closes the work order.",
            *([by_handbook] if by_handbook else []),
        ],
        planner="template",
    )


def _research(request: PlanRequest, text: str, title: str, *, confidence: float) -> PlanProposal:
    body = _strip_greeting(text)
    prompt = body or title
    if not prompt:
        return _note(request, text, title, intent="unknown", confidence=0.3)
    topic = _clip(_first_sentence(body) or title, TITLE_CHARS)
    return PlanProposal(
        action=RESEARCH,
        params={"prompt": _clip(prompt, COPY_CHARS)},
        intent="research",
        confidence=confidence,
        risk="low",
        summary=f"Research request: {topic}",
        steps=[
            "Send the request to Manus as a research task.",
            "Save Manus's answer as a note in the vault.",
        ],
        planner="template",
    )


def _note(
    request: PlanRequest,
    text: str,
    title: str,
    *,
    intent: Intent,
    confidence: float,
    why: str | None = None,
) -> PlanProposal:
    note_title = _clip(_subject(title, text) or f"Message {request.action_id}", NOTE_TITLE_CHARS)
    content = text.strip()
    if len(request.text) > SCAN_CHARS:
        content += "\n\n[… truncated: the full text is in the action note]"
    if why:
        content = f"{why}\n\n{content}" if content else why
    return PlanProposal(
        action=NOTE,
        params={"title": note_title, "content": content or note_title, "folder": "Notes"},
        intent=intent,
        confidence=confidence,
        risk="low",
        summary=why or "No maintenance or research request recognised: file the message as a note.",
        steps=["Save the message as a note in the vault.", "A human decides whether more is needed."],
        planner="template",
    )


def _find_asset(scan: _Scan) -> str | None:
    best: tuple[int, str] | None = None
    mentioned = {_ASSET_KIND_OF_FORM[word] for word in scan.words & _ASSET_FORMS}
    for kind, forms in vocabulary.ASSET_KINDS.items():
        present = kind in mentioned if forms else f" {kind} " in scan.padded
        if not present:
            continue
        found = vocabulary.ASSET_PATTERNS[kind].search(scan.padded)
        if found and (best is None or found.start() < best[0]):
            name = kind.upper() if kind in {"hvac", "cnc", "ac unit", "a/c unit"} else kind.capitalize()
            ident = vocabulary.NUMBER_WORDS.get(found.group(1), found.group(1)).upper()
            best = (found.start(), f"{name} {ident}")
    return best[1] if best else None


#: every one-word form of an asset kind -> its kind, so that a message is scanned once, not per kind
_ASSET_KIND_OF_FORM: dict[str, str] = {
    form: kind for kind, forms in vocabulary.ASSET_KINDS.items() for form in forms
}
_ASSET_FORMS: frozenset[str] = frozenset(_ASSET_KIND_OF_FORM)


def _find_location(scan: _Scan) -> str | None:
    best: tuple[int, str] | None = None
    for kind in vocabulary.LOCATION_KINDS:
        if kind not in scan.words:
            continue
        found = vocabulary.LOCATION_PATTERNS[kind].search(scan.padded)
        if found and (best is None or found.start() < best[0]):
            name = kind.capitalize()
            if kind == "line":
                before = scan.padded[: found.start()].rsplit(" ", 1)[-1]
                if before in vocabulary.LINE_QUALIFIERS:
                    name = f"{before.capitalize()} line"
            best = (found.start(), f"{name} {found.group(1).upper()}")
    return best[1] if best else None


def _work_order_title(scan: _Scan, asset: str | None, location: str | None, *, fallback: str) -> str:
    if not asset:
        return _clip(_strip_greeting(fallback) or "Maintenance request", TITLE_CHARS)
    label = _fault_label(scan)
    title = f"{asset} {label}" if label else asset
    if location:
        title += f" on {location}"
    return _clip(title, TITLE_CHARS)


def _terms(terms: tuple[str, ...]) -> tuple[frozenset[str], re.Pattern[str] | None]:
    """Terms as `_Scan` looks them up: the one-word ones as a set, the phrases as one search."""
    phrases = [term for term in terms if " " in term]
    words = frozenset(term for term in terms if " " not in term)
    return words, vocabulary.phrases(*phrases) if phrases else None


_FAULT_LABEL_TERMS = tuple((*_terms(terms), label) for terms, label in vocabulary.FAULT_LABELS)


def _fault_label(scan: _Scan) -> str | None:
    for words, phrases, label in _FAULT_LABEL_TERMS:
        if scan.any_word(words) or (phrases is not None and scan.any_phrase(phrases)):
            if label == "leaking":
                for fluid in vocabulary.FLUIDS:
                    if f" leaking {fluid} " in scan.padded or f" {fluid} leak" in scan.padded:
                        return f"leaking {fluid}"
            return label
    return None


def _subject(title: str, text: str) -> str:
    """The title when it says something, else the message's first sentence."""
    if title and not vocabulary.GENERIC_TITLE.fullmatch(title):
        return title
    return _first_sentence(text) or title


def _strip_greeting(text: str) -> str:
    found = vocabulary.GREETING.match(text)
    return (text[found.end() :] if found else text).strip()


def _first_sentence(text: str) -> str:
    body = _strip_greeting(text[:1000])
    if not body:
        return ""
    first = vocabulary.SENTENCE_END.split(body, maxsplit=1)[0]
    return _clean_line(first).rstrip(".!?")


def _clean_line(value: str) -> str:
    return " ".join(value.split())


def _clip(value: str, limit: int) -> str:
    """Cut at a word boundary so titles stay readable."""
    value = value.strip()
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"
