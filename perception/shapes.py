"""Which region proposals are objects, judged by their shape in 3D (real-camera path of
``engram.perception.objects``).

- ``grow_regions``: free pixels (colour-edge pixels, specks) join the region they lie on.
- ``merge_stacked_parts``: proposals stacked on each other that together fit in a small
  cube are parts of one object (a button's cap on its housing, a plant's leaves on its
  pot).
- ``horizontal_thickness``: how thick each proposal's points are across their thinnest
  horizontal direction (principal axes of the (x, y) spread, any orientation).
- ``furniture_shaped``: proposals shaped like a piece of a room rather than a thing in
  it: a vertical slab (a wall or a cabinet side seen as a strip: its points lie in one
  vertical plane) or a post standing on the floor (a table leg, a door frame: touching
  the floor, much taller than wide). The image-text encoder names such a strip after the
  thing of its colour ("brown teddy bear" for a brown table leg); geometry says it is
  no thing. Why our own rules rather than a library: no 3D instance detector runs here
  offline, and these are two comparisons on boxes perception already measures.

Functions take plain arrays and numbers (no config object), so ``objects`` imports this
module and not the other way round.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "furniture_shaped",
    "grow_regions",
    "horizontal_thickness",
    "merge_stacked_parts",
]


def grow_regions(
    labels: np.ndarray,
    blocked: np.ndarray,
    z: np.ndarray | None,
    *,
    steps: int,
    depth_edge_ratio: float,
) -> np.ndarray:
    """Free pixels (colour-edge pixels, specks; never ``blocked`` ones) join a 4-neighbour's
    region, ``steps`` times. With depth ``z`` only a neighbour at the same depth (relative
    jump <= ``depth_edge_ratio``): a small far object must not grow into the wall behind
    it (its 3D box would then span metres and it would be dropped)."""
    h, w = labels.shape
    for _ in range(steps):
        free = (labels < 0) & ~blocked
        if not free.any():
            break
        out = labels.copy()
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            src_y = slice(max(dy, 0), h + min(dy, 0))  # the neighbour ...
            src_x = slice(max(dx, 0), w + min(dx, 0))
            dst_y = slice(max(-dy, 0), h + min(-dy, 0))  # ... of this pixel
            dst_x = slice(max(-dx, 0), w + min(-dx, 0))
            nb = labels[src_y, src_x]
            take = free[dst_y, dst_x] & (nb >= 0) & (out[dst_y, dst_x] < 0)
            if z is not None:
                here, there = z[dst_y, dst_x], z[src_y, src_x]
                with np.errstate(invalid="ignore", divide="ignore"):
                    jump = np.abs(here - there) / np.minimum(here, there)
                take &= ~(jump > depth_edge_ratio)  # NaN (no depth): allowed
            out[dst_y, dst_x] = np.where(take, nb, out[dst_y, dst_x])
        labels = out
    return labels


def merge_stacked_parts(
    label_image: np.ndarray,
    ids: np.ndarray,
    centroids: np.ndarray,
    extents: np.ndarray,
    max_m: float,
    slack_m: float = 0.025,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Join proposals stacked on each other (3D boxes touching, footprints overlapping by
    half the smaller one) whose joint box fits within ``max_m`` (union-find, greedy);
    (label image, ids 0..K'-1) or None when nothing joins."""
    ok = np.all(np.isfinite(centroids), axis=1)
    lo = centroids - extents / 2
    hi = centroids + extents / 2
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    box_lo, box_hi = lo.copy(), hi.copy()
    joined = False
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            ri, rj = root(i), root(j)
            if ri == rj or not (ok[i] and ok[j]):
                continue
            touch = np.all(lo[i] <= hi[j] + slack_m) and np.all(lo[j] <= hi[i] + slack_m)
            # stacked (one above the other: their footprints overlap), not side by side
            # (a cube beside a piece of the tray it stands in)
            # (footprints grown by 1 cm: a thin front face has almost no depth)
            g = 0.01
            overlap = np.clip(
                np.minimum(hi[i, :2], hi[j, :2]) - np.maximum(lo[i, :2], lo[j, :2]) + 2 * g,
                0,
                None,
            )
            small = min(
                np.prod(hi[i, :2] - lo[i, :2] + 2 * g), np.prod(hi[j, :2] - lo[j, :2] + 2 * g)
            )
            touch = touch and float(np.prod(overlap)) >= 0.5 * float(small)
            u_lo = np.minimum(box_lo[ri], box_lo[rj])
            u_hi = np.maximum(box_hi[ri], box_hi[rj])
            if touch and float(np.max(u_hi - u_lo)) <= max_m:
                parent[rj] = ri
                box_lo[ri], box_hi[ri] = u_lo, u_hi
                joined = True
    if not joined:
        return None
    roots = [root(i) for i in range(len(ids))]
    order = sorted(set(roots), key=roots.index)
    new_id = np.array([order.index(r) for r in roots], np.int32)
    lut = np.full(int(ids.max()) + 1, -1, np.int32)
    lut[ids] = new_id
    out = np.where(label_image >= 0, lut[np.clip(label_image, 0, len(lut) - 1)], -1)
    return out.astype(np.int32), np.arange(len(order), dtype=np.int32)


def horizontal_thickness(
    points: np.ndarray, point_ids: np.ndarray, ids: np.ndarray, *, trim_percentile: float = 1.0
) -> np.ndarray:
    """(K,) float64 metres: for each id, the spread of its points (N, 3) along the
    thinnest horizontal direction (the minor principal axis of their (x, y)), between
    the ``trim_percentile`` and 100 - ``trim_percentile`` percentiles (flying pixels).
    NaN for an id with fewer than 3 points. A wall strip or a cabinet side seen at any
    angle is ~0 thick; a thing's visible surface has depth (a mug's curve, a box's
    top)."""
    out = np.full(len(ids), np.nan)
    pts = np.asarray(points, np.float64)
    pid = np.asarray(point_ids)
    for i, oid in enumerate(np.asarray(ids).tolist()):
        xy = pts[pid == oid, :2]
        if len(xy) < 3:
            continue
        xy = xy - xy.mean(axis=0)
        _vals, vecs = np.linalg.eigh(xy.T @ xy)
        along = xy @ vecs[:, 0]  # eigh: ascending, column 0 = the thinnest direction
        lo, hi = np.percentile(along, [trim_percentile, 100.0 - trim_percentile])
        out[i] = float(hi - lo)
    return out


def furniture_shaped(
    centroids: np.ndarray,
    extents: np.ndarray,
    thickness: np.ndarray,
    *,
    min_thickness_m: float,
    floor_z_m: float | None,
    floor_contact_m: float,
    post_aspect: float,
) -> np.ndarray:
    """(K,) bool: proposals shaped like part of a room, not a thing in it.

    - Slab: ``thickness`` (``horizontal_thickness``) under ``min_thickness_m`` while the
      proposal is at least ten times that wide or tall: its points lie in one vertical
      plane (a wall, a cabinet's side, a table top's front edge). 0 = off.
    - Post: with a known floor (``floor_z_m``, world metres; None = off), its box
      reaches within ``floor_contact_m`` of the floor and it stands more than
      ``post_aspect`` times taller than its widest horizontal side (a table leg, a door
      frame, a wall's foot). A thing that tall and thin standing on the floor is lost
      too; ``post_aspect`` 0 = off.

    ``centroids`` / ``extents``: (K, 3) world metres (axis-aligned boxes); NaN rows (no
    depth) are never furniture."""
    c = np.asarray(centroids, np.float64)
    e = np.asarray(extents, np.float64)
    t = np.asarray(thickness, np.float64)
    known = np.all(np.isfinite(c), axis=1) & np.all(np.isfinite(e), axis=1)
    out = np.zeros(len(c), bool)
    if min_thickness_m > 0:
        with np.errstate(invalid="ignore"):
            slab = (t < min_thickness_m) & (e.max(axis=1) >= 10 * min_thickness_m)
        out |= known & slab
    if floor_z_m is not None and post_aspect > 0:
        bottom = c[:, 2] - e[:, 2] / 2
        widest = e[:, :2].max(axis=1)
        post = (bottom <= floor_z_m + floor_contact_m) & (e[:, 2] > post_aspect * widest)
        out |= known & post
    return out
