"""Settings of the spatial memory: its parts' configs and the memory's own limits."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from engram.memory.spatial.dynamics import (
    DynamicsConfig,
)
from engram.memory.spatial.places import PlaceGraphConfig
from engram.memory.spatial.short_term import ShortTermConfig
from engram.memory.spatial.voxels import OctreeConfig

__all__ = ["SpatialConfig"]


@dataclass
class SpatialConfig:
    """Everything the spatial memory can be tuned with."""

    octree: OctreeConfig = field(default_factory=OctreeConfig)  # voxels, occupancy, carving
    places: PlaceGraphConfig = field(default_factory=PlaceGraphConfig)  # topology graph
    # static/dynamic decoupling, transient ring
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    short_term: ShortTermConfig = field(default_factory=ShortTermConfig)  # STM capacity, eviction
    # added to a hit's score per fraction of its label's words found in the query text
    label_match_weight: float = 0.5
    place_score_weight: float = 0.9  # place similarity is scaled by this, so objects win ties
    # score factor for objects whose voxels have all been carved away (gone from there)
    missing_score_factor: float = 0.5
    max_voxels: int = 5_000_000  # consolidate drops the least recently seen voxels beyond this
    producer: str = "spatial"  # provenance producer name

    def validate(self) -> None:
        self.octree.validate()
        self.places.validate()
        self.dynamics.validate()
        self.short_term.validate()
        if self.max_voxels < 1:
            raise ValueError("SpatialConfig.max_voxels must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpatialConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        subs = {
            "octree": OctreeConfig,
            "places": PlaceGraphConfig,
            "dynamics": DynamicsConfig,
            "short_term": ShortTermConfig,
        }
        kwargs: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"SpatialConfig: unknown field {key!r}")
            if key in subs:
                sub_names = {f.name for f in dataclasses.fields(subs[key])}
                bad = set(value) - sub_names
                if bad:
                    raise ValueError(f"SpatialConfig.{key}: unknown fields {sorted(bad)}")
                value = dict(value)
                if key == "dynamics" and "dynamic_labels" in value:
                    value["dynamic_labels"] = tuple(value["dynamic_labels"])
                kwargs[key] = subs[key](**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)
