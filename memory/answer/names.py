"""Names people use for the things the memories store under internal labels.

A memory stores what perception labelled: ``cube_red``, ``cup_2``, ``mug_white``,
``prize``. People say "the red cube", "the second cup", "the white mug", "the
yellow block". ``NameTable`` turns a label into a ``NaturalName`` (what to call it,
its noun, its colours, the words it answers to) and scores how well a spoken phrase
names a label:

- words first: the phrase's colour words must agree with the object's colours
  (a "red cube" is not the yellow cube), and its noun must be the object's noun or a
  synonym of it ("block" for a cube, "mug" for a cup); an index ("cup 2", "the third
  cup") must agree with the label's index;
- the injected text encoder (``embed(text) -> (D,)``, MiniLM in Engram; optional)
  for nouns the word lists do not know: cosine similarity between the phrase's noun
  and the object's natural name, kept only above ``embedding_min``. The encoder is
  asked only when words do not decide, so a question in known words costs no model
  load (``engram memory ask`` stays fast from a cold start).

Internal-only labels (``prize``: the cups task's hidden yellow cube) get their
natural name from ``KNOWN_LABELS``; every other label is read from its parts
(``cube_red`` -> noun ``cube``, colour ``red``; ``cup_2`` -> noun ``cup``, index 2).
Our own word lists rather than WordNet: WordNet is not installed here, and the few
hundred words a household robot hears fit in a table that tests can read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "COLOURS",
    "KNOWN_LABELS",
    "SOUND_BANDS_HZ",
    "SYNONYMS",
    "NameTable",
    "NaturalName",
    "phrase_parts",
    "singular",
]

#: colour words (and their variants) -> the colour
COLOURS: dict[str, str] = {
    "red": "red",
    "crimson": "red",
    "scarlet": "red",
    "green": "green",
    "blue": "blue",
    "navy": "blue",
    "yellow": "yellow",
    "golden": "yellow",
    "gold": "yellow",
    "white": "white",
    "black": "black",
    "grey": "grey",
    "gray": "grey",
    "silver": "grey",
    "orange": "orange",
    "purple": "purple",
    "violet": "purple",
    "pink": "pink",
    "brown": "brown",
}

#: noun -> its synonym group (the group's first word is the noun we say)
_GROUPS: tuple[tuple[str, ...], ...] = (
    ("cube", "block", "box", "brick", "dice"),
    ("cup", "mug", "glass", "beaker", "tumbler"),
    ("bowl", "dish"),
    ("plate", "saucer"),
    ("button", "switch", "key_button"),
    ("tray", "platter"),
    ("token", "coin", "chip", "disc", "disk"),
    ("plant", "flower", "pot_plant", "houseplant"),
    ("book", "novel"),
    ("sofa", "couch", "settee"),
    ("table", "desk"),
    ("bed", "mattress"),
    ("lamp", "light"),
    ("bottle", "flask"),
    ("keys", "key", "keyring"),
    ("glasses", "spectacles", "specs", "eyeglasses"),
    ("phone", "mobile", "cellphone", "smartphone"),
    ("kettle",),
    ("doorbell", "bell", "door_bell"),
    ("remote", "remote_control", "controller"),
    ("laptop", "computer", "notebook"),
    ("shelf", "bookshelf", "shelves"),
    ("drawer",),
    ("counter", "worktop", "countertop"),
    ("fridge", "refrigerator"),
    ("chair", "stool", "seat"),
)
SYNONYMS: dict[str, str] = {w: g[0] for g in _GROUPS for w in g}

#: what a named sound sounds like: its dominant frequency band (Hz), prior knowledge
SOUND_BANDS_HZ: dict[str, tuple[float, float]] = {
    "doorbell": (430.0, 820.0),
    "bell": (430.0, 820.0),
    "phone": (850.0, 1650.0),
    "ringing": (850.0, 1650.0),
    "kettle": (1700.0, 2800.0),
    "whistling": (1700.0, 2800.0),
}

#: internal-only labels -> (natural name, extra words it answers to)
KNOWN_LABELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prize": ("yellow cube", ("prize", "hidden cube", "treasure")),
}

#: number words for an index ("cup two" = ``cup_2``)
_NUMBERS = {"zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_STOP = frozenset(
    "the a an my your our his her their this that these those some any of it its in on at "
    "room".split()
)
#: place words: a phrase naming a room the object is not known in names another object
PLACES = frozenset(
    "kitchen living bedroom study garage attic cellar basement garden bathroom hall hallway "
    "office dining lounge porch balcony yard".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def singular(word: str) -> str:
    """``cups`` -> ``cup``, ``boxes`` -> ``box``, ``keys`` stays a group word."""
    if word in SYNONYMS or len(word) <= 3:
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@dataclass(frozen=True)
class NaturalName:
    """What a label is called: ``name`` ("red cube"), ``noun`` (canonical: "cube"),
    ``colours``, ``index`` (``cup_2`` -> 2, else -1), ``words`` it answers to."""

    label: str
    name: str
    noun: str
    colours: frozenset[str] = frozenset()
    index: int = -1
    words: frozenset[str] = frozenset()
    spoken: str = ""  # the noun as the label says it ("mug" for mug_white; noun: "cup")


@dataclass(frozen=True)
class Phrase:
    """A spoken noun phrase split into colours, nouns (canonical), an index, the rest."""

    text: str
    colours: frozenset[str]
    nouns: tuple[str, ...]
    index: int
    other: tuple[str, ...]
    said: tuple[str, ...] = ()


def phrase_parts(text: str) -> Phrase:
    """Split "the red cup 2" into colours {red}, nouns (cup,), index 2; ``said`` keeps
    the nouns as spoken ("mug"), ``nouns`` their canonical group word ("cup")."""
    words = [w for w in _WORD.findall(text.lower().replace("_", " ")) if w not in _STOP]
    colours, nouns, other, said = set(), [], [], []
    index = -1
    for w in words:
        if w in COLOURS:
            colours.add(COLOURS[w])
        elif w.isdigit():
            index = int(w)
        elif w in _NUMBERS:
            index = _NUMBERS[w]
        else:
            s = singular(w)
            if s in SYNONYMS:
                nouns.append(SYNONYMS[s])
                said.append(s)
            else:
                other.append(s)
    return Phrase(text, frozenset(colours), tuple(nouns), index, tuple(other), tuple(said))


@dataclass
class NameTable:
    """Natural names of labels and how well a phrase names one (see the module docstring).

    ``embed``: optional ``text -> (D,)`` (the injected text encoder; called lazily).
    ``extra``: more internal labels -> (natural name, extra words)."""

    embed: Callable[[str], np.ndarray] | None = None
    extra: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    embedding_min: float = 0.55  # cosine a noun the word lists do not know needs (calibrated)
    _cache: dict[str, NaturalName] = field(default_factory=dict)
    _vecs: dict[str, np.ndarray] = field(default_factory=dict)

    def describe(self, label: str) -> NaturalName:
        """The ``NaturalName`` of ``label`` (cached)."""
        hit = self._cache.get(label)
        if hit is not None:
            return hit
        known = {**KNOWN_LABELS, **self.extra}.get(label)
        base = known[0] if known else label
        p = phrase_parts(base)
        index = -1
        m = re.search(r"_(\d+)$", label)
        if m and not known:
            index = int(m.group(1))
        noun = p.nouns[0] if p.nouns else (p.other[-1] if p.other else label)
        spoken = p.said[0] if p.said else noun
        rest = list(p.other if p.nouns else p.other[:-1])
        name = " ".join([*sorted(p.colours), *rest, spoken])
        if index >= 0:
            name = f"{name} {index}"
        if known:
            name = known[0]
        words = {noun, spoken, *p.other, *p.colours}
        words |= {w for w, g in SYNONYMS.items() if g == noun}
        for extra in known[1] if known else ():
            words |= set(_WORD.findall(extra))
        out = NaturalName(label, name, noun, p.colours, index, frozenset(words), spoken)
        self._cache[label] = out
        return out

    def name(self, label: str) -> str:
        """What to call ``label`` in an answer: "the red cube", "cup 2"."""
        return self.describe(label).name

    def match(self, phrase: str | Phrase, label: str) -> float:
        """How well ``phrase`` names ``label``, in [0, 1]; 0 = it does not.

        1.0: the label itself or noun + colours + index all agree; 0.9: a synonym of the
        noun; the embedding cosine for a noun the word lists do not know."""
        p = phrase if isinstance(phrase, Phrase) else phrase_parts(phrase)
        n = self.describe(label)
        text = p.text.lower().strip()
        if text.replace(" ", "_") == label or text == n.name:
            return 1.0
        if p.colours and n.colours and not (p.colours <= n.colours):
            return 0.0  # "red cube" is not the yellow cube
        if p.colours and not n.colours:
            return 0.0  # a colour the object is not known to have
        if p.index >= 0 and n.index >= 0 and p.index != n.index:
            return 0.0
        if p.index >= 0 and n.index < 0:
            return 0.0
        extra_words = set(p.other) & n.words
        if (set(p.other) & PLACES) - n.words:
            return 0.0  # "the garage shelf" is not the study shelf
        unknown = [w for w in p.other if w not in n.words]
        if p.nouns:
            if n.noun not in p.nouns and not (set(p.nouns) & n.words):
                return 0.0
            score = 1.0 if p.said and p.said[0] in (n.spoken, n.noun) else 0.9
            return score * (0.8 ** len(unknown))
        if extra_words - PLACES:
            return 0.95 * (0.8 ** len(unknown))
        if not p.other:
            return 0.7 if p.colours else 0.0  # "the red one": colour only
        return self._embedding_match(" ".join(p.other), n)

    def _embedding_match(self, words: str, n: NaturalName) -> float:
        if self.embed is None:
            return 0.0
        a, b = self._vec(words), self._vec(n.name)
        cos = float(a @ b)
        return cos if cos >= self.embedding_min else 0.0

    def _vec(self, text: str) -> np.ndarray:
        v = self._vecs.get(text)
        if v is None:
            assert self.embed is not None
            v = np.asarray(self.embed(text), np.float32).reshape(-1)
            v = v / max(float(np.linalg.norm(v)), 1e-9)
            self._vecs[text] = v
        return v

    def best(self, phrase: str | Phrase, labels: Iterable[str]) -> list[tuple[float, str]]:
        """``(score, label)`` of every label ``phrase`` names (score > 0), best first."""
        p = phrase if isinstance(phrase, Phrase) else phrase_parts(phrase)
        scored = [(self.match(p, lb), lb) for lb in dict.fromkeys(labels)]
        return sorted(((s, lb) for s, lb in scored if s > 0), key=lambda x: (-x[0], x[1]))
