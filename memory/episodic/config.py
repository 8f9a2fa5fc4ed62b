"""Settings of the episodic memory: entity resolution, forgetting curve, capacity."""

from __future__ import annotations

from dataclasses import dataclass, field

from engram.memory.index import IndexConfig

__all__ = ["EpisodicConfig"]


def _default_importance() -> dict[str, float]:
    return {
        "object": 0.3,
        "person": 0.6,
        "voice": 0.6,
        "sound": 0.3,
        "place": 0.5,
        "first_seen": 0.3,
        "moved": 0.5,
        "speech": 0.6,
        "heard": 0.4,
        "step_failed": 0.7,
        "step_succeeded": 0.4,
        "episode_end": 0.6,
        "episode": 0.8,
    }


@dataclass
class EpisodicConfig:
    """Entity resolution, forgetting curve and capacity of the ``EpisodicMemory``."""

    merge_min_cos: float = 0.85  # embedding cosine to resolve to an entity whatever its label
    merge_min_cos_same_label: float = 0.6  # ... when the labels agree (and it is near)
    merge_radius_m: float = 0.5  # an observation this close to an entity's position is "near"
    ambiguity_margin: float = 0.05  # log a resolution whose runner-up scored within this
    entity_merge_min_cos: float = 0.92  # consolidation: duplicate entities above this merge
    move_event_m: float = 0.3  # a resolved entity this far from its last position "moved"
    base_strength_s: float = 3600.0  # S0 of a record with importance 0 (seconds)
    importance_gain: float = 4.0  # S0 = base_strength_s * (1 + gain * importance)
    recall_growth: float = 2.0  # a recall multiplies the strength S by this
    forget_below: float = 0.05  # retention under which consolidation forgets / summarises
    capacity: int = 50_000  # records (entities + events + episodes) kept at most
    keyframes_per_episode: int = 8  # keyframes kept per episode (uniformly thinned)
    recall_retention_weight: float = 0.3  # w in score = relevance * ((1 - w) + w * R)
    lexical_weight: float = 0.5  # share of word overlap in relevance (rest: embedding cosine)
    merge_log_max: int = 10_000  # merge-log entries kept (oldest dropped)
    tracks_max: int = 4096  # perception object ids remembered for rule 0 (least recent dropped)
    importance: dict[str, float] = field(default_factory=_default_importance)  # per record kind
    index: IndexConfig = field(default_factory=IndexConfig)  # vector search settings

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"EpisodicConfig.capacity must be >= 1, got {self.capacity}")
        if self.recall_growth < 1.0:
            raise ValueError("EpisodicConfig.recall_growth must be >= 1 (recall reinforces)")
        if not 0.0 < self.forget_below < 1.0:
            raise ValueError("EpisodicConfig.forget_below must be in (0, 1)")
