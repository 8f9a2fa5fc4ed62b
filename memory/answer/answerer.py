"""``Answerer``: a question in plain words -> an ``Answer`` with evidence, or an abstention.

``Answerer(recall)`` asks the memories through ``recall(MemoryQuery) -> hits`` (a
``MemorySystem.recall``, or a bus client returning ``Recall.hits`` dicts), so the same
answerer serves ``/memory/query`` (the memory node), ``engram memory ask``, the live
page and the planner. Per question:

1. ``parse_intent`` (``intents``) gives the kind and the noun phrases;
2. only the memories that can answer it are asked (spatial + episodic for objects,
   semantic for facts said or derived, episodic + temporal for sounds and speech);
3. the things asked about are matched by natural name (``names.NameTable``: words,
   colours, synonyms, then the injected text encoder), never by exact label;
4. the answer is composed with its evidence (memory, record id, stamp, position,
   text) and a confidence in [0, 1]: how well the question's names matched what was
   remembered. Below ``AnswererConfig.abstain_below`` (calibrated on held-out
   questions by ``engram eval memory-qa --hard``: ``calibrate_threshold``) the answer
   is an explicit abstention, "I have not seen that", with ``abstained`` true.

Offline: no language model. Positions are world metres, times seconds of the
memory's clock (``stamp_ns / 1e9``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.memory.answer.intents import Intent, parse_intent
from engram.memory.answer.names import SOUND_BANDS_HZ, NameTable, phrase_parts
from engram.memory.answer.records import NOT_SEEN, Answer, Evidence, as_dict, fmt_pos, fmt_t
from engram.runtime.messages import MemoryQuery

__all__ = ["Answerer", "AnswererConfig"]

_FIRST_SAW = re.compile(r"^first saw (\S+) \((\w+)\)")
_HEARD = re.compile(r"^heard (.+?) \((\d+(?:\.\d+)?) Hz")
_SAID = re.compile(r'^(.+?) said "(.*)"$')
_LOCATION = ("in", "on", "at", "inside", "under", "near")
_FURNITURE = frozenset(
    "table shelf sofa bed counter desk cabinet drawer fridge chair floor wall tray".split()
)
_GENERIC = frozenset("object objects thing things item items stuff".split())


@dataclass
class AnswererConfig:
    """Thresholds of the ``Answerer``."""

    abstain_below: float = 0.5  # confidence under which it abstains (calibrate_threshold)
    top_k: int = 500  # hits per recall of a catalogue (objects, sounds, facts)
    cover_radius_m: float = 0.10  # "which cup hid X": a cup within this of X (x-y distance)
    place_radius_m: float = 0.6  # "what was at (x, y)": the object nearest within this
    match_min: float = 0.5  # name-match score a thing needs to count as named


@dataclass
class _Obj:
    """What the memories remember of one labelled object."""

    label: str
    position: np.ndarray | None = None
    last_ns: int = -1
    first_ns: int = -1
    first_position: np.ndarray | None = None
    since_ns: int = 0
    present: bool = True
    hits: list[dict[str, Any]] = field(default_factory=list)
    first_hit: dict[str, Any] | None = None


class Answerer:
    """Answers questions from memory recalls (see the module docstring)."""

    def __init__(
        self,
        recall: Callable[[MemoryQuery], Iterable[Any]],
        *,
        memories: Sequence[str] | None = None,
        names: NameTable | None = None,
        config: AnswererConfig | None = None,
    ) -> None:
        self._recall_fn = recall
        self.memories = set(memories) if memories is not None else None
        self.names = names or NameTable()
        self.config = config or AnswererConfig()

    @classmethod
    def for_system(
        cls,
        system: Any,
        *,
        embed: Callable[[str], np.ndarray] | None = None,
        config: AnswererConfig | None = None,
    ) -> Answerer:
        """An answerer over a ``MemorySystem`` (``embed``: the text encoder for names)."""
        return cls(
            system.recall, memories=system.names, names=NameTable(embed=embed), config=config
        )

    # ---- recall helpers -----------------------------------------------------------------
    def _recall(
        self, text: str, memories: Sequence[str], *, top_k: int = 0, t0_ns: int = 0, t1_ns: int = 0
    ) -> list[dict[str, Any]]:
        names = [m for m in memories if self.memories is None or m in self.memories]
        if not names:
            return []
        q = MemoryQuery(
            text=text,
            memories=names,
            top_k=top_k or self.config.top_k,
            t0_ns=max(int(t0_ns), 0),
            t1_ns=max(int(t1_ns), 0),
        )
        return [as_dict(h) for h in self._recall_fn(q)]

    def _objects(self) -> dict[str, _Obj]:
        """Every labelled object the spatial and episodic memories remember."""
        objs: dict[str, _Obj] = {}
        for h in self._recall("", ["spatial"]):
            d = h.get("data", {})
            if d.get("kind") != "object" or h.get("position") is None:
                continue
            label = str(d.get("label", ""))
            o = objs.setdefault(label, _Obj(label))
            last = int(d.get("last_seen_ns", h.get("stamp_ns", 0)))
            if last >= o.last_ns:
                o.position = np.asarray(h["position"], np.float64)
                o.last_ns = last
                o.since_ns = int(d.get("since_ns", 0))
                o.present = d.get("present") is not False
            first = int(d.get("first_seen_ns", last))
            o.first_ns = first if o.first_ns < 0 else min(o.first_ns, first)
            o.hits.append(h)
        for h in self._recall("first saw object", ["episodic"]):
            d = h.get("data", {})
            if d.get("kind") == "object" and h.get("position") is not None:
                label = str(d.get("label", ""))
                o = objs.setdefault(label, _Obj(label))
                last = int(d.get("last_seen_ns", h.get("stamp_ns", 0)))
                if o.position is None or last > o.last_ns:
                    o.position = np.asarray(h["position"], np.float64)
                    o.last_ns = last
                o.hits.append(h)
            elif d.get("kind") == "first_seen":
                m = _FIRST_SAW.match(str(h.get("text", "")))
                if not m or h.get("position") is None:
                    continue
                o = objs.setdefault(m.group(1), _Obj(m.group(1)))
                stamp = int(h.get("stamp_ns", 0))
                if o.first_hit is None or stamp < int(o.first_hit.get("stamp_ns", 0)):
                    o.first_hit = h
                    o.first_position = np.asarray(h["position"], np.float64)
                    o.first_ns = stamp if o.first_ns < 0 else min(o.first_ns, stamp)
        return objs

    def _match(
        self, phrase: str, labels: Iterable[str], *, exclude_furniture: bool = False
    ) -> list[tuple[float, str]]:
        out = self.names.best(phrase, labels)
        if exclude_furniture:
            out = [(s, lb) for s, lb in out if self.names.describe(lb).noun not in _FURNITURE]
        return [(s, lb) for s, lb in out if s >= self.config.match_min]

    def _facts(
        self, text: str, *, t0_ns: int = 0, t1_ns: int = 0
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(hit, fact data) of semantic facts recalled for ``text``."""
        out = []
        for h in self._recall(text, ["semantic"], top_k=200, t0_ns=t0_ns, t1_ns=t1_ns):
            d = h.get("data", {})
            if "subject" in d and "relation" in d:
                out.append((h, d))
        return out

    # ---- answering ----------------------------------------------------------------------
    def ask(self, question: str) -> Answer:
        """The ``Answer`` to ``question`` (``ValueError`` for an empty question)."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("ask: the question is empty")
        t0 = time.perf_counter()
        intent = parse_intent(question)
        handler = getattr(self, f"_{intent.kind}", self._unknown)
        ans: Answer = handler(intent)
        ans.question = question
        ans.intent = intent.kind
        if not ans.abstained and ans.confidence < self.config.abstain_below:
            ans = self._abstain(intent, evidence=ans.evidence, confidence=ans.confidence)
        ans.elapsed_ms = (time.perf_counter() - t0) * 1e3
        return ans

    def _abstain(
        self,
        intent: Intent,
        why: str = "",
        *,
        evidence: list[Evidence] | None = None,
        confidence: float = 0.0,
    ) -> Answer:
        text = NOT_SEEN if not why else f"{NOT_SEEN[:-1]}: {why}"
        return Answer(
            intent.text,
            text,
            "none",
            None,
            confidence,
            True,
            list(evidence or [])[:3],
            intent.kind,
        )

    def _now_ns(self, objs: dict[str, _Obj]) -> tuple[int, int]:
        """(earliest, latest) stamp of what the memories hold."""
        firsts = [o.first_ns for o in objs.values() if o.first_ns >= 0]
        lasts = [o.last_ns for o in objs.values() if o.last_ns >= 0]
        return (min(firsts, default=0), max(lasts, default=0))

    # where is X
    def _where_is(self, intent: Intent) -> Answer:
        objs = self._objects()
        matches = self._match(intent.target, objs)
        facts = self._said_location(intent.target)
        if facts and (not matches or facts[0][0] >= matches[0][0]):
            fact_ans = self._fact_answer(intent, facts, objs)
            if fact_ans is not None:
                return fact_ans
        if not matches:
            return self._abstain(intent)
        best = matches[0][0]
        tied = [lb for s, lb in matches if s >= best - 1e-9 and objs[lb].position is not None]
        if not tied:
            return self._abstain(intent)
        tied.sort(key=lambda lb: -objs[lb].last_ns)
        o = objs[tied[0]]
        assert o.position is not None
        name = self.names.name(o.label)
        gone = "" if o.present else " (it was not there when I last looked)"
        text = f"The {name} is at {fmt_pos(o.position)}, last seen at {fmt_t(o.last_ns)}{gone}."
        if len(tied) > 1:
            others = ", ".join(
                f"the {self.names.name(lb)} at {fmt_pos(objs[lb].position)}"  # type: ignore[arg-type]
                for lb in tied[1:4]
            )
            text += f" I also saw {others}."
        conf = best * (1.0 if o.present else 0.8) * (1.0 if len(tied) == 1 else 0.9)
        ev = [Evidence.of(h) for h in o.hits[:2]]
        return Answer(intent.text, text, "position", o.position, conf, False, ev, label=o.label)

    def _said_location(self, target: str) -> list[tuple[float, dict, dict]]:
        """Location facts about ``target`` (said or derived), best match first."""
        out = []
        p = phrase_parts(target)
        for h, d in self._facts(target):
            if d.get("relation") not in _LOCATION or d.get("status", "current") != "current":
                continue
            s = self.names.match(p, str(d["subject"]))
            if s >= self.config.match_min:
                out.append((s * (0.5 + 0.5 * float(d.get("confidence", 1.0))), h, d))
        out.sort(key=lambda x: (-x[0], -int(x[2].get("valid_from_ns", 0))))
        return out

    def _fact_answer(
        self, intent: Intent, facts: list[tuple[float, dict, dict]], objs: dict[str, _Obj]
    ) -> Answer | None:
        score, h, d = facts[0]
        place = str(d["object"]).replace("_", " ")
        subject = str(d["subject"]).replace("_", " ")
        who = ""
        ev = [Evidence.of(h)]
        # the utterance it came from: a speech event naming it, nearest in time
        fact_ns = int(h.get("stamp_ns", 0))
        spoken = [
            sh
            for sh in self._recall(subject, ["episodic"], top_k=50)
            if sh.get("data", {}).get("kind") == "speech"
            and subject.split()[-1] in str(sh.get("text", "")).lower().replace("_", " ")
        ]
        if spoken:
            sh = min(spoken, key=lambda x: abs(int(x.get("stamp_ns", 0)) - fact_ns))
            m = _SAID.match(str(sh.get("text", "")))
            who = m.group(1) if m and m.group(1) != "someone" else ""
            ev.append(Evidence.of(sh))
        source = d.get("source", "")
        pos = None
        place_objs = self._match(place, objs)
        if place_objs and objs[place_objs[0][1]].position is not None:
            pos = objs[place_objs[0][1]].position
        how = (
            f"{who} told me at {fmt_t(int(h.get('stamp_ns', 0)))}"
            if who
            else (
                f"heard at {fmt_t(int(h.get('stamp_ns', 0)))}"
                if source == "speech"
                else f"seen at {fmt_t(int(h.get('stamp_ns', 0)))}"
            )
        )
        text = f"The {subject} {'are' if subject.endswith('s') else 'is'} {d['relation']} the {place} ({how})."
        value: Any = pos if pos is not None else {"relation": d["relation"], "place": place}
        kind = "position" if pos is not None else "text"
        return Answer(intent.text, text, kind, value, score, False, ev, label=str(d["subject"]))

    # where was X (at the start / N minutes ago / before it was moved)
    def _where_was(self, intent: Intent) -> Answer:
        objs = self._objects()
        if intent.ago_s >= 0:
            start, now = self._now_ns(objs)
            at = now - int(intent.ago_s * 1e9)
            if at < start:
                return self._abstain(intent, "that was before I started remembering")
        matches = self._match(intent.target, objs)
        if not matches:
            return self._abstain(intent)
        score, label = matches[0]
        o = objs[label]
        name = self.names.name(label)
        if intent.ago_s >= 0:
            return self._position_at(intent, o, at, score)
        if o.first_position is not None and o.first_hit is not None:
            text = f"The {name} was at {fmt_pos(o.first_position)} when I first saw it ({fmt_t(o.first_ns)})."
            ev = [Evidence.of(o.first_hit)]
            return Answer(
                intent.text, text, "position", o.first_position, score, False, ev, label=label
            )
        if o.position is not None:  # never moved as far as the memories know
            text = f"The {name} was at {fmt_pos(o.position)} (first seen at {fmt_t(max(o.first_ns, 0))})."
            ev = [Evidence.of(h) for h in o.hits[:1]]
            return Answer(
                intent.text, text, "position", o.position, score * 0.9, False, ev, label=label
            )
        return self._abstain(intent)

    def _position_at(self, intent: Intent, o: _Obj, at_ns: int, score: float) -> Answer:
        """Where ``o`` was at ``at_ns``: the timeline's last sighting at or before it."""
        best = None
        for h in self._recall(o.label.replace("_", " "), ["temporal"], top_k=200, t1_ns=at_ns):
            d = h.get("data", {})
            if d.get("object") == o.label and h.get("position") is not None:
                if int(h.get("stamp_ns", 0)) <= at_ns and (
                    best is None or int(h["stamp_ns"]) > int(best["stamp_ns"])
                ):
                    best = h
        if best is None:
            if (
                o.first_ns >= 0
                and o.first_ns <= at_ns
                and o.since_ns <= at_ns
                and o.position is not None
            ):
                text = f"The {self.names.name(o.label)} was at {fmt_pos(o.position)} then."
                ev = [Evidence.of(h) for h in o.hits[:1]]
                return Answer(
                    intent.text, text, "position", o.position, score * 0.9, False, ev, label=o.label
                )
            return self._abstain(intent, "I had not seen it by then")
        pos = np.asarray(best["position"], np.float64)
        text = f"The {self.names.name(o.label)} was at {fmt_pos(pos)} ({fmt_t(int(best['stamp_ns']))})."
        return Answer(
            intent.text, text, "position", pos, score, False, [Evidence.of(best)], label=o.label
        )

    # when did you (first / last) see X
    def _when_seen(self, intent: Intent) -> Answer:
        objs = self._objects()
        matches = self._match(intent.target, objs)
        if not matches:
            return self._abstain(intent)
        score, label = matches[0]
        o = objs[label]
        name = self.names.name(label)
        if intent.when == "last":
            if o.last_ns < 0:
                return self._abstain(intent)
            ev = [Evidence.of(h) for h in o.hits[:1]]
            text = f"I last saw the {name} at {fmt_t(o.last_ns)}."
            return Answer(intent.text, text, "time", o.last_ns / 1e9, score, False, ev, label=label)
        if o.first_ns < 0:
            return self._abstain(intent)
        ev = [Evidence.of(o.first_hit)] if o.first_hit else [Evidence.of(h) for h in o.hits[:1]]
        text = f"I first saw the {name} at {fmt_t(o.first_ns)}."
        return Answer(intent.text, text, "time", o.first_ns / 1e9, score, False, ev, label=label)

    # which C hid X
    def _which(self, intent: Intent) -> Answer:
        objs = self._objects()
        targets = self._match(intent.target, objs)
        cands = self._match(intent.category, objs)
        if not targets or not cands:
            return self._abstain(intent)
        # "the cube" may name several cubes: the one a candidate stands over is meant
        top = targets[0][0]
        best: tuple[float, str, str] | None = None  # (distance, candidate, target)
        for t_s, t_lb in targets:
            t_o = objs[t_lb]
            spot = t_o.position if t_o.position is not None else t_o.first_position
            if t_s < top - 1e-9 or spot is None:
                continue
            for _, lb in cands:
                p = objs[lb].position
                if lb == t_lb or p is None:
                    continue
                d = float(np.linalg.norm(p[:2] - spot[:2]))
                if best is None or d < best[0]:
                    best = (d, lb, t_lb)
        if best is None or best[0] > self.config.cover_radius_m:
            return self._abstain(intent, f"no {intent.category} was where the {intent.target} was")
        d, lb, t_label = best
        t_score = top
        t = objs[t_label]
        spot = t.position if t.position is not None else t.first_position
        assert spot is not None
        c_score = next(s for s, x in cands if x == lb)
        conf = min(t_score, c_score) * (1.0 - 0.5 * d / self.config.cover_radius_m)
        text = (
            f"The {self.names.name(lb)}: the {self.names.name(t_label)} was at "
            f"{fmt_pos(spot)} and the {self.names.name(lb)} at "
            f"{fmt_pos(objs[lb].position)}, {d * 100:.0f} cm away."  # type: ignore[arg-type]
        )
        first = [t.first_hit] if t.first_hit is not None else t.hits[:1]
        ev = [Evidence.of(h) for h in first]
        ev += [Evidence.of(h) for h in objs[lb].hits[:1]]
        return Answer(intent.text, text, "label", lb, conf, False, ev, label=lb)

    # what was on / at / in Y (before Z / N minutes ago)
    def _what_at(self, intent: Intent) -> Answer:
        objs = self._objects()
        start, now = self._now_ns(objs)
        at = 0
        if intent.ago_s >= 0:
            at = now - int(intent.ago_s * 1e9)
            if at < start:
                return self._abstain(intent, "that was before I started remembering")
        coords = re.findall(r"-?\d+(?:\.\d+)?", intent.target)
        if len(coords) >= 2 and "(" in intent.text:
            return self._what_near(intent, np.array([float(coords[0]), float(coords[1])]), objs)
        places = self._match(intent.target, objs)
        place_label = places[0][1] if places else ""
        ref_ev: list[Evidence] = []
        if intent.reference:
            found = self._event_time(intent.reference, objs, place_label)
            if found is None:
                return self._abstain(intent, f"I do not know when {intent.reference}")
            (t_before, t_after), ev = found
            ref_ev = [ev]
            at = t_before if intent.when in ("before", "until") else t_after
        rel = {"underneath": "under", "beneath": "under", "below": "under", "inside": "in"}.get(
            intent.relation, intent.relation
        )
        words = f"{rel} {intent.target} {place_label.replace('_', ' ')}"
        found_subjects: dict[str, tuple[float, dict]] = {}
        p = phrase_parts(intent.target)
        for h, d in self._facts(words, t0_ns=at, t1_ns=at):
            if d.get("relation") != rel and not (
                rel in ("at", "by", "near") and d.get("relation") in _LOCATION
            ):
                continue
            obj = str(d["object"])
            if place_label:  # a remembered thing: that one (said places: by name)
                s = 1.0 if obj == place_label else 0.0
            else:
                s = self.names.match(p, obj)
            if s < self.config.match_min:
                continue
            vf, vt = int(d.get("valid_from_ns", 0)), int(d.get("valid_to_ns", 0))
            if at and (vf > at or (vt and vt <= at)):
                continue
            if not at and d.get("status", "current") != "current":
                continue
            subj = str(d["subject"])
            if subj not in found_subjects or s > found_subjects[subj][0]:
                found_subjects[subj] = (s, h)
        if at and found_subjects:
            found_subjects = self._seen_at_last_look(found_subjects, at, objs)
        if not found_subjects:
            if not places and not self._facts(intent.target):
                return self._abstain(intent)
            where = self.names.name(place_label) if place_label else intent.target
            return self._abstain(intent, f"I saw nothing {rel} the {where}")
        labels = sorted(found_subjects, key=lambda s: (-found_subjects[s][0], s))
        conf = max(s for s, _ in found_subjects.values())
        named = [f"the {self.names.name(lb)}" for lb in labels]
        where = self.names.name(place_label) if place_label else intent.target
        when = f" {intent.when} {intent.reference}" if intent.reference else ""
        text = f"{rel.capitalize()} the {where}{when}: {', '.join(named)}."
        ev = ref_ev + [Evidence.of(h) for _, h in found_subjects.values()][:5]
        return Answer(intent.text, text, "labels", labels, conf, False, ev, label=place_label)

    def _seen_at_last_look(
        self,
        found: dict[str, tuple[float, dict]],
        at_ns: int,
        objs: dict[str, _Obj],
        tolerance_ns: int = 1_500_000_000,
    ) -> dict[str, tuple[float, dict]]:
        """Of the facts valid at ``at_ns``, those confirmed at the last look before it: a
        fact last confirmed before that look was not seen there then (the object left,
        unseen, or its move was held back by the guard), unless something seen at that
        look stands where it was (it is hidden under it: the cube under its cup)."""
        last = {
            subj: int(h.get("data", {}).get("last_support_ns", h.get("stamp_ns", 0)))
            for subj, (_, h) in found.items()
        }
        looks = [t for t in last.values() if t <= at_ns]
        if not looks:
            return found
        look = max(looks)
        kept = {subj: v for subj, v in found.items() if last[subj] >= look - tolerance_ns}
        covers = [p for s in kept if s in objs and (p := objs[s].position) is not None]
        for subj, v in found.items():
            o = objs.get(subj)
            if subj in kept or o is None or o.position is None:
                continue
            p = o.position
            if any(
                float(np.linalg.norm(c[:2] - p[:2])) <= self.config.cover_radius_m for c in covers
            ):
                kept[subj] = v
        return kept

    def _what_near(self, intent: Intent, xy: np.ndarray, objs: dict[str, _Obj]) -> Answer:
        near = [
            (float(np.linalg.norm(o.position[:2] - xy)), lb)
            for lb, o in objs.items()
            if o.position is not None and self.names.describe(lb).noun not in _FURNITURE
        ]
        near = [x for x in near if x[0] <= self.config.place_radius_m]
        if not near:
            return self._abstain(intent, "I saw nothing there")
        d, lb = min(near)
        text = f"The {self.names.name(lb)} ({d:.2f} m from there)."
        ev = [Evidence.of(h) for h in objs[lb].hits[:1]]
        conf = 1.0 - 0.5 * d / self.config.place_radius_m
        return Answer(intent.text, text, "label", lb, conf, False, ev, label=lb)

    def _event_time(
        self, reference: str, objs: dict[str, _Obj], place: str = ""
    ) -> tuple[tuple[int, int], Evidence] | None:
        """When ``reference`` ("the cup was moved", "you heard the doorbell") happened:
        (the last moment before it, the first after it) as far as the memories saw.
        A move from ``place``: the last time the semantic memory had it confirmed there."""
        m = re.match(
            r"^(?:the |my |a )?(.+?) (?:was|were|got|had been) (?:moved|taken|picked up|lifted|"
            r"removed|put away|carried off)",
            reference,
        )
        if m:
            for _, lb in self._match(m.group(1), objs):
                o = objs[lb]
                if place:
                    # "before": the semantic memory includes superseded facts
                    for h, d in self._facts(f"{lb} on {place} before".replace("_", " ")):
                        if d.get("subject") == lb and d.get("object") == place:
                            last = int(d.get("last_support_ns", d.get("valid_from_ns", 0)))
                            after = int(d.get("valid_to_ns", 0)) or max(o.since_ns, last + 1)
                            ev = Evidence.of(h)
                            ev.text += f"; last seen there at {fmt_t(last)}"
                            return (last, after), ev
                if o.since_ns > max(o.first_ns, 0) and o.position is not None:
                    # the last sighting at the old place: the timeline's latest frame
                    # before it was seen at the new one, with it elsewhere
                    last_old, hit = o.since_ns - 1, None
                    for h in self._recall(
                        lb.replace("_", " "), ["temporal"], top_k=200, t1_ns=o.since_ns - 1
                    ):
                        d, stamp = h.get("data", {}), int(h.get("stamp_ns", 0))
                        if d.get("object") != lb or h.get("position") is None:
                            continue
                        far = np.linalg.norm(np.asarray(h["position"])[:2] - o.position[:2])
                        if stamp < o.since_ns and far > 0.2 and (hit is None or stamp > last_old):
                            last_old, hit = stamp, h
                    ev = Evidence.of(hit or o.hits[0])
                    ev.text = f"{lb} moved between {fmt_t(last_old)} and {fmt_t(o.since_ns)}"
                    return (last_old, o.since_ns), ev
            return None
        sound = self._sounds(re.sub(r"^(?:you |i )?(?:heard|hear) ", "", reference))
        if sound:
            stamp = int(sound[0][1]["stamp_ns"])
            return (stamp - 1, stamp + 1), Evidence.of(sound[0][1])
        return None

    # how many X
    def _how_many(self, intent: Intent) -> Answer:
        objs = self._objects()
        p = phrase_parts(intent.target)
        generic = set(p.other) <= _GENERIC and not p.nouns
        labels = set(objs)
        for h in self._recall(intent.target, ["temporal"], top_k=200):
            labels.update(str(x) for x in h.get("data", {}).get("labels", []))
        if generic:
            found = [lb for lb in labels if self.names.describe(lb).noun not in _FURNITURE]
            conf = 0.9
        else:
            m = self._match(intent.target, labels)
            found = [lb for s, lb in m if s >= 0.9]
            conf = max((s for s, _ in m), default=0.0)
            # "how many cups": the cups, not the mugs, when things are called cups
            exact = [lb for lb in found if self.names.describe(lb).spoken in p.said]
            found = exact or found
        found.sort()
        if not found:
            return self._abstain(intent, f"I saw no {intent.target}")
        what = intent.target
        text = f"{len(found)}: " + ", ".join(f"the {self.names.name(lb)}" for lb in found) + "."
        ev = [Evidence.of(objs[lb].hits[0]) for lb in found if lb in objs and objs[lb].hits][:6]
        ans = Answer(
            intent.text, f"I saw {len(found)} {what}. {text}", "count", len(found), conf, False, ev
        )
        ans.value = len(found)
        return ans

    # sounds
    def _sounds(self, target: str) -> list[tuple[float, dict[str, Any]]]:
        """(match, hit) of heard sounds matching ``target`` (all when empty), earliest first."""
        out: dict[int, tuple[float, dict[str, Any]]] = {}
        words = set(phrase_parts(target).nouns) | set(phrase_parts(target).other)
        band = next((b for n, b in SOUND_BANDS_HZ.items() if n in words), None)
        for mem in ("episodic", "temporal"):
            for h in self._recall("heard sound", [mem], top_k=200):
                d = h.get("data", {})
                if d.get("kind") not in ("heard", "sound"):
                    continue
                m = _HEARD.match(str(h.get("text", "")))
                if not m:
                    continue
                label, hz = m.group(1), float(m.group(2))
                if not target:
                    s = 1.0
                else:
                    s = self.names.match(target, label.replace(" ", "_"))
                    if band is not None and band[0] <= hz <= band[1]:
                        s = max(s, 0.9)
                    elif band is not None:
                        s = 0.0
                stamp = int(h.get("stamp_ns", 0))
                if s >= self.config.match_min and all(abs(stamp - k) > 5e8 for k in out):
                    out[stamp] = (s, h)
        return [out[k] for k in sorted(out)]

    def _when_heard(self, intent: Intent) -> Answer:
        heard = self._sounds(intent.target)
        if not heard:
            return self._abstain(intent, f"I did not hear {intent.target}")
        s, h = heard[0]
        text = f"I heard the {intent.target} at {fmt_t(int(h['stamp_ns']))}."
        return Answer(
            intent.text, text, "time", int(h["stamp_ns"]) / 1e9, s, False, [Evidence.of(h)]
        )

    def _where_heard(self, intent: Intent) -> Answer:
        heard = [x for x in self._sounds(intent.target) if x[1].get("position") is not None]
        if not heard:
            return self._abstain(intent, f"I did not hear {intent.target}")
        s, h = heard[0]
        pos = np.asarray(h["position"], np.float64)
        text = f"I was at {fmt_pos(pos)} when I heard the {intent.target} ({fmt_t(int(h['stamp_ns']))})."
        return Answer(intent.text, text, "position", pos, s, False, [Evidence.of(h)])

    def _heard(self, intent: Intent) -> Answer:
        heard = self._sounds(intent.target)
        said = self._speech(intent.target) if intent.target else []
        if not heard and not said:
            return self._abstain(intent, f"I did not hear {intent.target or 'anything'}")
        if heard:
            s, h = heard[0]
            what = intent.target or m_label(h)
            text = f"Yes: I heard the {what} at {fmt_t(int(h['stamp_ns']))}."
            if not intent.target:
                text = (
                    "I heard "
                    + ", ".join(f"{m_label(x)} at {fmt_t(int(x['stamp_ns']))}" for _, x in heard)
                    + "."
                )
            ev = [Evidence.of(x) for _, x in heard[:5]]
            return Answer(intent.text, text, "time", int(h["stamp_ns"]) / 1e9, s, False, ev)
        s, h = said[0]
        text = f"Yes: {h.get('text', '')} ({fmt_t(int(h.get('stamp_ns', 0)))})."
        return Answer(intent.text, text, "text", h.get("text", ""), s, False, [Evidence.of(h)])

    # speech
    def _speech(self, target: str, speaker: str = "") -> list[tuple[float, dict[str, Any]]]:
        out = []
        words = {w for w in re.findall(r"[a-z0-9]+", target.lower()) if len(w) > 2}
        for h in self._recall(f"said {target} {speaker}".strip(), ["episodic"], top_k=200):
            d = h.get("data", {})
            if d.get("kind") != "speech":
                continue
            m = _SAID.match(str(h.get("text", "")))
            who, said = (m.group(1), m.group(2)) if m else ("someone", str(h.get("text", "")))
            if speaker and speaker.lower() not in (who.lower(), "you", "i"):
                continue
            said_words = {w.rstrip("s") for w in re.findall(r"[a-z0-9]+", said.lower())}
            if words and not {w.rstrip("s") for w in words} & said_words:
                continue
            out.append((1.0 if words else 0.9, h))
        out.sort(key=lambda x: -int(x[1].get("stamp_ns", 0)))
        return out

    def _said(self, intent: Intent) -> Answer:
        said = self._speech(intent.target, intent.speaker)
        if not said:
            return self._abstain(intent, "nobody told me about that")
        s, h = said[0]
        text = f"{h.get('text', '')} ({fmt_t(int(h.get('stamp_ns', 0)))})."
        ev = [Evidence.of(x) for _, x in said[:5]]
        return Answer(intent.text, text, "text", h.get("text", ""), s, False, ev)

    # what happened before / after Z
    def _before_after(self, intent: Intent) -> Answer:
        hits = self._recall(intent.text, ["temporal"], top_k=5)
        hits = [h for h in hits if h.get("data", {}).get("intent") == intent.when]
        if not hits:
            return self._abstain(intent)
        text = f"{intent.when.capitalize()} {intent.reference}: " + "; ".join(
            str(h.get("text", "")) for h in hits[:3]
        )
        conf = float(hits[0].get("data", {}).get("raw_score", hits[0].get("score", 0.0)))
        ev = [Evidence.of(h) for h in hits[:3]]
        return Answer(intent.text, text, "text", text, conf, False, ev)

    def _unknown(self, intent: Intent) -> Answer:
        hits = self._recall(intent.text, ["semantic", "episodic", "temporal"], top_k=3)
        if not hits:
            return self._abstain(intent)
        h = hits[0]
        conf = float(h.get("score", 0.0)) * 0.8  # a recall, not an understood question
        return Answer(
            intent.text,
            str(h.get("text", "")),
            "text",
            h.get("text", ""),
            conf,
            False,
            [Evidence.of(h)],
        )


def m_label(hit: dict[str, Any]) -> str:
    m = _HEARD.match(str(hit.get("text", "")))
    return m.group(1) if m else "a sound"
