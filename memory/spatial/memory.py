"""``SpatialMemory``: octree + objects + topology graph + static/dynamic + STM/LTM.

Implements the ``Memory`` interface (``memory/base.py``). What one ``Percept`` does:

1. validate everything first (pose finite and rigid, array shapes, object fields);
   a bad percept raises ``ValueError`` naming the field and changes nothing. Points
   with NaN/inf are masked out (counted in ``stats()["points_dropped"]``);
2. classify each seen object's motion (``dynamics.classify_motion``): an object that
   moved has its old voxels cleared; an object that is moving (or is a person) is
   *dynamic*: its points go to the transient ring only, never to the octree;
3. insert the frame into the octree (hits for static points, free-space carving along
   the rays to every point, dynamic ones included);
4. push the frame into the transient dynamics memory (last N frames);
5. update the object records (long-term), the short-term memory (last K sightings,
   Mem4Nav eviction) and the topology graph (place, descriptor, landmarks, edges).

A ``RobotState`` updates the agent pose (for robot-relative STM positions, paths from
the current pose, and places when the robot moves without a camera frame).

``recall(MemoryQuery)`` ranks objects (cosine of ``query.embedding`` with their float16
embeddings, plus a bonus for label words found in ``query.text``) and places (their
descriptors), filtered by ``near``/``radius_m`` and ``t0_ns``/``t1_ns``; with neither
embedding nor text it ranks by distance to ``near`` (and adds an occupancy summary).
The short-term memory is searched first: when it alone answers well enough
(``short_term.sufficient_score``) the long-term search is skipped (Mem4Nav).
Each hit carries its evidence in ``Hit.data``: ``last_seen_ns``, ``observations``, ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engram.memory.base import Hit, Memory, Provenance
from engram.memory.spatial import morton
from engram.memory.spatial.dynamics import (
    DynamicsConfig,
    TransientDynamicsMemory,
    classify_motion,
)
from engram.memory.spatial.objects import ObjectRecord, ObjectTable
from engram.memory.spatial.octree import InsertStats, OctreeConfig, SparseOctree
from engram.memory.spatial.places import Path as PlacePath
from engram.memory.spatial.places import PlaceGraph, PlaceGraphConfig
from engram.memory.spatial.short_term import ShortTermConfig, ShortTermMemory
from engram.runtime.messages import MemoryQuery, Message, Percept, RobotState, pose_problem

__all__ = ["SpatialConfig", "SpatialMemory"]

_FORMAT = 1  # version of the files ``save`` writes
_JSON_NAME = "spatial.json"
_NPZ_NAME = "spatial.npz"


@dataclass
class SpatialConfig:
    """Everything the spatial memory can be tuned with."""

    octree: OctreeConfig = field(default_factory=OctreeConfig)  # voxels, occupancy, carving
    places: PlaceGraphConfig = field(default_factory=PlaceGraphConfig)  # topology graph
    # static/dynamic decoupling, transient ring
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    short_term: ShortTermConfig = field(default_factory=ShortTermConfig)  # STM capacity, eviction
    # added to a hit's score per fraction of its label's words found in the query text
    label_match_weight: float = 0.5
    place_score_weight: float = 0.9  # place similarity is scaled by this, so objects win ties
    # score factor for objects whose voxels have all been carved away (gone from there)
    missing_score_factor: float = 0.5
    max_voxels: int = 5_000_000  # consolidate drops the least recently seen voxels beyond this
    producer: str = "spatial"  # provenance producer name

    def validate(self) -> None:
        self.octree.validate()
        self.places.validate()
        self.dynamics.validate()
        self.short_term.validate()
        if self.max_voxels < 1:
            raise ValueError("SpatialConfig.max_voxels must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpatialConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        subs = {
            "octree": OctreeConfig,
            "places": PlaceGraphConfig,
            "dynamics": DynamicsConfig,
            "short_term": ShortTermConfig,
        }
        kwargs: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"SpatialConfig: unknown field {key!r}")
            if key in subs:
                sub_names = {f.name for f in dataclasses.fields(subs[key])}
                bad = set(value) - sub_names
                if bad:
                    raise ValueError(f"SpatialConfig.{key}: unknown fields {sorted(bad)}")
                value = dict(value)
                if key == "dynamics" and "dynamic_labels" in value:
                    value["dynamic_labels"] = tuple(value["dynamic_labels"])
                kwargs[key] = subs[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _check_pose(pose: Any, name: str) -> np.ndarray:
    """A finite rigid (4, 4) transform, or ``ValueError`` naming ``name``."""
    t = np.asarray(pose)
    if t.shape != (4, 4) or t.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a (4, 4) numeric pose, got {t.dtype} {t.shape}")
    t = t.astype(np.float64)
    problem = pose_problem(t)
    if problem:
        raise ValueError(f"{name}: pose {problem}")
    return t


def _check_array(
    value: Any, name: str, shape: tuple[int | None, ...], kind: str, *, finite: bool
) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != len(shape) or any(s is not None and s != g for s, g in zip(shape, a.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {a.shape}")
    if a.dtype.kind not in kind:
        raise ValueError(f"{name}: wrong dtype {a.dtype}")
    if finite and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


@dataclass
class _PerceptPlan:
    """A validated percept, ready to apply (nothing can fail after this)."""

    pose: np.ndarray
    points: np.ndarray | None  # (N, 3) float64 finite
    point_ids: np.ndarray | None  # (N,) int32
    dropped: int
    ids: list[int]
    labels: list[str]
    centroids: np.ndarray  # (K, 3)
    extents: np.ndarray  # (K, 3)
    embeddings: np.ndarray | None  # (K, D)
    frame_embedding: np.ndarray | None  # (D,)


class SpatialMemory(Memory):
    """Spatial memory of an embodied agent; see the module docstring.

    Thread-safe: one lock serialises writes, recalls, consolidation and persistence.
    """

    name: ClassVar[str] = "spatial"
    accepts: ClassVar[tuple[str, ...]] = ("Percept", "RobotState")

    def __init__(self, config: SpatialConfig | None = None) -> None:
        self.config = config or SpatialConfig()
        self.config.validate()
        self._lock = threading.RLock()
        self._reset()

    def reset(self) -> None:
        """Forget everything (an empty memory, same configuration)."""
        self._reset()

    def _reset(self) -> None:
        cfg = self.config
        self.octree = SparseOctree(cfg.octree)
        self.objects = ObjectTable()
        self.places = PlaceGraph(cfg.places)
        self.transient = TransientDynamicsMemory(cfg.dynamics)
        self.short_term = ShortTermMemory(cfg.short_term)
        self.world_from_robot: np.ndarray | None = None  # latest robot (or camera) pose
        self._have_robot_state = False
        self.last_stamp_ns = 0
        self.counters = {
            "percepts": 0,
            "robot_states": 0,
            "points_in": 0,
            "points_dropped": 0,
            "objects_moved": 0,
            "objects_dynamic": 0,
            "voxels_cleared": 0,
            "rejected": 0,
        }
        self.last_insert = InsertStats()

    # ------------------------------------------------------------------ Memory API

    def write(self, msg: Message, *, topic: str = "") -> None:
        """Store a ``Percept`` or ``RobotState``; other types are ignored. Raises
        ``ValueError`` on bad input without changing anything."""
        if getattr(msg, "TYPE", None) not in self.accepts:
            return
        with self._lock:
            try:
                if isinstance(msg, Percept):
                    plan = self._validate_percept(msg)
                    self._apply_percept(msg, plan, topic)
                elif isinstance(msg, RobotState):
                    pose = _check_pose(msg.world_from_base, "RobotState.world_from_base")
                    self._apply_robot_state(msg, pose)
            except ValueError:
                self.counters["rejected"] += 1
                raise

    def recall(self, query: MemoryQuery) -> list[Hit]:
        with self._lock:
            return self._recall(query)

    def consolidate(self, *, now_ns: int | None = None) -> None:
        """Forget dynamic objects and transient frames older than
        ``dynamics.transient_max_age_s``; bound the octree to ``max_voxels``."""
        with self._lock:
            now = self.last_stamp_ns if now_ns is None else int(now_ns)
            horizon = now - int(self.config.dynamics.transient_max_age_s * 1e9)
            self.transient.drop_older_than(horizon)
            for oid, rec in list(self.objects.records.items()):
                if rec.dynamic and rec.last_seen_ns < horizon:
                    self.objects.remove(oid)
                    self.short_term.forget(oid)
            self.octree.prune(self.config.max_voxels)

    def __len__(self) -> int:
        """Occupied voxels + objects + places."""
        with self._lock:
            return self.octree.num_occupied() + len(self.objects) + len(self.places)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            occ = self.octree.num_occupied()
            return {
                "records": occ + len(self.objects) + len(self.places),
                "voxels": len(self.octree),
                "occupied_voxels": occ,
                "objects": len(self.objects),
                "places": len(self.places),
                "edges": sum(len(v) for v in self.places.edges.values()) // 2,
                "short_term": len(self.short_term),
                "transient_frames": len(self.transient),
                "octree_bytes": self.octree.nbytes,
                "bytes_per_voxel": self.octree.bytes_per_voxel,
                "dynamic_voxel_events": self.octree.dynamic_events,
                **self.counters,
            }

    # ------------------------------------------------------------------ writing

    def _validate_percept(self, msg: Percept) -> _PerceptPlan:
        pose = _check_pose(msg.world_from_camera, "Percept.world_from_camera")
        ids_arr = _check_array(msg.object_ids, "Percept.object_ids", (None,), "iu", finite=False)
        k = len(ids_arr)
        ids = [int(v) for v in ids_arr.tolist()]
        if len(set(ids)) != k:
            raise ValueError("Percept.object_ids: duplicate object ids in one percept")
        if any(v < 0 for v in ids):
            raise ValueError("Percept.object_ids: object ids must be >= 0")
        labels = msg.object_labels
        if (
            not isinstance(labels, list)
            or len(labels) != k
            or not all(isinstance(s, str) for s in labels)
        ):
            raise ValueError(f"Percept.object_labels: expected {k} strings")
        centroids = _check_array(
            msg.object_centroids, "Percept.object_centroids", (k, 3), "fiu", finite=True
        )
        extents = _check_array(
            msg.object_extents, "Percept.object_extents", (k, 3), "fiu", finite=True
        )
        obj_emb = None
        if msg.object_embeddings is not None:
            obj_emb = _check_array(
                msg.object_embeddings, "Percept.object_embeddings", (k, None), "f", finite=True
            )
        frame_emb = None
        if msg.embedding is not None:
            frame_emb = _check_array(msg.embedding, "Percept.embedding", (None,), "f", finite=True)
            if len(frame_emb) == 0:
                raise ValueError("Percept.embedding: empty embedding")
        bound = (morton.OFFSET - 2) * self.config.octree.voxel_size_m
        if np.any(np.abs(centroids) >= bound) or np.any(np.abs(pose[:3, 3]) >= bound):
            raise ValueError(f"Percept: positions outside the map's range of +-{bound:.0f} m")
        points = point_ids = None
        dropped = 0
        if msg.points is not None:
            pts = _check_array(msg.points, "Percept.points", (None, 3), "fiu", finite=False)
            pids = None
            if msg.point_object_ids is not None:
                pids = _check_array(
                    msg.point_object_ids,
                    "Percept.point_object_ids",
                    (len(pts),),
                    "iu",
                    finite=False,
                )
            pts = pts.astype(np.float64)
            ok = np.isfinite(pts).all(axis=1)
            if not ok.all():
                dropped = int(len(pts) - ok.sum())
                pts = pts[ok]
                pids = pids[ok] if pids is not None else None
            if len(pts) and np.abs(pts).max() >= bound:
                raise ValueError(
                    f"Percept.points: coordinates outside the map's range of +-{bound:.0f} m"
                )
            points = pts
            point_ids = None if pids is None else pids.astype(np.int32)
        return _PerceptPlan(
            pose, points, point_ids, dropped, ids, list(labels), centroids.astype(np.float64),
            extents.astype(np.float32), obj_emb, frame_emb,
        )  # fmt: skip

    def _apply_percept(self, msg: Percept, plan: _PerceptPlan, topic: str) -> None:
        cfg = self.config
        stamp = int(msg.stamp_ns)
        origin = plan.pose[:3, 3]
        # 1. motion of each object
        motions = {}
        for i, oid in enumerate(plan.ids):
            rec = self.objects.get(oid)
            motions[oid] = classify_motion(
                label=plan.labels[i],
                centroid=plan.centroids[i],
                stamp_ns=stamp,
                previous_position=None if rec is None else rec.last_position,
                previous_stamp_ns=0 if rec is None else rec.last_seen_ns,
                was_dynamic=False if rec is None else rec.dynamic,
                still_sightings=0 if rec is None else rec.still_sightings,
                config=cfg.dynamics,
            )
        dynamic_ids = [oid for oid, m in motions.items() if m.dynamic]
        purge = []
        for oid, m in motions.items():
            rec = self.objects.get(oid)
            if rec is None:
                continue
            if m.kind == "moved" or (m.dynamic and not rec.dynamic):
                purge.append(oid)
        # 2. clear the old voxels of moved objects and of objects that started moving
        if purge:
            self.counters["voxels_cleared"] += self.octree.remove_objects(purge)
        self.counters["objects_moved"] += sum(1 for m in motions.values() if m.kind == "moved")
        self.counters["objects_dynamic"] += sum(
            1
            for oid in dynamic_ids
            if self.objects.get(oid) is None or not self.objects.get(oid).dynamic
        )
        # 3. octree (persistent structure: static points only; every point carves)
        seen_ids: set[int] = set()
        if plan.points is not None and len(plan.points):
            pids = (
                plan.point_ids
                if plan.point_ids is not None
                else np.full(len(plan.points), -1, np.int32)
            )
            dyn_mask = (
                np.isin(pids, np.array(dynamic_ids, np.int32))
                if dynamic_ids
                else np.zeros(len(pids), bool)
            )
            self.last_insert = self.octree.insert(
                plan.points, origin=origin, stamp_ns=stamp, object_ids=pids, hit_mask=~dyn_mask
            )
            seen_ids = set(morton.sorted_unique(pids[pids >= 0])[0].tolist())
            # 4. transient dynamics memory
            vel = np.zeros((len(pids), 3), np.float32)
            moving = sorted(oid for oid, m in motions.items() if np.any(m.velocity))
            if moving:  # per-point velocity = its object's, by a sorted lookup
                table_ids = np.array(moving, np.int64)
                table = np.array([motions[oid].velocity for oid in moving], np.float32)
                pos = np.minimum(np.searchsorted(table_ids, pids), len(moving) - 1)
                has = table_ids[pos] == pids
                vel[has] = table[pos[has]]
            self.transient.push(
                stamp_ns=stamp,
                origin=origin,
                points=plan.points,
                object_ids=pids,
                velocities=vel,
                dynamic=dyn_mask,
            )
        else:
            self.last_insert = InsertStats()
        self.counters["percepts"] += 1
        self.counters["points_in"] += 0 if plan.points is None else len(plan.points) + plan.dropped
        self.counters["points_dropped"] += plan.dropped
        # 5. objects (long-term), short-term, places
        prov = Provenance.of(msg, topic, self.config.producer)
        for i, oid in enumerate(plan.ids):
            m = motions[oid]
            rec = self.objects.upsert(
                oid,
                label=plan.labels[i],
                centroid=plan.centroids[i],
                extent=plan.extents[i],
                embedding=None if plan.embeddings is None else plan.embeddings[i],
                stamp_ns=stamp,
                velocity=m.velocity,
                dynamic=m.dynamic,
                still_sightings=m.still_sightings,
                moved=m.kind == "moved",
                has_points=oid in seen_ids,
                provenance=prov,
            )
            self.short_term.observe(
                oid, label=rec.label, position=rec.position, embedding=rec.embedding, stamp_ns=stamp
            )
        if not self._have_robot_state:
            self.world_from_robot = plan.pose
        agent = self.world_from_robot[:3, 3]
        place = self.places.update(agent, embedding=plan.frame_embedding, stamp_ns=stamp)
        static_seen = [oid for oid in plan.ids if not motions[oid].dynamic]
        if static_seen:
            self.places.add_landmarks(place, np.array(static_seen))
        self.last_stamp_ns = max(self.last_stamp_ns, stamp)

    def _apply_robot_state(self, msg: RobotState, pose: np.ndarray) -> None:
        self._have_robot_state = True
        self.world_from_robot = pose
        self.counters["robot_states"] += 1
        self.places.update(pose[:3, 3], embedding=None, stamp_ns=int(msg.stamp_ns))
        self.last_stamp_ns = max(self.last_stamp_ns, int(msg.stamp_ns))

    # ------------------------------------------------------------------ queries

    def place_of_object(self, object_id: int) -> int:
        """The place an object is at (-1 if the object or places are unknown)."""
        with self._lock:
            rec = self.objects.get(object_id)
            if rec is None:
                return -1
            return self.places.place_of_object(object_id, rec.position)

    def path_to_object(
        self, object_id: int, *, position: np.ndarray | None = None
    ) -> PlacePath | None:
        """Shortest route through the place graph from ``position`` (3,) (default: the
        current agent position) to the place the object is at, then to the object;
        ``cost_m`` includes both end legs. None if unknown or unreachable."""
        with self._lock:
            rec = self.objects.get(object_id)
            if rec is None:
                return None
            if position is None:
                if self.world_from_robot is None:
                    return None
                position = self.world_from_robot[:3, 3]
            pos = _check_array(position, "position", (3,), "fiu", finite=True).astype(np.float64)
            goal = self.places.place_of_object(object_id, rec.position)
            if goal < 0:
                return None
            path = self.places.path_from(pos, goal)
            if path is None:
                return None
            last_leg = float(np.linalg.norm(rec.position - self.places.positions[goal]))
            return PlacePath(path.place_ids, path.cost_m + last_leg, path.positions)

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
            candidates = [
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
            score = self.config.place_score_weight / (1.0 + dist)
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
        labels = [
            self.objects.get(o).label for o, _ in landmarks if self.objects.get(o) is not None
        ]
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

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> None:
        """Write ``spatial.npz`` (arrays) and ``spatial.json`` (config, labels, graph)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with self._lock:
            arrays: dict[str, np.ndarray] = dict(self.octree.state_dict())
            obj_arrays, obj_meta = self.objects.state()
            place_arrays, place_meta = self.places.state()
            stm_arrays, stm_meta = self.short_term.state()
            arrays.update(obj_arrays)
            arrays.update(place_arrays)
            arrays.update(stm_arrays)
            arrays.update(self.transient.state())
            arrays["world_from_robot"] = (
                np.zeros((0, 4, 4))
                if self.world_from_robot is None
                else self.world_from_robot[None].copy()
            )
            meta = {
                "format": _FORMAT,
                "memory": self.name,
                "config": self.config.to_dict(),
                "objects": obj_meta,
                "places": place_meta,
                "short_term": stm_meta,
                "have_robot_state": self._have_robot_state,
                "last_stamp_ns": self.last_stamp_ns,
                "counters": self.counters,
            }
            tmp_npz = d / (_NPZ_NAME + ".tmp")
            tmp_json = d / (_JSON_NAME + ".tmp")
            with open(tmp_npz, "wb") as fh:
                np.savez(fh, **arrays)
            tmp_json.write_text(json.dumps(meta))
            os.replace(tmp_npz, d / _NPZ_NAME)
            os.replace(tmp_json, d / _JSON_NAME)

    def load(self, directory: str | Path) -> None:
        """Replace everything (config included) with what ``save`` wrote. Raises
        ``ValueError``/``FileNotFoundError`` naming the file; on error nothing changes."""
        d = Path(directory)
        jpath, npath = d / _JSON_NAME, d / _NPZ_NAME
        for p in (jpath, npath):
            if not p.is_file():
                raise FileNotFoundError(f"spatial memory: missing {p}")
        try:
            meta = json.loads(jpath.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{jpath}: not valid JSON ({exc})") from None
        if meta.get("format") != _FORMAT or meta.get("memory") != self.name:
            raise ValueError(f"{jpath}: not a spatial memory save of format {_FORMAT}")
        with np.load(npath, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        fresh = SpatialMemory(SpatialConfig.from_dict(meta["config"]))
        try:
            fresh.octree.load_state_dict(arrays)
            fresh.objects.load_state(arrays, meta["objects"])
            fresh.places.load_state(arrays, meta["places"])
            fresh.short_term.load_state(arrays, meta["short_term"])
            fresh.transient.load_state(arrays)
        except KeyError as exc:
            raise ValueError(f"{d}: saved spatial memory lacks {exc}") from None
        pose = arrays["world_from_robot"]
        with self._lock:
            self.config = fresh.config
            self.octree = fresh.octree
            self.objects = fresh.objects
            self.places = fresh.places
            self.short_term = fresh.short_term
            self.transient = fresh.transient
            self.world_from_robot = pose[0].copy() if len(pose) else None
            self._have_robot_state = bool(meta["have_robot_state"])
            self.last_stamp_ns = int(meta["last_stamp_ns"])
            self.counters = {key: int(v) for key, v in meta["counters"].items()}
            self.last_insert = InsertStats()


def _top(score: np.ndarray, valid: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best valid scores, best first (ties: smaller id first)."""
    idx = np.flatnonzero(valid)
    if len(idx) > 4 * k:
        part = np.argpartition(-score[idx], 4 * k)[: 4 * k]
        idx = idx[part]
    order = np.lexsort((ids[idx], -score[idx]))
    return idx[order[:k]]
