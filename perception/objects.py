"""Objects in a frame: from the simulator's segmentation, or proposed on real cameras.

``ObjectExtractor.extract(frame, cloud)`` returns ``Objects`` (K of them):

- Simulation (``frame.segmentation`` present): one object per segment id with at
  least ``min_object_pixels`` pixels; label = ``frame.labels[str(id)]`` (the body
  name), confidence 1.
- Real cameras (no segmentation): region proposals without simulator help. The
  image is downscaled to ``proposal_width_px``; pixels on a colour edge (gradient
  above ``color_edge_threshold``) or a depth discontinuity (relative jump above
  ``depth_edge_ratio``) separate regions; connected regions of plausible size
  (``min_object_pixels`` .. ``max_region_frac`` of the image) are the proposals,
  largest first, at most ``max_proposals``. With none, an N x N grid of crops stands
  in (``grid_fallback``). Each proposal gets an open-vocabulary label: the CLIP
  region embedding is compared with the CLIP text embeddings of
  ``prompt_template.format(word)`` for every word of ``vocabulary``; the softmax
  probability of the best word (``label_logit_scale`` as in CLIP) is its confidence.
  Proposals named by an ``ignore_labels`` word ("wall or furniture"), or about as close
  to one (``ignore_cos_ratio``), or shaped like part of a room (``engram.perception.shapes``:
  a vertical slab, a post on the floor) are dropped. With ``small_object_max_px``, compact
  blobs that stand out in colour from their surroundings are proposed too
  (``engram.perception.small_objects``: a far ball a few pixels across).
  Proposal ids from ``extract`` are frame-local (0..K-1); ``engram.perception.tracking``'s
  ``ObjectTracker`` turns them into persistent track ids across frames (the
  ``PerceptionNode`` does so per camera, unless ``tracker.enabled`` is False).

3D: each object's centroid and extent are the centre and size of the robust
axis-aligned box of its back-projected points (``geometry.object_boxes_3d``).
Without depth (a webcam, or no valid depth on the object) an object is placed by
bearing: on the camera ray through its box centre at ``bearing_range_m``, with zero
extent and ``Objects.located`` False (the Percept's ``object_depth_valid``), so objects
seen in different directions stay apart instead of stacking at the camera.

Speed (issue 16): region embeddings are the most expensive step (one encoder pass
per region). A region whose box overlaps a region of the previous frame of the same
camera (IoU >= ``reuse_min_iou``) and looks the same there (16 x 16 thumbnails of the
two crops differ by at most ``reuse_max_change`` on average) reuses that embedding,
for at most ``reuse_max_frames`` frames in a row; only new or changed regions are
encoded. At 30 fps consecutive frames differ little, so most regions are reused.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

import numpy as np

from engram.perception.bottoms import extend_hidden_bottoms
from engram.perception.encoders import Encoder
from engram.perception.geometry import Cloud, object_boxes_3d
from engram.perception.naming import near_ignored, small_weak_hints, weak_small
from engram.perception.parts import join_same_label_parts
from engram.perception.shapes import (
    furniture_shaped,
    grow_regions,
    horizontal_thickness,
    merge_stacked_parts,
)
from engram.perception.small_objects import add_small_objects
from engram.perception.supports import cut_at_supports
from engram.perception.supports import support_planes as _support_planes
from engram.perception.supports import world_heights as _world_heights

__all__ = [
    "DEFAULT_VOCABULARY",
    "ObjectExtractor",
    "Objects",
    "ObjectsConfig",
    "bearing_points",
    "object_brightness",
    "propose_regions",
    "support_plane_mask",
]

DEFAULT_VOCABULARY: tuple[str, ...] = (
    "chair",
    "table",
    "sofa",
    "bed",
    "cabinet",
    "shelf",
    "door",
    "window",
    "cup",
    "mug",
    "bottle",
    "bowl",
    "plate",
    "box",
    "book",
    "laptop",
    "monitor",
    "keyboard",
    "phone",
    "lamp",
    "plant",
    "picture",
    "pillow",
    "bag",
    "toy",
    "ball",
    "fruit",
    "robot",
    "person",
    "wall",
    "floor",
)


@dataclass
class ObjectsConfig:
    """Settings of ``ObjectExtractor`` (pixel sizes are at full resolution)."""

    # segments / proposals smaller than this are ignored, pixels
    min_object_pixels: int = 64
    # per-axis percentile trimmed from each object's 3D box (flying pixels), percent
    trim_percentile: float = 1.0
    # labels never reported as objects: segmentation names (e.g. "floor"), and vocabulary
    # words for what is no object (a proposal named "wall or furniture" is dropped)
    ignore_labels: tuple[str, ...] = ()
    # open-vocabulary proposals whose cosine with an ignore_labels word is at least this
    # fraction of their best object word's cosine are dropped too (no object, though an
    # object word wins the softmax); 0 = only proposals named by an ignore word
    ignore_cos_ratio: float = 0.0
    # also skip the segments the frame lists as the robot's own parts (Frame.robot_labels)
    skip_robot_labels: bool = True
    # compute region embeddings with the image encoder
    embed_regions: bool = True
    # fill pixels outside an object's mask with the mean colour before embedding it
    mask_regions: bool = True
    # open-vocabulary label set for proposals (real cameras)
    vocabulary: tuple[str, ...] = DEFAULT_VOCABULARY
    # text prompt per vocabulary word
    prompt_template: str = "a photo of a {}."
    # multiplies cosine similarities before the label softmax (CLIP uses 100)
    label_logit_scale: float = 100.0
    # most proposals per frame
    max_proposals: int = 8
    # proposals are computed on the image downscaled to about this width, pixels
    proposal_width_px: int = 160
    # relative depth jump |dz| / z between neighbours that separates regions
    depth_edge_ratio: float = 0.04
    # colour gradient (fraction of full scale, summed over x and y) that separates regions
    color_edge_threshold: float = 0.08
    # regions covering more than this fraction of the image (walls, floor) are not objects
    max_region_frac: float = 0.4
    # when nothing is proposed, use an N x N grid of crops; 0 = report no objects
    grid_fallback: int = 3
    # reuse the previous frame's embedding of an unchanged region (0 frames = never)
    reuse_max_frames: int = 15
    # least box IoU with a previous region to reuse its embedding, [0, 1]
    reuse_min_iou: float = 0.6
    # largest mean absolute difference of the regions' 16 x 16 thumbnails, fraction of
    # full scale, to reuse an embedding
    reuse_max_change: float = 0.05
    # distance along the camera ray at which objects without depth are placed, metres
    bearing_range_m: float = 1.0
    # with depth: pixels without a depth measurement (out of range, self-filtered robot
    # parts) belong to no proposal (False: colour alone may still propose them)
    depth_required: bool = False
    # with depth and the camera pose: pixels on a dominant horizontal support surface
    # (table top, floor) belong to no proposal, so what stands on it separates from it
    # (the plane removal of tabletop segmentation); False: colour/depth edges only
    remove_support_planes: bool = False
    # a support plane holds at least this fraction of the depth pixels, [0, 1]
    support_plane_min_frac: float = 0.05
    # pixels within this height of a support plane are on it, metres
    support_plane_tol_m: float = 0.006
    # with remove_support_planes: pixels more than under_support_margin_m below a support
    # plane and under its seen extent (table legs, what lies beneath a table) belong to no
    # proposal: what a tabletop robot handles stands on the surface, not under it
    remove_under_support: bool = False
    # > 0: a region spanning a support plane and taller than max_object_size_m loses its
    # pixels down to this far below the plane (``perception.supports``), metres; 0 = off
    support_cut_depth_m: float = 0.05
    # ... and at its own most common 1 cm height holding this share of its pixels; 0 = off
    support_cut_min_frac: float = 0.15
    # how far below a support plane a pixel must be to count as under it, metres
    under_support_margin_m: float = 0.03
    # cell of the grid that holds a support plane's seen extent (grown by one cell), metres
    under_support_cell_m: float = 0.05
    # > 0: an object whose lowest pixels border a surface touching it up to this far
    # below its box has the box extended down to that surface, metres
    # (``perception.bottoms``: the base of a cube on a table or in a tray goes unseen)
    hidden_bottom_max_gap_m: float = 0.0
    # >= 0: same-label proposals of one frame whose 3D boxes come this close are one
    # object (``perception.parts``: a far book split in two), metres; < 0: off
    join_same_label_m: float = -1.0
    # colour edges from chromaticity (r, g, b over their sum): shading changes brightness,
    # not hue, so one object's lit and shaded faces stay one region; False: from RGB
    chroma_edges: bool = False
    # proposals whose 3D box is larger than this on any side are not objects (furniture,
    # walls, the table's front), metres; 0 = no limit
    max_object_size_m: float = 0.0
    # proposals whose points lie in one vertical plane (thinner than this across their
    # thinnest horizontal direction, ``shapes.horizontal_thickness``) are a wall or a
    # furniture face, not an object, metres; 0 = off
    min_thickness_m: float = 0.0
    # world height of the floor the robot stands on, metres (None: unknown): proposals
    # standing on it much taller than wide are legs, posts, door frames (below)
    floor_z_m: float | None = None
    # a proposal whose 3D box reaches this close to the floor stands on it, metres
    floor_contact_m: float = 0.04
    # a proposal standing on the floor and more than this many times taller than its
    # widest horizontal side is a post (table leg, door frame), not an object; 0 = off
    floor_post_aspect: float = 2.5
    # proposals stacked on each other (3D boxes within 2.5 cm, footprints overlapping) that
    # together fit in a cube of this side are parts of one object (a button's coloured cap
    # on its grey housing), metres; 0 = off
    merge_parts_max_m: float = 0.0
    # proposals grow this many (proposal-resolution) pixels into free neighbouring pixels
    # (colour-edge pixels, specks too small to propose; never no-depth or support-plane
    # pixels), so a thin dark part joins the object it belongs to; 0 = no growth
    grow_regions_px: int = 0
    # small-object proposals (``engram.perception.small_objects``): blobs of at most this
    # many pixels whose colour stands out from the median of a window around them; 0 = off
    small_object_max_px: int = 0
    small_object_max_side_px: int = 12  # and at most this wide or tall, pixels
    small_object_window_px: int = 11  # side of the background median's window, pixels
    small_object_contrast: float = 0.2  # least colour difference from it (largest channel)
    small_object_max_new: int = 8  # most small-object proposals per frame
    small_object_max_alike: float = 0.25  # most of the ring around one of its colour
    # proposals of at most small_object_max_px pixels whose best object word's cosine is
    # below this are dropped (``perception.naming.weak_small``); -1 = off
    small_object_min_cos: float = 0.25
    # small proposals dropped only by ignore_cos_ratio go to the tracker as weak hints
    # (``last_weak``; ``perception.naming.small_weak_hints``), never reported on their own
    small_object_weak_hints: bool = True


@dataclass
class Objects:
    """K objects of one frame (arrays as in ``engram.runtime.messages.Percept``)."""

    ids: np.ndarray  # (K,) int32
    labels: list[str]  # K strings
    confidences: np.ndarray  # (K,) float32
    boxes: np.ndarray  # (K, 4) int32 pixel xyxy, x1/y1 exclusive
    centroids: np.ndarray  # (K, 3) float32 world metres
    extents: np.ndarray  # (K, 3) float32 metres
    embeddings: np.ndarray | None  # (K, D) float32 or None
    label_image: np.ndarray | None = field(default=None, repr=False)  # (H, W) int32, -1 none
    # (K,) bool: centroid measured from depth (False: the camera position stands in);
    # None = all measured
    located: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, dim: int | None = None) -> Objects:
        return cls(
            ids=np.zeros(0, np.int32),
            labels=[],
            confidences=np.zeros(0, np.float32),
            boxes=np.zeros((0, 4), np.int32),
            centroids=np.zeros((0, 3), np.float32),
            extents=np.zeros((0, 3), np.float32),
            embeddings=None if dim is None else np.zeros((0, dim), np.float32),
            located=np.zeros(0, bool),
        )


def _boxes_from_label_image(label_image: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(H, W) int ids, (K,) -> (K, 4) int32 xyxy (exclusive max) of each id's pixels."""
    _h, w = label_image.shape
    boxes = np.zeros((len(ids), 4), np.int32)
    if len(ids) and ids.min() >= 0 and ids.max() < 4096:
        # small non-negative ids (proposals, most segmentations): one pass, no sort
        from scipy import ndimage

        slices = ndimage.find_objects(label_image + 1, max_label=int(ids.max()) + 1)
        for i, oid in enumerate(ids.tolist()):
            sl = slices[oid]
            if sl is not None:
                boxes[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        return boxes
    flat = label_image.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_ids = flat[order]
    starts = np.searchsorted(sorted_ids, ids, side="left")
    ends = np.searchsorted(sorted_ids, ids, side="right")
    for i, (s, e) in enumerate(zip(starts, ends)):
        if e <= s:
            continue
        pix = order[s:e]
        v, u = np.divmod(pix, w)
        boxes[i] = (u.min(), v.min(), u.max() + 1, v.max() + 1)
    return boxes


def object_brightness(
    rgb: np.ndarray, label_image: np.ndarray, ids: np.ndarray, boxes: np.ndarray
) -> np.ndarray:
    """(K,) float32 in [0, 1]: the 90th percentile of the max RGB channel over each
    object's own pixels (``label_image == id`` inside its box). A lamp's cap that lights
    up raises it; the table around a small button does not (it is not the button's
    pixels), and the percentile reads a lit cap on a dark housing when the cap covers
    more than a tenth of the object. 0 for an object with no pixels."""
    out = np.zeros(len(ids), np.float32)
    if not len(ids):
        return out
    h, w = label_image.shape
    for i, (oid, box) in enumerate(zip(ids.tolist(), np.asarray(boxes).tolist())):
        x1, y1, x2, y2 = (int(v) for v in box)
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 <= x1 or y2 <= y1:
            continue
        mine = label_image[y1:y2, x1:x2] == oid
        if mine.any():
            vals = rgb[y1:y2, x1:x2][mine].max(axis=1)
            out[i] = np.percentile(vals, 90) / 255.0
    return out


def _block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, C) -> (H // f, W // f, C) float32 block means (top-left aligned)."""
    h, w = img.shape[:2]
    th, tw = h // factor, w // factor
    crop = img[: th * factor, : tw * factor].astype(np.float32)
    return crop.reshape(th, factor, tw, factor, -1).mean(axis=(1, 3))


def support_plane_mask(
    z: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray, config: ObjectsConfig, step: int
) -> np.ndarray:
    """(h, w) bool: pixels of the depth grid ``z`` (every ``step``-th pixel of the
    image ``K`` describes) lying on a dominant horizontal plane: a 1 cm bin of world
    heights holding at least ``support_plane_min_frac`` of the valid pixels (vertical
    surfaces spread over many heights; table tops and floors pile up in one).
    With ``remove_under_support`` also the pixels under a plane (see the option)."""
    world, valid = _world_heights(z, K, world_from_camera, step)
    if valid.sum() < 16:
        return np.zeros_like(valid)
    height = world[..., 2]
    on = np.zeros_like(valid)
    for plane in _support_planes(world, valid, config):
        this = valid & (np.abs(height - plane) <= config.support_plane_tol_m)
        on |= this
        if config.remove_under_support:
            on |= _under(world, valid, this, plane, config)
    return on


def _under(
    world: np.ndarray, valid: np.ndarray, plane_px: np.ndarray, plane_m: float, config
) -> np.ndarray:
    """Pixels more than ``under_support_margin_m`` below the plane at ``plane_m`` whose
    (x, y) falls in a grid cell the plane was seen in, or next to one (the cells of its
    own pixels ``plane_px``, grown by one)."""
    from scipy import ndimage

    below = valid & (world[..., 2] < plane_m - config.under_support_margin_m)
    if not below.any() or not plane_px.any():
        return np.zeros_like(valid)
    cell = config.under_support_cell_m
    xy = world[..., :2]
    lo = np.minimum(xy[plane_px].min(axis=0), xy[below].min(axis=0))
    idx = np.floor((xy - lo) / cell).astype(np.int64)
    hi = idx[plane_px | below].max(axis=0) + 1
    grid = np.zeros((int(hi[0]) + 1, int(hi[1]) + 1), bool)
    grid[idx[plane_px][:, 0], idx[plane_px][:, 1]] = True
    grid = ndimage.binary_dilation(grid, iterations=1)
    out = np.zeros_like(valid)
    bi = idx[below]
    out[below] = grid[bi[:, 0], bi[:, 1]]
    return out


def propose_regions(
    rgb: np.ndarray,
    depth: np.ndarray | None,
    config: ObjectsConfig,
    *,
    intrinsics: np.ndarray | None = None,
    world_from_camera: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Class-agnostic region proposals from colour and depth edges (and, with
    ``remove_support_planes``, the intrinsics and the camera pose, minus the support
    surfaces).

    rgb (H, W, 3) uint8, depth (H, W) metres or None -> (label image (H, W) int32 with
    -1 = none and proposals numbered 0..K-1 largest first, K).
    """
    from scipy import ndimage

    h, w = rgb.shape[:2]
    factor = max(1, w // max(1, config.proposal_width_px))
    small = _block_mean(rgb, factor) / 255.0  # (h', w', 3)
    small = ndimage.uniform_filter(small, size=(3, 3, 1), mode="nearest")
    if config.chroma_edges:  # 3 x chromaticity: the same scale as RGB for a saturated hue
        small = 3.0 * small / (small.sum(axis=2, keepdims=True) + 0.15)
    sh, sw = small.shape[:2]
    gx = np.zeros((sh, sw), np.float32)
    gy = np.zeros((sh, sw), np.float32)
    gx[:, :-1] = np.abs(np.diff(small, axis=1)).max(axis=2)
    gy[:-1, :] = np.abs(np.diff(small, axis=0)).max(axis=2)
    edges = (gx + gy) >= config.color_edge_threshold
    blocked = np.zeros_like(edges)  # pixels no proposal may hold (no depth, support planes)
    if depth is not None:
        z = depth[: sh * factor : factor, : sw * factor : factor].astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            valid = np.isfinite(z) & (z > 0)
            zx = np.zeros_like(z)
            zy = np.zeros_like(z)
            zx[:, :-1] = np.abs(np.diff(z, axis=1)) / np.minimum(z[:, :-1], z[:, 1:])
            zy[:-1, :] = np.abs(np.diff(z, axis=0)) / np.minimum(z[:-1, :], z[1:, :])
            vx = valid.copy()
            vx[:, :-1] &= valid[:, 1:]
            vy = valid.copy()
            vy[:-1, :] &= valid[1:, :]
            edges |= (vx & (zx > config.depth_edge_ratio)) | (vy & (zy > config.depth_edge_ratio))
            if config.depth_required:
                blocked |= ~valid
            if config.remove_support_planes and intrinsics is not None:
                if world_from_camera is not None:
                    blocked |= support_plane_mask(z, intrinsics, world_from_camera, config, factor)
                    world, wvalid = _world_heights(z, intrinsics, world_from_camera, factor)
                    edges = cut_at_supports(edges | blocked, world, wvalid, config)
            edges |= blocked
    regions, n = ndimage.label(~edges)
    label_image = np.full((h, w), -1, np.int32)
    if n == 0:
        return label_image, 0
    areas = np.bincount(regions.ravel(), minlength=n + 1)[1:] * factor * factor
    keep = (areas >= config.min_object_pixels) & (areas <= config.max_region_frac * h * w)
    cand = np.nonzero(keep)[0]
    cand = cand[np.argsort(-areas[cand], kind="stable")][: config.max_proposals]
    remap = np.full(n + 1, -1, np.int32)
    remap[cand + 1] = np.arange(len(cand), dtype=np.int32)
    small_labels = remap[regions]
    if config.grow_regions_px > 0:
        small_labels = grow_regions(
            small_labels,
            blocked,
            z if depth is not None else None,
            steps=config.grow_regions_px,
            depth_edge_ratio=config.depth_edge_ratio,
        )
    rows = np.minimum(np.arange(h) // factor, sh - 1)
    cols = np.minimum(np.arange(w) // factor, sw - 1)
    label_image = small_labels[rows[:, None], cols[None, :]].astype(np.int32)
    if config.small_object_max_px > 0:  # specks the smoothed edges swallow
        full_blocked = blocked[rows[:, None], cols[None, :]]
        return add_small_objects(label_image, len(cand), rgb, depth, full_blocked, config)
    return label_image, len(cand)


def _keep_objects(objs: Objects, keep: np.ndarray) -> Objects:
    """The objects where ``keep`` (K,) is True; the others' pixels unlabelled."""
    idx = np.flatnonzero(keep)
    label_image = objs.label_image
    if label_image is not None:
        gone = objs.ids[~keep]
        label_image = np.where(np.isin(label_image, gone), -1, label_image).astype(np.int32)
    return Objects(
        ids=objs.ids[idx],
        labels=[objs.labels[i] for i in idx],
        confidences=objs.confidences[idx],
        boxes=objs.boxes[idx],
        centroids=objs.centroids[idx],
        extents=objs.extents[idx],
        embeddings=None if objs.embeddings is None else objs.embeddings[idx],
        label_image=label_image,
        located=None if objs.located is None else objs.located[idx],
    )


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes (exclusive max): (N, 4), (M, 4) -> (N, M)."""
    a = a.astype(np.float64).reshape(-1, 4)
    b = b.astype(np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)  # fmt: skip
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)  # fmt: skip
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _thumbs(rgb: np.ndarray, boxes: np.ndarray, size: int = 16) -> np.ndarray:
    """(K, 4) boxes -> (K, size, size, 3) float32 area-averaged thumbnails in [0, 1]."""
    import cv2

    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        if x1 > x0 and y1 > y0:
            crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
            out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA) / 255.0
    return out


def bearing_points(
    boxes: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray, range_m: float
) -> np.ndarray:
    """(K, 4) pixel boxes -> (K, 3) float32 world points ``range_m`` along the camera
    rays through the box centres (objects seen without depth)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    u = (b[:, 0] + b[:, 2]) / 2.0 - 0.5  # exclusive max: pixel centres
    v = (b[:, 1] + b[:, 3]) / 2.0 - 0.5
    K = np.asarray(K, np.float64)
    y = (v - K[1, 2]) / K[1, 1]
    x = ((u - K[0, 2]) - K[0, 1] * y) / K[0, 0]
    rays = np.stack([x, y, np.ones_like(x)], 1)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    pose = np.asarray(world_from_camera, np.float64)
    return (rays * range_m @ pose[:3, :3].T + pose[:3, 3]).astype(np.float32)


@dataclass
class _Cached:
    """Regions of a camera's previous frame: boxes (K, 4), thumbnails, embeddings (K, D),
    frames each embedding has been reused for (K,)."""

    boxes: np.ndarray
    thumbs: np.ndarray
    embeddings: np.ndarray
    reused: np.ndarray


_MAX_CACHED_CAMERAS = 16


def _grid_label_image(h: int, w: int, n: int) -> np.ndarray:
    rows = np.minimum(np.arange(h) * n // h, n - 1)
    cols = np.minimum(np.arange(w) * n // w, n - 1)
    return (rows[:, None] * n + cols[None, :]).astype(np.int32)


class ObjectExtractor:
    """Objects of a frame; see the module docstring. ``encoder``: an image+text encoder
    (CLIP) for region embeddings and open-vocabulary labels, or None (no embeddings,
    proposals labelled "object")."""

    def __init__(self, config: ObjectsConfig | None = None, *, encoder: Encoder | None = None):
        self.config = config or ObjectsConfig()
        self.encoder = encoder
        self._vocab_emb: np.ndarray | None = None
        self._vocab_key: tuple[tuple[str, ...], str] | None = None
        self._lock = threading.Lock()
        self.last_weak: Objects | None = None  # the last extract's weak hints (config)
        # camera -> its previous frame's regions (embedding reuse); least recent dropped
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self.stats = {"regions_encoded": 0, "regions_reused": 0}

    def vocabulary_embeddings(self) -> np.ndarray:
        """(V, D) CLIP text embeddings of the prompted vocabulary (computed once)."""
        key = (tuple(self.config.vocabulary), self.config.prompt_template)
        with self._lock:
            if self._vocab_emb is None or self._vocab_key != key:
                if self.encoder is None or "text" not in self.encoder.modalities:
                    raise ValueError("open-vocabulary labels need an encoder with a text tower")
                prompts = [self.config.prompt_template.format(v) for v in key[0]]
                self._vocab_emb = self.encoder.encode_texts(prompts)
                self._vocab_key = key
            return self._vocab_emb

    def extract(
        self,
        rgb: np.ndarray,
        *,
        cloud: Cloud | None,
        world_from_camera: np.ndarray,
        segmentation: np.ndarray | None = None,
        labels: dict[str, str] | None = None,
        depth: np.ndarray | None = None,
        robot_labels: list[str] | tuple[str, ...] = (),
        intrinsics: np.ndarray | None = None,
        camera: str = "camera",
    ) -> Objects:
        """Objects of one frame. rgb (H, W, 3) uint8; cloud: back-projected depth (or
        None); segmentation (H, W) int32 (-1 = none) with ``labels`` id -> name;
        ``robot_labels``: names of the robot's own parts (skipped unless
        ``skip_robot_labels`` is off); intrinsics (3, 3) K to place objects without
        depth by bearing (None: at the camera position); camera: whose previous frame's
        region embeddings may be reused."""
        cfg = self.config
        h, w = rgb.shape[:2]
        self.last_weak, hints = None, None
        if segmentation is not None:
            label_image = np.asarray(segmentation, dtype=np.int32)
            ids, counts = np.unique(label_image[label_image >= 0], return_counts=True)
            names = {str(k): v for k, v in (labels or {}).items()}
            skip = set(cfg.ignore_labels) | (set(robot_labels) if cfg.skip_robot_labels else set())
            keep = [
                i
                for i, (oid, c) in enumerate(zip(ids, counts))
                if c >= cfg.min_object_pixels and names.get(str(oid), "") not in skip
            ]
            ids = ids[keep].astype(np.int32)
            obj_labels = [names.get(str(oid), f"object_{oid}") for oid in ids]
            confidences = np.ones(len(ids), np.float32)
            open_vocab = False
        else:
            label_image, k = propose_regions(
                rgb, depth, cfg, intrinsics=intrinsics, world_from_camera=world_from_camera
            )
            if k == 0 and cfg.grid_fallback > 0:
                label_image = _grid_label_image(h, w, cfg.grid_fallback)
                k = cfg.grid_fallback**2
            ids = np.arange(k, dtype=np.int32)
            obj_labels = ["object"] * k
            confidences = np.zeros(k, np.float32)
            open_vocab = True
        if len(ids) == 0:
            dim = self.encoder.dim if (self.encoder is not None and cfg.embed_regions) else None
            out = Objects.empty(dim)
            out.label_image = label_image
            return out
        boxes = _boxes_from_label_image(label_image, ids)
        if cloud is not None and len(cloud):
            point_ids = cloud.sample(label_image)
            centroids, extents, _counts3d = object_boxes_3d(
                cloud.points, point_ids, ids, trim_percentile=cfg.trim_percentile
            )
            if open_vocab and cfg.merge_parts_max_m > 0 and len(ids) > 1:
                merged = merge_stacked_parts(
                    label_image, ids, centroids, extents, cfg.merge_parts_max_m
                )
                if merged is not None:  # parts of one small object: one proposal
                    label_image, ids = merged
                    obj_labels, confidences = ["object"] * len(ids), np.zeros(len(ids), np.float32)
                    boxes = _boxes_from_label_image(label_image, ids)
                    point_ids = cloud.sample(label_image)
                    centroids, extents, _counts3d = object_boxes_3d(
                        cloud.points, point_ids, ids, trim_percentile=cfg.trim_percentile
                    )
        else:
            centroids = np.full((len(ids), 3), np.nan, np.float32)
            extents = np.zeros((len(ids), 3), np.float32)
        no_3d = ~np.all(np.isfinite(centroids), axis=1)
        if np.any(no_3d):  # no valid depth on the object: placed by bearing
            if intrinsics is not None:
                centroids[no_3d] = bearing_points(
                    boxes[no_3d], intrinsics, world_from_camera, cfg.bearing_range_m
                )
            else:
                centroids[no_3d] = np.asarray(world_from_camera, dtype=np.float32)[:3, 3]
            extents[no_3d] = 0.0
        shaped = open_vocab and (cfg.min_thickness_m > 0 or cfg.floor_z_m is not None)
        if open_vocab and (cfg.max_object_size_m > 0 or shaped):
            keep = np.ones(len(ids), bool)
            if cfg.max_object_size_m > 0:
                keep &= extents.max(axis=1) <= cfg.max_object_size_m
            if shaped and cloud is not None and len(cloud):
                keep &= ~furniture_shaped(
                    centroids,
                    extents,
                    horizontal_thickness(
                        cloud.points,
                        point_ids,
                        ids,
                        trim_percentile=cfg.trim_percentile,
                    ),
                    min_thickness_m=cfg.min_thickness_m,
                    floor_z_m=cfg.floor_z_m,
                    floor_contact_m=cfg.floor_contact_m,
                    post_aspect=cfg.floor_post_aspect,
                )
            if not keep.all():  # furniture and walls are not objects
                remap = np.full(len(ids), -1, np.int32)
                remap[keep] = np.arange(int(keep.sum()), dtype=np.int32)
                label_image = np.where(label_image >= 0, remap[np.maximum(label_image, 0)], -1)
                ids = np.arange(int(keep.sum()), dtype=np.int32)
                boxes, centroids, extents = boxes[keep], centroids[keep], extents[keep]
                no_3d, confidences = no_3d[keep], confidences[keep]
                obj_labels = [lb for lb, k in zip(obj_labels, keep) if k]
                if len(ids) == 0:
                    dim = (
                        self.encoder.dim
                        if (self.encoder is not None and cfg.embed_regions)
                        else None
                    )
                    out = Objects.empty(dim)
                    out.label_image = label_image.astype(np.int32)
                    return out
        if open_vocab and cfg.hidden_bottom_max_gap_m > 0 and depth is not None:
            if intrinsics is not None and depth.shape == label_image.shape:
                world, valid = _world_heights(depth, intrinsics, world_from_camera, 1)
                centroids, extents = extend_hidden_bottoms(
                    label_image, ids, centroids, extents, depth, world, valid,
                    max_gap_m=cfg.hidden_bottom_max_gap_m,
                )  # fmt: skip
        embeddings = None
        near_nothing = np.zeros(len(ids), bool)  # close to a no-object word (below)
        if self.encoder is not None and cfg.embed_regions:
            embeddings = self._region_embeddings(rgb, boxes, label_image, ids, camera)
            if open_vocab and len(cfg.vocabulary) and "text" in self.encoder.modalities:
                vocab = self.vocabulary_embeddings()
                cos = embeddings @ vocab.T
                near_nothing = near_ignored(cos, cfg)  # ``perception.naming``
                hints = small_weak_hints(cos, label_image, ids, cfg)
                near_nothing |= weak_small(cos, label_image, ids, cfg)
                logits = cfg.label_logit_scale * cos
                logits -= logits.max(axis=1, keepdims=True)
                probs = np.exp(logits)
                probs /= probs.sum(axis=1, keepdims=True)
                best = probs.argmax(axis=1)
                obj_labels = [cfg.vocabulary[b] for b in best]
                confidences = probs[np.arange(len(best)), best].astype(np.float32)
        out = Objects(
            ids=ids,
            labels=obj_labels,
            confidences=confidences,
            boxes=boxes,
            centroids=centroids.astype(np.float32),
            extents=extents.astype(np.float32),
            embeddings=embeddings,
            label_image=label_image,
            located=~no_3d,
        )
        if open_vocab and cfg.ignore_labels:  # proposals named as no object ("wall")
            keep = np.array([lb not in cfg.ignore_labels for lb in obj_labels], bool)
            keep &= ~near_nothing
            if hints is not None and hints.any():
                self.last_weak = _keep_objects(out, hints & ~keep)
            if not keep.all():
                out = _keep_objects(out, keep)
        if open_vocab and cfg.join_same_label_m >= 0:
            out = join_same_label_parts(out, cfg.join_same_label_m)
        return out

    def _region_embeddings(
        self,
        rgb: np.ndarray,
        boxes: np.ndarray,
        label_image: np.ndarray,
        ids: np.ndarray,
        camera: str,
    ) -> np.ndarray:
        """(K, D) region embeddings: reused from the camera's previous frame where the
        region is unchanged (module docstring), encoded otherwise."""
        assert self.encoder is not None
        cfg = self.config
        k = len(ids)
        thumbs = _thumbs(rgb, boxes) if cfg.reuse_max_frames > 0 else None
        embeddings: np.ndarray | None = None
        reused = np.zeros(k, np.int64)
        todo = np.arange(k)
        prev = self._cache.get(camera)
        if thumbs is not None and prev is not None and len(prev.boxes):
            iou = _iou(boxes, prev.boxes)
            change = np.abs(thumbs[:, None] - prev.thumbs[None]).mean(axis=(2, 3, 4))
            ok = (iou >= cfg.reuse_min_iou) & (change <= cfg.reuse_max_change)
            ok &= (prev.reused < cfg.reuse_max_frames)[None, :]
            best = np.where(ok, iou, -1.0).argmax(axis=1)
            hit = ok[np.arange(k), best]
            if hit.any():
                embeddings = np.zeros((k, prev.embeddings.shape[1]), np.float32)
                embeddings[hit] = prev.embeddings[best[hit]]
                reused[hit] = prev.reused[best[hit]] + 1
                todo = np.flatnonzero(~hit)
        if len(todo):
            masks = None
            if cfg.mask_regions:
                masks = label_image[None, :, :] == ids[todo, None, None]
            fresh = self.encoder.encode_regions(rgb, boxes[todo], masks=masks)
            if embeddings is None:
                embeddings = np.asarray(fresh, np.float32)
            else:
                embeddings[todo] = fresh
        assert embeddings is not None
        self.stats["regions_encoded"] += len(todo)
        self.stats["regions_reused"] += k - len(todo)
        if thumbs is not None:
            with self._lock:
                self._cache[camera] = _Cached(boxes.copy(), thumbs, embeddings.copy(), reused)
                self._cache.move_to_end(camera)
                while len(self._cache) > _MAX_CACHED_CAMERAS:
                    self._cache.popitem(last=False)
        return embeddings
