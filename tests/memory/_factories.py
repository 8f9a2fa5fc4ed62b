"""Message factories and shared fixtures' helpers for the memory tests (not the spatial ones)."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from engram.runtime.messages import Percept, SoundEvent, Transcript

S = 1_000_000_000  # ns per second


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def noisy(base: np.ndarray, rng: np.random.Generator, sigma: float = 0.05) -> np.ndarray:
    """A unit vector near ``base``."""
    return unit(base + sigma * rng.normal(size=base.shape))


def percept(
    t_s: float,
    labels: Sequence[str] = (),
    *,
    embedding: np.ndarray | None = None,
    object_embeddings: np.ndarray | None = None,
    centroids: Sequence[Sequence[float]] | np.ndarray | None = None,
    extents: Sequence[Sequence[float]] | np.ndarray | None = None,
    camera: Sequence[float] = (0.0, 0.0, 1.0),
    keyframe: bool = True,
    points: int = 0,
    seq: int = 0,
    ids: Sequence[int] | None = None,
) -> Percept:
    k = len(labels)
    pose = np.eye(4)
    pose[:3, 3] = camera
    cen = np.zeros((k, 3), np.float32) if centroids is None else np.asarray(centroids, np.float32)
    ext = np.full((k, 3), 0.1, np.float32) if extents is None else np.asarray(extents, np.float32)
    pts = None
    pids = None
    if points:
        rng = np.random.default_rng(int(t_s * 1000) % (2**32))
        pts = (rng.normal(size=(points, 3)) * 0.5 + np.asarray(camera) + [0, 0, 1]).astype(
            np.float32
        )
        pids = np.full(points, -1, np.int32)
    return Percept(
        stamp_ns=round(t_s * S),
        seq=seq,
        keyframe=keyframe,
        world_from_camera=pose,
        embedding=embedding,
        object_ids=_track_ids(labels) if ids is None else np.asarray(ids, np.int32),
        object_labels=list(labels),
        object_confidences=np.ones(k, np.float32),
        object_boxes=np.tile(np.array([[10, 10, 50, 50]], np.int32), (k, 1)),
        object_centroids=cen.reshape(k, 3),
        object_extents=ext.reshape(k, 3),
        object_embeddings=object_embeddings,
        points=pts,
        point_object_ids=pids,
    )


def _track_ids(labels: Sequence[str]) -> np.ndarray:
    """Stable per-label object ids, like a tracker's (a repeated label gets a new id)."""
    ids, seen = [], {}
    for lab in labels:
        n = seen.get(lab, 0)
        seen[lab] = n + 1
        ids.append(zlib.crc32(f"{lab}#{n}".encode()) & 0x7FFFFFFF)
    return np.asarray(ids, np.int32).reshape(len(labels))


def transcript(
    t_s: float, text: str, *, speaker: str = "", embed: Callable[[str], np.ndarray] | None = None
) -> Transcript:
    return Transcript(
        stamp_ns=int(t_s * S),
        text=text,
        start_ns=int(t_s * S),
        end_ns=int((t_s + 1) * S),
        speaker=speaker,
        embedding=None if embed is None else np.asarray(embed(text), np.float32),
    )


def sound(t_s: float, label: str, embedding: np.ndarray | None = None) -> SoundEvent:
    return SoundEvent(
        stamp_ns=int(t_s * S),
        label=label,
        start_ns=int(t_s * S),
        end_ns=int((t_s + 0.5) * S),
        energy_db=-20.0,
        peak_hz=880.0,
        embedding=embedding,
    )


@functools.lru_cache(maxsize=1)
def minilm() -> Callable[[str], np.ndarray]:
    """The real all-MiniLM-L6-v2 (perception's encoder), loaded once per test session."""
    from engram.memory.embedding import load_text_embedder

    return load_text_embedder("minilm")
