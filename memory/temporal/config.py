"""Settings of the temporal memory: chunking, capacity, scoring."""

from __future__ import annotations

from dataclasses import dataclass, field

from engram.memory.index import IndexConfig

__all__ = ["TemporalConfig"]


@dataclass
class TemporalConfig:
    """Chunking, capacity and scoring of the ``TemporalMemory``."""

    chunk_max_s: float = 10.0  # close a chunk once it spans this many seconds
    chunk_max_items: int = 64  # ... or holds this many items
    change_min_cos: float = 0.8  # a percept less similar than this to the chunk mean starts one
    label_min_jaccard: float = (
        0.34  # ... or one whose labels overlap the last percept's less (0: off)
    )
    max_items: int = 100_000  # detailed items kept; above, the oldest chunks are compressed
    max_chunks: int = 20_000  # chunks kept; above, the oldest compressed chunks are merged
    top_chunks: int = 3  # HCAM: chunks whose items are searched per query
    lexical_weight: float = 0.5  # share of word overlap in a score (the rest: embedding cosine)
    match_min_score: float = 0.45  # time questions: an item must score this much to count as "X"
    max_texts_per_chunk: int = 8  # transcript / sound texts kept in a chunk summary
    index: IndexConfig = field(default_factory=IndexConfig)  # vector search settings

    def __post_init__(self) -> None:
        if self.chunk_max_items < 1 or self.max_items < 1 or self.top_chunks < 1:
            raise ValueError("TemporalConfig: chunk_max_items, max_items, top_chunks must be >= 1")
        if not 0.0 <= self.lexical_weight <= 1.0:
            raise ValueError(
                f"TemporalConfig.lexical_weight must be in [0, 1], got {self.lexical_weight}"
            )
