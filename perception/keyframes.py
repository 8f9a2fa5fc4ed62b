"""Keyframe selection for a 30 fps stream, in two stages.

Stage 1, cheap, on every frame (``KeyframeSelector.check``): compare a small
thumbnail and the camera pose with the last *candidate*:

- skip if less than ``min_interval_s`` passed since the last candidate (rate cap);
- candidate if the mean absolute thumbnail change >= ``pixel_change_threshold``, or
  the camera moved >= ``translation_threshold_m`` / turned >= ``rotation_threshold_rad``;
- candidate and *forced* if ``max_interval_s`` passed since the last keyframe;
- otherwise skip (nothing new to see).

Candidates are embedded. A ``likely_keyframe`` hint (forced, first frame, or a change of
at least twice a threshold) lets an overloaded consumer drop other candidates first.

Stage 2, on the embedding (``KeyframeSelector.observe``): the stream is cut into
segments as streaming video-memory systems do; a candidate starts a new segment
when its cosine similarity to the running mean of the current segment falls below
``segment_similarity_threshold``. A candidate is a keyframe when it starts a
segment or was forced; other candidates still become percepts (for geometry) with
``keyframe=False``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CheapDecision", "KeyframeConfig", "KeyframeSelector", "thumbnail"]


@dataclass
class KeyframeConfig:
    """Thresholds of ``KeyframeSelector`` (units in the names)."""

    # thumbnail width used for the pixel-change test (height keeps the aspect), pixels
    thumbnail_width_px: int = 32
    # mean absolute thumbnail difference, fraction of full scale [0, 1], making a candidate
    pixel_change_threshold: float = 0.06
    # camera translation since the last candidate making a candidate, metres
    translation_threshold_m: float = 0.10
    # camera rotation since the last candidate making a candidate, radians (~8.6 deg)
    rotation_threshold_rad: float = 0.15
    # at least one keyframe this often even when nothing changes, seconds
    max_interval_s: float = 2.0
    # at most one candidate this often (caps the encoder rate at 1 / this), seconds
    min_interval_s: float = 0.1
    # cosine similarity to the current segment's mean embedding below which a new segment starts
    segment_similarity_threshold: float = 0.9


@dataclass
class CheapDecision:
    """Stage-1 verdict for one frame."""

    candidate: bool  # worth embedding
    forced: bool  # max_interval_s elapsed: must become a keyframe
    likely_keyframe: bool  # drop-priority hint: keep over other candidates
    pixel_change: float  # mean abs thumbnail difference, [0, 1]
    translation_m: float  # camera translation since the last candidate
    rotation_rad: float  # camera rotation since the last candidate
    reason: str  # "first", "forced", "pixels", "pose", "rate", "static"


def thumbnail(rgb: np.ndarray, width_px: int) -> np.ndarray:
    """Area-averaged thumbnail: (H, W, 3) uint8 -> (h, w, 3) uint8, w = width_px,
    h = round(H * w / W). OpenCV's INTER_AREA (about 0.2 ms for 640x480); block means
    in numpy when OpenCV is not installed."""
    h, w = rgb.shape[:2]
    tw = max(1, min(int(width_px), w))
    th = max(1, round(h * tw / w))
    try:
        import cv2
    except ImportError:
        return _thumbnail_numpy(rgb, tw, th)
    return cv2.resize(np.ascontiguousarray(rgb), (tw, th), interpolation=cv2.INTER_AREA)


def _thumbnail_numpy(rgb: np.ndarray, tw: int, th: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    by, bx = max(1, h // th), max(1, w // tw)
    crop = rgb[: th * by, : tw * bx]
    small = crop.reshape(th, by, tw, bx, -1).mean(axis=(1, 3), dtype=np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def _rotation_angle(rot: np.ndarray) -> float:
    cos = (np.trace(rot) - 1.0) / 2.0
    return float(math.acos(max(-1.0, min(1.0, cos))))


class KeyframeSelector:
    """Stateful two-stage selector; see the module docstring. Not thread-safe:
    call ``check`` from one thread and ``observe`` from one thread (they share no state
    but ``_last_keyframe_s``, written by both as a float)."""

    def __init__(self, config: KeyframeConfig | None = None) -> None:
        self.config = config or KeyframeConfig()
        self._thumb: np.ndarray | None = None
        self._pose: np.ndarray | None = None
        self._last_candidate_s: float | None = None
        self._last_keyframe_s: float | None = None
        self._segment_sum: np.ndarray | None = None
        self.segments = 0

    def reset(self) -> None:
        self.__init__(self.config)  # type: ignore[misc]

    def check(self, rgb: np.ndarray, world_from_camera: np.ndarray, t_s: float) -> CheapDecision:
        """Stage 1 on one frame: (H, W, 3) uint8, (4, 4) pose, time in seconds."""
        cfg = self.config
        thumb = thumbnail(rgb, cfg.thumbnail_width_px)
        if self._last_candidate_s is not None and t_s < self._last_candidate_s:
            self.reset()  # the clock went backwards (a replay restarted): start afresh
        if self._thumb is None or self._pose is None or self._last_candidate_s is None:
            self._accept(thumb, world_from_camera, t_s, forced=True)
            return CheapDecision(True, True, True, 1.0, 0.0, 0.0, "first")
        if self._thumb.shape != thumb.shape:
            pixel_change = 1.0
        else:
            diff = np.abs(thumb.astype(np.int16) - self._thumb.astype(np.int16))
            pixel_change = float(diff.mean() / 255.0)
        delta = np.linalg.inv(self._pose) @ world_from_camera
        translation = float(np.linalg.norm(delta[:3, 3]))
        rotation = _rotation_angle(delta[:3, :3])
        since_candidate = t_s - self._last_candidate_s
        since_keyframe = t_s - (self._last_keyframe_s if self._last_keyframe_s is not None else 0)
        forced = since_keyframe >= cfg.max_interval_s
        if since_candidate < cfg.min_interval_s and not forced:
            return CheapDecision(False, False, False, pixel_change, translation, rotation, "rate")
        moved = translation >= cfg.translation_threshold_m or rotation >= cfg.rotation_threshold_rad
        changed = pixel_change >= cfg.pixel_change_threshold
        if not (forced or moved or changed):
            return CheapDecision(False, False, False, pixel_change, translation, rotation, "static")
        strong = (
            pixel_change >= 2 * cfg.pixel_change_threshold
            or translation >= 2 * cfg.translation_threshold_m
            or rotation >= 2 * cfg.rotation_threshold_rad
        )
        reason = "forced" if forced else ("pose" if moved else "pixels")
        self._accept(thumb, world_from_camera, t_s, forced=forced)
        return CheapDecision(
            True, forced, forced or strong, pixel_change, translation, rotation, reason
        )

    def _accept(self, thumb: np.ndarray, pose: np.ndarray, t_s: float, *, forced: bool) -> None:
        self._thumb = thumb
        self._pose = np.asarray(pose, dtype=np.float64)
        self._last_candidate_s = t_s
        if forced:  # the forced frame will be a keyframe; restart the interval now
            self._last_keyframe_s = t_s

    def observe(self, embedding: np.ndarray, t_s: float, *, forced: bool = False) -> bool:
        """Stage 2: (D,) unit embedding of a candidate -> is it a keyframe?

        Updates the current segment (running mean of its embeddings) or starts a new one.
        """
        emb = np.asarray(embedding, dtype=np.float32).reshape(-1)
        new_segment = False
        if self._segment_sum is None or self._segment_sum.shape != emb.shape:
            new_segment = True
        else:
            mean = self._segment_sum
            norm = float(np.linalg.norm(mean))
            similarity = float(mean @ emb / norm) if norm > 0 else -1.0
            new_segment = similarity < self.config.segment_similarity_threshold
        if new_segment:
            self._segment_sum = emb.copy()
            self.segments += 1
        else:
            self._segment_sum = self._segment_sum + emb
        keyframe = new_segment or forced
        if keyframe:
            self._last_keyframe_s = t_s
        return keyframe
