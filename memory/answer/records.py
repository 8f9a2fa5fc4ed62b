"""The answer object and its evidence, and the abstention threshold's calibration."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["NOT_SEEN", "Answer", "Evidence", "as_dict", "calibrate_threshold", "fmt_pos", "fmt_t"]

NOT_SEEN = "I have not seen that."


@dataclass
class Evidence:
    """One remembered record an answer rests on."""

    memory: str
    record_id: str
    stamp_ns: int
    text: str
    position: list[float] | None = None
    thumbnail: str = ""  # "<memory>/<record_id>" of a keyframe thumbnail when one is kept

    @classmethod
    def of(cls, hit: dict[str, Any]) -> Evidence:
        pos = hit.get("position")
        data = hit.get("data", {})
        return cls(
            memory=str(hit.get("memory", "")),
            record_id=str(hit.get("record_id", "")),
            stamp_ns=int(hit.get("stamp_ns", 0)),
            text=str(hit.get("text", "")),
            position=None if pos is None else [round(float(v), 3) for v in pos],
            thumbnail=(
                f"{hit.get('memory')}/{hit.get('record_id')}" if data.get("thumbnail") else ""
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "memory": self.memory,
            "record_id": self.record_id,
            "stamp_ns": self.stamp_ns,
            "t_s": round(self.stamp_ns / 1e9, 3),
            "position": self.position,
            "thumbnail": self.thumbnail,
            "text": self.text,
        }


@dataclass
class Answer:
    """The answer object (``to_dict`` is what ``--json``, the node and the page carry).

    kind: "position" | "time" | "label" | "labels" | "count" | "text" | "none";
    value: a position [x, y, z], a time in seconds, a label, labels, a count, a text."""

    question: str
    answer: str
    kind: str = "none"
    value: Any = None
    confidence: float = 0.0
    abstained: bool = False
    evidence: list[Evidence] = field(default_factory=list)
    intent: str = "unknown"
    label: str = ""  # the internal label the answer is about (when one)
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "kind": self.kind,
            "value": _plain(self.value),
            "confidence": round(float(self.confidence), 3),
            "abstained": bool(self.abstained),
            "intent": self.intent,
            "label": self.label,
            "evidence": [e.to_dict() for e in self.evidence],
            "elapsed_ms": round(self.elapsed_ms, 2),
        }


def fmt_pos(p: Sequence[float] | np.ndarray) -> str:
    return "({:.2f}, {:.2f}, {:.2f})".format(*[float(v) for v in list(p)[:3]])


def fmt_t(ns: int) -> str:
    """A stamp as said in an answer: seconds of a simulation's clock, or the time of day
    (UTC) for wall-clock stamps (after 1973)."""
    if ns > 1e17:
        return time.strftime("%H:%M:%S UTC", time.gmtime(ns / 1e9))
    return f"t={ns / 1e9:.1f} s"


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [round(float(x), 3) for x in v.reshape(-1)]
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (float, np.floating)):
        return round(float(v), 3)
    if isinstance(v, np.integer):
        return int(v)
    return v


def as_dict(hit: Any) -> dict[str, Any]:
    return hit if isinstance(hit, dict) else hit.to_dict()


def calibrate_threshold(
    confidences: Sequence[float], answerable: Sequence[bool], correct: Sequence[bool]
) -> float:
    """The abstention threshold that maximises accuracy on held-out questions: an
    unanswerable question counts as right when abstained (confidence below the
    threshold), an answerable one when answered (at or above it) and ``correct``."""
    c = np.asarray(confidences, np.float64)
    a = np.asarray(answerable, bool)
    ok = np.asarray(correct, bool)
    if c.size == 0:
        raise ValueError("calibrate_threshold: no questions")
    # candidates: midpoints between neighbouring confidences (and beyond both ends); among
    # equally good ones the widest gap, so the threshold sits in the middle of the margin
    u = np.unique(np.concatenate([[0.0, 1.0], c]))
    mids = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-6]])
    gaps = np.concatenate([[0.0], np.diff(u), [0.0]])
    best_thr, best_key = 0.5, (-1.0, -1.0)
    for thr, gap in zip(mids, gaps):
        answered = c >= thr
        acc = float(np.mean(np.where(a, answered & ok, ~answered)))
        key = (round(acc, 12), float(gap))
        if key > best_key:
            best_thr, best_key = float(thr), key
    return best_thr
