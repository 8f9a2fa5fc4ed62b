"""The temporal memory's records: timeline items, chunks (with their summaries) and
the segments that TWM and ``between`` return.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engram.memory.base import Provenance
from engram.memory.index import l2n

__all__ = ["LABEL_STRIDE", "OBJ_STRIDE", "Chunk", "Item", "Segment"]


OBJ_STRIDE = 1024  # object vector id = item_id * OBJ_STRIDE + k (k < OBJ_STRIDE)
LABEL_STRIDE = 4096  # chunk label-summary id = chunk_id * LABEL_STRIDE + slot


@dataclass
class Segment:
    """A chunk of the timeline as TWM / ``between`` return it."""

    chunk_id: int
    start_ns: int
    end_ns: int
    score: float  # relevance to the query (1.0 when no query)
    text: str  # summary: labels with counts, what was said or heard
    item_ids: list[int]  # the chunk's most relevant items (all, without a query), time order
    n_items: int  # items the chunk covered (also when compressed)
    compressed: bool = False


@dataclass(slots=True)
class Item:
    item_id: int
    kind: str  # "percept" | "transcript" | "sound"
    stamp_ns: int
    end_ns: int
    text: str
    labels: tuple[str, ...]
    toks: frozenset[str]
    chunk_id: int
    space: str  # space of the item vector ("" = none)
    n_objects: int
    position: tuple[float, float, float] | None
    object_positions: list[list[float]]
    provenance: Provenance


@dataclass(slots=True)
class Chunk:
    chunk_id: int
    start_ns: int
    end_ns: int
    item_ids: list[int] = field(default_factory=list)
    n_items: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    obj_labels: list[str] = field(default_factory=list)  # slot -> label
    obj_sums: list[np.ndarray] = field(default_factory=list)  # slot -> summed object embeddings
    toks: set[str] = field(default_factory=set)
    closed: bool = False
    compressed: bool = False
    version: int = 1
    last_labels: frozenset[str] = frozenset()

    def summary(self, space: str) -> np.ndarray | None:
        s = self.sums.get(space)
        return None if s is None else l2n(s)
