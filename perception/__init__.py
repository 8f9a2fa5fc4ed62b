"""Perception: frames and audio in, percepts, transcripts and sound events out.

Public surface (imported lazily, so ``import perception`` loads no torch):

- ``engram.perception.encoders``: ``Encoder`` (ABC), ``TorchEncoder`` (the shared lazy load,
  device and batched no-grad inference of torch models), ``embed_in_batches``,
  ``make_encoder`` (by registry name, kind "encoder"), ``l2_normalize``. Implementations:
  ``engram.perception.clip.ClipEncoder`` (open_clip image + text),
  ``engram.perception.text.MiniLMEncoder`` (sentences, 384-d).
- ``engram.perception.keyframes``: ``KeyframeSelector``, ``KeyframeConfig``, ``thumbnail``.
- ``engram.perception.geometry``: ``backproject``, ``voxel_downsample``, ``object_boxes_3d``,
  ``check_pose``, ``GeometryError``.
- ``engram.perception.objects``: ``ObjectExtractor``, ``ObjectsConfig``, ``Objects``,
  ``propose_regions``.
- ``engram.perception.shapes``: which proposals are objects by their 3D shape
  (``merge_stacked_parts``, ``horizontal_thickness``, ``furniture_shaped``).
- ``engram.perception.small_objects``: proposals for objects a few pixels across
  (``add_small_objects``, ``small_object_masks``).
- ``engram.perception.bottoms``: an object's 3D box reaches down to the surface just
  below its lowest pixels (``extend_hidden_bottoms``: a cube's base hidden by the table
  plane removal or a tray's rim).
- ``engram.perception.parts``: same-label proposals of one frame whose 3D boxes meet are
  one object (``join_same_label_parts``).
- ``engram.perception.naming``: which open-vocabulary names to trust (``near_ignored``:
  as close to "no object" as to the word; ``weak_small``: a few pixels weakly matched;
  ``small_weak_hints``: small proposals dropped by those, kept as hints for the tracker).
- ``engram.perception.supports``: world heights, support planes, and the cut of a tall
  region at a table-top height (``cut_at_supports``: a teddy on a far brown table).
- ``engram.perception.tracking``: ``ObjectTracker`` (persistent ids for real-camera
  proposals across frames; held-back first sightings, ``take_held_back``; weak hints
  released as a confirmed track's earlier sightings),
  ``TrackerConfig``, ``box_iou``.
- ``engram.perception.audio``: ``AudioSegmenter`` (energy detector: sound events),
  ``detect_segments``, ``to_mono_16k``.
- ``engram.perception.speech``: Silero ``SpeechSegmenter``, recognizers (``make_recognizer``:
  faster-whisper, openai-whisper), ``SpeechStream`` (partial / final transcripts).
- ``engram.perception.node``: ``PerceptionNode`` (node type ``perception``), ``PerceptionConfig``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AudioSegmenter",
    "ClipEncoder",
    "Encoder",
    "KeyframeSelector",
    "MiniLMEncoder",
    "ObjectExtractor",
    "ObjectTracker",
    "PerceptionConfig",
    "PerceptionNode",
    "SpeechStream",
    "TrackerConfig",
    "backproject",
    "make_encoder",
    "make_recognizer",
    "voxel_downsample",
]

_WHERE = {
    "Encoder": "engram.perception.encoders",
    "make_encoder": "engram.perception.encoders",
    "ClipEncoder": "engram.perception.clip",
    "MiniLMEncoder": "engram.perception.text",
    "KeyframeSelector": "engram.perception.keyframes",
    "backproject": "engram.perception.geometry",
    "voxel_downsample": "engram.perception.geometry",
    "ObjectExtractor": "engram.perception.objects",
    "ObjectTracker": "engram.perception.tracking",
    "TrackerConfig": "engram.perception.tracking",
    "AudioSegmenter": "engram.perception.audio",
    "SpeechStream": "engram.perception.speech.streaming",
    "make_recognizer": "engram.perception.speech.recognizers",
    "PerceptionConfig": "engram.perception.node",
    "PerceptionNode": "engram.perception.node",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'perception' has no attribute {name!r}")
