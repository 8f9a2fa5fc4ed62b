"""``recall(MemoryQuery)`` ranks objects (cosine of ``query.embedding`` with their float16
embeddings, plus a bonus for label words found in ``query.text``) and places (their
descriptors), filtered by ``near``/``radius_m`` and ``t0_ns``/``t1_ns``; with neither
embedding nor text it ranks by distance to ``near`` (and adds an occupancy summary).
The short-term memory is searched first: when it alone answers well enough
(``short_term.sufficient_score``) the long-term search is skipped (Mem4Nav).
Each hit carries its evidence in ``Hit.data``: ``last_seen_ns``, ``observations``, ...
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import numpy as np

import engram.memory.spatial.morton as morton
from engram.memory.base import Hit
from engram.memory.spatial.config import SpatialConfig
from engram.memory.spatial.objects import ObjectRecord, ObjectTable
from engram.memory.spatial.octree import SparseOctree
from engram.memory.spatial.places import PlaceGraph
from engram.memory.spatial.short_term import ShortTermMemory
from engram.runtime.messages import MemoryQuery

__all__ = ["SpatialRecall"]


class SpatialRecall:
    """Ranks objects and places for a query (``SpatialMemory`` composes it)."""

    config: SpatialConfig
    name: ClassVar[str]
    octree: SparseOctree
    objects: ObjectTable
    places: PlaceGraph
    short_term: ShortTermMemory
    world_from_robot: np.ndarray | None

    def _object_hit(
        self, rec: ObjectRecord, score: float, *, tier: str, voxels: int, extra: dict[str, Any]
    ) -> Hit:
        p = rec.position
        present = not (rec.had_voxels and voxels == 0 and not rec.dynamic)
        data: dict[str, Any] = {
            "kind": "object",
            "tier": tier,
            "object_id": rec.object_id,
            "label": rec.label,
            "last_seen_ns": int(rec.last_seen_ns),
            "first_seen_ns": int(rec.first_seen_ns),
            "since_ns": int(rec.since_ns),
            "observations": int(rec.observations),
            "voxels": int(voxels),
            "present": bool(present),
            "dynamic": bool(rec.dynamic),
            "depth_valid": bool(rec.depth_valid),
            "velocity_mps": [float(v) for v in rec.velocity],
            "extent_m": [float(v) for v in rec.extent],
            "moves": int(rec.moves),
            "place_id": int(self.places.place_of_object(rec.object_id, p)),
            **extra,
        }
        if self.world_from_robot is not None:
            t = self.world_from_robot
            data["position_in_robot"] = [float(v) for v in np.dot(p - t[:3, 3], t[:3, :3])]
        where = f"({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f})"
        text = f"{rec.label or 'object ' + str(rec.object_id)} at {where}"
        if not rec.depth_valid:
            text += " (direction only: seen without depth)"
        if rec.dynamic:
            text += " (moving)"
        elif not present:
            text += " (last seen there, no longer observed)"
        return Hit(
            memory=self.name,
            score=float(score),
            text=text,
            stamp_ns=int(rec.last_seen_ns),
            position=(float(p[0]), float(p[1]), float(p[2])),
            record_id=f"object:{rec.object_id}",
            provenance=rec.provenance,
            data=data,
        )

    def _recall(self, q: MemoryQuery) -> list[Hit]:
        cfg = self.config
        k = int(q.top_k)
        emb = None if q.embedding is None else np.asarray(q.embedding, np.float32)
        text = q.text.strip() if isinstance(q.text, str) else ""
        near = None if q.near is None else np.asarray(q.near, np.float64)
        radius = float(q.radius_m)
        spatial = near is not None and radius > 0
        ranked = emb is not None or bool(text)

        # --- objects, vectorised over the table
        arr = self.objects.arrays()
        n_obj = len(arr.ids)
        valid = np.ones(n_obj, bool)
        if q.t0_ns:
            valid &= arr.last_seen_ns >= q.t0_ns
        if q.t1_ns:
            valid &= arr.first_seen_ns <= q.t1_ns
        dist = None
        if near is not None:
            dist = np.linalg.norm(arr.positions - near, axis=1)
            if spatial:
                valid &= dist <= radius
        sims = self.objects.similarities(emb) if emb is not None else np.full(n_obj, np.nan)
        match = self.objects.label_matches(text) if text else np.zeros(n_obj)
        if ranked:
            valid &= ~np.isnan(sims) | (match > 0)
            score = np.nan_to_num(sims, nan=0.0) + cfg.label_match_weight * match
        elif dist is not None:
            score = 1.0 / (1.0 + dist)
        else:
            score = arr.last_seen_ns / 1e18  # most recently seen first
        count_ids, count_vals = self.octree.object_voxel_counts()
        voxels = np.zeros(n_obj, np.int64)
        if len(count_ids) and n_obj:
            pos = np.minimum(np.searchsorted(count_ids, arr.ids), len(count_ids) - 1)
            found = count_ids[pos] == arr.ids
            voxels[found] = count_vals[pos[found]]
        missing = arr.had_voxels & (voxels == 0) & ~arr.dynamic
        score = np.where(missing, score * cfg.missing_score_factor, score)
        in_stm = np.isin(arr.ids, np.fromiter(self.short_term.entries, np.int64))

        def object_extra(i: int) -> dict[str, Any]:
            extra: dict[str, Any] = {"label_match": float(match[i])}
            if not np.isnan(sims[i]):
                extra["similarity"] = float(sims[i])
            if dist is not None:
                extra["distance_m"] = float(dist[i])
            return extra

        def object_hits(idx: np.ndarray) -> list[Hit]:
            return [
                self._object_hit(
                    self.objects.records[int(arr.ids[i])],
                    float(score[i]),
                    tier="short_term" if in_stm[i] else "long_term",
                    voxels=int(voxels[i]),
                    extra=object_extra(int(i)),
                )
                for i in idx
            ]

        # Short-term memory first (Mem4Nav): enough good recent hits answer alone.
        stm_idx = _top(score, valid & in_stm, arr.ids, k)
        if ranked and len(stm_idx) >= k and score[stm_idx[-1]] >= cfg.short_term.sufficient_score:
            out = object_hits(stm_idx)
        else:
            candidates: list[tuple[float, str, str, Any]] = [
                (float(score[i]), f"object:{int(arr.ids[i])}", "object", int(i))
                for i in _top(score, valid, arr.ids, k)
            ]
            candidates += self._place_candidates(emb, near, radius, spatial, ranked, q, k)
            if near is not None and not ranked:
                occ = self._occupancy_hit(near, radius)
                if occ is not None:
                    candidates.append((occ.score, occ.record_id, "occupancy", occ))
            candidates.sort(key=lambda c: (-c[0], c[1]))
            out = []
            for sc, _, kind, ref in candidates[:k]:
                if kind == "object":
                    out.extend(object_hits(np.array([ref])))
                elif kind == "place":
                    out.append(self._place_hit(ref[0], sc, ref[1], ref[2]))
                else:
                    out.append(ref)
        for h in out:
            if h.data.get("tier") == "short_term":
                self.short_term.touch(h.data["object_id"])
        return out

    def _place_candidates(
        self,
        emb: np.ndarray | None,
        near: np.ndarray | None,
        radius: float,
        spatial: bool,
        ranked: bool,
        q: MemoryQuery,
        k: int,
    ) -> list[tuple[float, str, str, tuple]]:
        """Top-k places as (score, record_id, "place", (place_id, similarity, distance))."""
        places = self.places.places
        if not places or not (emb is not None or (not ranked and near is not None)):
            return []
        pos = self.places.positions
        n = len(places)
        valid = np.ones(n, bool)
        first = np.array([p.first_seen_ns for p in places], np.int64)
        last = np.array([p.last_seen_ns for p in places], np.int64)
        if q.t0_ns:
            valid &= last >= q.t0_ns
        if q.t1_ns:
            valid &= first <= q.t1_ns
        dist = None
        if near is not None:
            dist = np.linalg.norm(pos - near, axis=1)
            if spatial:
                valid &= dist <= radius
        sims = np.full(n, np.nan)
        if emb is not None:
            dim = len(emb)
            e = emb / max(float(np.linalg.norm(emb)), 1e-12)
            for i, p in enumerate(places):
                if valid[i] and p.descriptor is not None and len(p.descriptor) == dim:
                    dv = p.descriptor.astype(np.float32)
                    sims[i] = float(np.dot(dv, e)) / max(float(np.linalg.norm(dv)), 1e-12)
            valid &= ~np.isnan(sims)
            score = self.config.place_score_weight * np.nan_to_num(sims, nan=0.0)
        else:
            score = self.config.place_score_weight / (1.0 + cast(np.ndarray, dist))
        out = []
        for i in _top(score, valid, np.arange(n), k):
            sim = None if np.isnan(sims[i]) else float(sims[i])
            d = None if dist is None else float(dist[i])
            out.append((float(score[i]), f"place:{int(i)}", "place", (int(i), sim, d)))
        return out

    def _place_hit(self, place_id: int, score: float, sim: float | None, dist: float | None) -> Hit:
        pl = self.places.places[place_id]
        p = pl.position
        landmarks = sorted(pl.landmarks.items(), key=lambda kv: (-kv[1], kv[0]))
        labels = [rec.label for o, _ in landmarks if (rec := self.objects.get(o)) is not None]
        data: dict[str, Any] = {
            "kind": "place",
            "tier": "long_term",
            "place_id": place_id,
            "last_seen_ns": int(pl.last_seen_ns),
            "first_seen_ns": int(pl.first_seen_ns),
            "observations": int(pl.visits),
            "views": int(pl.views),
            "landmarks": [int(o) for o, _ in landmarks],
            "landmark_labels": labels,
            "neighbours": sorted(int(n) for n in self.places.edges.get(place_id, {})),
        }
        if sim is not None:
            data["similarity"] = float(sim)
        if dist is not None:
            data["distance_m"] = float(dist)
        seen = f", sees {', '.join(labels[:3])}" if labels else ""
        return Hit(
            memory=self.name,
            score=float(score),
            text=f"place {place_id} at ({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f}){seen}",
            stamp_ns=int(pl.last_seen_ns),
            position=(float(p[0]), float(p[1]), float(p[2])),
            record_id=f"place:{place_id}",
            data=data,
        )

    def _occupancy_hit(self, near: np.ndarray, radius: float) -> Hit | None:
        if np.any(np.abs(near) >= (morton.OFFSET - 2) * self.octree.voxel_size_m):
            return None
        dist, idx = self.octree.nearest_occupied(near[None], k=1)
        if not math.isfinite(dist[0, 0]):
            return None
        occ = self.octree.occupied()
        c = occ.centers[idx[0, 0]]
        n_within = len(self.octree.query_radius(near, radius)) if radius > 0 else 0
        d = float(dist[0, 0])
        return Hit(
            memory=self.name,
            score=0.5 / (1.0 + d),
            text=f"nearest occupied voxel {d:.2f} m away at ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f})",
            stamp_ns=int(occ.last_seen_ns[idx[0, 0]]),
            position=(float(c[0]), float(c[1]), float(c[2])),
            record_id="occupancy",
            data={
                "kind": "occupancy",
                "tier": "long_term",
                "distance_m": d,
                "occupied_within_radius": int(n_within),
                "last_seen_ns": int(occ.last_seen_ns[idx[0, 0]]),
                "observations": int(occ.hits[idx[0, 0]]),
            },
        )


def _top(score: np.ndarray, valid: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best valid scores, best first (ties: smaller id first)."""
    idx = np.flatnonzero(valid)
    if len(idx) > 4 * k:
        part = np.argpartition(-score[idx], 4 * k)[: 4 * k]
        idx = idx[part]
    order = np.lexsort((ids[idx], -score[idx]))
    return idx[order[:k]]
