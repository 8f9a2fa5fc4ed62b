"""Static / dynamic decoupling (Mem4D): transient dynamics memory and motion rules.

Mem4D keeps a *persistent structure memory* (static geometry, slow updates) apart
from a *transient dynamics memory* (recent frames, fast). Here the persistent part is
the occupancy octree (clamped log-odds: static structure needs many misses to be
erased) and the transient part is ``TransientDynamicsMemory``: a bounded ring of the
last N frames' points with their object ids and per-point velocities.

``classify_motion`` decides, each time an object is seen, whether it is

- ``new``: first sighting;
- ``static``: still where it was;
- ``moved``: relocated since it was last seen (slowly, or while out of view): its old
  voxels are cleared and it is remembered at the new place only;
- ``dynamic``: moving now (faster than ``dynamic_speed_mps`` between close sightings, or
  a label that is always dynamic such as ``person``): its points stay in the transient
  memory and never enter the persistent map.

Real depth cameras and region proposals make centroids jitter (8 mm between 30 fps
frames, tens of centimetres when a proposal grows or shrinks), so motion needs more
than a speed (issue 16):

- **minimum displacement**: a step or an offset from the remembered place counts only
  beyond ``max(min_displacement_m, extent_displacement_frac * median extent,
  depth_noise_sigmas * sigma(range))`` with the structured-light noise model
  sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2 m at the object's range from the camera;
- **persistence**: an object becomes ``dynamic`` or ``moved`` only after
  ``moving_after_sightings`` consecutive displaced sightings, and ``moved`` only once it
  has settled (its last step below the threshold), so a proposal that flickers between
  two shapes never qualifies;
- **hysteresis**: a dynamic object becomes static again only after
  ``static_after_sightings`` consecutive still sightings.

``DynamicsConfig.legacy()`` is the previous rule (any speed above the limit, no
persistence), kept for benchmarks.

"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DynamicsConfig",
    "Motion",
    "TransientDynamicsMemory",
    "TransientFrame",
    "classify_motion",
    "depth_noise_m",
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
    # still sightings before a dynamic object counts as static again (hysteresis)
    static_after_sightings: int = 3
    transient_max_age_s: float = 30.0  # dynamic objects unseen this long are dropped by consolidate
    # displacements below this never count as motion, metres (centroid jitter)
    min_displacement_m: float = 0.05
    # ... nor below this fraction of the object's median extent (proposal boxes jitter in
    # proportion to their size; the median, so a tall thin person still counts as moving)
    extent_displacement_frac: float = 0.2
    # ... nor below this many standard deviations of depth noise at the object's range
    depth_noise_sigmas: float = 3.0
    # consecutive displaced sightings before an object is dynamic or moved (persistence)
    moving_after_sightings: int = 2
    # "moved" is measured from the remembered place (mean of the centroids since the last
    # move), not from the last sighting (False: the previous rule)
    anchor_to_place: bool = True

    @classmethod
    def legacy(cls, **overrides: object) -> DynamicsConfig:
        """The rule before issue 16: no minimum displacement, no persistence."""
        base: dict[str, object] = {
            "min_displacement_m": 0.0,
            "extent_displacement_frac": 0.0,
            "depth_noise_sigmas": 0.0,
            "moving_after_sightings": 1,
            "anchor_to_place": False,
        }
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

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
        if self.moving_after_sightings < 1:
            raise ValueError("DynamicsConfig.moving_after_sightings must be >= 1")
        for name in ("min_displacement_m", "extent_displacement_frac", "depth_noise_sigmas"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"DynamicsConfig.{name} must be >= 0")


@dataclass
class Motion:
    """Outcome of one sighting: kind (new|static|moved|dynamic), velocity (3,) m/s."""

    kind: str
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    displacement_m: float = 0.0
    still_sightings: int = 0  # consecutive still sightings after this one
    dynamic: bool = False  # the object's dynamic flag after this sighting
    displaced_sightings: int = 0  # consecutive displaced sightings after this one
    threshold_m: float = 0.0  # the minimum displacement that applied


def depth_noise_m(range_m: float) -> float:
    """Axial noise (one sigma) of a structured-light depth camera at ``range_m``
    (Khoshelham & Elberink 2012, Kinect v1), metres."""
    return 0.0012 + 0.0019 * max(range_m - 0.4, 0.0) ** 2


def _norm(v: np.ndarray) -> float:
    """L2 norm of a small vector: plain float arithmetic for 3 values (numpy's call costs
    ~3 us; this runs for every object of every percept)."""
    if v.shape == (3,):
        x, y, z = v.tolist()
        return math.sqrt(x * x + y * y + z * z)
    return float(np.linalg.norm(v))


def _median(v: np.ndarray) -> float:
    """Median of a small vector (an extent: 3 values, sorted in Python; else numpy)."""
    if v.shape == (3,):
        return float(sorted(v.tolist())[1])
    return float(np.median(v))


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
    place: np.ndarray | None = None,
    extent: np.ndarray | None = None,
    camera_origin: np.ndarray | None = None,
    displaced_sightings: int = 0,
    place_seen_ns: int | None = None,
) -> Motion:
    """Classify one sighting of an object (see the module docstring). Pure function.

    previous_position: the last sighting's centroid; place: where the object is
    remembered (the mean of its centroids since it last moved; default the last
    sighting); extent (3,) its size; camera_origin (3,) for the depth-noise threshold;
    displaced_sightings: the previous sighting's ``Motion.displaced_sightings``;
    place_seen_ns: when it was last seen at ``place`` (None: not known), so a
    motion too slow per frame to clear the jitter threshold (4 cm at 30 fps is 1.2 m/s)
    is still caught by its drift away from the place over the frames since.
    """
    always = label.lower() in {s.lower() for s in config.dynamic_labels}
    if previous_position is None:
        return Motion("dynamic" if always else "new", dynamic=always)
    c = np.asarray(centroid, np.float64)
    step_vec = c - previous_position
    step = _norm(step_vec)
    use_place = place is not None and config.anchor_to_place
    anchor = np.asarray(place, np.float64) if use_place else previous_position
    away = _norm(c - anchor)
    thr = config.min_displacement_m
    if extent is not None and config.extent_displacement_frac > 0:
        thr = max(thr, config.extent_displacement_frac * _median(np.asarray(extent)))
    if camera_origin is not None and config.depth_noise_sigmas > 0:
        rng = _norm(c - np.asarray(camera_origin, np.float64))
        thr = max(thr, config.depth_noise_sigmas * depth_noise_m(rng))
    dt_s = (stamp_ns - previous_stamp_ns) / 1e9
    velocity = np.zeros(3, np.float32)
    fast = False
    if 0 < dt_s <= config.max_velocity_dt_s:
        velocity = (step_vec / dt_s).astype(np.float32)
        fast = step / dt_s > config.dynamic_speed_mps and step > max(thr, 1e-6)
    relocated = away > max(config.moved_distance_m, thr)
    # a fast step counts only while the object is also away from its place: a proposal
    # flickering between two shapes jumps fast but keeps coming back
    fast_away = fast and (away > thr or not use_place)
    if use_place and place_seen_ns is not None and not fast_away and away > thr:
        since = (stamp_ns - place_seen_ns) / 1e9
        if 0 < since <= config.max_velocity_dt_s and away / since > config.dynamic_speed_mps:
            fast = fast_away = True  # drifting away from its place faster than the limit
            velocity = ((c - anchor) / since).astype(np.float32)
    displaced = displaced_sightings + 1 if (fast_away or relocated) else 0
    confirmed = displaced >= config.moving_after_sightings
    if always or (fast_away and confirmed):
        return Motion("dynamic", velocity, step, 0, True, displaced, thr)
    still = 0 if fast else still_sightings + 1
    if not fast and not was_dynamic and step <= thr:
        velocity = np.zeros(3, np.float32)  # jitter is not a velocity
    if was_dynamic and still < config.static_after_sightings:
        return Motion("dynamic", velocity, step, still, True, displaced, thr)
    # a relocated object is "moved" once it has settled at its new place (with
    # persistence; the previous rule took the first sighting there)
    settled = config.moving_after_sightings == 1 or step <= max(thr, config.moved_distance_m)
    if relocated and confirmed and settled:
        return Motion("moved", velocity, away, still, False, 0, thr)
    return Motion("static", velocity, step, still, False, displaced, thr)


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
