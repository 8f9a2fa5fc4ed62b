"""Small-object proposals: compact blobs that stand out in colour from their surroundings.

Colour and depth edges (``objects.propose_regions``) miss what is a few pixels across: a
ball 4 m away in a 128 px head camera is 3 x 4 px. The 3 x 3 smoothing before the edge
test spreads its colour into a ring of edge pixels that swallows it, and a relative depth
jump of 4% is 16 cm at 4 m, so nothing parts it from the shelf behind it; it becomes part
of a large region that is then dropped as furniture.

Here each pixel's chromaticity (or RGB) is compared, unsmoothed, with the median of a
``small_object_window_px`` square around it: the background of anything much smaller than
the window. Pixels differing by at least ``small_object_contrast`` (largest channel) form
blobs; a blob of ``min_object_pixels`` .. ``small_object_max_px`` pixels, at most
``small_object_max_side_px`` across, is a proposal. With depth, a blob keeps only the pixels
within ``depth_edge_ratio`` of its median depth (its rim mixes in the wall behind, which
would stretch its 3D box past the object size limit). A blob lying inside a proposal that
is at most twice its size is already proposed. The most contrasting blobs are kept, at
most ``small_object_max_new`` per frame, and are carved out of the region they lay in. A
blob must stand alone: at most ``small_object_max_alike`` of the 2-pixel ring around it
may be of its colour (else it is the corner of a wardrobe, or part of something larger).

The proposals go through the same naming and filters as all others (``ObjectExtractor``):
a speck of furniture is named "wall or furniture" and dropped. Written here rather than
taken from a library: OpenCV's blob detectors threshold grey levels or need tuned
circularity, and a median background is two SciPy calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["add_small_objects", "small_object_masks"]


def small_object_masks(
    rgb: np.ndarray,
    depth: np.ndarray | None,
    blocked: np.ndarray,
    existing: np.ndarray,
    config: Any,
) -> list[np.ndarray]:
    """(H, W) bool masks of small blobs, most contrasting first (see the module doc).

    rgb (H, W, 3) uint8; depth (H, W) metres or None; blocked (H, W) bool: pixels no
    proposal may hold (no depth, support planes); existing (H, W) int32 proposals (-1
    none); config: an ``ObjectsConfig``."""
    from scipy import ndimage

    img = rgb.astype(np.float32) / 255.0
    if config.chroma_edges:  # the same chromaticity the edge test uses
        img = 3.0 * img / (img.sum(axis=2, keepdims=True) + 0.15)
    window = max(3, int(config.small_object_window_px))
    background = np.stack(
        [ndimage.median_filter(img[..., c], size=window, mode="nearest") for c in range(3)],
        axis=-1,
    )
    contrast = np.abs(img - background).max(axis=2)
    salient = (contrast >= config.small_object_contrast) & ~blocked
    blobs, n = ndimage.label(salient)
    if n == 0:
        return []
    areas = np.bincount(blobs.ravel(), minlength=n + 1)
    slices = ndimage.find_objects(blobs)
    z = None
    if depth is not None:
        z = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
    found: list[tuple[float, np.ndarray]] = []
    for i in np.flatnonzero(
        (areas >= config.min_object_pixels) & (areas <= config.small_object_max_px)
    ):
        if i == 0:
            continue
        rows, cols = slices[i - 1]
        if max(rows.stop - rows.start, cols.stop - cols.start) > config.small_object_max_side_px:
            continue
        mask = np.zeros(blobs.shape, bool)
        mask[rows, cols] = blobs[rows, cols] == i
        if z is not None:  # the blob's own surface, not the wall behind its rim
            zs = z[mask]
            if np.all(np.isnan(zs)):
                continue
            med = float(np.nanmedian(zs))
            with np.errstate(invalid="ignore"):
                mask &= np.abs(z - med) <= config.depth_edge_ratio * med
        area = int(mask.sum())
        if area < config.min_object_pixels:
            continue
        # isolated: the ring around it is background, not more of its colour (the corner
        # of a wardrobe, the lit face of something larger)
        ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
        own = img[mask].mean(axis=0)
        alike = np.abs(img[ring] - own).max(axis=1) < 0.5 * config.small_object_contrast
        if alike.mean() > config.small_object_max_alike:
            continue
        under = existing[mask]
        under = under[under >= 0]
        if len(under):
            ids, counts = np.unique(under, return_counts=True)
            j = ids[np.argmax(counts)]
            if counts.max() >= 0.8 * area and np.count_nonzero(existing == j) <= 2 * area:
                continue  # already a proposal of about its size
        found.append((float(contrast[mask].mean()), mask))
    found.sort(key=lambda t: -t[0])
    return [m for _, m in found[: config.small_object_max_new]]


def add_small_objects(
    label_image: np.ndarray,
    k: int,
    rgb: np.ndarray,
    depth: np.ndarray | None,
    blocked: np.ndarray,
    config: Any,
) -> tuple[np.ndarray, int]:
    """``label_image`` (H, W) with ``k`` proposals plus the small blobs, carved out of
    the regions they lay in; proposals renumbered 0..K'-1 (a region a blob emptied is
    gone). Returns (label image, K')."""
    masks = small_object_masks(rgb, depth, blocked, label_image, config)
    if not masks:
        return label_image, k
    out = label_image.copy()
    for i, mask in enumerate(masks):
        out[mask] = k + i
    ids = np.unique(out[out >= 0])
    remap = np.full(k + len(masks), -1, np.int32)
    remap[ids] = np.arange(len(ids), dtype=np.int32)
    out = np.where(out >= 0, remap[np.maximum(out, 0)], -1).astype(np.int32)
    return out, len(ids)
