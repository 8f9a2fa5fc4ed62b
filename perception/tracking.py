"""Multi-object tracking: persistent ids for object proposals across frames.

Real-camera proposals (``engram.perception.objects``) are numbered 0..K-1 in each frame; an
``ObjectTracker`` gives each one the id of the *track* (the physical object seen over
many frames) it belongs to, so downstream memory can tell one object seen a hundred
times from a hundred objects. The simulator's segmentation ids are already stable
and do not go through a tracker.

``ObjectTracker.update(objects, *, stamp_ns) -> Objects``: the same objects, in the
same order (those whose track has been matched ``min_hits`` times: tentative ones are
left out, their pixels unlabelled), with ``ids`` (and ``label_image``) replaced by
track ids and, when
``smooth_labels``, ``labels`` / ``confidences`` replaced by the track's majority
label. Per update, for T live tracks and K detections:

1. **Restart.** A stamp older than the previous one means the stream restarted (a
   replay, a camera reconnect): every track is dropped; ids keep counting up.
2. **Ageing.** A track missed in more than ``max_age_frames`` consecutive updates,
   or unseen for longer than ``max_age_s`` of stamp time, is dropped. Both: the
   node only processes candidate frames (the keyframe selector skips static ones),
   so frames alone under-count time and time alone ignores a fast stream.
3. **Cost** (T, K), each term normalised by its gate to [0, 1]:

   - geometry: when track and detection both have a depth-based world centroid,
     ``distance / max_distance_m``; otherwise ``(1 - IoU) / (1 - min_iou)`` of the
     track's last box and the detection's box. World-frame distance is what survives
     camera motion: when the robot turns, every box slides across the image and
     2D IoU says nothing, but a static object's world centroid stays put (given the
     pose). 2D IoU is the fallback for webcams without depth.
   - appearance: ``(1 - cos) / (1 - min_embedding_cos)`` of the track's mean
     embedding and the detection's CLIP region embedding (when both exist).
   - cost = weighted mean of the terms present (``geometry_weight``,
     ``embedding_weight``).

   A pair is admissible only if it passes every gate that applies (distance <=
   ``max_distance_m`` or IoU >= ``min_iou``; cosine >= ``min_embedding_cos``, unless
   both are within ``same_place_m`` of each other in 3D: a lamp that lights up looks
   different but has not moved).
4. **Assignment.** The Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
   minimises the total cost; inadmissible pairs get a prohibitive cost and are
   discarded from its answer. Matched tracks take the detection's box, centroid and
   label vote; their embedding is a running mean of the unit embeddings (the plain
   mean for the first ``1 / embedding_momentum`` observations, then an exponential
   mean with that weight, so an object's look can drift with viewpoint), kept unit
   length. Unmatched detections start new tracks, numbered in detection order.
5. **Re-identification** (``reid_extent_frac`` > 0). A detection matched to no live
   track takes the id of a track of the same (majority) label that is live but
   unmatched in this update, or was dropped by ageing no more than ``reid_max_age_s``
   ago, when both are located in 3D and the detection's centroid lies within
   ``reid_extent_frac`` times the larger of the track's and the detection's largest
   extents (at most ``reid_max_m``: a track begun on a sliver still takes the whole);
   nearest pairs first. A robot that turns away for longer than ``max_age_s`` and back
   sees the same mug on the same shelf: without this it became a second mug (a new id,
   a second record in memory, a wrong count). The gate scales with the object's own
   size, so two tokens 7 cm apart stay two tokens.
6. **Bound.** Beyond ``max_tracks`` live tracks the least recently seen are dropped
   (among those seen in this very update, the newest), so memory stays bounded
   whatever the input; a detection whose new track was dropped still keeps its
   fresh id in this update's output.

Held-back sightings (``hold_back``, with ``min_hits`` > 1): a tentative track keeps the
detections it was not reported with (at most ``min_hits`` - 1); when it is confirmed they
are handed out by ``take_held_back()`` with their own stamps, so a consumer (the
perception node publishes them as percepts before the confirming frame's) knows when the
object was first seen, not only when it was confirmed: at 2.5 Hz the second match comes
0.4 s or, for a far thing missed in between, seconds later. A track never confirmed
hands out nothing.

Weak hints (``update(..., weak=)``, ``weak_hints``): detections the extractor did not
trust on their own (``perception.naming.small_weak_hints``: a few pixels of the blue ball
as close to "wall or furniture" as to "blue ball"). None is reported or matched to a
track; they are kept for ``weak_max_age_s``. When a track is confirmed with held-back
sightings, the hints of its label within ``weak_max_distance_m`` of its first sighting's
centroid that lead up to it with no gap over ``max_age_s`` (newest first, one per frame)
are released with it, as sightings of it. A hint no track of its label claims is never
handed out. Replayed on the apartment's 30 dev tours: the blue ball first remembered
0.4-6.4 s earlier in 13, order-of-first-sight triples 406 -> 431 of 536 (2 lost: a book
claimed 5.6 s before the scorer's first frame of 8 px of it).

Labels: a track keeps its last ``label_window`` (label, confidence) votes; its label
is the most frequent one (ties: the larger summed confidence, then the most recent),
which smooths open-vocabulary flicker (mug / cup / mug). With ``smooth_labels``
the output label is that majority label and its confidence the mean confidence of
its votes (the detection's own when they agree). Embeddings are left as detected.

Why no motion model (Kalman filter, as in SORT): proposals are region segments
whose boxes jitter by tens of pixels when a region merges or splits, and the node
sees keyframe-thinned frames at irregular intervals; a constant-velocity model
would extrapolate that jitter. Camera motion, the dominant cause of apparent
motion, is removed exactly by the world-frame centroids when depth is there.
Without depth and with fast camera motion, tracks break (new ids); memory's
position/embedding rules still resolve them.

Ids are never reused within a tracker's life (restarts and ``reset`` included); a
shared ``id_source`` (one per ``PerceptionNode``, across its cameras) extends this to
all trackers drawing from it. By default the first id comes from the wall clock
(``track_id_source``), so a restarted process does not reuse the previous run's ids,
which the persistent episodic memory would take for the same objects. Updates are deterministic. Bad input (mismatched
lengths, NaN centroids, an embedding width unlike the tracks') raises ``ValueError``
naming the field before any state changes. Not thread-safe: one caller at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engram.perception.objects import Objects

__all__ = ["ObjectTracker", "TrackerConfig", "box_iou", "track_id_source"]

_INT32_MAX = np.iinfo(np.int32).max
_INADMISSIBLE = 1e6  # cost of a pair that fails a gate; never accepted


@dataclass
class TrackerConfig:
    """Settings of ``ObjectTracker`` (see the module docstring for how they combine)."""

    # track real-camera proposals across frames; False = frame-local ids 0..K-1
    enabled: bool = True
    # least box IoU of a pair without 3D on both sides (2D gate), [0, 1)
    min_iou: float = 0.1
    # least cosine of track and detection embeddings (appearance gate), [-1, 1)
    min_embedding_cos: float = 0.5
    # a detection this close (3D) to a track passes the appearance gate whatever its look
    # (a lamp lighting up, a shadow falling: two objects cannot share one spot), metres;
    # 0 = the appearance gate always applies
    same_place_m: float = 0.0
    # farthest a detection's world centroid may be from the track's (3D gate), metres
    max_distance_m: float = 0.3
    # weight of the geometric term (distance or 1 - IoU) in the association cost
    geometry_weight: float = 0.5
    # weight of the appearance term (1 - cosine) in the association cost
    embedding_weight: float = 0.5
    # a track missed in more than this many consecutive updates is dropped, frames
    max_age_frames: int = 30
    # a track unseen for longer than this (stamp time) is dropped, seconds
    max_age_s: float = 5.0
    # most live tracks kept; beyond it the least recently seen are dropped
    max_tracks: int = 256
    # a track is reported once it has been matched in this many updates (SORT's min_hits):
    # a proposal seen in one frame only (a shadow, a region split while the arm moves) is
    # not an object; 1 = report every detection at once
    min_hits: int = 1
    # re-identification: an unmatched detection takes the id of a same-label track (live but
    # unmatched, or lost by ageing) whose centroid is within this fraction of the larger of
    # the track's and the detection's largest extents (module docstring, step 5); 0 = off
    reid_extent_frac: float = 0.0
    # farthest a re-identified detection may be from the track, metres
    reid_max_m: float = 0.15
    # a track lost by ageing can be re-identified for this long after it was last seen,
    # seconds (stamp time)
    reid_max_age_s: float = 600.0
    # replace labels / confidences by the track's majority label
    smooth_labels: bool = True
    # recent label votes a track keeps for its majority label, observations
    label_window: int = 10
    # weight of a new embedding in the track's running mean once past 1 / this observations
    embedding_momentum: float = 0.1
    # first id handed out (by a tracker without a shared id_source); -1: derived from the
    # clock, so the ids of two runs do not collide in a memory that outlives the process
    first_id: int = -1
    # with min_hits > 1: keep a tentative track's detections and hand them out, with their
    # own stamps, when it is confirmed (``take_held_back``), so what is downstream learns
    # when the object was first seen, not when it was confirmed; False = dropped
    hold_back: bool = True
    # with hold_back: a confirmed track also releases the weak hints of its label that led
    # up to its first sighting at its place (module docstring, "Weak hints"); False = ignored
    weak_hints: bool = True
    # weak hints are kept this long for a track to claim, seconds (stamp time)
    weak_max_age_s: float = 30.0
    # farthest a weak hint's world centroid may be from the track's first sighting, metres
    weak_max_distance_m: float = 0.3

    def __post_init__(self) -> None:
        checks = (
            ("min_iou", 0.0 <= self.min_iou < 1.0, "in [0, 1)"),
            ("min_embedding_cos", -1.0 <= self.min_embedding_cos < 1.0, "in [-1, 1)"),
            ("max_distance_m", self.max_distance_m > 0, "> 0"),
            ("same_place_m", self.same_place_m >= 0, ">= 0"),
            ("geometry_weight", self.geometry_weight > 0, "> 0"),
            ("embedding_weight", self.embedding_weight >= 0, ">= 0"),
            ("max_age_frames", self.max_age_frames >= 0, ">= 0"),
            ("max_age_s", self.max_age_s > 0, "> 0"),
            ("max_tracks", self.max_tracks >= 1, ">= 1"),
            ("label_window", self.label_window >= 1, ">= 1"),
            ("min_hits", self.min_hits >= 1, ">= 1"),
            ("reid_extent_frac", self.reid_extent_frac >= 0, ">= 0"),
            ("reid_max_m", self.reid_max_m >= 0, ">= 0"),
            ("reid_max_age_s", self.reid_max_age_s >= 0, ">= 0"),
            ("weak_max_age_s", self.weak_max_age_s >= 0, ">= 0"),
            ("weak_max_distance_m", self.weak_max_distance_m >= 0, ">= 0"),
            ("embedding_momentum", 0.0 < self.embedding_momentum <= 1.0, "in (0, 1]"),
            ("first_id", -1 <= self.first_id <= _INT32_MAX, "-1 or in [0, 2**31)"),
        )
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"TrackerConfig.{name} must be {want}, got {getattr(self, name)}")


@dataclass
class _Row:
    """One detection as the tracker received it (a held-back sighting)."""

    label: str
    confidence: float
    box: np.ndarray  # (4,) float64 pixel xyxy
    centroid: np.ndarray  # (3,) float64 world metres
    extent: np.ndarray  # (3,) float32 metres
    located: bool
    embedding: np.ndarray | None  # (D,) float32 as detected


@dataclass
class _Track:
    track_id: int
    box: np.ndarray  # (4,) float64 pixel xyxy of the last observation
    centroid: np.ndarray  # (3,) float64 world metres of the last observation
    located: bool  # centroid measured from depth (else the camera position stood in)
    embedding: np.ndarray | None  # (D,) float32 unit running mean, or None
    observations: int
    last_update: int  # index of the update that last matched it
    last_seen_ns: int
    votes: collections.deque[tuple[str, float]]  # recent (label, confidence)
    size_m: float = 0.0  # largest side of the largest 3D box it was seen with, metres
    # detections held back while tentative (``TrackerConfig.hold_back``): (stamp, row)
    held: list[tuple[int, _Row]] = dataclasses.field(default_factory=list)


def _row(objects: Objects, det: _Checked, d: int) -> _Row:
    """Detection ``d`` of this update, kept as received (its own embedding and extent)."""
    emb = None
    if objects.embeddings is not None:
        emb = np.asarray(objects.embeddings, np.float32)[d].copy()
    extents = objects.extents
    ext = np.zeros(3, np.float32)
    if extents is not None and np.shape(extents) == (len(det.ids), 3):
        ext = np.asarray(extents, np.float32)[d].copy()
    return _Row(
        label=det.labels[d],
        confidence=float(det.confidences[d]),
        box=det.boxes[d].copy(),
        centroid=det.centroids[d].copy(),
        extent=ext,
        located=bool(det.located[d]),
        embedding=emb,
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of pixel boxes, xyxy with exclusive max: (N, 4), (M, 4) -> (N, M) float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _majority(votes: collections.deque[tuple[str, float]]) -> tuple[str, float]:
    """(label, mean confidence of its votes): most votes, then summed confidence, then
    the most recent."""
    count: dict[str, int] = {}
    total: dict[str, float] = {}
    last: dict[str, int] = {}
    for i, (label, conf) in enumerate(votes):
        count[label] = count.get(label, 0) + 1
        total[label] = total.get(label, 0.0) + conf
        last[label] = i
    best = max(count, key=lambda lb: (count[lb], total[lb], last[lb]))
    return best, total[best] / count[best]


@dataclass
class _Checked:
    """Validated arrays of one update's detections."""

    ids: np.ndarray  # (K,) int64
    labels: list[str]
    confidences: np.ndarray  # (K,) float32
    boxes: np.ndarray  # (K, 4) float64
    centroids: np.ndarray  # (K, 3) float64
    located: np.ndarray  # (K,) bool
    embeddings: np.ndarray | None  # (K, D) float32 unit rows
    sizes: np.ndarray  # (K,) float64 largest side of each 3D box, metres (0 unknown)


def _check(objects: Objects, stamp_ns: int) -> _Checked:
    """Validate ``objects``; raise ValueError naming the bad field."""
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)) or stamp_ns < 0:
        raise ValueError(f"stamp_ns must be a non-negative int, got {stamp_ns!r}")

    def arr(name: str, value: object, dtype: type, tail: tuple[int, ...]) -> np.ndarray:
        try:
            a = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Objects.{name}: not numeric ({exc})") from None
        if a.ndim != 1 + len(tail) or a.shape[1:] != tail:
            want = "(K" + "".join(f", {t}" for t in tail) + ")"
            raise ValueError(f"Objects.{name}: expected shape {want}, got {a.shape}")
        return a

    ids = arr("ids", objects.ids, np.int64, ())
    k = len(ids)
    if len(np.unique(ids)) != k:
        raise ValueError("Objects.ids: detection ids must be unique within a frame")
    if len(objects.labels) != k:
        raise ValueError(f"Objects.labels: {len(objects.labels)} labels for {k} ids")
    if not all(isinstance(s, str) for s in objects.labels):
        raise ValueError("Objects.labels: must be strings")
    checked = {}
    for name, dtype, tail in (
        ("confidences", np.float32, ()),
        ("boxes", np.float64, (4,)),
        ("centroids", np.float64, (3,)),
    ):
        a = arr(name, getattr(objects, name), dtype, tail)
        if len(a) != k:
            raise ValueError(f"Objects.{name}: {len(a)} rows for {k} ids")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"Objects.{name}: contains NaN or inf")
        checked[name] = a
    boxes = checked["boxes"]
    if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
        raise ValueError("Objects.boxes: need x1 >= x0 and y1 >= y0 (xyxy)")
    located = np.ones(k, bool) if objects.located is None else np.asarray(objects.located)
    if located.shape != (k,) or located.dtype != bool:
        raise ValueError(
            f"Objects.located: expected ({k},) bool, got {located.shape} {located.dtype}"
        )
    sizes = np.zeros(k)
    if objects.extents is not None and np.shape(objects.extents) == (k, 3):
        ext = np.asarray(objects.extents, np.float64)
        sizes = np.where(np.all(np.isfinite(ext), axis=1), np.abs(ext).max(axis=1, initial=0), 0.0)
    emb = None
    if objects.embeddings is not None:
        shape = np.shape(objects.embeddings)
        if len(shape) != 2:
            raise ValueError(f"Objects.embeddings: expected shape (K, D), got {shape}")
        emb = arr("embeddings", objects.embeddings, np.float32, (shape[1],))
        if len(emb) != k:
            raise ValueError(f"Objects.embeddings: {len(emb)} rows for {k} ids")
        if not np.all(np.isfinite(emb)):
            raise ValueError("Objects.embeddings: contains NaN or inf")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    return _Checked(
        ids=ids,
        labels=list(objects.labels),
        confidences=checked["confidences"],
        boxes=boxes,
        centroids=checked["centroids"],
        located=located,
        embeddings=emb,
        sizes=sizes,
    )


def _remap(label_image: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """(H, W) int ids in ``old`` (else none) -> (H, W) int32 ``new`` ids, -1 elsewhere."""
    img = np.asarray(label_image)
    if len(old) == 0:
        return np.full(img.shape, -1, np.int32)
    if old.min() >= 0 and old.max() < 1 << 16:  # small ids (proposals: 0..K-1): a table
        lut = np.full(int(old.max()) + 2, -1, np.int32)  # index = id + 1; 0 = none
        lut[old + 1] = new
        if img.size == 0 or (img.min() >= -1 and img.max() < len(lut) - 1):
            return lut[img + 1]
        idx = img.astype(np.int64) + 1
        inside = (idx >= 0) & (idx < len(lut))
        return np.where(inside, lut[np.where(inside, idx, 0)], -1).astype(np.int32)
    order = np.argsort(old)
    sorted_old = old[order]
    pos = np.clip(np.searchsorted(sorted_old, img), 0, len(old) - 1)
    hit = sorted_old[pos] == img
    return np.where(hit, new[order][pos], -1).astype(np.int32)


def _select(objects: Objects, keep: np.ndarray) -> Objects:
    """The objects where ``keep`` (K,) bool is True, in order (label_image unchanged)."""
    idx = np.flatnonzero(keep)
    return dataclasses.replace(
        objects,
        ids=objects.ids[idx],
        labels=[objects.labels[i] for i in idx],
        confidences=np.asarray(objects.confidences)[idx],
        boxes=np.asarray(objects.boxes)[idx],
        centroids=np.asarray(objects.centroids)[idx],
        extents=np.asarray(objects.extents)[idx],
        embeddings=None if objects.embeddings is None else np.asarray(objects.embeddings)[idx],
        located=None if objects.located is None else np.asarray(objects.located)[idx],
    )


def track_id_source(config: TrackerConfig) -> Iterator[int]:
    """Ids for new tracks: ``config.first_id``, ``first_id + 1``, ... With ``first_id == -1``
    the start is the wall clock in milliseconds modulo 2**30 (plus 1): a restarted
    process does not hand out the ids of the run before it, which a persistent memory
    (episodic entity resolution by id) would take for the same objects. Ids stay below
    2**31 (int32) for the first 2**30 tracks."""
    start = config.first_id
    if start < 0:
        start = 1 + (time.time_ns() // 1_000_000) % (1 << 30)
    return itertools.count(start)


class ObjectTracker:
    """Persistent ids for per-frame objects; see the module docstring.

    ``id_source``: an iterator of ids to draw from (share one between trackers whose
    ids must not collide); default ``track_id_source(config)``.
    """

    def __init__(
        self, config: TrackerConfig | None = None, *, id_source: Iterator[int] | None = None
    ) -> None:
        self.config = config or TrackerConfig()
        self._ids = id_source if id_source is not None else track_id_source(self.config)
        self._tracks: list[_Track] = []
        # tracks dropped by ageing, kept for re-identification (oldest first, bounded)
        self._lost: collections.deque[_Track] = collections.deque(maxlen=self.config.max_tracks)
        self._updates = 0
        self._last_stamp_ns: int | None = None
        # sightings of tracks confirmed since the last ``take_held_back``: (stamp, id, label,
        # row); bounded: each track holds back at most min_hits - 1 and is released once
        self._released: list[tuple[int, int, str, _Row]] = []
        # unclaimed weak hints, oldest first: (stamp, row); bounded by age and length
        self._weak: collections.deque[tuple[int, _Row]] = collections.deque(
            maxlen=4 * self.config.max_tracks
        )
        self.stats = {
            "updates": 0,
            "tracks_started": 0,
            "tracks_dropped": 0,
            "resets": 0,
            "tentative": 0,  # detections not reported: their track had < min_hits matches
            "reidentified": 0,  # detections given an earlier track's id (step 5)
            "weak_claimed": 0,  # weak hints released as sightings of a confirmed track
        }

    def __len__(self) -> int:
        return len(self._tracks)

    @property
    def track_ids(self) -> list[int]:
        """Ids of the live tracks, oldest first."""
        return [t.track_id for t in self._tracks]

    def take_held_back(self) -> list[tuple[int, Objects]]:
        """The detections held back while their tracks were tentative (``min_hits`` > 1,
        ``hold_back``), for the tracks confirmed by the updates since the last call:
        [(stamp_ns, Objects)], oldest first, one entry per stamp, with the track ids and
        the track's label when confirmed (no label image). A track confirmed at its second
        match was first seen one frame before: its first detection, with that frame's
        stamp, is what a memory should record as its first sighting."""
        released, self._released = self._released, []
        by_stamp: dict[int, list[tuple[int, str, _Row]]] = {}
        for stamp, tid, label, row in released:
            by_stamp.setdefault(stamp, []).append((tid, label, row))
        out = []
        for stamp in sorted(by_stamp):
            rows = by_stamp[stamp]
            embs = [r.embedding for _, _, r in rows if r.embedding is not None]
            same = len(embs) == len(rows) and len({e.shape for e in embs}) == 1
            out.append(
                (
                    stamp,
                    Objects(
                        ids=np.array([tid for tid, _, _ in rows], np.int32),
                        labels=[label for _, label, _ in rows],
                        confidences=np.array([r.confidence for _, _, r in rows], np.float32),
                        boxes=np.stack([r.box for _, _, r in rows]).astype(np.int32),
                        centroids=np.stack([r.centroid for _, _, r in rows]).astype(np.float32),
                        extents=np.stack([r.extent for _, _, r in rows]).astype(np.float32),
                        embeddings=np.stack(embs).astype(np.float32) if same else None,
                        located=np.array([r.located for _, _, r in rows], bool),
                    ),
                )
            )
        return out

    def reset(self) -> None:
        """Forget every track (a stream restart). Ids keep counting: none is reused."""
        self._released = []
        self._weak.clear()
        self._tracks = []
        self._lost.clear()
        self._last_stamp_ns = None
        self.stats["resets"] += 1

    def update(self, objects: Objects, *, stamp_ns: int, weak: Objects | None = None) -> Objects:
        """Objects of the next frame (K, any order) -> the same K objects with track ids.

        ``stamp_ns``: the frame's capture time; ``weak``: this frame's weak hints (module
        docstring), never in the output. Raises ValueError on bad input, with the tracker
        unchanged."""
        cfg = self.config
        det = _check(objects, stamp_ns)
        weak_det = None
        if weak is not None and len(weak) and cfg.weak_hints and cfg.hold_back:
            weak_det = _check(weak, stamp_ns)
        stamp_ns = int(stamp_ns)
        restart = self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns
        tracks = [] if restart else self._tracks
        lost = [] if restart else list(self._lost)
        track_dim = next((t.embedding.shape[0] for t in tracks if t.embedding is not None), None)
        if det.embeddings is not None and track_dim is not None:
            if det.embeddings.shape[1] != track_dim:
                raise ValueError(
                    f"Objects.embeddings: width {det.embeddings.shape[1]} differs from the "
                    f"tracks' {track_dim} (a different encoder? reset the tracker)"
                )
        # --- everything below only reads state until the commit ----------------------
        update_index = self._updates + 1
        max_age_ns = cfg.max_age_s * 1e9
        alive = [
            t
            for t in tracks
            if update_index - t.last_update - 1 <= cfg.max_age_frames
            and stamp_ns - t.last_seen_ns <= max_age_ns
        ]
        alive_ids = {t.track_id for t in alive}
        dropped = [t for t in tracks if t.track_id not in alive_ids]
        aged = len(dropped)
        matches = self._associate(alive, det)
        matched_dets = {d for _, d in matches}
        fresh = [d for d in range(len(det.ids)) if d not in matched_dets]
        matched_tracks = {t.track_id for t, _ in matches}
        reid_pool = [t for t in alive if t.track_id not in matched_tracks] + [
            t for t in lost + dropped if stamp_ns - t.last_seen_ns <= cfg.reid_max_age_s * 1e9
        ]
        reid = self._reidentify(reid_pool, det, fresh)
        revived = [t for t, _ in reid if t.track_id not in alive_ids]
        fresh = [d for d in fresh if d not in {d2 for _, d2 in reid}]
        new_ids = {d: int(next(self._ids)) for d in fresh}
        if any(i > _INT32_MAX or i < 0 for i in new_ids.values()):
            raise OverflowError("track ids exhausted the int32 range")
        # --- commit ------------------------------------------------------------------
        if restart:
            self.stats["resets"] += 1
            self._released = []  # sightings of the stream before the restart
            self._weak.clear()
        while self._weak and stamp_ns - self._weak[0][0] > cfg.weak_max_age_s * 1e9:
            self._weak.popleft()
        if weak_det is not None and weak is not None:
            for d in range(len(weak_det.ids)):
                if weak_det.located[d]:
                    self._weak.append((stamp_ns, _row(weak, weak_det, d)))
        self._updates = update_index
        self._last_stamp_ns = stamp_ns
        out_ids = np.zeros(len(det.ids), np.int64)
        labels = list(det.labels)
        confidences = det.confidences.copy()
        det_track: dict[int, _Track] = {}
        revived_ids = {t.track_id for t in revived}
        self._lost = collections.deque(
            [t for t in [*lost, *dropped] if t.track_id not in revived_ids],
            maxlen=cfg.max_tracks,
        )
        alive.extend(revived)
        self.stats["reidentified"] += len(reid)
        hold = cfg.hold_back and cfg.min_hits > 1
        for t, d in [*matches, *reid]:
            was = t.observations
            self._observe(t, det, d, update_index, stamp_ns)
            det_track[d] = t
            if hold and was < cfg.min_hits <= t.observations and t.held:  # confirmed now
                self._release(t)
            elif hold and t.observations < cfg.min_hits:
                t.held.append((stamp_ns, _row(objects, det, d)))
        for d in fresh:
            emb = None if det.embeddings is None else det.embeddings[d].copy()
            t = _Track(
                track_id=new_ids[d],
                box=det.boxes[d].copy(),
                centroid=det.centroids[d].copy(),
                located=bool(det.located[d]),
                embedding=emb,
                observations=1,
                last_update=update_index,
                last_seen_ns=stamp_ns,
                votes=collections.deque(
                    [(det.labels[d], float(det.confidences[d]))], maxlen=cfg.label_window
                ),
                size_m=float(det.sizes[d]),
            )
            if hold:  # (a new track is tentative: min_hits > 1)
                t.held.append((stamp_ns, _row(objects, det, d)))
            alive.append(t)
            det_track[d] = t
        self.stats["tracks_started"] += len(fresh)
        for d, t in det_track.items():
            out_ids[d] = t.track_id
            if cfg.smooth_labels:
                label, conf = _majority(t.votes)
                if label != labels[d]:
                    labels[d], confidences[d] = label, conf
        if len(alive) > cfg.max_tracks:  # least recently seen first out; ties: newest out
            alive.sort(key=lambda t: (-t.last_update, t.track_id))
            aged += len(alive) - cfg.max_tracks
            self._lost.extend(alive[cfg.max_tracks :])
            alive = alive[: cfg.max_tracks]
        alive.sort(key=lambda t: t.track_id)
        self._tracks = alive
        self.stats["tracks_dropped"] += aged
        self.stats["updates"] += 1
        ids32 = out_ids.astype(np.int32)
        confirmed = np.array(
            [det_track[d].observations >= cfg.min_hits for d in range(len(det.ids))], bool
        )
        label_image = objects.label_image
        if label_image is not None:
            label_image = _remap(label_image, det.ids[confirmed], ids32[confirmed])
        out = dataclasses.replace(
            objects, ids=ids32, labels=labels, confidences=confidences, label_image=label_image
        )
        if confirmed.all():
            return out
        self.stats["tentative"] += int((~confirmed).sum())
        return _select(out, confirmed)

    # ---- internals ---------------------------------------------------------------------
    def _associate(self, tracks: list[_Track], det: _Checked) -> list[tuple[_Track, int]]:
        """Gated minimum-cost matching -> [(track, detection index)]."""
        cfg = self.config
        n_t, n_d = len(tracks), len(det.ids)
        if n_t == 0 or n_d == 0:
            return []
        t_boxes = np.stack([t.box for t in tracks])
        t_cent = np.stack([t.centroid for t in tracks])
        t_loc = np.array([t.located for t in tracks])
        iou = box_iou(t_boxes, det.boxes)  # (T, K)
        dist = np.linalg.norm(t_cent[:, None, :] - det.centroids[None, :, :], axis=2)
        in_3d = t_loc[:, None] & det.located[None, :]
        geo = np.where(in_3d, dist / cfg.max_distance_m, (1.0 - iou) / (1.0 - cfg.min_iou))
        ok = np.where(in_3d, dist <= cfg.max_distance_m, iou >= cfg.min_iou)
        cost = geo
        if det.embeddings is not None and cfg.embedding_weight > 0:
            has_emb = np.array([t.embedding is not None for t in tracks])
            if has_emb.any():
                dim = det.embeddings.shape[1]
                t_emb = np.stack(
                    [
                        t.embedding if t.embedding is not None else np.zeros(dim, np.float32)
                        for t in tracks
                    ]
                )
                cos = (t_emb @ det.embeddings.T).astype(np.float64)  # (T, K)
                app = (1.0 - cos) / (1.0 - cfg.min_embedding_cos)
                mixed = (cfg.geometry_weight * geo + cfg.embedding_weight * app) / (
                    cfg.geometry_weight + cfg.embedding_weight
                )
                cost = np.where(has_emb[:, None], mixed, geo)
                same_place = in_3d & (dist <= cfg.same_place_m)  # look may change, place not
                ok &= ~has_emb[:, None] | (cos >= cfg.min_embedding_cos) | same_place
        cost = np.where(ok, cost, _INADMISSIBLE)
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        return [(tracks[r], int(c)) for r, c in zip(rows, cols) if ok[r, c]]

    def _reidentify(
        self, pool: list[_Track], det: _Checked, fresh: list[int]
    ) -> list[tuple[_Track, int]]:
        """Step 5: [(track, detection)] of same-label pairs within the size-scaled gate,
        nearest first, each track and detection at most once."""
        cfg = self.config
        if cfg.reid_extent_frac <= 0 or not pool or not fresh:
            return []
        pairs = []
        for ti, t in enumerate(pool):
            if not t.located or t.size_m <= 0:
                continue
            label = _majority(t.votes)[0]
            for d in fresh:
                if det.located[d] and det.labels[d] == label:
                    # sized by the larger of the two: a track begun on a sliver of a book
                    # (5 cm) must still take the whole book seen later 8 cm from it
                    size_m = max(t.size_m, float(det.sizes[d]))
                    gate = min(cfg.reid_extent_frac * size_m, cfg.reid_max_m)
                    dist = float(np.linalg.norm(t.centroid - det.centroids[d]))
                    if dist <= gate:
                        pairs.append((dist, ti, d))
        out: list[tuple[_Track, int]] = []
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _dist, ti, d in sorted(pairs):
            if ti not in used_t and d not in used_d:
                used_t.add(ti)
                used_d.add(d)
                out.append((pool[ti], d))
        return out

    def _release(self, t: _Track) -> None:
        """A track just confirmed: its held-back detections go out (``take_held_back``)."""
        label = _majority(t.votes)[0] if self.config.smooth_labels else ""
        for stamp, row in [*self._claim_weak(t), *t.held]:
            self._released.append((stamp, t.track_id, label or row.label, row))
        t.held = []

    def _claim_weak(self, t: _Track) -> list[tuple[int, _Row]]:
        """The weak hints that led up to ``t``'s first held sighting: same label, within
        ``max_distance_m`` of its centroid, newest first back to the first gap over
        ``max_age_s``; taken out of the pool."""
        cfg = self.config
        if not cfg.weak_hints or not self._weak or not t.held:
            return []
        first_ns, first = t.held[0]
        if not first.located:
            return []
        label = _majority(t.votes)[0]
        near = [
            (stamp, row)
            for stamp, row in self._weak
            if stamp < first_ns
            and row.label in (label, first.label)
            and float(np.linalg.norm(row.centroid - first.centroid)) <= cfg.weak_max_distance_m
        ]
        claimed: list[tuple[int, _Row]] = []
        edge = first_ns
        # newest first; one per frame (the nearest), so no percept holds one id twice
        near.sort(key=lambda x: (-x[0], float(np.linalg.norm(x[1].centroid - first.centroid))))
        for stamp, row in near:
            if edge - stamp > cfg.max_age_s * 1e9:
                break
            if claimed and claimed[-1][0] == stamp:
                continue
            claimed.append((stamp, row))
            edge = stamp
        if claimed:
            taken = {id(row) for _, row in claimed}
            self._weak = collections.deque(
                [(s, r) for s, r in self._weak if id(r) not in taken], maxlen=self._weak.maxlen
            )
            self.stats["weak_claimed"] += len(claimed)
        return claimed[::-1]

    def _observe(self, t: _Track, det: _Checked, d: int, update_index: int, stamp_ns: int) -> None:
        t.size_m = max(t.size_m, float(det.sizes[d]))
        t.box = det.boxes[d].copy()
        t.centroid = det.centroids[d].copy()
        t.located = bool(det.located[d])
        t.observations += 1
        t.last_update = update_index
        t.last_seen_ns = stamp_ns
        t.votes.append((det.labels[d], float(det.confidences[d])))
        if det.embeddings is not None:
            e = det.embeddings[d]
            if t.embedding is None:
                t.embedding = e.copy()
            else:
                w = max(1.0 / t.observations, self.config.embedding_momentum)
                mean = (1.0 - w) * t.embedding + w * e
                norm = float(np.linalg.norm(mean))
                t.embedding = (mean / norm).astype(np.float32) if norm > 0 else e.copy()
