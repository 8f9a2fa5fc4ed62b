"""The episodic record (entity, event or episode) with its forgetting-curve fields, its
msgpack-able snapshot (persistence, undoable merges) and its text forms."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.memory.base import Provenance

__all__ = ["PREFIX_NAMES", "Rec", "episode_text", "fmt_pos", "restore", "snapshot"]

PREFIX_NAMES = {"e": "entity", "v": "event", "p": "episode"}


@dataclass
class Rec:
    """Common fields of every episodic record (the forgetting curve)."""

    key: str  # "e12" entity, "v3" event, "p1" episode
    kind: str
    text: str
    stamp_ns: int  # first seen / happened / started
    importance: float
    strength_s: float
    last_access_ns: int
    provenance: Provenance
    version: int = 1
    position: tuple[float, float, float] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    embs: dict[str, np.ndarray] = field(default_factory=dict)  # space -> unit vector

    def retention(self, now_ns: int) -> float:
        dt = max(0.0, (now_ns - self.last_access_ns) / 1e9)
        return math.exp(-dt / max(self.strength_s, 1e-9))


def fmt_pos(pos: tuple[float, float, float] | None) -> str:
    return "?" if pos is None else "(" + ", ".join(f"{v:.2f}" for v in pos) + ")"


def episode_text(ep: Rec) -> str:
    """The searchable text of an episode: instruction, outcome, the first steps."""
    d = ep.data
    steps = ", ".join(f"{s['skill']}:{s['status']}" for s in d["steps"][:8])
    gist = " (gist)" if d["gist"] else ""
    return f'episode{gist}: "{d["instruction"]}" -> {d["outcome"] or "open"}' + (
        f" [{steps}]" if steps else ""
    )


def snapshot(rec: Rec, *, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """A msgpack-able copy of a record. With ``arrays``, vectors go there (named
    ``emb_<space>``, ``sum_<space>``, ``kf``); otherwise they are inlined as lists."""
    data = dict(rec.data)
    embs = {k: np.asarray(v, np.float32) for k, v in rec.embs.items()}
    sums = {k: np.asarray(v, np.float32) for k, v in data.pop("emb_sum", {}).items()}
    if "aliases" in data:
        data["aliases"] = dict(data["aliases"])
    kfs = data.get("keyframes")
    kf_vecs = [kf["embedding"] for kf in kfs] if kfs else []
    if kfs:
        data["keyframes"] = [{k: v for k, v in kf.items() if k != "embedding"} for kf in kfs]
    snap: dict[str, Any] = {
        "key": rec.key,
        "kind": rec.kind,
        "text": rec.text,
        "stamp_ns": rec.stamp_ns,
        "importance": rec.importance,
        "strength_s": rec.strength_s,
        "last_access_ns": rec.last_access_ns,
        "provenance": rec.provenance.to_dict(),
        "version": rec.version,
        "position": None if rec.position is None else list(rec.position),
        "data": data,
    }
    if arrays is None:
        snap["embs"] = {k: v.tolist() for k, v in embs.items()}
        snap["sums"] = {k: v.tolist() for k, v in sums.items()}
        snap["kf"] = [np.asarray(v, np.float32).tolist() for v in kf_vecs]
    else:
        arrays.update({f"emb_{k}": v for k, v in embs.items()})
        arrays.update({f"sum_{k}": v for k, v in sums.items()})
        if kf_vecs:
            arrays["kf"] = np.stack(kf_vecs).astype(np.float32)
    return snap


def restore(snap: dict[str, Any], *, arrays: dict[str, np.ndarray] | None = None) -> Rec:
    data = dict(snap["data"])
    if arrays is None:
        embs = {k: np.asarray(v, np.float32) for k, v in snap.get("embs", {}).items()}
        sums = {k: np.asarray(v, np.float32) for k, v in snap.get("sums", {}).items()}
        kf_vecs = [np.asarray(v, np.float32) for v in snap.get("kf", [])]
    else:
        embs = {k[4:]: v for k, v in arrays.items() if k.startswith("emb_")}
        sums = {k[4:]: v for k, v in arrays.items() if k.startswith("sum_")}
        kf_vecs = list(arrays["kf"]) if "kf" in arrays else []
    if sums:
        data["emb_sum"] = sums
    if "keyframes" in data:
        data["keyframes"] = [dict(kf, embedding=v) for kf, v in zip(data["keyframes"], kf_vecs)]
    if "merged_from" in data:
        data["merged_from"] = list(data["merged_from"])
    return Rec(
        key=snap["key"],
        kind=snap["kind"],
        text=snap["text"],
        stamp_ns=snap["stamp_ns"],
        importance=snap["importance"],
        strength_s=snap["strength_s"],
        last_access_ns=snap["last_access_ns"],
        provenance=Provenance(**snap["provenance"]),
        version=snap.get("version", 1),
        position=None if snap["position"] is None else tuple(snap["position"]),
        data=data,
        embs=embs,
    )
