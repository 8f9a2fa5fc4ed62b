"""Short-term spatial memory (Mem4Nav's STM): the last K entries, robot-relative.

Each entry is a recent sighting of an object: label, embedding (float16), world
position, when it was last seen and how often it was seen or recalled (frequency).
Positions are handed out in the robot's current frame (``world_from_robot``), so
local decisions (obstacle avoidance, "the cup on my left") need no map lookup.

When full, the entry with the lowest frequency/recency score is evicted, as in
Mem4Nav::

    score_i = lambda * frequency_i - (1 - lambda) * age_s_i

Everything else lives in the long-term memory (octree, objects, places).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ShortTermConfig", "ShortTermEntry", "ShortTermMemory"]


@dataclass
class ShortTermConfig:
    """Capacity and eviction rule of the short-term memory."""

    capacity: int = 64  # K entries kept
    frequency_weight: float = 0.5  # lambda in the eviction score lambda*freq - (1-lambda)*age_s
    # a short-term hit this good answers a recall without long-term search (Mem4Nav)
    sufficient_score: float = 0.9

    def validate(self) -> None:
        if self.capacity < 1:
            raise ValueError("ShortTermConfig.capacity must be >= 1")
        if not 0.0 <= self.frequency_weight <= 1.0:
            raise ValueError("ShortTermConfig.frequency_weight must be in [0, 1]")


@dataclass
class ShortTermEntry:
    """One cached sighting."""

    object_id: int
    label: str
    position: np.ndarray  # (3,) float64 world metres
    embedding: np.ndarray | None  # (D,) float16
    stamp_ns: int  # last seen
    frequency: int = 1  # sightings + recalls


class ShortTermMemory:
    """Fixed-size cache keyed by object id; see the module docstring."""

    def __init__(self, config: ShortTermConfig | None = None) -> None:
        self.config = config or ShortTermConfig()
        self.config.validate()
        self.entries: dict[int, ShortTermEntry] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def eviction_scores(self, now_ns: int) -> dict[int, float]:
        """object id -> Mem4Nav score (lower is evicted first)."""
        lam = self.config.frequency_weight
        return {
            k: lam * e.frequency - (1.0 - lam) * max(0.0, (now_ns - e.stamp_ns) / 1e9)
            for k, e in self.entries.items()
        }

    def observe(
        self,
        object_id: int,
        *,
        label: str,
        position: np.ndarray,
        embedding: np.ndarray | None,
        stamp_ns: int,
    ) -> int | None:
        """Insert or refresh an entry. Returns the evicted object id, if any."""
        e = self.entries.get(object_id)
        emb = None if embedding is None else np.asarray(embedding, np.float32).astype(np.float16)
        if e is not None:
            e.frequency += 1
            e.position = np.asarray(position, np.float64).copy()
            e.stamp_ns = max(e.stamp_ns, stamp_ns)
            e.label = label or e.label
            if emb is not None:
                e.embedding = emb
            return None
        evicted = None
        if len(self.entries) >= self.config.capacity:
            scores = self.eviction_scores(stamp_ns)
            evicted = min(scores, key=lambda k: (scores[k], self.entries[k].stamp_ns, k))
            del self.entries[evicted]
            self.evictions += 1
        self.entries[object_id] = ShortTermEntry(
            object_id, label, np.asarray(position, np.float64).copy(), emb, stamp_ns
        )
        return evicted

    def touch(self, object_id: int) -> None:
        """A recall used this entry: frequency + 1."""
        if object_id in self.entries:
            self.entries[object_id].frequency += 1

    def forget(self, object_id: int) -> None:
        self.entries.pop(object_id, None)

    def relative_positions(self, world_from_robot: np.ndarray) -> dict[int, np.ndarray]:
        """object id -> (3,) position in the robot frame given ``world_from_robot`` (4, 4)."""
        if not self.entries:
            return {}
        t = np.asarray(world_from_robot, np.float64)
        ids = list(self.entries)
        world = np.array([self.entries[k].position for k in ids])
        rel = np.dot(world - t[:3, 3], t[:3, :3])  # R^T (p - t)
        return {k: rel[i] for i, k in enumerate(ids)}

    def near_robot(
        self, world_from_robot: np.ndarray, radius_m: float
    ) -> list[tuple[int, np.ndarray]]:
        """Entries within ``radius_m`` of the robot: [(object id, relative (3,))], nearest first."""
        rel = self.relative_positions(world_from_robot)
        out = [(k, v) for k, v in rel.items() if float(np.linalg.norm(v)) <= radius_m]
        return sorted(out, key=lambda kv: (float(np.linalg.norm(kv[1])), kv[0]))

    # ------------------------------------------------------------------ persistence

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        ids = list(self.entries)
        dims = {len(e.embedding) for e in self.entries.values() if e.embedding is not None}
        dim = max(dims) if dims else 0
        emb = np.zeros((len(ids), dim), np.float16)
        has = np.zeros(len(ids), bool)
        for i, k in enumerate(ids):
            e = self.entries[k]
            if e.embedding is not None and len(e.embedding) == dim:
                emb[i], has[i] = e.embedding, True
        arrays = {
            "stm_ids": np.array(ids, np.int64),
            "stm_positions": np.array([self.entries[k].position for k in ids], np.float64).reshape(
                -1, 3
            ),
            "stm_embeddings": emb,
            "stm_has_embedding": has,
            "stm_ints": np.array(
                [[self.entries[k].stamp_ns, self.entries[k].frequency] for k in ids], np.int64
            ).reshape(-1, 2),
        }
        meta = {"labels": [self.entries[k].label for k in ids], "evictions": self.evictions}
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        ids = np.asarray(arrays["stm_ids"], np.int64)
        if len(meta["labels"]) != len(ids):
            raise ValueError("short-term state: labels and ids differ in length")
        entries = {}
        for i, k in enumerate(ids.tolist()):
            stamp, freq = (int(v) for v in arrays["stm_ints"][i])
            emb = arrays["stm_embeddings"][i].copy() if arrays["stm_has_embedding"][i] else None
            entries[int(k)] = ShortTermEntry(
                int(k), meta["labels"][i], arrays["stm_positions"][i].copy(), emb, stamp, freq
            )
        self.entries = entries
        self.evictions = int(meta["evictions"])
