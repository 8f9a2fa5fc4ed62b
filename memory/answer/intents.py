"""What a question asks: ``parse_intent(text) -> Intent``.

Intents (``Intent.kind``) and the wordings they cover (case and a final "?" ignored):

=============  ============================================================================
kind           examples
=============  ============================================================================
where_is       where is / where's / where are my X; where did I put / leave X; where can I
               find X; do you know where X is; have you seen X
where_was      where was X before / at the start / first / originally; where did you first
               see X; where did X start
where_heard    where were you when you heard X; where did you hear X
when_seen      when did you (first / last) see X; when was X (first / last) seen
when_heard     when did you hear X; when was X heard / said
which          which C hid / covered / was over / is on / was under X; under which C is X;
               which C is X under / in
what_at        what is / was on / at / in / under / near Y (before / after Z)
how_many       how many (different) X did you see / are there
heard          did you hear X; what did you hear; what sounds did you hear
said           what was said (about X); what did S say; what did I tell you about X; who said X
before_after   what happened before / after X; what did you see before / after X
=============  ============================================================================

Anything else is ``unknown`` (the answerer then looks for any strong match and
otherwise abstains). Our own small grammar rather than a parser library: the
questions are short, the wordings are the ones listed here (tests read them), and a
dependency parser (spaCy) would cost a model load per cold ``engram memory ask``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["INTENTS", "Intent", "parse_intent"]

INTENTS = (
    "where_is",
    "where_was",
    "where_heard",
    "when_seen",
    "when_heard",
    "which",
    "what_at",
    "how_many",
    "heard",
    "said",
    "before_after",
    "unknown",
)


@dataclass(frozen=True)
class Intent:
    """The question's kind and its parts (empty strings where they do not apply).

    target: the noun phrase asked about; category: what "which" picks from ("cup");
    relation: "hid", "on", ...; when: "first" | "last" | "before" | "after" | "";
    reference: the event a multi-hop question is anchored on ("the cup was moved");
    speaker: who said it (``said``)."""

    kind: str
    text: str
    target: str = ""
    category: str = ""
    relation: str = ""
    when: str = ""
    reference: str = ""
    speaker: str = ""
    ago_s: float = -1.0  # "... 10 minutes ago": how long before now (-1: not given)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_ART = r"(?:the |a |an |my |your |our |that |this )?"
_NP = r"(.+?)"
_SEE = r"(?:see|saw|seen|notice|noticed|spot|spotted|observe|observed|find|found|come across)"
_HEAR = r"(?:hear|heard|hearing)"
_WAS = r"(?:is|was|are|were|'s)"
_REL = r"(on top of|next to|on|at|in|inside|under|underneath|beneath|below|near|by|beside)"
_HIDE = (
    r"(hid|hide|hides|hidden|hiding|covered|covers|cover|covering|was over|is over|"
    r"was on top of|is on top of|sat on|was on|is on|contained|contains|had|has|held|holds)"
)
_PAST_MARK = re.compile(
    r"\s+(?:before|at the (?:start|beginning)|at first|first|originally|initially|"
    r"previously|earlier|in the beginning|to begin with)\b.*$"
)


def _clean(text: str) -> str:
    t = text.lower().strip()
    t = re.sub(r"[?!.]+$", "", t).strip()
    t = t.replace("’", "'")
    t = re.sub(
        r"^(?:(?:hey|ok|okay|so|please|robot|engram|tell me|can you tell me|do you "
        r"remember|remember|i wonder|and|now)[, ]+)+",
        "",
        t,
    )
    return re.sub(r"\s+", " ", t)


def _np(text: str) -> str:
    """A noun phrase without articles and trailing fillers."""
    t = re.sub(r"^(?:the|a|an|my|your|our|that|this|those|these|any|some)\s+", "", text.strip())
    t = re.sub(r"\s+(?:now|right now|currently|at the moment|today|please|again)$", "", t)
    return t.strip()


_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "how_many",
        re.compile(
            rf"^how many (?:different |distinct |separate )?{_NP}"
            rf"(?: (?:did|have|do|were|are|was|is|could|can) .*)?$"
        ),
    ),
    (
        "where_heard",
        re.compile(
            rf"^where (?:were you|was the robot|was i) when (?:you|i|it) "
            rf"{_HEAR} {_ART}{_NP}$"
        ),
    ),
    ("where_heard", re.compile(rf"^where did (?:you|i) {_HEAR} {_ART}{_NP}$")),
    (
        "when_heard",
        re.compile(
            rf"^(?:when|at what time) did (?:you|i) (?:first |last )?"
            rf"{_HEAR} {_ART}{_NP}$"
        ),
    ),
    ("when_heard", re.compile(rf"^when (?:was|were) {_ART}{_NP} (?:heard|ringing|rung|said)$")),
    (
        "when_seen",
        re.compile(
            rf"^(?:when|at what time) did (?:you|i|we) (first |last |most "
            rf"recently )?{_SEE} {_ART}{_NP}$"
        ),
    ),
    (
        "when_seen",
        re.compile(
            rf"^when (?:was|were|is) {_ART}{_NP} (first |last |most recently )?"
            rf"(?:seen|spotted|noticed|observed|visible)(?: (first|last))?$"
        ),
    ),
    (
        "when_seen",
        re.compile(
            rf"^when did {_ART}{_NP} (first |last )?(?:appear|show up|come "
            rf"into view)$"
        ),
    ),
    ("heard", re.compile(rf"^(?:did|have) you (?:ever )?{_HEAR} {_ART}{_NP}$")),
    ("heard", re.compile(rf"^what (?:sounds? |noises? )?(?:did|have) you {_HEAR}(.*)$")),
    ("said", re.compile(rf"^what (?:was|has been) (?:said|told)(?: (?:about|of) {_ART}{_NP})?$")),
    ("said", re.compile(rf"^what did (?:i|we) (?:tell|say to) you(?: about {_ART}{_NP})?$")),
    ("said", re.compile(rf"^what did {_NP} (?:say|tell you|mention)(?: about {_ART}(.+))?$")),
    ("said", re.compile(rf"^who (?:said|told you|mentioned) (?:that |something about )?{_NP}$")),
    (
        "which",
        re.compile(
            rf"^(?:under|in|beneath|inside) which {_NP} {_WAS} {_ART}{_NP}"
            rf"(?: hidden| hiding| kept)?$"
        ),
    ),
    (
        "which",
        re.compile(
            rf"^which {_NP} {_WAS} {_ART}{_NP} (under|in|beneath|inside|hidden "
            rf"under|hidden in|hiding under|on)$"
        ),
    ),
    ("which", re.compile(rf"^which {_NP} (?:was it that |did )?{_HIDE} {_ART}{_NP}$")),
    (
        "which",
        re.compile(
            rf"^which {_NP} (?:is|was) {_ART}{_NP} (?:hidden |hiding )?"
            rf"(?:under|in|beneath|inside)$"
        ),
    ),
    (
        "what_at",
        re.compile(
            rf"^what (?:is|was|were|are|'s|used to be|did you see|was there) "
            rf"{_REL} {_ART}{_NP}(?: (before|after|when|until) (.+))?$"
        ),
    ),
    (
        "what_at",
        re.compile(
            rf"^what (?:objects? |things? )?(?:is|was|were|are) (?:there |lying |"
            rf"sitting |standing )?{_REL} {_ART}{_NP}(?: (before|after|when) (.+))?$"
        ),
    ),
    (
        "before_after",
        re.compile(
            r"^what (?:happened|did you see|did you do|came|was there) "
            r"(?:just |right )?(before|after) (.+)$"
        ),
    ),
    ("where_was", re.compile(rf"^where did (?:you|i|we) (first )?{_SEE} {_ART}{_NP}$")),
    ("where_was", re.compile(rf"^where did {_ART}{_NP} (?:start|begin|start out|come from)$")),
    ("where_was", re.compile(rf"^where (?:was|were) {_ART}{_NP}$")),
    ("where_is", re.compile(rf"^(?:where {_WAS}|where's|wheres) {_ART}{_NP}$")),
    (
        "where_is",
        re.compile(
            rf"^where (?:did|have) (?:i|we|you|someone) (?:put|left|leave|"
            rf"place|placed|drop|dropped|keep|kept|store|stored) {_ART}{_NP}$"
        ),
    ),
    ("where_is", re.compile(rf"^where (?:can|could|do|would|should) (?:i|we) find {_ART}{_NP}$")),
    (
        "where_is",
        re.compile(
            rf"^(?:do you know |tell me |can you tell me )?where {_ART}{_NP} "
            rf"(?:is|are|went|ended up|is now|are now)$"
        ),
    ),
    ("where_is", re.compile(rf"^(?:have|did) you (?:seen|see) {_ART}{_NP}(?: anywhere)?$")),
    ("where_is", re.compile(rf"^(?:find|locate) {_ART}{_NP}$")),
]


_AGO = re.compile(
    r"\s+(\d+(?:\.\d+)?|an?|one|two|three|five|ten|fifteen|twenty|thirty|forty|sixty)\s+"
    r"(seconds?|secs?|minutes?|mins?|hours?)\s+ago$"
)
_AMOUNT = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "five": 5,
    "ten": 10,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "sixty": 60,
}


def parse_intent(text: str) -> Intent:
    """The ``Intent`` of a question (``kind`` "unknown" when no wording matches)."""
    if not isinstance(text, str):
        raise TypeError(f"parse_intent: expected a question string, got {type(text).__name__}")
    t = _clean(text)
    ago = -1.0
    m = _AGO.search(t)
    if m:
        n = float(_AMOUNT.get(m.group(1), 0) or m.group(1))
        unit = m.group(2)
        ago = n * (3600.0 if unit.startswith("h") else 60.0 if unit.startswith("m") else 1.0)
        t = t[: m.start()].strip()
    intent = _parse(text, t)
    if ago >= 0:
        kind = "where_was" if intent.kind == "where_is" else intent.kind
        intent = replace(intent, kind=kind, ago_s=ago, when=intent.when or "ago")
    return intent


def _parse(text: str, t: str) -> Intent:
    for kind, pat in _RULES:
        m = pat.match(t)
        if not m:
            continue
        g = [x or "" for x in m.groups()]
        if kind == "how_many":
            return Intent(kind, text, target=_np(g[0]))
        if kind in ("where_heard", "when_heard"):
            return Intent(kind, text, target=_np(g[-1]))
        if kind == "when_seen":
            when = ""
            parts = [x.strip() for x in g]
            if parts and parts[0] in ("first", "last", "most recently"):
                when, target = parts[0], parts[1]
            else:
                target = parts[0]
                if len(parts) > 1 and parts[1].strip():
                    when = parts[1].strip()
                if len(parts) > 2 and parts[2].strip():
                    when = parts[2].strip()
            when = "last" if when.startswith(("last", "most")) else (when or "first")
            return Intent(kind, text, target=_np(target), when=when)
        if kind == "heard":
            return Intent(kind, text, target=_np(g[0]))
        if kind == "said":
            if pat.pattern.startswith("^what did (?:i"):
                return Intent(kind, text, target=_np(g[0]))
            if pat.pattern.startswith("^what did "):
                return Intent(kind, text, speaker=_np(g[0]), target=_np(g[1]))
            return Intent(kind, text, target=_np(g[0]))
        if kind == "which":
            if pat.pattern.startswith("^(?:under"):
                return Intent(kind, text, category=_np(g[0]), target=_np(g[1]), relation="hid")
            if (len(g) == 3 and g[2] in ("under", "in", "beneath", "inside", "on")) or (
                len(g) == 3 and g[2].startswith(("hidden", "hiding"))
            ):
                return Intent(kind, text, category=_np(g[0]), target=_np(g[1]), relation="hid")
            if len(g) == 3:
                return Intent(kind, text, category=_np(g[0]), relation=g[1], target=_np(g[2]))
            return Intent(kind, text, category=_np(g[0]), target=_np(g[1]), relation="hid")
        if kind == "what_at":
            rel, place = g[0], _np(g[1])
            when = g[2] if len(g) > 2 else ""
            ref = g[3] if len(g) > 3 else ""
            return Intent(kind, text, target=place, relation=rel, when=when, reference=_np(ref))
        if kind == "before_after":
            return Intent(kind, text, when=g[0], reference=_np(g[1]), target=_np(g[1]))
        if kind == "where_was":
            target = g[-1]
            return Intent(kind, text, target=_np(_PAST_MARK.sub("", target)), when="first")
        if kind == "where_is":
            target = g[-1]
            if _PAST_MARK.search(" " + target):
                return Intent(
                    "where_was", text, target=_np(_PAST_MARK.sub("", " " + target)), when="first"
                )
            return Intent(kind, text, target=_np(target))
    return Intent("unknown", text, target=_np(t))
