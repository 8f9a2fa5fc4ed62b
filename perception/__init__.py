"""Perception: frames and audio in, percepts, transcripts and sound events out.

Public surface (imported lazily, so ``import perception`` loads no torch):

- ``perception.encoders``: ``Encoder`` (ABC), ``TorchEncoder`` (the shared lazy load,
  device and batched no-grad inference of torch models), ``embed_in_batches``,
  ``ENCODERS`` registry, ``make_encoder``, ``l2_normalize``. Implementations: ``perception.clip.ClipEncoder`` (open_clip image +
  text), ``perception.text.MiniLMEncoder`` (sentences, 384-d).
- ``perception.keyframes``: ``KeyframeSelector``, ``KeyframeConfig``, ``thumbnail``.
- ``perception.geometry``: ``backproject``, ``voxel_downsample``, ``object_boxes_3d``,
  ``check_pose``, ``GeometryError``.
- ``perception.objects``: ``ObjectExtractor``, ``ObjectsConfig``, ``Objects``,
  ``propose_regions``.
- ``perception.tracking``: ``ObjectTracker`` (persistent ids for real-camera
  proposals across frames), ``TrackerConfig``, ``box_iou``.
- ``perception.audio``: ``AudioSegmenter`` (VAD + sound events), ``SpeechRecognizer``
  (whisper), ``detect_segments``, ``to_mono_16k``.
- ``perception.node``: ``PerceptionNode`` (node type ``perception``), ``PerceptionConfig``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ENCODERS",
    "AudioSegmenter",
    "ClipEncoder",
    "Encoder",
    "KeyframeSelector",
    "MiniLMEncoder",
    "ObjectExtractor",
    "ObjectTracker",
    "PerceptionConfig",
    "PerceptionNode",
    "SpeechRecognizer",
    "TrackerConfig",
    "backproject",
    "make_encoder",
    "voxel_downsample",
]

_WHERE = {
    "ENCODERS": "perception.encoders",
    "Encoder": "perception.encoders",
    "make_encoder": "perception.encoders",
    "ClipEncoder": "perception.clip",
    "MiniLMEncoder": "perception.text",
    "KeyframeSelector": "perception.keyframes",
    "backproject": "perception.geometry",
    "voxel_downsample": "perception.geometry",
    "ObjectExtractor": "perception.objects",
    "ObjectTracker": "perception.tracking",
    "TrackerConfig": "perception.tracking",
    "AudioSegmenter": "perception.audio",
    "SpeechRecognizer": "perception.audio",
    "PerceptionConfig": "perception.node",
    "PerceptionNode": "perception.node",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'perception' has no attribute {name!r}")
