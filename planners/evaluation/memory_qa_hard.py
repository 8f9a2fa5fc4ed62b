"""``engram eval memory-qa --hard``: the harder memory-QA benchmark.

Streams of 1, 5 and 20 minutes of simulated time (``memory_qa_world``: a four-room
flat, objects moved by people, tokens appearing, sounds, things said) go into
Engram's memory system (spatial, temporal, episodic, semantic; MiniLM for text) and
into the baselines; then the questions of ``memory_qa_world.make_questions`` are
asked, in natural wordings, of three answerers:

- ``memory``: ``engram.memory.answer.Answerer`` over the memory system (what
  ``/memory/query``, ``engram memory ask`` and the live page use);
- ``flat``: flat vector retrieval over keyframe captions, ReMEmbR-style: each
  keyframe is captioned ("I see the red cube on the kitchen table, ...", what a good
  captioner would say, with natural names), each sound ("I heard a sound at 620 Hz")
  and each utterance ('ann said: "..."') too, all embedded with the same MiniLM; a
  question retrieves the ``top_k`` nearest captions and is answered from them, with
  the same question parser and name table as the memory answerer (positions are where
  the robot was, times the captions' times, counts the distinct things retrieved);
  it abstains when the best caption's cosine is under its threshold;
- ``none``: no memory: only the latest percept (an object in view is where it is
  seen; anything else abstains).

Abstention thresholds (the memory answerer's ``abstain_below`` and the flat store's
cosine) are calibrated on held-out streams (other seeds) with
``engram.memory.answer.calibrate_threshold`` and then applied to the test streams.

Scoring: an answerable question is right when answered (not abstained) and a
position is within ``POSITION_OK_M`` (0.5 m), a time within ``TIME_OK_S`` (2 s), a
label / label set / count equal, told words all in the answer; an unanswerable one
is right when abstained. ``abstention_f1``: F1 of "abstained" against
"unanswerable". ``position_error_m`` / ``time_error_s``: medians over the answered
position / time questions.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram.planners.evaluation.memory_qa_world import (
    FURNITURE,
    Question,
    Stream,
    make_questions,
    make_stream,
)
from engram.runtime.messages import Percept, SoundEvent, Transcript

__all__ = [
    "POSITION_OK_M",
    "TIME_OK_S",
    "FlatCaptionStore",
    "evaluate_hard",
    "hard_bench_json",
    "run_memory_qa_hard",
    "score",
]

POSITION_OK_M = 0.5
TIME_OK_S = 2.0
METHODS = ("memory", "flat", "none")


@dataclass
class Result:
    """One method's answer to one question, before the abstention threshold."""

    abstained: bool
    value: Any
    text: str
    confidence: float


# ---------------------------------------------------------------------------------------
# the flat caption store (ReMEmbR-style baseline)


@dataclass
class _Cap:
    t_s: float
    robot: np.ndarray
    text: str
    labels: list[str]
    on: dict[str, str]  # label -> furniture it stands on
    kind: str  # frame | sound | speech
    hz: float = 0.0
    vec: np.ndarray | None = None


@dataclass
class FlatCaptionStore:
    """Captions of keyframes, sounds and utterances; top-k cosine retrieval."""

    encoder: Any  # encode_texts(list[str]) -> (N, D)
    names: Any  # engram.memory.answer.NameTable
    top_k: int = 10
    caps: list[_Cap] = field(default_factory=list)
    _mat: np.ndarray | None = None

    def add(self, msg: Any) -> None:
        if isinstance(msg, Percept):
            if not msg.keyframe:
                return
            on = _on_relations(msg)
            parts = []
            for lb in msg.object_labels:
                if lb in FURNITURE:
                    continue
                f = on.get(lb)
                where = f" on the {self.names.name(f)}" if f else ""
                parts.append(f"the {self.names.name(lb)}{where}")
            text = "I see " + ", ".join(parts) if parts else "I see nothing"
            robot = np.asarray(msg.world_from_camera[:3, 3], np.float64)
            t = msg.stamp_ns / 1e9
            self.caps.append(_Cap(t, robot, text, list(msg.object_labels), on, "frame"))
        elif isinstance(msg, SoundEvent):
            robot = (
                np.asarray(msg.world_from_robot[:3, 3], np.float64)
                if msg.world_from_robot is not None
                else np.zeros(3)
            )
            text = f"I heard a sound at {msg.peak_hz:.0f} Hz"
            self.caps.append(
                _Cap(msg.stamp_ns / 1e9, robot, text, [], {}, "sound", float(msg.peak_hz))
            )
        elif isinstance(msg, Transcript):
            robot = (
                np.asarray(msg.world_from_robot[:3, 3], np.float64)
                if msg.world_from_robot is not None
                else np.zeros(3)
            )
            text = f'{msg.speaker or "someone"} said: "{msg.text}"'
            self.caps.append(_Cap(msg.stamp_ns / 1e9, robot, text, [], {}, "speech"))
        self._mat = None

    def _matrix(self) -> np.ndarray:
        if self._mat is None:
            texts = sorted({c.text for c in self.caps})
            vecs = np.asarray(self.encoder.encode_texts(texts), np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
            of = dict(zip(texts, vecs))
            for c in self.caps:
                c.vec = of[c.text]
            self._mat = np.stack([c.vec for c in self.caps]) if self.caps else np.zeros((0, 1))
        return self._mat

    def retrieve(self, question: str) -> list[tuple[float, _Cap]]:
        m = self._matrix()
        if not len(m):
            return []
        q = np.asarray(self.encoder.encode_texts([question])[0], np.float32)
        q /= max(float(np.linalg.norm(q)), 1e-9)
        sims = m @ q
        top = np.argsort(-sims, kind="stable")[: self.top_k]
        return [(float(sims[i]), self.caps[int(i)]) for i in top]


def _on_relations(p: Percept) -> dict[str, str]:
    """label -> the furniture it stands on, from the frame's geometry (a captioner's eye)."""
    out = {}
    c, e = p.object_centroids, p.object_extents
    for a, la in enumerate(p.object_labels):
        if la in FURNITURE:
            continue
        for b, lb in enumerate(p.object_labels):
            if lb not in FURNITURE:
                continue
            top = c[b, 2] + e[b, 2] / 2
            if abs((c[a, 2] - e[a, 2] / 2) - top) < 0.06 and np.all(
                np.abs(c[a, :2] - c[b, :2]) <= e[b, :2] / 2
            ):
                out[la] = lb
    return out


def flat_answer(store: FlatCaptionStore, question: str) -> Result:
    """Answer from the retrieved captions (see the module docstring)."""
    from engram.memory.answer import parse_intent
    from engram.memory.answer.names import SOUND_BANDS_HZ

    it = parse_intent(question)
    got = store.retrieve(question)
    if not got:
        return Result(True, None, "", 0.0)
    conf = got[0][0]
    names = store.names
    frames = [c for _, c in got if c.kind == "frame"]

    def with_target(phrase: str) -> list[tuple[_Cap, str]]:
        out = []
        for c in frames:
            m = names.best(phrase, c.labels)
            if m and m[0][0] >= 0.9:
                out.append((c, m[0][1]))
        return out

    k = it.kind
    if k in ("where_is", "where_was"):
        if it.ago_s >= 0:
            return Result(True, None, "", conf)
        hits = with_target(it.target)
        if not hits:  # perhaps somebody said where it is
            words = set(re.findall(r"[a-z]+", it.target.lower()))
            for _, c in got:
                if c.kind == "speech" and words & set(re.findall(r"[a-z]+", c.text.lower())):
                    return Result(False, c.text, c.text, conf)
            return Result(True, None, "", conf)
        pick = max if k == "where_is" else min
        c, _ = pick(hits, key=lambda x: x[0].t_s)
        return Result(False, c.robot, c.text, conf)
    if k == "when_seen":
        hits = with_target(it.target)
        if not hits:
            return Result(True, None, "", conf)
        return Result(False, min(c.t_s for c, _ in hits), "", conf)
    if k == "which":
        for c in frames:
            cands = [lb for s, lb in names.best(it.category, c.labels) if s >= 0.9]
            if cands and names.best(it.target, c.labels):
                return Result(False, cands[0], c.text, conf)
        return Result(True, None, "", conf)
    if k == "what_at":
        place = names.best(it.target, [lb for c in frames for lb in c.labels if lb in FURNITURE])
        if not place or it.ago_s >= 0:
            return Result(True, None, "", conf)
        f = place[0][1]
        mover = names.best(it.reference.split(" was ")[0], [lb for c in frames for lb in c.labels])
        cands = [c for c in frames if f in c.labels]
        if mover:
            with_mover = [c for c in cands if c.on.get(mover[0][1]) == f]
            cands = with_mover or cands
        if not cands:
            return Result(True, None, "", conf)
        c = max(cands, key=lambda x: x.t_s)
        return Result(False, sorted(lb for lb, g in c.on.items() if g == f), c.text, conf)
    if k == "how_many":
        labels = {lb for c in frames for lb in c.labels}
        found = [lb for s, lb in names.best(it.target, labels) if s >= 0.9]
        if not found:
            return Result(True, None, "", conf)
        return Result(False, len(found), "", conf)
    if k in ("when_heard", "where_heard"):
        band = next((b for n, b in SOUND_BANDS_HZ.items() if n in it.target), None)
        sounds = [c for _, c in got if c.kind == "sound"]
        if band is not None:
            sounds = [c for c in sounds if band[0] <= c.hz <= band[1]]
        else:
            sounds = []
        if not sounds:
            return Result(True, None, "", conf)
        c = min(sounds, key=lambda x: x.t_s)
        return Result(False, c.t_s if k == "when_heard" else c.robot, c.text, conf)
    speech = [c for _, c in got if c.kind == "speech"]
    words = set(re.findall(r"[a-z]+", it.target.lower()))
    for c in speech:
        if words & set(re.findall(r"[a-z]+", c.text.lower())):
            return Result(False, c.text, c.text, conf)
    return Result(True, None, "", conf)


# ---------------------------------------------------------------------------------------
# scoring


def score(q: Question, r: Result) -> tuple[bool, float | None]:
    """(right, error): error in metres / seconds for answered position / time questions."""
    if not q.answerable:
        return r.abstained, None
    if r.abstained or r.value is None:
        return False, None
    if q.check == "position":
        try:
            v = np.asarray(r.value, np.float64).reshape(-1)[:3]
        except (TypeError, ValueError):
            return False, None
        if v.size < 2:
            return False, None
        err = float(np.linalg.norm(v[:2] - np.asarray(q.truth, np.float64)[:2]))
        return err <= POSITION_OK_M, round(err, 3)
    if q.check == "time":
        try:
            err = abs(float(r.value) - float(q.truth))
        except (TypeError, ValueError):
            return False, None
        return err <= TIME_OK_S, round(err, 2)
    if q.check == "label":
        return r.value == q.truth, None
    if q.check == "labels":
        return isinstance(r.value, list) and sorted(r.value) == sorted(q.truth), None
    if q.check == "count":
        return r.value == q.truth, None
    if q.check == "words":
        text = (r.text or str(r.value)).lower()
        return all(w in text for w in q.truth), None
    return False, None


# ---------------------------------------------------------------------------------------
# running


def _answer_all(stream: Stream, questions: list[Question], encoder: Any) -> dict[str, list[Result]]:
    from engram.memory.answer import Answerer, AnswererConfig, NameTable
    from engram.memory.embedding import Embedders
    from engram.memory.system import MemorySystem, default_memories

    embedders = Embedders({"text": encoder})
    system = MemorySystem(
        default_memories(embedders, include=["spatial", "temporal", "episodic", "semantic"]),
        embedders=embedders,
    )
    names = NameTable(embed=lambda t: embedders.embed("text", t))  # type: ignore[arg-type,return-value]
    flat = FlatCaptionStore(encoder, names)
    latest: Percept | None = None
    try:
        for msg in stream.messages:
            system.submit(msg, timeout_s=None)
            flat.add(msg)
            if isinstance(msg, Percept):
                latest = msg
        system.flush()
        answerer = Answerer(
            system.recall,
            memories=system.names,
            names=names,
            config=AnswererConfig(abstain_below=0.0),
        )
        out: dict[str, list[Result]] = {m: [] for m in METHODS}
        for q in questions:
            a = answerer.ask(q.text)
            out["memory"].append(Result(a.abstained, a.value, a.answer, a.confidence))
            out["flat"].append(flat_answer(flat, q.text))
            out["none"].append(_none_answer(latest, q.text, names))
    finally:
        system.close(checkpoint=False)
    return out


def _none_answer(latest: Percept | None, question: str, names: Any) -> Result:
    from engram.memory.answer import parse_intent

    it = parse_intent(question)
    if latest is None or it.kind != "where_is" or it.ago_s >= 0:
        return Result(True, None, "", 0.0)
    m = names.best(it.target, latest.object_labels)
    if not m or m[0][0] < 0.9:
        return Result(True, None, "", 0.0)
    i = latest.object_labels.index(m[0][1])
    return Result(False, latest.object_centroids[i].astype(float), "", 1.0)


def _run_streams(seeds: list[int], minutes: float, encoder: Any, progress: bool) -> list[dict]:
    rows = []
    for seed in seeds:
        t0 = time.monotonic()
        st = make_stream(seed, minutes)
        qs = make_questions(st, np.random.default_rng(seed + 7))
        res = _answer_all(st, qs, encoder)
        for i, q in enumerate(qs):
            rows.append(
                {"minutes": minutes, "seed": seed, "q": q, **{m: res[m][i] for m in METHODS}}
            )
        if progress:
            print(
                f"  {minutes:g} min stream, seed {seed}: {len(st.messages)} messages, "
                f"{len(qs)} questions ({time.monotonic() - t0:.0f} s)",
                file=sys.stderr,
            )
    return rows


def _threshold(rows: list[dict], method: str) -> float:
    from engram.memory.answer import calibrate_threshold

    conf, answerable, right = [], [], []
    for r in rows:
        res: Result = r[method]
        q: Question = r["q"]
        conf.append(0.0 if res.abstained else res.confidence)
        answerable.append(q.answerable)
        right.append(score(q, Result(False, res.value, res.text, res.confidence))[0])
    return calibrate_threshold(conf, answerable, right)


def _apply(r: Result, thr: float) -> Result:
    if r.abstained or r.confidence < thr:
        return Result(True, None, "", r.confidence)
    return r


def _summary(rows: list[dict], thresholds: dict[str, float]) -> dict[str, Any]:
    """Per stream length: accuracy per question type and tag, abstention F1, errors."""
    out: dict[str, Any] = {}
    for minutes in sorted({r["minutes"] for r in rows}):
        sub = [r for r in rows if r["minutes"] == minutes]
        per: dict[str, Any] = {}
        groups: dict[str, list[dict]] = {}
        for r in sub:
            q: Question = r["q"]
            if q.answerable:
                groups.setdefault(q.qtype, []).append(r)
                for tag in q.tags:
                    groups.setdefault(tag, []).append(r)
            groups.setdefault("all", []).append(r)
        for m in METHODS:
            scored = []
            for r in sub:
                res = _apply(r[m], thresholds.get(m, 0.0))
                ok, err = score(r["q"], res)
                scored.append((r, res, ok, err))
            mres: dict[str, Any] = {}
            for g, members in groups.items():
                ids = {id(x) for x in members}
                oks = [ok for r, _, ok, _ in scored if id(r) in ids]
                mres[g] = {"accuracy": float(np.mean(oks)), "n": len(oks)}
            ab = np.array([res.abstained for _, res, _, _ in scored])
            un = np.array([not r["q"].answerable for r, _, _, _ in scored])
            tp = float(np.sum(ab & un))
            prec = tp / max(float(ab.sum()), 1.0)
            rec = tp / max(float(un.sum()), 1.0)
            f1 = 0.0 if tp == 0 else 2 * prec * rec / (prec + rec)
            mres["unanswerable"] = {
                "abstention_f1": round(f1, 3),
                "precision": round(prec, 3),
                "recall": round(rec, 3),
                "n": int(un.sum()),
            }
            perr = [e for r, _, _, e in scored if e is not None and r["q"].check == "position"]
            terr = [e for r, _, _, e in scored if e is not None and r["q"].check == "time"]
            mres["position_error_m"] = float(np.median(perr)) if perr else None
            mres["time_error_s"] = float(np.median(terr)) if terr else None
            per[m] = mres
        out[f"{minutes:g}"] = per
    return out


def evaluate_hard(
    *,
    minutes: tuple[float, ...] = (1.0, 5.0, 20.0),
    streams: int = 2,
    seed: int = 0,
    calibration_streams: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Calibrate the thresholds on held-out seeds, then score the test streams."""
    from engram.memory.embedding import load_text_encoder

    encoder = load_text_encoder("minilm")
    cal_rows = []
    cal_minutes = min(minutes[0] * 5, 5.0)
    cal_seeds = [seed + 10_000 + i for i in range(calibration_streams)]
    cal_rows = _run_streams(cal_seeds, cal_minutes, encoder, progress)
    thresholds = {m: _threshold(cal_rows, m) for m in ("memory", "flat")}
    thresholds["none"] = 0.0
    rows = []
    for mins in minutes:
        rows += _run_streams([seed + i for i in range(streams)], mins, encoder, progress)
    result = {
        "thresholds": thresholds,
        "calibration": {"seeds": cal_seeds, "minutes": cal_minutes, "questions": len(cal_rows)},
        "summary": _summary(rows, thresholds),
        "questions": [
            {
                "minutes": r["minutes"],
                "seed": r["seed"],
                "type": r["q"].qtype,
                "tags": list(r["q"].tags),
                "question": r["q"].text,
                "truth": _plain(r["q"].truth),
                **{
                    m: {
                        "abstained": _apply(r[m], thresholds[m]).abstained,
                        "value": _plain(r[m].value),
                        "confidence": round(float(r[m].confidence), 3),
                        "right": score(r["q"], _apply(r[m], thresholds[m]))[0],
                    }
                    for m in METHODS
                },
            }
            for r in rows
        ],
    }
    return result


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [round(float(x), 3) for x in v.reshape(-1)]
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return round(float(v), 3)
    if isinstance(v, np.integer):
        return int(v)
    return v


def format_hard_table(result: dict[str, Any]) -> str:
    lines = [
        "| stream | case | metric | memory | flat retrieval | no memory | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for mins, per in result["summary"].items():
        mem = per["memory"]
        for g in sorted(k for k, v in mem.items() if isinstance(v, dict) and "accuracy" in v):
            cells = " | ".join(f"{per[m][g]['accuracy']:.0%}" for m in METHODS)
            lines.append(f"| {mins} min | {g} | accuracy | {cells} | {mem[g]['n']} |")
        cells = " | ".join(f"{per[m]['unanswerable']['abstention_f1']:.2f}" for m in METHODS)
        lines.append(
            f"| {mins} min | unanswerable | abstention_f1 | {cells} | {mem['unanswerable']['n']} |"
        )
        for metric in ("position_error_m", "time_error_s"):
            cells = " | ".join(
                "-" if per[m][metric] is None else f"{per[m][metric]:.2f}" for m in METHODS
            )
            lines.append(f"| {mins} min | answered | {metric} | {cells} | |")
    return "\n".join(lines)


def hard_bench_json(result: dict[str, Any]) -> dict[str, Any]:
    """The BENCH.md shape: a case per question type / tag and stream length, memory
    against the flat retrieval baseline (and against no memory for the headline rows)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from _common import machine_info
    from _common import result as row

    rows = []
    flat_name = "flat vector retrieval over keyframe captions (ReMEmbR-style)"
    for mins, per in result["summary"].items():
        mem, flat, none = per["memory"], per["flat"], per["none"]
        for g in sorted(k for k, v in mem.items() if isinstance(v, dict) and "accuracy" in v):
            if g == "all":
                continue
            rows.append(
                row(
                    f"{g}, {mins} min",
                    "accuracy",
                    mem[g]["accuracy"],
                    "higher",
                    peer=flat_name,
                    peer_value=flat[g]["accuracy"],
                    n=mem[g]["n"],
                )
            )
        for peer, pname in ((flat, flat_name), (none, "no memory (current view)")):
            rows.append(
                row(
                    f"unanswerable, {mins} min" + ("" if peer is flat else " vs no memory"),
                    "abstention_f1",
                    mem["unanswerable"]["abstention_f1"],
                    "higher",
                    peer=pname,
                    peer_value=peer["unanswerable"]["abstention_f1"],
                    n=mem["unanswerable"]["n"],
                )
            )
        for metric, case in (("position_error_m", "where"), ("time_error_s", "when")):
            if mem[metric] is not None and flat[metric] is not None:
                rows.append(
                    row(
                        f"{case} (answered), {mins} min",
                        metric,
                        mem[metric],
                        "lower",
                        peer=flat_name,
                        peer_value=flat[metric],
                    )
                )
    return {"bench": "memory-qa", "machine": machine_info(), "results": rows}


def run_memory_qa_hard(
    *,
    streams: int,
    seed: int,
    minutes: tuple[float, ...] = (1.0, 5.0, 20.0),
    json_path: str = "",
) -> int:
    print(
        f"engram eval memory-qa --hard: {streams} stream(s) per length "
        f"({', '.join(f'{m:g}' for m in minutes)} min) from seed {seed}",
        file=sys.stderr,
    )
    result = evaluate_hard(minutes=minutes, streams=streams, seed=seed)
    print(format_hard_table(result))
    print(f"abstention thresholds (calibrated, held-out seeds): {result['thresholds']}")
    if json_path:
        doc = hard_bench_json(result)
        doc["details"] = result
        Path(json_path).write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {json_path}", file=sys.stderr)
    return 0
