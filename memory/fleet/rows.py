"""What of each long-term memory goes to the fleet store: one ``Row`` per record.

A row is a projection of a memory's record for search across robots: its text, time,
position, one vector (in the memory's own space) and the record's provenance; the
memory itself stays the robot's own (SQLite) store. Rows per memory:

- temporal: one per timeline item (an observation: labels and where they were seen);
- episodic: one per entity, event and episode;
- semantic: one per fact (current and superseded, with its status);
- spatial: one per object landmark (label, position, last seen, embedding).

``capture(memory, known)`` runs in the memory's lane (memories are not thread-safe) and
returns the rows whose fingerprint changed since ``known`` plus the ids still present,
so a sync costs a dict walk over the records and builds only the changed rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.memory.base import Memory, Provenance

__all__ = ["CAPTURE", "NO_SPACE", "Row", "capture"]

NO_SPACE = "none"  # space of rows without a vector (stored with a constant 2-d vector)


@dataclass
class Row:
    """One record of one robot in the fleet store."""

    memory: str  # source memory ("temporal", "episodic", "semantic", "spatial")
    record_id: str  # the record's id in that memory
    kind: str  # "item", "entity", "event", "episode", "fact", "object"
    fingerprint: str  # changes whenever the row would change (decides re-sending)
    stamp_ns: int  # when it was observed / happened / last seen
    text: str  # searchable text
    vector: np.ndarray | None = None  # (D,) float32 unit vector in ``space``
    space: str = NO_SPACE  # embedding space of ``vector``
    position: tuple[float, float, float] | None = None  # world metres
    provenance: Provenance = field(default_factory=Provenance)
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able details

    def collection(self, prefix: str) -> str:
        dim = 2 if self.vector is None else int(self.vector.shape[0])
        return f"{prefix}_{self.space}_{dim}"


def _unit(v: Any) -> np.ndarray | None:
    if v is None:
        return None
    a = np.asarray(v, np.float32).reshape(-1)
    n = float(np.linalg.norm(a))
    if not a.size or not np.isfinite(n) or n == 0.0:
        return None
    return a / n


def _pos(p: Any) -> tuple[float, float, float] | None:
    return None if p is None else (float(p[0]), float(p[1]), float(p[2]))


Known = dict[str, str]  # record_id -> fingerprint last captured
Captured = tuple[list[Row], set[str]]  # changed rows, ids present


def _temporal(mem: Any, known: Known) -> Captured:
    rows, present = [], set()
    for item_id, item in mem._items.items():
        rid = f"i{item_id}"
        present.add(rid)
        if rid in known:  # items never change once written
            continue
        vec = None
        if item.space and item.space in mem._item_index:
            vec = _unit(mem._item_index[item.space].get([item_id])[0])
        labels = list(item.labels)
        rows.append(
            Row(
                "temporal",
                rid,
                "item",
                "1",
                int(item.stamp_ns),
                " ".join([item.text, *(x for x in labels if x not in item.text)]).strip(),
                vec,
                item.space if vec is not None else NO_SPACE,
                _pos(item.position),
                item.provenance,
                {"labels": labels, "object_positions": item.object_positions, "type": item.kind},
            )
        )
    return rows, present


def _episodic(mem: Any, known: Known) -> Captured:
    rows, present = [], set()
    for key, rec in mem._recs.items():
        present.add(key)
        fp = f"{rec.version}|{rec.text}|{rec.position}"
        if known.get(key) == fp:
            continue
        space = "text" if "text" in rec.embs else next(iter(rec.embs), NO_SPACE)
        vec = _unit(rec.embs.get(space)) if space != NO_SPACE else None
        rows.append(
            Row(
                "episodic",
                key,
                rec.kind,
                fp,
                int(rec.stamp_ns),
                rec.text,
                vec,
                space if vec is not None else NO_SPACE,
                _pos(rec.position),
                rec.provenance,
                {"importance": float(rec.importance)},
            )
        )
    return rows, present


def _semantic(mem: Any, known: Known) -> Captured:
    rows, present = [], set()
    index = mem._index
    for fid, f in mem._facts.items():
        present.add(fid)
        fp = f"{f.version}|{f.status}|{f.valid_to_ns}|{f.confidence:.4f}"
        if known.get(fid) == fp:
            continue
        n = int(fid[1:])
        vec = _unit(index.get([n])[0]) if index is not None and n in index else None
        rows.append(
            Row(
                "semantic",
                fid,
                "fact",
                fp,
                int(f.valid_from_ns),
                f.text,
                vec,
                "text" if vec is not None else NO_SPACE,
                None,
                f.provenance,
                {
                    "status": f.status,
                    "confidence": float(f.confidence),
                    "valid_to_ns": f.valid_to_ns,
                },
            )
        )
    return rows, present


def _spatial(mem: Any, known: Known) -> Captured:
    rows, present = [], set()
    for oid, rec in mem.objects.records.items():
        rid = f"o{oid}"
        present.add(rid)
        fp = f"{rec.observations}|{rec.label}|{rec.moves}|{rec.last_seen_ns}"
        if known.get(rid) == fp:
            continue
        vec = _unit(rec.embedding)
        rows.append(
            Row(
                "spatial",
                rid,
                "object",
                fp,
                int(rec.last_seen_ns),
                rec.label.replace("_", " ") + f" {rec.label}",
                vec,
                "image" if vec is not None else NO_SPACE,
                _pos(rec.position),
                rec.provenance,
                {
                    "label": rec.label,
                    "first_seen_ns": int(rec.first_seen_ns),
                    "observations": int(rec.observations),
                    "dynamic": bool(rec.dynamic),
                },
            )
        )
    return rows, present


#: memory name -> capture function (see the module docstring)
CAPTURE: dict[str, Callable[[Any, Known], Captured]] = {
    "temporal": _temporal,
    "episodic": _episodic,
    "semantic": _semantic,
    "spatial": _spatial,
}


def capture(memory: Memory, known: Known) -> Captured:
    """The rows of ``memory`` that changed since ``known``, and the ids it holds now."""
    try:
        fn = CAPTURE[memory.name]
    except KeyError:
        raise ValueError(
            f"fleet: no row mapping for memory {memory.name!r}; known: {sorted(CAPTURE)}"
        ) from None
    return fn(memory, known)
