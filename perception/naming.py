"""Which open-vocabulary names to trust: proposals named as no object are dropped.

``ObjectExtractor`` names each proposal by the vocabulary word whose text embedding is
nearest its region embedding (a softmax at CLIP's logit scale). The softmax picks a word
even for a region that matches none: a furniture part wins "brown teddy bear" while as
close to "wall or furniture". Two tests say a name is not to be trusted:

- ``near_ignored``: the region's cosine with an ``ignore_labels`` word (the vocabulary's
  word for what is no object) is at least ``ignore_cos_ratio`` times its cosine with the
  best object word. At CLIP's logit scale the softmax calls a 0.32 against 0.16 contest
  certain; such a region is as much "no object" as object.
- ``weak_small``: a proposal of at most ``small_object_max_px`` pixels (a few pixels of
  something far, ``perception.small_objects``) whose best object word's cosine is below
  ``small_object_min_cos``: a detection score threshold for the proposals that carry the
  least evidence. On the apartment's dev tours (13 of 128 x 96 at 2.5 Hz, the shipped
  ``sim_clip``) the small proposals of real things matched their word at >= 0.38 (10th
  percentile; 2 of 287 under 0.25), while the seat top of the red-brown armchair, 1.5 m
  away, was a "red mug" at 0.20-0.22 in 3 of 20 tours and counted as a seventh object.

``small_weak_hints``: the small proposals dropped by naming alone (``near_ignored`` or
``weak_small``) that an object word still wins are not objects on their own evidence, but
they are not nothing either: the blue ball 8-16 px away scores 0.3-0.9 of "blue ball"
with "wall or furniture" and was dropped for seconds before a larger view named it
(53 of 151 late object-frames on the dev tours). The extractor hands them to the tracker
as hints (``ObjectExtractor.last_weak``), which reports none of them, but once a track of
that label is confirmed at their place, counts the ones just before its first sighting as
sightings of it (``ObjectTracker``, "Weak hints").
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["near_ignored", "small_weak_hints", "weak_small"]


def _object_words(cfg: Any) -> np.ndarray:
    """(V,) bool: the vocabulary words that name objects (not ``ignore_labels``)."""
    return np.array([w not in cfg.ignore_labels for w in cfg.vocabulary], bool)


def _pixels(label_image: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(K,) how many pixels of ``label_image`` each proposal id of ``ids`` holds."""
    ids = np.asarray(ids, np.int64)
    img = np.asarray(label_image)
    counts = np.bincount(img[img >= 0].ravel(), minlength=int(ids.max(initial=-1)) + 1)
    return counts[ids] if len(ids) else np.zeros(0, np.int64)


def near_ignored(cos: np.ndarray, cfg: Any) -> np.ndarray:
    """(K,) bool: proposals whose cosine with an ``ignore_labels`` word of the vocabulary is
    at least ``ignore_cos_ratio`` times their best cosine with an object word (``cos``:
    (K, V) region-text cosines; ``cfg``: an ``ObjectsConfig``)."""
    k = cos.shape[0]
    if cfg.ignore_cos_ratio <= 0 or not cfg.ignore_labels or k == 0:
        return np.zeros(k, bool)
    objects = _object_words(cfg)
    if objects.all() or not objects.any():
        return np.zeros(k, bool)
    best_object = cos[:, objects].max(axis=1)
    best_nothing = cos[:, ~objects].max(axis=1)
    return (best_object <= 0) | (best_nothing >= cfg.ignore_cos_ratio * best_object)


def weak_small(cos: np.ndarray, label_image: np.ndarray, ids: np.ndarray, cfg: Any) -> np.ndarray:
    """(K,) bool: proposals ``ids`` of at most ``small_object_max_px`` pixels in
    ``label_image`` whose best object-word cosine (``cos``: (K, V)) is under
    ``small_object_min_cos``; none when the small-object path is off."""
    k = cos.shape[0]
    if cfg.small_object_max_px <= 0 or cfg.small_object_min_cos <= -1 or k == 0:
        return np.zeros(k, bool)
    objects = _object_words(cfg)
    if not objects.any():
        return np.zeros(k, bool)
    pixels = _pixels(label_image, ids)
    best_object = cos[:, objects].max(axis=1)
    return (pixels <= cfg.small_object_max_px) & (best_object < cfg.small_object_min_cos)


def small_weak_hints(
    cos: np.ndarray, label_image: np.ndarray, ids: np.ndarray, cfg: Any
) -> np.ndarray:
    """(K,) bool: proposals of at most ``small_object_max_px`` pixels that ``near_ignored``
    or ``weak_small`` drops, with an object word winning (``cos``: (K, V));
    none when the small-object path or ``small_object_weak_hints`` is off."""
    k = cos.shape[0]
    if cfg.small_object_max_px <= 0 or not cfg.small_object_weak_hints or k == 0:
        return np.zeros(k, bool)
    objects = _object_words(cfg)
    if not objects.any() or objects.all():
        return np.zeros(k, bool)
    pixels = _pixels(label_image, ids)
    named = cos[:, objects].max(axis=1) > cos[:, ~objects].max(axis=1)
    hint = near_ignored(cos, cfg) | weak_small(cos, label_image, ids, cfg)
    return hint & named & (pixels <= cfg.small_object_max_px)
