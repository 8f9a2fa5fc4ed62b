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

``recall(MemoryQuery)`` ranks objects and places (``engram.memory.spatial.recall``).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

import engram.memory.spatial.morton as morton
from engram.memory.base import Hit, Memory, Provenance
from engram.memory.embedding import Embedders
from engram.memory.index import all_finite
from engram.memory.spatial.config import SpatialConfig
from engram.memory.spatial.dynamics import (
    TransientDynamicsMemory,
    classify_motion,
)
from engram.memory.spatial.objects import ObjectTable
from engram.memory.spatial.octree import SparseOctree
from engram.memory.spatial.places import Path as PlacePath
from engram.memory.spatial.places import PlaceGraph
from engram.memory.spatial.recall import SpatialRecall
from engram.memory.spatial.short_term import ShortTermMemory
from engram.memory.spatial.voxels import InsertStats
from engram.runtime.messages import MemoryQuery, Message, Percept, RobotState, pose_problem

__all__ = ["SpatialMemory"]

_FORMAT = 1  # version of the files ``save`` writes
_JSON_NAME = "spatial.json"
_NPZ_NAME = "spatial.npz"


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
    if finite and a.dtype.kind == "f" and not all_finite(a):
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
    depth_valid: np.ndarray | None = None  # (K,) bool; None = all measured


class SpatialMemory(SpatialRecall, Memory):
    """Spatial memory of an embodied agent; see the module docstring.

    Thread-safe: one lock serialises writes, recalls, consolidation and persistence.
    """

    name: ClassVar[str] = "spatial"
    accepts: ClassVar[tuple[str, ...]] = ("Percept", "RobotState")

    def __init__(
        self, config: SpatialConfig | None = None, *, embedders: Embedders | None = None
    ) -> None:
        self.config = config or SpatialConfig()
        self.embedders = embedders  # unused: spatial recall matches labels and positions
        self.config.validate()
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget everything (an empty memory, same configuration)."""
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
                "freed_voxel_events": self.octree.freed_events,  # noise included
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
        depth_valid = None
        if getattr(msg, "object_depth_valid", None) is not None:
            depth_valid = _check_array(
                msg.object_depth_valid, "Percept.object_depth_valid", (k,), "b", finite=False
            )
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
            if not all_finite(pts):
                ok = np.isfinite(pts).all(axis=1)
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
            extents.astype(np.float32), obj_emb, frame_emb, depth_valid,
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
                place=None if rec is None else rec.position,
                extent=plan.extents[i] if rec is None else np.maximum(plan.extents[i], rec.extent),
                camera_origin=origin,
                displaced_sightings=0 if rec is None else rec.displaced_sightings,
                place_seen_ns=None if rec is None else rec.place_seen_ns,
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
            1 for oid in dynamic_ids if (rec := self.objects.get(oid)) is None or not rec.dynamic
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
            seen_ids = set(pids[pids >= 0].tolist())
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
                displaced_sightings=m.displaced_sightings,
                depth_valid=True if plan.depth_valid is None else bool(plan.depth_valid[i]),
                has_points=oid in seen_ids,
                provenance=prov,
            )
            self.short_term.observe(
                oid, label=rec.label, position=rec.position, embedding=rec.embedding, stamp_ns=stamp
            )
        if not self._have_robot_state:
            self.world_from_robot = plan.pose
        agent = cast(np.ndarray, self.world_from_robot)[:3, 3]
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
                np.savez(fh, **cast(dict[str, Any], arrays))
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
