"""Static / dynamic decoupling (Mem4D): transient dynamics memory and motion rules.

Mem4D keeps a *persistent structure memory* (static geometry, slow updates) apart
from a *transient dynamics memory* (recent frames, fast). Here the persistent part is
the occupancy octree (clamped log-odds: static structure needs many misses to be
erased) and the transient part is ``TransientDynamicsMemory``: a bounded ring of the
last N frames' points with their object ids and per-point velocities.

``classify_motion`` decides, each time an object is seen, whether it is

- ``new``: first sighting;
- ``static``: still where it was (within ``moved_distance_m``);
- ``moved``: relocated since it was last seen (slowly, or while out of view): its old
  voxels are cleared and it is remembered at the new place only;
- ``dynamic``: moving now (faster than ``dynamic_speed_mps`` between close sightings, or
  a label that is always dynamic such as ``person``): its points stay in the transient
  memory and never enter the persistent map.

A dynamic object becomes static again after ``static_after_sightings`` still sightings.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DynamicsConfig",
    "Motion",
    "TransientDynamicsMemory",
    "TransientFrame",
    "classify_motion",
]


@dataclass
class DynamicsConfig:
    """Transient ring size and the rules that tell moving from static objects."""

    ring_frames: int = 8  # N most recent frames kept in the transient dynamics memory
    # a frame's points beyond this are subsampled (bounded memory)
    max_points_per_frame: int = 50_000
    # labels that are always dynamic
    dynamic_labels: tuple[str, ...] = ("person", "people", "human", "pedestrian", "walker")
    dynamic_speed_mps: float = 0.25  # faster than this between close sightings = moving now
    # sightings farther apart give no velocity (the object was relocated, not moving)
    max_velocity_dt_s: float = 2.0
    moved_distance_m: float = 0.2  # centroid farther than this from the remembered one = moved
    # still sightings before a dynamic object counts as static again
    static_after_sightings: int = 3
    transient_max_age_s: float = 30.0  # dynamic objects unseen this long are dropped by consolidate

    def validate(self) -> None:
        if self.ring_frames < 1:
            raise ValueError("DynamicsConfig.ring_frames must be >= 1")
        if self.max_points_per_frame < 1:
            raise ValueError("DynamicsConfig.max_points_per_frame must be >= 1")
        for name in (
            "dynamic_speed_mps",
            "max_velocity_dt_s",
            "moved_distance_m",
            "transient_max_age_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"DynamicsConfig.{name} must be > 0")
        if self.static_after_sightings < 1:
            raise ValueError("DynamicsConfig.static_after_sightings must be >= 1")


@dataclass
class Motion:
    """Outcome of one sighting: kind (new|static|moved|dynamic), velocity (3,) m/s."""

    kind: str
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    displacement_m: float = 0.0
    still_sightings: int = 0  # consecutive still sightings after this one
    dynamic: bool = False  # the object's dynamic flag after this sighting


def classify_motion(
    *,
    label: str,
    centroid: np.ndarray,
    stamp_ns: int,
    previous_position: np.ndarray | None,
    previous_stamp_ns: int,
    was_dynamic: bool,
    still_sightings: int,
    config: DynamicsConfig,
) -> Motion:
    """Classify one sighting of an object (see the module docstring). Pure function."""
    always = label.lower() in {s.lower() for s in config.dynamic_labels}
    if previous_position is None:
        return Motion("dynamic" if always else "new", dynamic=always)
    disp_vec = np.asarray(centroid, np.float64) - previous_position
    disp = float(np.linalg.norm(disp_vec))
    dt_s = (stamp_ns - previous_stamp_ns) / 1e9
    velocity = np.zeros(3, np.float32)
    moving = False
    if 0 < dt_s <= config.max_velocity_dt_s:
        velocity = (disp_vec / dt_s).astype(np.float32)
        moving = disp / dt_s > config.dynamic_speed_mps and disp > 1e-6
    if always or moving:
        return Motion("dynamic", velocity, disp, 0, True)
    still = still_sightings + 1
    if was_dynamic and still < config.static_after_sightings:
        return Motion("dynamic", velocity, disp, still, True)
    if disp > config.moved_distance_m:
        return Motion("moved", velocity, disp, still, False)
    return Motion("static", velocity, disp, still, False)


@dataclass
class TransientFrame:
    """One frame in the transient ring.

    points (N, 3) float32 world; object_ids (N,) int32; velocities (N, 3) float32 m/s
    (the object's velocity, zero for points without an object); dynamic (N,) bool
    (points kept out of the persistent map).
    """

    stamp_ns: int
    origin: np.ndarray  # (3,) camera centre
    points: np.ndarray
    object_ids: np.ndarray
    velocities: np.ndarray
    dynamic: np.ndarray


class TransientDynamicsMemory:
    """Bounded ring of the last ``ring_frames`` frames (Mem4D's transient memory)."""

    def __init__(self, config: DynamicsConfig | None = None) -> None:
        self.config = config or DynamicsConfig()
        self.config.validate()
        self.frames: deque[TransientFrame] = deque(maxlen=self.config.ring_frames)

    def __len__(self) -> int:
        return len(self.frames)

    def push(
        self,
        *,
        stamp_ns: int,
        origin: np.ndarray,
        points: np.ndarray,
        object_ids: np.ndarray,
        velocities: np.ndarray,
        dynamic: np.ndarray,
    ) -> None:
        """Append a frame (the oldest falls out). Subsamples above ``max_points_per_frame``,
        keeping every dynamic point first."""
        n = len(points)
        cap = self.config.max_points_per_frame
        if n > cap:
            dyn_idx = np.flatnonzero(dynamic)
            rest = np.flatnonzero(~dynamic)
            keep_rest = max(cap - len(dyn_idx), 0)
            pick = np.linspace(0, len(rest) - 1, keep_rest).astype(np.int64) if keep_rest else []
            sel = np.sort(np.concatenate([dyn_idx[:cap], rest[pick]]))
            points, object_ids, velocities, dynamic = (
                points[sel],
                object_ids[sel],
                velocities[sel],
                dynamic[sel],
            )
        self.frames.append(
            TransientFrame(
                int(stamp_ns),
                np.asarray(origin, np.float64).copy(),
                np.asarray(points, np.float32).copy(),
                np.asarray(object_ids, np.int32).copy(),
                np.asarray(velocities, np.float32).copy(),
                np.asarray(dynamic, bool).copy(),
            )
        )

    def points(
        self, *, t0_ns: int = 0, t1_ns: int = 0, dynamic_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Points of the frames in [t0, t1] (0 = open): points (M, 3), object ids (M,),
        velocities (M, 3), stamps (M,) int64."""
        sel = [
            f
            for f in self.frames
            if (t0_ns == 0 or f.stamp_ns >= t0_ns) and (t1_ns == 0 or f.stamp_ns <= t1_ns)
        ]
        if not sel:
            return (
                np.zeros((0, 3), np.float32),
                np.zeros(0, np.int32),
                np.zeros((0, 3), np.float32),
                np.zeros(0, np.int64),
            )
        masks = [f.dynamic if dynamic_only else np.ones(len(f.points), bool) for f in sel]
        pts = np.concatenate([f.points[m] for f, m in zip(sel, masks)])
        ids = np.concatenate([f.object_ids[m] for f, m in zip(sel, masks)])
        vel = np.concatenate([f.velocities[m] for f, m in zip(sel, masks)])
        stamps = np.concatenate(
            [np.full(int(m.sum()), f.stamp_ns, np.int64) for f, m in zip(sel, masks)]
        )
        return pts, ids, vel, stamps

    def latest_of(self, object_id: int) -> tuple[int, np.ndarray] | None:
        """(stamp_ns, points (n, 3)) of the newest frame where ``object_id`` appears."""
        for f in reversed(self.frames):
            m = f.object_ids == object_id
            if m.any():
                return f.stamp_ns, f.points[m]
        return None

    def drop_older_than(self, stamp_ns: int) -> int:
        """Remove frames captured before ``stamp_ns``; returns how many."""
        n = 0
        while self.frames and self.frames[0].stamp_ns < stamp_ns:
            self.frames.popleft()
            n += 1
        return n

    # ------------------------------------------------------------------ persistence

    def state(self) -> dict[str, np.ndarray]:
        fr = list(self.frames)
        sizes = np.array([len(f.points) for f in fr], np.int64)
        cat = lambda name, shape, dt: (  # noqa: E731
            np.concatenate([getattr(f, name) for f in fr]) if fr else np.zeros(shape, dt)
        )
        return {
            "transient_stamps": np.array([f.stamp_ns for f in fr], np.int64),
            "transient_origins": np.array([f.origin for f in fr], np.float64).reshape(-1, 3),
            "transient_sizes": sizes,
            "transient_points": cat("points", (0, 3), np.float32),
            "transient_object_ids": cat("object_ids", (0,), np.int32),
            "transient_velocities": cat("velocities", (0, 3), np.float32),
            "transient_dynamic": cat("dynamic", (0,), bool),
        }

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        sizes = np.asarray(arrays["transient_sizes"], np.int64)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        total = int(bounds[-1])
        for name in (
            "transient_points",
            "transient_object_ids",
            "transient_velocities",
            "transient_dynamic",
        ):
            if len(arrays[name]) != total:
                raise ValueError(
                    f"transient state: {name} has {len(arrays[name])} rows, sizes say {total}"
                )
        frames: deque[TransientFrame] = deque(maxlen=self.config.ring_frames)
        for i in range(len(sizes)):
            a, b = bounds[i], bounds[i + 1]
            frames.append(
                TransientFrame(
                    int(arrays["transient_stamps"][i]),
                    np.asarray(arrays["transient_origins"][i], np.float64).copy(),
                    np.asarray(arrays["transient_points"][a:b], np.float32).copy(),
                    np.asarray(arrays["transient_object_ids"][a:b], np.int32).copy(),
                    np.asarray(arrays["transient_velocities"][a:b], np.float32).copy(),
                    np.asarray(arrays["transient_dynamic"][a:b], bool).copy(),
                )
            )
        self.frames = frames
