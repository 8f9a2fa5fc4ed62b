"""The proposal settings camera mode runs with (as in
``planners.evaluation.pipeline.camera_perception_params``), for tests that render a scene
and extract its objects: one place instead of a copy per test."""

from __future__ import annotations

from typing import Any

from engram.perception.objects import ObjectsConfig

CAMERA_PROPOSALS: dict[str, Any] = {
    "min_object_pixels": 8,
    "grid_fallback": 0,
    "depth_required": True,
    "remove_support_planes": True,
    "chroma_edges": True,
    "color_edge_threshold": 0.2,
    "proposal_width_px": 640,
    "max_object_size_m": 0.3,
    "merge_parts_max_m": 0.075,
    "grow_regions_px": 3,
}


def camera_objects_config(**overrides: Any) -> ObjectsConfig:
    """Camera mode's proposal settings, with ``overrides`` on top."""
    return ObjectsConfig(**{**CAMERA_PROPOSALS, **overrides})
