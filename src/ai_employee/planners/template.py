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
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from ai_employee.planners.base import Intent, Planner, PlanProposal, PlanRequest, Risk

#: Only this much of a message is examined (a burst of 10,000 files must not make the planner
#: read megabytes); text copied into params is capped by the params models' own limits.
SCAN_CHARS = 4096
TITLE_CHARS = 80
NOTE_TITLE_CHARS = 120
COPY_CHARS = 8000

WORK_ORDER = "atlas.work_order"
RESEARCH = "manus.research"
NOTE = "vault.note"

# Everything but letters, digits and the joiners of "p-12", "a/c", "#3", "doesn't" becomes a space.
_KEEP = set(string.ascii_lowercase + string.digits + "'-/#")
_TABLE: dict[int, str] = {code: " " for code in range(128) if chr(code) not in _KEEP}
_TABLE.update({0x2019: "'", 0x2018: "'", 0x2013: " ", 0x2014: " ", 0xA0: " "})
_STRIP = "'-/#"


def _forms(*words: str) -> frozenset[str]:
    return frozenset(words)


def _phrases(*phrases: str) -> re.Pattern[str]:
    """One search for any of `phrases` as whole words of `_Scan.padded` (" phrase " as a substring)."""
    return re.compile(" (?:" + "|".join(re.escape(phrase) for phrase in phrases) + ") ")


# Equipment that is worth a work order when something is wrong with it. Singular kind -> forms.
_ASSET_KINDS: dict[str, tuple[str, ...]] = {
    "pump": ("pump", "pumps"),
    "motor": ("motor", "motors"),
    "conveyor": ("conveyor", "conveyors"),
    "compressor": ("compressor", "compressors"),
    "valve": ("valve", "valves"),
    "boiler": ("boiler", "boilers"),
    "chiller": ("chiller", "chillers"),
    "fan": ("fan", "fans"),
    "gearbox": ("gearbox", "gearboxes"),
    "machine": ("machine", "machines"),
    "press": ("press", "presses"),
    "forklift": ("forklift", "forklifts"),
    "hvac": ("hvac",),
    "generator": ("generator", "generators"),
    "furnace": ("furnace", "furnaces"),
    "oven": ("oven", "ovens"),
    "mixer": ("mixer", "mixers"),
    "extruder": ("extruder", "extruders"),
    "robot": ("robot", "robots"),
    "crane": ("crane", "cranes"),
    "hoist": ("hoist", "hoists"),
    "elevator": ("elevator", "elevators"),
    "heater": ("heater", "heaters"),
    "tank": ("tank", "tanks"),
    "dryer": ("dryer", "dryers"),
    "lathe": ("lathe", "lathes"),
    "mill": ("mill", "mills"),
    "cnc": ("cnc",),
    "welder": ("welder", "welders"),
    "labeler": ("labeler", "labelers", "labeller", "labellers"),
    "palletizer": ("palletizer", "palletizers", "palletiser", "palletisers"),
    "wrapper": ("wrapper", "wrappers"),
    "compactor": ("compactor", "compactors"),
    "baler": ("baler", "balers"),
    "shredder": ("shredder", "shredders"),
    "grinder": ("grinder", "grinders"),
    "turbine": ("turbine", "turbines"),
    "engine": ("engine", "engines"),
    "spindle": ("spindle", "spindles"),
    "actuator": ("actuator", "actuators"),
    "chiller unit": (),
    "ac unit": (),
    "a/c unit": (),
    "cooling tower": (),
    "air handler": (),
    "dock leveler": (),
    "roller door": (),
    "band saw": (),
}
# Parts and building services: equipment for the work-order rule, but not named as an asset.
_OTHER_EQUIPMENT = _forms(
    "belt",
    "belts",
    "bearing",
    "bearings",
    "pipe",
    "pipes",
    "piping",
    "hose",
    "hoses",
    "filter",
    "filters",
    "sensor",
    "sensors",
    "breaker",
    "breakers",
    "transformer",
    "transformers",
    "door",
    "doors",
    "gate",
    "gates",
    "light",
    "lights",
    "lighting",
    "toilet",
    "toilets",
    "sink",
    "sinks",
    "roof",
    "ceiling",
    "drain",
    "drains",
    "sprinkler",
    "sprinklers",
    "hydraulics",
    "hydraulic",
    "lift",
    "lifts",
    "truck",
    "trucks",
    "saw",
    "panel",
    "seal",
    "seals",
    "thermostat",
    "radiator",
    "heating",
    "aircon",
    "ac",
    "a/c",
    "plc",
    "scanner",
    "printer",
    "freezer",
    "fridge",
    "refrigerator",
)
_EQUIPMENT_PHRASES = _phrases(
    "air conditioning",
    "air conditioner",
    "cooling tower",
    "air handler",
    "dock leveler",
    "roller door",
    "band saw",
    "production line",
    "packing line",
    "assembly line",
    "bottling line",
)
_EQUIPMENT_WORDS = frozenset(form for forms in _ASSET_KINDS.values() for form in forms) | _OTHER_EQUIPMENT

_FAULT_WORDS = _forms(
    "leak",
    "leaks",
    "leaking",
    "leaked",
    "leakage",
    "leaky",
    "drip",
    "drips",
    "dripping",
    "broken",
    "broke",
    "breaks",
    "noise",
    "noises",
    "noisy",
    "grinding",
    "squealing",
    "squeals",
    "squeaking",
    "squeaks",
    "rattling",
    "rattles",
    "knocking",
    "vibrating",
    "vibrates",
    "vibration",
    "vibrations",
    "overheating",
    "overheated",
    "overheats",
    "overheat",
    "fault",
    "faulty",
    "faults",
    "error",
    "errors",
    "alarm",
    "alarms",
    "stuck",
    "jammed",
    "jams",
    "jamming",
    "jam",
    "failed",
    "failing",
    "failure",
    "fails",
    "stopped",
    "smoke",
    "smoking",
    "tripped",
    "trips",
    "tripping",
    "cracked",
    "crack",
    "cracks",
    "worn",
    "loose",
    "damaged",
    "damage",
    "malfunction",
    "malfunctioning",
    "malfunctions",
    "sparks",
    "sparking",
    "spark",
    "flickering",
    "flickers",
    "clogged",
    "blocked",
    "dead",
    "seized",
    "overloaded",
    "overload",
    "inoperable",
    "wobbling",
    "wobbles",
    "burst",
    "ruptured",
    "frozen",
    "tripping",
    "shorted",
    "scorched",
)
_FAULT_PHRASES = _phrases(
    "not working",
    "doesn't work",
    "does not work",
    "isn't working",
    "is not working",
    "won't start",
    "will not start",
    "doesn't start",
    "does not start",
    "not starting",
    "won't turn on",
    "won't open",
    "won't close",
    "not cooling",
    "not heating",
    "isn't cooling",
    "isn't heating",
    "is down",
    "went down",
    "shut down",
    "shuts down",
    "too hot",
    "burning smell",
    "smells burnt",
    "smell of burning",
    "low pressure",
    "no pressure",
    "losing pressure",
    "out of order",
    "keeps stopping",
    "stops working",
    "stopped working",
    "no power",
    "lost power",
)
_HAZARD_WORDS = _forms(
    "safety",
    "unsafe",
    "hazard",
    "hazardous",
    "fire",
    "smoke",
    "smoking",
    "burning",
    "spark",
    "sparks",
    "sparking",
    "injury",
    "injured",
    "injuries",
    "danger",
    "dangerous",
    "flood",
    "flooding",
    "flooded",
    "explosion",
    "scorched",
)
_HAZARD_PHRASES = _phrases("gas leak", "electric shock", "exposed wire", "live wire")
_URGENT_WORDS = _forms(
    "today", "tonight", "urgent", "urgently", "asap", "immediately", "emergency", "critical"
)
_URGENT_PHRASES = _phrases(
    "right away",
    "right now",
    "as soon as possible",
    "a s a p",
    "production stopped",
    "production is down",
    "production halted",
    "line down",
    "line is down",
    "before the next shift",
    "this morning",
)
#: With "production" anywhere: the plant is losing output, which makes any fault urgent.
_STOPPED_WORDS = _forms("down", "stopped", "halted", "standstill", "stopping")
_NOT_URGENT_WORDS = _forms("whenever", "sometime")
_NOT_URGENT_PHRASES = _phrases(
    "when you can",
    "when you get a chance",
    "when you have time",
    "no rush",
    "not urgent",
    "low priority",
    "next week",
    "at some point",
    "no hurry",
    "not critical",
    "not a priority",
    "isn't urgent",
)
_RESEARCH_WORDS = _forms("research", "compare", "comparison", "investigate", "survey", "benchmark")
_RESEARCH_PHRASES = _phrases(
    "look up",
    "look into",
    "find out",
    "pros and cons",
    "what are the best",
    "which is the best",
    "market study",
    "market analysis",
    "market overview",
    "best practices",
    "get quotes",
)
_FINDABLE = _forms(
    "suppliers",
    "supplier",
    "vendors",
    "vendor",
    "alternatives",
    "alternative",
    "options",
    "prices",
    "pricing",
    "quotes",
    "manufacturers",
    "distributors",
    "contractors",
    "providers",
)
# Research verbs that, at the start of a sentence, make the message a research request even when
# it also names equipment with a problem ("compare replacement motors for press 4, it keeps tripping").
_IMPERATIVE_VERBS = ("research", "compare", "look up", "find out", "find", "get quotes")
_POLITE_PREFIX = re.compile(
    r"\s*(?:(?:hi|hello|hey|dear|good morning|good afternoon)\b[^,!\n]{0,30}[,!\n]\s*)?"
    r"(?:(?:please|pls|kindly|can you|could you|would you|can someone|could someone|i need you to"
    r"|we need to|we need you to|i'd like you to|i would like you to|i want you to)\s+)?"
    r"(?:please\s+)?(?:also\s+)?",
)
_RESOLVED_PHRASES = _phrases(
    "has been fixed",
    "have been fixed",
    "was fixed",
    "were fixed",
    "got fixed",
    "is fixed now",
    "is now fixed",
    "been repaired",
    "was repaired",
    "been replaced",
    "was replaced",
    "been resolved",
    "was resolved",
    "is resolved",
    "back up and running",
    "back to normal",
    "back in service",
    "working fine",
    "working again",
    "working normally",
    "no longer leaking",
    "no more leaks",
    "false alarm",
)
_FLUIDS = ("oil", "water", "air", "coolant", "gas", "steam", "hydraulic fluid", "fuel", "refrigerant")
#: First match wins: the most telling symptom names the work order.
_FAULT_LABELS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("smoke", "smoking", "burning", "burning smell", "scorched"), "smoking"),
    (("sparks", "sparking", "spark"), "sparking"),
    (("overheating", "overheated", "overheats", "overheat", "too hot"), "overheating"),
    (("leak", "leaks", "leaking", "leaked", "leakage", "leaky", "drip", "drips", "dripping"), "leaking"),
    (("vibrating", "vibrates", "vibration", "vibrations", "wobbling", "wobbles"), "vibrating"),
    (
        (
            "noise",
            "noises",
            "noisy",
            "grinding",
            "squealing",
            "squeals",
            "squeaking",
            "squeaks",
            "rattling",
            "rattles",
            "knocking",
        ),
        "making noise",
    ),
    (("tripped", "trips", "tripping"), "tripping"),
    (("jammed", "jams", "jamming", "jam", "stuck", "seized"), "jammed"),
    (("won't start", "will not start", "doesn't start", "does not start", "not starting"), "won't start"),
    (("alarm", "alarms"), "in alarm"),
    (
        ("fault", "faulty", "faults", "error", "errors", "malfunction", "malfunctioning", "malfunctions"),
        "fault",
    ),
    (("low pressure", "no pressure", "losing pressure"), "losing pressure"),
    (
        (
            "not working",
            "doesn't work",
            "does not work",
            "isn't working",
            "is not working",
            "out of order",
            "dead",
            "inoperable",
            "stopped working",
            "stops working",
            "no power",
            "lost power",
        ),
        "not working",
    ),
    (("is down", "went down", "shut down", "shuts down", "stopped", "keeps stopping"), "down"),
    (("failed", "failing", "failure", "fails"), "failed"),
    (
        ("broken", "broke", "breaks", "cracked", "crack", "cracks", "damaged", "damage", "burst", "ruptured"),
        "damaged",
    ),
    (("worn", "loose"), "worn"),
    (("clogged", "blocked"), "blocked"),
    (("flickering", "flickers"), "flickering"),
)

_NUMBER_WORDS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
}
_ID = rf"((?:[a-z]{{1,3}}-?)?\d{{1,5}}[a-z]?|{'|'.join(_NUMBER_WORDS)})"
#: " pump 3 ", " pump #3 ", " pump no 3 ", " press p-12 ": each starts with a literal, so `re` is fast.
_ASSET_PATTERNS: dict[str, re.Pattern[str]] = {
    kind: re.compile(rf" {re.escape(kind)}s? ?(?:#|no |number |nr )?#?{_ID}(?= )") for kind in _ASSET_KINDS
}
_LETTER_IDS = ("building", "bldg", "hall", "zone", "wing", "warehouse", "plant", "site", "bay")
_LOCATION_KINDS = (
    "line",
    "building",
    "bldg",
    "bay",
    "room",
    "area",
    "floor",
    "hall",
    "zone",
    "plant",
    "site",
    "dock",
    "cell",
    "station",
    "warehouse",
    "wing",
)
_LOCATION_PATTERNS: dict[str, re.Pattern[str]] = {
    kind: re.compile(
        rf" {kind} ?#?((?:[a-z]-?)?\d{{1,4}}[a-z]?{'|[a-z]' if kind in _LETTER_IDS else ''})(?= )"
    )
    for kind in _LOCATION_KINDS
}
_LINE_QUALIFIERS = ("production", "packing", "assembly", "bottling", "filling", "packaging")
_GREETING = re.compile(
    r"\s*(?:(?:hi|hello|hey|dear|good\s+(?:morning|afternoon|evening))\b[^,\n.!]{0,40}[,!.\n]\s*)+",
    re.IGNORECASE,
)
#: Titles that say nothing about the message: file names, "Voice note", "(no subject)".
_GENERIC_TITLE = re.compile(
    r"\S+\.[A-Za-z0-9]{1,5}|\S*[-_]\S*|\(?no subject\)?|(?:voice|audio)\s+(?:note|message|memo)|message|note"
    r"|untitled|fwd?:?|re:?",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


@dataclass(frozen=True)
class _Scan:
    """The first `SCAN_CHARS` of title + text, lowercased, once in three shapes."""

    lower: str  # keeps punctuation: sentence starts
    padded: str  # " word word ... ": phrase lookups by substring, patterns anchored on a space
    words: frozenset[str]

    @classmethod
    def of(cls, text: str) -> _Scan:
        lower = text.lower()
        tokens = lower.translate(_TABLE).split()
        words = frozenset(token.strip(_STRIP) for token in tokens)
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
            scan.any_word(_EQUIPMENT_WORDS)
            or scan.any_phrase(_EQUIPMENT_PHRASES)
            or ("line" in scan.words and _LOCATION_PATTERNS["line"].search(scan.padded) is not None)
        )
        fault = scan.any_word(_FAULT_WORDS) or scan.any_phrase(_FAULT_PHRASES)
        research = (
            scan.any_word(_RESEARCH_WORDS)
            or scan.any_phrase(_RESEARCH_PHRASES)
            or ("find" in scan.words and scan.any_word(_FINDABLE))
        )

        proposal: PlanProposal
        if research and _imperative_research(scan):
            proposal = _research(request, text, title, confidence=0.8)
        elif equipment and fault and not scan.any_phrase(_RESOLVED_PHRASES):
            proposal = _work_order(text, title, scan)
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
        return proposal


def create(settings: Any) -> TemplatePlanner:
    """Entry point `template`: always available, needs no configuration."""
    return TemplatePlanner()


def _imperative_research(scan: _Scan) -> bool:
    """A research verb that opens a sentence, after at most a greeting and a "please"."""
    lower = scan.lower
    for verb in _IMPERATIVE_VERBS:
        if not scan.has(verb) or (verb == "find" and not scan.any_word(_FINDABLE)):
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
            if _POLITE_PREFIX.fullmatch(window[cut + 1 :]):
                return True
    return False


def _work_order(text: str, title: str, scan: _Scan) -> PlanProposal:
    asset = _find_asset(scan)
    location = _find_location(scan)
    if location and asset and location.lower() == asset.lower():
        location = None

    if scan.any_word(_HAZARD_WORDS) or scan.any_phrase(_HAZARD_PHRASES):
        priority = "HIGH"
    elif scan.any_word(_NOT_URGENT_WORDS) or scan.any_phrase(_NOT_URGENT_PHRASES):
        priority = "LOW"
    elif (
        scan.any_word(_URGENT_WORDS)
        or scan.any_phrase(_URGENT_PHRASES)
        or ("production" in scan.words and scan.any_word(_STOPPED_WORDS))
    ):
        priority = "HIGH"
    else:
        priority = "MEDIUM"

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
    for kind, forms in _ASSET_KINDS.items():
        present = kind in mentioned if forms else f" {kind} " in scan.padded
        if not present:
            continue
        found = _ASSET_PATTERNS[kind].search(scan.padded)
        if found and (best is None or found.start() < best[0]):
            name = kind.upper() if kind in {"hvac", "cnc", "ac unit", "a/c unit"} else kind.capitalize()
            ident = _NUMBER_WORDS.get(found.group(1), found.group(1)).upper()
            best = (found.start(), f"{name} {ident}")
    return best[1] if best else None


#: every one-word form of an asset kind -> its kind, so that a message is scanned once, not per kind
_ASSET_KIND_OF_FORM: dict[str, str] = {form: kind for kind, forms in _ASSET_KINDS.items() for form in forms}
_ASSET_FORMS: frozenset[str] = frozenset(_ASSET_KIND_OF_FORM)


def _find_location(scan: _Scan) -> str | None:
    best: tuple[int, str] | None = None
    for kind in _LOCATION_KINDS:
        if kind not in scan.words:
            continue
        found = _LOCATION_PATTERNS[kind].search(scan.padded)
        if found and (best is None or found.start() < best[0]):
            name = kind.capitalize()
            if kind == "line":
                before = scan.padded[: found.start()].rsplit(" ", 1)[-1]
                if before in _LINE_QUALIFIERS:
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
    return frozenset(term for term in terms if " " not in term), _phrases(*phrases) if phrases else None


_FAULT_LABEL_TERMS = tuple((*_terms(terms), label) for terms, label in _FAULT_LABELS)


def _fault_label(scan: _Scan) -> str | None:
    for words, phrases, label in _FAULT_LABEL_TERMS:
        if scan.any_word(words) or (phrases is not None and scan.any_phrase(phrases)):
            if label == "leaking":
                for fluid in _FLUIDS:
                    if f" leaking {fluid} " in scan.padded or f" {fluid} leak" in scan.padded:
                        return f"leaking {fluid}"
            return label
    return None


def _subject(title: str, text: str) -> str:
    """The title when it says something, else the message's first sentence."""
    if title and not _GENERIC_TITLE.fullmatch(title):
        return title
    return _first_sentence(text) or title


def _strip_greeting(text: str) -> str:
    found = _GREETING.match(text)
    return (text[found.end() :] if found else text).strip()


def _first_sentence(text: str) -> str:
    body = _strip_greeting(text[:1000])
    if not body:
        return ""
    first = _SENTENCE_END.split(body, maxsplit=1)[0]
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
