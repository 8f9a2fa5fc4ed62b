"""``perception.naming``: which open-vocabulary names are dropped (unit cases)."""

from __future__ import annotations

import numpy as np

from engram.perception.naming import near_ignored, small_weak_hints, weak_small
from engram.perception.objects import ObjectsConfig

_VOCAB = ("red mug", "blue ball", "wall or furniture")


def _cfg(**kw) -> ObjectsConfig:
    settings = {"ignore_cos_ratio": 0.3, **kw}
    return ObjectsConfig(vocabulary=_VOCAB, ignore_labels=("wall or furniture",), **settings)


def test_near_ignored_compares_the_no_object_word_with_the_best_object_word():
    cos = np.array([[0.40, 0.10, 0.10], [0.40, 0.10, 0.13], [-0.1, -0.2, 0.1]])
    assert near_ignored(cos, _cfg()).tolist() == [False, True, True]
    assert near_ignored(cos, _cfg(ignore_cos_ratio=0.0)).tolist() == [False] * 3


def test_weak_small_drops_only_small_proposals_that_match_their_word_weakly():
    img = np.full((20, 20), -1, np.int32)
    img[0:3, 0:4] = 0  # 12 px, weak: dropped
    img[5:8, 5:9] = 1  # 12 px, strong: kept
    img[10:20, 10:20] = 2  # 100 px, weak: at the size limit, so small
    img[0:10, 10:20] = 3  # 100 px, weak
    cos = np.array([[0.20, 0.05, 0.0], [0.45, 0.1, 0.0], [0.22, 0.0, 0.0], [0.1, 0.2, 0.0]])
    ids = np.array([0, 1, 2, 3])
    on = _cfg(small_object_max_px=100, small_object_min_cos=0.25)
    assert weak_small(cos, img, ids, on).tolist() == [True, False, True, True]
    assert weak_small(cos, img, ids, _cfg(small_object_max_px=99)).tolist() == [
        True,
        False,
        False,
        False,
    ]
    # off: no small-object path (the tabletop), or no floor
    assert not weak_small(cos, img, ids, _cfg(small_object_max_px=0)).any()
    assert not weak_small(
        cos, img, ids, _cfg(small_object_max_px=100, small_object_min_cos=-1)
    ).any()


def test_small_weak_hints_are_the_small_proposals_dropped_by_naming_alone():
    img = np.full((20, 20), -1, np.int32)
    img[0:3, 0:4] = 0  # 12 px: near "wall or furniture" (ratio 0.5): a hint
    img[5:8, 5:9] = 1  # 12 px: trusted, kept as an object: no hint
    img[10:20, 10:20] = 2  # 100 px: below the cosine floor: a hint
    img[0:10, 10:20] = 3  # 100 px: named "wall or furniture": no hint
    img[10:20, 0:10] = 4  # 100 px at 99 px max: not small, no hint
    cos = np.array(
        [[0.1, 0.3, 0.15], [0.45, 0.1, 0.0], [0.2, 0.0, 0.0], [0.1, 0.2, 0.3], [0.3, 0.0, 0.2]]
    )
    ids = np.array([0, 1, 2, 3, 4])
    on = _cfg(small_object_max_px=100, small_object_min_cos=0.25)
    assert small_weak_hints(cos, img, ids, on).tolist() == [True, False, True, False, True]
    assert small_weak_hints(cos, img, ids, _cfg(small_object_max_px=99)).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]
    # off: the tabletop (no small-object path), or the option
    assert not small_weak_hints(cos, img, ids, _cfg(small_object_max_px=0)).any()
    off = _cfg(small_object_max_px=100, small_object_weak_hints=False)
    assert not small_weak_hints(cos, img, ids, off).any()
