"""Parts of one thing, named alike, are one object.

In the apartment's head camera a far book is sometimes two proposals in one frame: a
compact blob the small-object path (``perception.small_objects``) carved out, and the
rest of the book's region beside it. Both are named "green book"; the tracker matches
one to the book's track and starts a second track for the other (re-identification
only reuses a track that nothing matched in this frame), and memory then holds two
green books 5 cm apart: "how many different objects did you see" counts 7 for 6
(issue 17 round 5b, tour 9605). Two proposals of one frame with the same label whose
3D boxes overlap, or come within ``slack_m`` of each other, are joined into one: the
union of their pixels and boxes, with the label, confidence and embedding of the
larger part (by pixels). Off by default: on the tabletop two alike tokens may touch.
The apartment joins within 0.10 m (``camera_perception_params``): its things stand metres
apart, and splits reach 9 cm there (round 5c: a teddy's head above its body, a bottle's
top above its base, a book's carved blob 3 cm off, each a second record in memory).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["join_same_label_parts"]


def join_same_label_parts(objs: Any, slack_m: float) -> Any:
    """``objs`` (a ``perception.objects.Objects``) with same-label parts joined (see the
    module doc); the same object when nothing joins. Ids of the joined objects are
    those of their larger part (frame-local ids may then have gaps)."""
    k = len(objs.ids)
    if k < 2:
        return objs
    located = np.ones(k, bool) if objs.located is None else np.asarray(objs.located, bool)
    ok = located & np.all(np.isfinite(objs.centroids), axis=1)
    lo = objs.centroids - objs.extents / 2
    hi = objs.centroids + objs.extents / 2
    if objs.label_image is not None:
        lab = objs.label_image
        size = np.array([(lab == i).sum() for i in objs.ids], np.int64)
    else:
        size = np.prod(np.maximum(objs.boxes[:, 2:] - objs.boxes[:, :2], 0), axis=1)
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(k):
        for j in range(i + 1, k):
            if not (ok[i] and ok[j]) or objs.labels[i] != objs.labels[j]:
                continue
            if np.all(lo[i] <= hi[j] + slack_m) and np.all(lo[j] <= hi[i] + slack_m):
                ri, rj = root(i), root(j)
                if ri != rj:  # the larger part is the root
                    big, small = (ri, rj) if size[ri] >= size[rj] else (rj, ri)
                    parent[small] = big
    roots = np.array([root(i) for i in range(k)])
    if np.all(roots == np.arange(k)):
        return objs
    keep = np.flatnonzero(roots == np.arange(k))
    boxes = objs.boxes.copy()
    cents = objs.centroids.copy()
    exts = objs.extents.copy()
    label_image = None if objs.label_image is None else objs.label_image.copy()
    for r in keep:
        members = np.flatnonzero(roots == r)
        if len(members) == 1:
            continue
        boxes[r, :2] = objs.boxes[members, :2].min(axis=0)
        boxes[r, 2:] = objs.boxes[members, 2:].max(axis=0)
        low, high = lo[members].min(axis=0), hi[members].max(axis=0)
        cents[r], exts[r] = (low + high) / 2, high - low
        if label_image is not None:
            label_image[np.isin(label_image, objs.ids[members])] = objs.ids[r]
    return dataclasses.replace(
        objs,
        ids=objs.ids[keep],
        labels=[objs.labels[i] for i in keep],
        confidences=objs.confidences[keep],
        boxes=boxes[keep],
        centroids=cents[keep],
        extents=exts[keep],
        embeddings=None if objs.embeddings is None else objs.embeddings[keep],
        label_image=label_image,
        located=None if objs.located is None else np.asarray(objs.located)[keep],
    )
