"""Semantic memory: a knowledge graph of facts with history, guarded against poisoning.

A fact is ``(subject, relation, object)`` with a confidence, its source
(``observation``, ``speech``, ``told``, ``inferred``, ``system``), provenance,
the supporters that confirmed it, and a validity interval ``[valid_from_ns,
valid_to_ns)`` (``valid_to_ns = 0``: still valid). Names are normalised to
lower-case snake case (``"the Red Mug"`` -> ``red_mug``).

Where facts come from:

- ``Percept`` objects: ``A on B`` when A's bottom lies within ``on_gap_m`` of
  B's top and A's centre is over B's footprint (source ``observation``);
- ``Transcript`` text: "the keys are in the drawer", "I put the mug on the
  shelf", "the door is open" (source ``speech``);
- ``assert_fact`` for anything else (a planner, the spatial memory's rooms).

Updates keep history: a relation listed in ``functional_relations`` has one
object per subject at a time. A new ``red_mug on table_2`` that the guard lets
through closes ``red_mug on table_1`` (``valid_to_ns`` set, status
``superseded``, ``superseded_by`` the new fact) instead of deleting it, so
``history("red_mug", "on")`` and ``where_before("red_mug")`` answer "where was it
before?". Location relations (``location_relations``) chain: ``mug on table_1``
and ``table_1 in kitchen`` put the mug in the kitchen; a claim that the mug is
in the garage contradicts that chain, and an applied update supersedes every
location fact it contradicts.

Every candidate goes through ``engram.memory.guard.MemoryGuard`` (A-MemGuard): see there
for the consensus rule, quarantine, lessons and the audit log.

Recall: facts by word overlap on subject/relation/object and by text-embedding
similarity (an injected ``embed_text`` for space ``"text"``, MiniLM), scaled by
confidence. Only current facts, unless the query asks about the past ("before",
"used to", "previously", "history") or gives a time window (facts valid in it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram.memory.base import Hit, Memory, Provenance
from engram.memory.embedding import Embedders, query_vectors
from engram.memory.guard import Candidate, Decision, GuardConfig, MemoryGuard, add_support
from engram.memory.index import (
    IndexConfig,
    VectorIndex,
    tokens,
)
from engram.memory.store import Record, Store
from engram.runtime.messages import MemoryQuery, Message, Percept, Transcript

__all__ = ["Fact", "SemanticConfig", "SemanticMemory", "normalise_name"]


@dataclass
class SemanticConfig:
    """Relations, derivation and scoring of the ``SemanticMemory``."""

    functional_relations: tuple[str, ...] = (
        "in",
        "on",
        "at",
        "inside",
        "held_by",
        "state",
        "color",
    )
    location_relations: tuple[str, ...] = ("in", "on", "at", "inside")  # chain into containment
    observation_confidence: float = 0.9  # confidence of facts derived from percepts
    speech_confidence: float = 0.7  # of facts parsed from speech (x the transcript's, when given)
    derive_on: bool = True  # derive "A on B" from object geometry in percepts
    on_gap_m: float = 0.06  # A's bottom within this of B's top (metres)
    on_footprint_scale: float = 1.0  # A's centre within B's x-y footprint scaled by this
    history_max: int = 32  # superseded facts kept per (subject, relation)
    lexical_weight: float = 0.5  # share of word overlap in relevance (rest: embedding cosine)
    guard: GuardConfig = field(default_factory=GuardConfig)  # consensus rules (A-MemGuard)
    index: IndexConfig = field(default_factory=IndexConfig)  # vector search settings


@dataclass
class Fact:
    """One fact (one version of it is one store record)."""

    fact_id: str
    subject: str
    relation: str
    object: str
    confidence: float
    source: str
    provenance: Provenance
    valid_from_ns: int
    valid_to_ns: int = 0  # 0 = still valid
    status: str = "current"  # current | superseded
    superseded_by: str = ""
    supporters: dict[str, list[float]] = field(default_factory=dict)  # see guard.evidence
    version: int = 1

    @property
    def text(self) -> str:
        return f"{self.subject} {self.relation} {self.object}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "fact_id": self.fact_id,
            "subject": self.subject,
            "relation": self.relation,
            "object": self.object,
            "confidence": self.confidence,
            "source": self.source,
            "valid_from_ns": self.valid_from_ns,
            "valid_to_ns": self.valid_to_ns,
            "status": self.status,
            "superseded_by": self.superseded_by,
            "support": int(sum(s[1] for s in self.supporters.values())),
        }


_ARTICLES = re.compile(r"^(the|a|an|my|your|our|his|her|their|this|that)\s+")


def normalise_name(text: str) -> str:
    """``"The Red Mug"`` -> ``red_mug`` (articles dropped, snake case)."""
    t = re.sub(r"[^a-z0-9_ ]+", " ", text.lower()).strip()
    t = _ARTICLES.sub("", t)
    return re.sub(r"[\s_]+", "_", t).strip("_")


_NAME = r"(?:the\s+|a\s+|an\s+|my\s+|your\s+)?([a-z][a-z0-9_]*(?:\s+[a-z0-9_]+){0,2}?)"
_REL = r"(in|on|at|inside|under|near|next to|on top of)"
# the place is the rest of the clause (up to three words: "the bedroom drawer"), not
# its shortest prefix; trailing fillers ("now", "again") are dropped by _place
_PLACE = r"(?:the\s+|a\s+|an\s+|my\s+|your\s+)?([a-z][a-z0-9_]*(?:\s+[a-z0-9_]+){0,2})"
_SAY_PATTERNS = [
    # "is in", "'s in", and a speaker's belief ("must be in", "should be on"): speech
    # recognition hears "the keys are in" as "the key must be in" often enough to matter
    re.compile(
        rf"\b{_NAME}(?:\s+(?:is|are|was|were)|'s|\s+(?:must|should|will|would|could|might|may)\s+be)"
        rf"\s+(?:now\s+|still\s+)?{_REL}\s+{_PLACE}"
    ),
    re.compile(rf"\b(?:put|placed|left|moved|dropped)\s+{_NAME}\s+{_REL}\s+{_PLACE}"),
]
_FILLER = re.compile(r"(?:\s+(?:now|again|please|today|there|here|too|for you|for me))+$")
_STATE = re.compile(
    rf"\b{_NAME}\s+(?:is|are)\s+(?:now\s+)?(open|closed|empty|full|broken|on|off|clean|dirty)\s*[.!?]?$"
)
_REL_NORMAL = {"next to": "near", "on top of": "on"}
_PAST = re.compile(r"\b(before|previously|used to|earlier|history|formerly|was it)\b", re.I)


def _member(sorted_keys: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``x`` are in ``sorted_keys``, and where (valid where found)."""
    pos = np.searchsorted(sorted_keys, x)
    if not len(sorted_keys):
        return np.zeros(len(x), bool), pos
    return sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == x, pos


class _FactColumns:
    """Per-fact arrays (one row per fact, in order of addition) kept beside the facts, so
    that recall scores every candidate with array expressions instead of a Python loop:
    confidence, validity, status, word count, fact number; word postings as row lists."""

    def __init__(self) -> None:
        self.n = 0
        self.conf = np.zeros(0)  # confidence
        self.vfrom = np.zeros(0, np.int64)  # valid_from_ns
        self.vto = np.zeros(0, np.int64)  # valid_to_ns (0: still valid)
        self.current = np.zeros(0, bool)  # status == "current"
        self.alive = np.zeros(0, bool)  # not dropped
        self.ntok = np.zeros(0, np.int64)  # distinct words of its text
        self.num = np.zeros(0, np.int64)  # fact number (the vector index id)
        self.fids: list[str] = []
        self.row: dict[str, int] = {}
        self.row_of_num = np.full(0, -1, np.int64)  # fact number -> row (-1: none)
        self.post: dict[str, list[int]] = {}  # word -> rows (dropped rows filtered by alive)

    def add(self, f: Fact, words: frozenset[str]) -> None:
        r, num = self.n, int(f.fact_id[1:])
        if r == len(self.conf):  # grow by doubling: amortised O(1) per fact
            cap = max(64, 2 * r)
            for name in ("conf", "vfrom", "vto", "current", "alive", "ntok", "num"):
                old = getattr(self, name)
                new = np.zeros(cap, old.dtype)
                new[:r] = old
                setattr(self, name, new)
        if num >= len(self.row_of_num):
            grown = np.full(max(64, 2 * num + 1), -1, np.int64)
            grown[: len(self.row_of_num)] = self.row_of_num
            self.row_of_num = grown
        self.n += 1
        self.fids.append(f.fact_id)
        self.row[f.fact_id] = r
        self.row_of_num[num] = r
        self.num[r], self.ntok[r], self.alive[r] = num, len(words), True
        self.update(f)
        for t in words:
            self.post.setdefault(t, []).append(r)

    def update(self, f: Fact) -> None:
        r = self.row[f.fact_id]
        self.conf[r], self.vfrom[r], self.vto[r] = f.confidence, f.valid_from_ns, f.valid_to_ns
        self.current[r] = f.status == "current"

    def drop(self, fid: str) -> None:
        r = self.row.pop(fid)
        self.alive[r] = False
        self.row_of_num[self.num[r]] = -1


class SemanticMemory(Memory):
    """Facts with history behind a consensus guard. See the module docstring."""

    name = "semantic"
    accepts = ("Percept", "Transcript")
    #: save(dir) into a copy of its previous save only writes what changed (store.sync)
    incremental_save = True

    def __init__(
        self, config: SemanticConfig | None = None, *, embedders: Embedders | None = None
    ) -> None:
        self.config = config or SemanticConfig()
        self.embedders = embedders
        self.reset()

    def reset(self) -> None:
        """Forget everything (an empty memory, same configuration)."""
        self.guard = MemoryGuard(self.config.guard)
        self._facts: dict[str, Fact] = {}
        self._current: dict[tuple[str, str], list[str]] = {}  # (subject, relation) -> fact ids
        self._history: dict[tuple[str, str], list[str]] = {}  # superseded, oldest first
        self._post: dict[str, set[str]] = {}
        self._cols = _FactColumns()  # the same facts as arrays, for recall
        self._index: VectorIndex | None = None
        self._next = 0
        self._clock_ns = 0
        self.counters = {"written": 0, "candidates": 0, "applied": 0, "quarantine_decisions": 0}

    # ---- writing ------------------------------------------------------------------------
    def write(self, msg: Message, *, topic: str = "") -> None:
        producer = topic
        if isinstance(msg, Percept):
            cands = self._from_percept(msg)
            source, conf = "observation", self.config.observation_confidence
        elif isinstance(msg, Transcript):
            cands = self._from_speech(msg.text)
            source = "speech"
            conf = self.config.speech_confidence * (msg.confidence if msg.confidence > 0 else 1.0)
            producer = f"{topic}:{msg.speaker}" if msg.speaker else topic  # one supporter per voice
        else:
            return
        prov = Provenance.of(msg, topic)
        for s, r, o in cands:
            self.assert_fact(
                s,
                r,
                o,
                confidence=conf,
                source=source,
                provenance=prov,
                stamp_ns=msg.stamp_ns,
                producer=producer,
            )
        self.counters["written"] += 1

    def _from_percept(self, p: Percept) -> list[tuple[str, str, str]]:
        cfg = self.config
        if not cfg.derive_on or p.num_objects < 2:
            return []
        out = []
        c, e = p.object_centroids.astype(np.float64), p.object_extents.astype(np.float64)
        for a in range(p.num_objects):
            best, best_gap = None, cfg.on_gap_m
            bottom_a = c[a, 2] - e[a, 2] / 2
            for b in range(p.num_objects):
                if a == b or p.object_labels[a] == p.object_labels[b]:
                    continue
                gap = abs(bottom_a - (c[b, 2] + e[b, 2] / 2))
                half = e[b, :2] / 2 * cfg.on_footprint_scale
                inside = np.all(np.abs(c[a, :2] - c[b, :2]) <= half)
                if inside and gap <= best_gap and e[b, :2].prod() > e[a, :2].prod():
                    best, best_gap = b, gap
            if best is not None:
                out.append(
                    (
                        normalise_name(p.object_labels[a]),
                        "on",
                        normalise_name(p.object_labels[best]),
                    )
                )
        return out

    @staticmethod
    def _from_speech(text: str) -> list[tuple[str, str, str]]:
        t = text.lower().strip()
        out = []
        for sentence in re.split(r"[.;!?]\s*|\band\b", t):
            sentence = sentence.strip()
            if not sentence:
                continue
            m = _STATE.search(sentence)
            if m:
                out.append((normalise_name(m.group(1)), "state", m.group(2)))
                continue
            for pat in _SAY_PATTERNS:
                m = pat.search(sentence)
                if m:
                    rel = _REL_NORMAL.get(m.group(2), m.group(2))
                    place = _FILLER.sub("", m.group(3).strip())
                    s, o = normalise_name(m.group(1)), normalise_name(place)
                    if s and o and s not in ("it", "there", "that", "this"):
                        out.append((s, rel, o))
                    break
        return out

    def assert_fact(
        self,
        subject: str,
        relation: str,
        object: str,  # noqa: A002 - the triple's name
        *,
        confidence: float = 1.0,
        source: str = "told",
        provenance: Provenance | None = None,
        stamp_ns: int | None = None,
        producer: str = "",
    ) -> Decision:
        """Offer a fact to the guard; apply it if the guard says so. Returns the decision."""
        s, r, o = normalise_name(subject), normalise_name(relation), normalise_name(object)
        if not s or not r or not o:
            raise ValueError(f"assert_fact: empty name in ({subject!r}, {relation!r}, {object!r})")
        if not 0.0 <= float(confidence) <= 1.0:
            raise ValueError(f"assert_fact: confidence must be in [0, 1], got {confidence}")
        prov = provenance or Provenance()
        stamp = int(stamp_ns if stamp_ns is not None else (prov.stamp_ns or self._clock_ns))
        self._clock_ns = max(self._clock_ns, stamp)
        who = producer or prov.producer or prov.source_topic or "unknown"
        cand = Candidate(s, r, o, float(confidence), source, who, stamp)
        self.counters["candidates"] += 1
        same = self._current_fact(s, r, o)
        conflicts = self._conflicts(cand)
        decision = self.guard.decide(cand, same=same, conflicts=conflicts, now_ns=self._clock_ns)
        if decision.action == "reinforced" and same is not None:
            add_support(same.supporters, cand.supporter, self.guard.weight(cand), stamp)
            same.confidence = max(same.confidence, cand.confidence)
            same.version += 1
            self._cols.update(same)
        elif decision.action in ("accepted", "updated", "released"):
            supporters = decision.supporters or {
                cand.supporter: [self.guard.weight(cand), 1, stamp]
            }
            for f in conflicts:
                self._supersede(f, stamp)
            self._add_fact(cand, prov, supporters)
        if decision.applied:
            self.counters["applied"] += 1
        elif decision.action == "quarantined":
            self.counters["quarantine_decisions"] += 1
        return decision

    def _current_fact(self, s: str, r: str, o: str) -> Fact | None:
        for fid in self._current.get((s, r), ()):
            f = self._facts[fid]
            if f.object == o:
                return f
        return None

    def _conflicts(self, cand: Candidate) -> list[Fact]:
        cfg = self.config
        s, r, o = cand.triple
        out: dict[str, Fact] = {}
        if r in cfg.functional_relations:
            for fid in self._current.get((s, r), ()):
                if self._facts[fid].object != o:
                    out[fid] = self._facts[fid]
        if r in cfg.location_relations:
            chain_o = self.containers(o, exclude=s)
            for rel in cfg.location_relations:
                for fid in self._current.get((s, rel), ()):
                    f = self._facts[fid]
                    if f.object == o or fid in out:
                        continue
                    if f.object in chain_o or o in self.containers(f.object, exclude=s):
                        continue  # consistent: one contains the other
                    out[fid] = f
        return list(out.values())

    def containers(self, name: str, *, exclude: str = "", depth: int = 4) -> set[str]:
        """Everything ``name`` is (transitively) in / on / at, by current facts."""
        seen: set[str] = set()
        frontier = [normalise_name(name)]
        for _ in range(depth):
            nxt = []
            for x in frontier:
                for rel in self.config.location_relations:
                    for fid in self._current.get((x, rel), ()):
                        o = self._facts[fid].object
                        if o not in seen and o != exclude:
                            seen.add(o)
                            nxt.append(o)
            frontier = nxt
        return seen

    def _add_fact(self, cand: Candidate, prov: Provenance, supporters: dict) -> Fact:
        self._next += 1
        f = Fact(
            fact_id=f"f{self._next}",
            subject=cand.subject,
            relation=cand.relation,
            object=cand.object,
            confidence=cand.confidence,
            source=cand.source,
            provenance=prov,
            valid_from_ns=cand.stamp_ns,
            supporters=supporters,
        )
        self._facts[f.fact_id] = f
        self._current.setdefault((f.subject, f.relation), []).append(f.fact_id)
        words = tokens(f.text.replace("_", " "))
        for t in words:
            self._post.setdefault(t, set()).add(f.fact_id)
        self._cols.add(f, words)
        if self.embedders is not None:
            vec = self.embedders.embed("text", f.text.replace("_", " "))
            if vec is not None:
                if self._index is None:
                    self._index = VectorIndex(vec.size, config=self.config.index)
                self._index.add([self._next], vec)
        return f

    def _supersede(self, f: Fact, stamp_ns: int) -> None:
        key = (f.subject, f.relation)
        self._current[key].remove(f.fact_id)
        if not self._current[key]:
            del self._current[key]
        f.status = "superseded"
        f.valid_to_ns = max(stamp_ns, f.valid_from_ns)
        f.superseded_by = f"f{self._next + 1}"
        f.version += 1
        self._cols.update(f)
        hist = self._history.setdefault(key, [])
        hist.append(f.fact_id)
        while len(hist) > self.config.history_max:
            self._drop(hist.pop(0))

    def _drop(self, fid: str) -> None:
        f = self._facts.pop(fid)
        self._cols.drop(fid)
        for t in tokens(f.text.replace("_", " ")):
            self._post.get(t, set()).discard(fid)
        if self._index is not None:
            self._index.remove([int(fid[1:])])

    # ---- queries ------------------------------------------------------------------------
    def facts(
        self,
        subject: str | None = None,
        relation: str | None = None,
        object: str | None = None,  # noqa: A002
        *,
        at_ns: int | None = None,
        include_history: bool = False,
    ) -> list[Fact]:
        """Facts matching the given parts; current ones, or those valid at ``at_ns``."""
        s = normalise_name(subject) if subject else None
        r = normalise_name(relation) if relation else None
        o = normalise_name(object) if object else None
        out = []
        for f in self._facts.values():
            if (s and f.subject != s) or (r and f.relation != r) or (o and f.object != o):
                continue
            if at_ns is not None:
                if f.valid_from_ns > at_ns or (f.valid_to_ns and f.valid_to_ns <= at_ns):
                    continue
            elif f.status != "current" and not include_history:
                continue
            out.append(f)
        out.sort(key=lambda f: (f.valid_from_ns, f.fact_id))
        return out

    def history(self, subject: str, relation: str) -> list[Fact]:
        """Every kept fact of (subject, relation), oldest first (current one last)."""
        return self.facts(subject, relation, include_history=True)

    def where(self, subject: str) -> list[Fact]:
        """Current location facts of ``subject``."""
        s = normalise_name(subject)
        return [
            self._facts[fid]
            for rel in self.config.location_relations
            for fid in self._current.get((s, rel), ())
        ]

    def where_before(self, subject: str) -> Fact | None:
        """The most recently superseded location fact of ``subject`` ("where was it before?")."""
        s = normalise_name(subject)
        old = [
            self._facts[fid]
            for rel in self.config.location_relations
            for fid in self._history.get((s, rel), ())
        ]
        return max(old, key=lambda f: (f.valid_to_ns, f.fact_id), default=None)

    @property
    def quarantine(self) -> list[dict[str, Any]]:
        return list(self.guard.quarantine.values())

    @property
    def audit(self) -> list[dict[str, Any]]:
        return list(self.guard.audit)

    # ---- recall -------------------------------------------------------------------------
    def recall(self, query: MemoryQuery) -> list[Hit]:
        """Candidates: facts sharing a word with the question, and the nearest by text
        embedding; scored with array expressions over ``_FactColumns`` (no loop over
        candidates): relevance = word overlap and cosine, times confidence."""
        dims = {"text": self._index.dim} if self._index is not None else {}
        qv = query_vectors(query.text, query.embedding, self.embedders, dims)
        qt = tokens(query.text)
        if not qv and not qt:
            return []
        cols = self._cols
        past = bool(_PAST.search(query.text))
        window = bool(query.t0_ns or query.t1_ns)
        posted = [cols.post[t] for t in qt if t in cols.post]
        lex_rows, common = (
            np.unique(np.concatenate([np.asarray(p, np.int64) for p in posted]), return_counts=True)
            if posted
            else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        )
        emb_rows, emb_scores = np.zeros(0, np.int64), np.zeros(0)
        if "text" in qv and self._index is not None and len(self._index):
            scores, ids = self._index.search(qv["text"], max(8 * query.top_k, 32))
            ok = (ids[0] >= 0) & (ids[0] < len(cols.row_of_num))
            rows = np.full(len(ids[0]), -1, np.int64)
            rows[ok] = cols.row_of_num[ids[0][ok]]
            keep = rows >= 0
            emb_rows, emb_scores = rows[keep], scores[0][keep].astype(np.float64)
        rows = np.union1d(lex_rows, emb_rows)
        rows = rows[cols.alive[rows]]
        if not len(rows):
            return []
        # filters: a time window, else current facts unless the question is about the past
        if window:
            keep = np.ones(len(rows), bool)
            if query.t1_ns:
                keep &= cols.vfrom[rows] <= query.t1_ns
            if query.t0_ns:
                vto = cols.vto[rows]
                keep &= (vto == 0) | (vto >= query.t0_ns)
        else:
            keep = cols.current[rows] | past
        rows = rows[keep]
        # word overlap (``lexical_score``) and cosine, per candidate row
        precision = 0.25  # ``lexical_score``'s
        c = np.zeros(len(rows))
        found, pos = _member(lex_rows, rows)  # lex_rows is sorted (np.unique)
        c[found] = common[pos[found]]
        lex = (c / max(len(qt), 1)) * (
            1.0 - precision + precision * c / np.maximum(cols.ntok[rows], 1)
        )
        emb = np.zeros(len(rows))
        if "text" in qv and self._index is not None:
            order = np.argsort(emb_rows, kind="stable")
            hit, pos = _member(emb_rows[order], rows)
            emb[hit] = emb_scores[order][pos[hit]]
            missing = ~hit
            if missing.any():  # one matrix product for the word-only candidates
                nums = cols.num[rows[missing]]
                emb[missing] = self._index.get(nums) @ qv["text"]
            emb = np.clip(emb, 0.0, 1.0)
        lam = self.config.lexical_weight
        rel = lam * lex + (1 - lam) * emb if (qv and qt) else (emb if qv else lex)
        ok = rel > 0
        rows, rel = rows[ok], rel[ok]
        score = rel * (0.5 + 0.5 * cols.conf[rows])
        if past:  # the question is about the past
            score = np.where(cols.current[rows], score, np.minimum(1.0, score * 1.1))
        k = query.top_k
        if len(rows) > k:  # the k best and everything tied with the k-th: exact order below
            kth = np.partition(score, len(score) - k)[len(score) - k]
            sel = score >= kth
            rows, score = rows[sel], score[sel]
        ranked = sorted(
            zip(score.tolist(), cols.vfrom[rows].tolist(), (cols.fids[r] for r in rows.tolist())),
            key=lambda x: (-x[0], -x[1], x[2]),
        )
        return [self._hit(self._facts[fid], s) for s, _, fid in ranked[:k]]

    def _hit(self, f: Fact, score: float) -> Hit:
        since = "since" if f.status == "current" else "from"
        until = f" until {f.valid_to_ns}" if f.valid_to_ns else ""
        data = f.to_dict()
        prior = [
            self._facts[fid].object
            for fid in self._history.get((f.subject, f.relation), ())
            if fid in self._facts
        ]
        data["previous_objects"] = prior
        # when it was last confirmed (seen or said again): "what was on the table
        # before the cup was moved?" needs the last moment the cup was seen there
        data["last_support_ns"] = int(
            max((sup[2] for sup in f.supporters.values()), default=f.valid_from_ns)
        )
        return Hit(
            memory=self.name,
            score=score,
            text=f"{f.text} ({f.status}, {since} {f.valid_from_ns}{until}, conf {f.confidence:.2f})",
            stamp_ns=f.valid_from_ns,
            record_id=f"fact:{f.fact_id}",
            provenance=f.provenance,
            data=data,
        )

    # ---- persistence --------------------------------------------------------------------
    def _records(self) -> Any:
        meta = {
            "next": self._next,
            "clock_ns": self._clock_ns,
            "counters": self.counters,
            "current": [[s, r, ids] for (s, r), ids in self._current.items()],
            "history": [[s, r, ids] for (s, r), ids in self._history.items()],
        }
        yield Record(self.name, "meta", payload=meta, kind="meta")
        yield Record(self.name, "guard", payload=self.guard.state(), kind="guard")
        for f in self._facts.values():
            arrays = {}
            if self._index is not None and int(f.fact_id[1:]) in self._index:
                arrays["emb"] = self._index.get([int(f.fact_id[1:])])[0]
            payload = f.to_dict()
            payload["supporters"] = f.supporters
            yield Record(
                self.name,
                f.fact_id,
                kind="fact",
                stamp_ns=f.valid_from_ns,
                provenance=f.provenance,
                version=f.version,
                payload=payload,
                arrays=arrays,
            )

    def save(self, directory: str | Path) -> None:
        with Store(directory) as store:
            store.sync(self.name, self._records(), keep_history=False)

    def load(self, directory: str | Path) -> None:
        with Store(directory) as store:
            meta = store.get(self.name, "meta")
            guard = store.get(self.name, "guard")
            if meta is None or guard is None:
                raise ValueError(f"{directory}: no semantic memory saved there")
            self.reset()
            m = meta.payload
            self._next, self._clock_ns = m["next"], m["clock_ns"]
            self.counters.update(m["counters"])
            self.guard.set_state(guard.payload)
            self._current = {(s, r): list(ids) for s, r, ids in m["current"]}
            self._history = {(s, r): list(ids) for s, r, ids in m["history"]}
            ids, vecs = [], []
            for rec in store.scan(self.name, kind="fact"):
                p = rec.payload
                f = Fact(
                    fact_id=p["fact_id"],
                    subject=p["subject"],
                    relation=p["relation"],
                    object=p["object"],
                    confidence=p["confidence"],
                    source=p["source"],
                    provenance=rec.provenance,
                    valid_from_ns=p["valid_from_ns"],
                    valid_to_ns=p["valid_to_ns"],
                    status=p["status"],
                    superseded_by=p["superseded_by"],
                    supporters={k: list(v) for k, v in p["supporters"].items()},
                    version=rec.version,
                )
                self._facts[f.fact_id] = f
                words = tokens(f.text.replace("_", " "))
                for t in words:
                    self._post.setdefault(t, set()).add(f.fact_id)
                self._cols.add(f, words)
                if "emb" in rec.arrays:
                    ids.append(int(f.fact_id[1:]))
                    vecs.append(rec.arrays["emb"])
            if vecs:
                self._index = VectorIndex(vecs[0].size, config=self.config.index)
                self._index.add(ids, np.stack(vecs))

    # ---- sizes --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._facts)

    def stats(self) -> dict[str, Any]:
        return {
            "records": len(self),
            "current": sum(len(v) for v in self._current.values()),
            "quarantined": len(self.guard.quarantine),
            "audit": len(self.guard.audit),
            "lessons": dict(self.guard.lessons),
            **self.counters,
        }
