"""Long-term object (landmark) records of the spatial memory.

One record per object id: label, where it is (running mean of its centroids while it
stays put; reset when it moves), size, a semantic embedding kept as a float16 running
mean, evidence (first/last seen, number of sightings) and motion state. Voxels in the
octree point to a record through their object id, which is how an image or text
embedding is turned into ranked 3D locations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from engram.memory.base import Provenance

__all__ = ["ObjectArrays", "ObjectRecord", "ObjectTable", "label_match"]

_POSITION_WINDOW = 20  # sightings averaged into a stationary object's position


@dataclass
class ObjectRecord:
    """One remembered object."""

    object_id: int
    label: str
    position: np.ndarray  # (3,) float64 world metres: mean of centroids since it last moved
    last_position: np.ndarray  # (3,) float64 latest centroid
    extent: np.ndarray  # (3,) float32 axis-aligned size, metres
    embedding: np.ndarray | None = None  # (D,) float16 running mean
    embedding_count: int = 0
    observations: int = 0  # sightings
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))  # (3,) m/s
    dynamic: bool = False
    still_sightings: int = 0
    displaced_sightings: int = 0  # consecutive sightings away from ``position`` (not yet moved)
    # last position measured from depth (False: placed along the camera ray, no range)
    depth_valid: bool = True
    place_seen_ns: int = 0  # last sighting at ``position`` (not displaced from it)
    moves: int = 0  # times it was found relocated
    since_ns: int = 0  # when it was first seen at its current place
    had_voxels: bool = False  # its points have entered the octree at its current place
    provenance: Provenance = field(default_factory=Provenance)


def _tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[^a-z0-9]+", text.lower()) if t}


def label_match(query_text: str, label: str) -> float:
    """Fraction of the label's words found in the query: "where is the red mug" vs
    "red_mug" -> 1.0, vs "mug" -> 1.0, vs "blue_mug" -> 0.5."""
    lt = _tokens(label)
    if not lt:
        return 0.0
    return len(lt & _tokens(query_text)) / len(lt)


@dataclass
class ObjectArrays:
    """The table as aligned arrays (K rows, in insertion order) for vectorised ranking."""

    ids: np.ndarray  # (K,) int64
    positions: np.ndarray  # (K, 3) float64
    first_seen_ns: np.ndarray  # (K,) int64
    last_seen_ns: np.ndarray  # (K,) int64
    dynamic: np.ndarray  # (K,) bool
    had_voxels: np.ndarray  # (K,) bool
    labels: list[str]
    label_tokens: np.ndarray  # (K,) number of words in each label
    token_rows: dict[str, np.ndarray]  # word -> rows whose label contains it
    embeddings: dict[int, np.ndarray] = field(
        default_factory=dict
    )  # dim -> (K, D) unit rows (0 if none)
    has_embedding: dict[int, np.ndarray] = field(default_factory=dict)  # dim -> (K,) bool


class ObjectTable:
    """object id -> ``ObjectRecord``, with cached aligned arrays for ranking."""

    def __init__(self) -> None:
        self.records: dict[int, ObjectRecord] = {}
        self._arrays: ObjectArrays | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, object_id: int) -> bool:
        return object_id in self.records

    def get(self, object_id: int) -> ObjectRecord | None:
        return self.records.get(object_id)

    def upsert(
        self,
        object_id: int,
        *,
        label: str,
        centroid: np.ndarray,
        extent: np.ndarray,
        embedding: np.ndarray | None,
        stamp_ns: int,
        velocity: np.ndarray,
        dynamic: bool,
        still_sightings: int,
        moved: bool,
        displaced_sightings: int = 0,
        depth_valid: bool = True,
        has_points: bool,
        provenance: Provenance,
    ) -> ObjectRecord:
        """Record one sighting (the motion was classified by the caller)."""
        self._arrays = None
        c = np.asarray(centroid, np.float64).copy()
        rec = self.records.get(object_id)
        if rec is None:
            rec = ObjectRecord(
                object_id, label, c.copy(), c.copy(), np.asarray(extent, np.float32).copy()
            )
            rec.first_seen_ns = rec.since_ns = rec.place_seen_ns = stamp_ns
            self.records[object_id] = rec
        else:
            if label:
                rec.label = label
            # A moving object's place is re-anchored only when it has moved past the jitter
            # threshold (a displaced sighting), so its speed is measured over that distance.
            if moved or (dynamic and (displaced_sightings > 0 or not rec.dynamic)):
                rec.position = c.copy()
                rec.since_ns = rec.place_seen_ns = stamp_ns
                rec.moves += int(moved)
                rec.had_voxels = False
            elif not dynamic and displaced_sightings == 0:
                # a displaced sighting does not move the place yet (persistence)
                w = 1.0 / min(rec.observations + 1, _POSITION_WINDOW)
                rec.position = rec.position + (c - rec.position) * w
                rec.place_seen_ns = stamp_ns
            rec.last_position = c.copy()
            rec.extent = np.asarray(extent, np.float32).copy()
        rec.observations += 1
        rec.last_seen_ns = max(rec.last_seen_ns, stamp_ns)
        rec.velocity = np.asarray(velocity, np.float32).copy()
        rec.dynamic = bool(dynamic)
        rec.still_sightings = int(still_sightings)
        rec.displaced_sightings = int(displaced_sightings)
        rec.depth_valid = bool(depth_valid)
        rec.provenance = provenance
        rec.had_voxels = rec.had_voxels or (has_points and not dynamic)
        if embedding is not None:
            e = np.asarray(embedding, np.float32)
            if rec.embedding is None or len(rec.embedding) != len(e):
                rec.embedding = e.astype(np.float16)
                rec.embedding_count = 1
            else:
                rec.embedding_count += 1
                mean = rec.embedding.astype(np.float32)
                mean += (e - mean) / rec.embedding_count
                rec.embedding = mean.astype(np.float16)
        return rec

    def remove(self, object_id: int) -> None:
        if self.records.pop(object_id, None) is not None:
            self._arrays = None

    def arrays(self) -> ObjectArrays:
        """Aligned arrays of the whole table (cached until the next change)."""
        if self._arrays is None:
            recs = list(self.records.values())
            k = len(recs)
            self._arrays = ObjectArrays(
                ids=np.array([r.object_id for r in recs], np.int64),
                positions=np.array([r.position for r in recs], np.float64).reshape(k, 3),
                first_seen_ns=np.array([r.first_seen_ns for r in recs], np.int64),
                last_seen_ns=np.array([r.last_seen_ns for r in recs], np.int64),
                dynamic=np.array([r.dynamic for r in recs], bool),
                had_voxels=np.array([r.had_voxels for r in recs], bool),
                labels=[r.label for r in recs],
                label_tokens=np.zeros(k, np.int64),
                token_rows={},
            )
            rows: dict[str, list[int]] = {}
            for i, r in enumerate(recs):
                toks = _tokens(r.label)
                self._arrays.label_tokens[i] = len(toks)
                for t in toks:
                    rows.setdefault(t, []).append(i)
            self._arrays.token_rows = {t: np.array(v, np.int64) for t, v in rows.items()}
        return self._arrays

    def label_matches(self, text: str) -> np.ndarray:
        """``label_match(text, label)`` for every row of ``arrays()`` (K,), through an
        inverted word index (no loop over objects)."""
        arr = self.arrays()
        hits = np.zeros(len(arr.ids))
        for t in _tokens(text):
            rows = arr.token_rows.get(t)
            if rows is not None:
                hits[rows] += 1
        return np.divide(
            hits, arr.label_tokens, out=np.zeros(len(hits)), where=arr.label_tokens > 0
        )

    def similarities(self, embedding: np.ndarray) -> np.ndarray:
        """Cosine similarity of ``embedding`` (D,) to each row of ``arrays()`` (K,);
        NaN where a record has no D-dim embedding."""
        arr = self.arrays()
        e = np.asarray(embedding, np.float32)
        dim = len(e)
        if dim not in arr.embeddings:
            k = len(arr.ids)
            mat = np.zeros((k, dim), np.float32)
            has = np.zeros(k, bool)
            for i, oid in enumerate(arr.ids.tolist()):
                emb = self.records[oid].embedding
                if emb is not None and len(emb) == dim:
                    mat[i] = emb
                    has[i] = True
            norms = np.linalg.norm(mat, axis=1, keepdims=True)
            arr.embeddings[dim] = mat / np.maximum(norms, 1e-12)
            arr.has_embedding[dim] = has
        # einsum, not BLAS: OpenBLAS's threads turned this small (K, D) x (D,) product
        # into 20+ ms on a busy machine; einsum's own loop takes ~0.1 us per object
        sims = np.einsum("kd,d->k", arr.embeddings[dim], e / max(float(np.linalg.norm(e)), 1e-12))
        sims[~arr.has_embedding[dim]] = np.nan
        return sims

    # ------------------------------------------------------------------ persistence

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        ids = list(self.records)
        recs = [self.records[k] for k in ids]
        dims = {len(r.embedding) for r in recs if r.embedding is not None}
        dim = max(dims) if dims else 0
        emb = np.zeros((len(ids), dim), np.float16)
        has = np.zeros(len(ids), bool)
        for i, r in enumerate(recs):
            if r.embedding is not None and len(r.embedding) == dim:
                emb[i], has[i] = r.embedding, True
        arrays = {
            "objects_ids": np.array(ids, np.int64),
            "objects_position": np.array([r.position for r in recs], np.float64).reshape(-1, 3),
            "objects_last_position": np.array([r.last_position for r in recs], np.float64).reshape(
                -1, 3
            ),
            "objects_extent": np.array([r.extent for r in recs], np.float32).reshape(-1, 3),
            "objects_velocity": np.array([r.velocity for r in recs], np.float32).reshape(-1, 3),
            "objects_embedding": emb,
            "objects_has_embedding": has,
            "objects_ints": np.array(
                [
                    [
                        r.embedding_count,
                        r.observations,
                        r.first_seen_ns,
                        r.last_seen_ns,
                        int(r.dynamic),
                        r.still_sightings,
                        r.moves,
                        r.since_ns,
                        int(r.had_voxels),
                        r.displaced_sightings,
                        int(r.depth_valid),
                        r.place_seen_ns,
                    ]
                    for r in recs
                ],
                np.int64,
            ).reshape(-1, 12),
        }
        meta = {
            "labels": [r.label for r in recs],
            "provenance": [r.provenance.to_dict() for r in recs],
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        ids = np.asarray(arrays["objects_ids"], np.int64)
        if len(meta["labels"]) != len(ids) or len(meta["provenance"]) != len(ids):
            raise ValueError("objects state: labels/provenance and ids differ in length")
        records = {}
        for i, k in enumerate(ids.tolist()):
            ints = [int(v) for v in arrays["objects_ints"][i]]
            records[int(k)] = ObjectRecord(
                object_id=int(k),
                label=meta["labels"][i],
                position=arrays["objects_position"][i].copy(),
                last_position=arrays["objects_last_position"][i].copy(),
                extent=arrays["objects_extent"][i].copy(),
                embedding=arrays["objects_embedding"][i].copy()
                if arrays["objects_has_embedding"][i]
                else None,
                embedding_count=ints[0],
                observations=ints[1],
                first_seen_ns=ints[2],
                last_seen_ns=ints[3],
                velocity=arrays["objects_velocity"][i].copy(),
                dynamic=bool(ints[4]),
                still_sightings=ints[5],
                moves=ints[6],
                since_ns=ints[7],
                had_voxels=bool(ints[8]),
                displaced_sightings=ints[9] if len(ints) > 9 else 0,  # saves before issue 16
                depth_valid=bool(ints[10]) if len(ints) > 10 else True,
                place_seen_ns=ints[11] if len(ints) > 11 else ints[3],
                provenance=Provenance(**meta["provenance"][i]),
            )
        self.records = records
        self._arrays = None
