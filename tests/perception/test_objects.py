"""Objects: from segmentation (simulation) and from proposals + open vocabulary (real)."""

from __future__ import annotations

import numpy as np

from engram.perception.geometry import backproject
from engram.perception.objects import ObjectExtractor, ObjectsConfig, propose_regions

K = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])


def _scene():
    """A wall at 3 m with two boxes in front: colour and depth both separate them."""
    h, w = 120, 160
    rgb = np.full((h, w, 3), 120, np.uint8)
    depth = np.full((h, w), 3.0, np.float32)
    seg = np.full((h, w), -1, np.int32)
    rgb[30:60, 20:60] = (220, 30, 30)
    depth[30:60, 20:60] = 1.5
    seg[30:60, 20:60] = 4
    rgb[70:110, 90:140] = (30, 30, 220)
    depth[70:110, 90:140] = 2.0
    seg[70:110, 90:140] = 9
    seg[0:2, 0:2] = 11  # tiny: below min_object_pixels
    return rgb, depth, seg


def test_objects_from_segmentation(tiny_clip):
    rgb, depth, seg = _scene()
    cloud = backproject(depth, K, np.eye(4))
    ex = ObjectExtractor(ObjectsConfig(min_object_pixels=20), encoder=tiny_clip)
    objs = ex.extract(
        rgb,
        cloud=cloud,
        world_from_camera=np.eye(4),
        segmentation=seg,
        labels={"4": "red_box", "9": "blue_box"},
    )
    assert objs.ids.tolist() == [4, 9]
    assert objs.labels == ["red_box", "blue_box"]
    assert objs.boxes.tolist() == [[20, 30, 60, 60], [90, 70, 140, 110]]
    np.testing.assert_allclose(objs.confidences, 1.0)
    # centroid of the red patch: pixels u 20..59, v 30..59 at 1.5 m
    u_mid, v_mid = (20 + 59) / 2, (30 + 59) / 2
    want = [(u_mid - 79.5) / 100 * 1.5, (v_mid - 59.5) / 100 * 1.5, 1.5]
    np.testing.assert_allclose(objs.centroids[0], want, atol=0.02)
    assert objs.extents[0, 2] < 0.01  # a flat patch facing the camera
    assert objs.embeddings.shape == (2, tiny_clip.dim)
    np.testing.assert_allclose(np.linalg.norm(objs.embeddings, axis=1), 1.0, atol=1e-5)
    # no depth: objects are kept, at the camera position with unknown extent
    pose = np.eye(4)
    pose[:3, 3] = (1.0, 2.0, 3.0)
    no_depth = ex.extract(rgb, cloud=None, world_from_camera=pose, segmentation=seg, labels={})
    assert no_depth.labels == ["object_4", "object_9"]
    np.testing.assert_allclose(no_depth.centroids, [[1, 2, 3], [1, 2, 3]])


def test_proposals_find_the_boxes_without_segmentation():
    rgb, depth, _ = _scene()
    cfg = ObjectsConfig(proposal_width_px=160, min_object_pixels=100)
    label_image, k = propose_regions(rgb, depth, cfg)
    assert k >= 2
    # each box is (mostly) covered by a single proposal
    for y0, y1, x0, x1 in ((30, 60, 20, 60), (70, 110, 90, 140)):
        inner = label_image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
        values, counts = np.unique(inner, return_counts=True)
        assert values[np.argmax(counts)] >= 0
        assert counts.max() / inner.size > 0.9
    # the large wall is background (above max_region_frac), not an object
    assert label_image[5:25, 80:150].max() == -1


def test_open_vocabulary_labels_on_real_frame(tiny_clip, rgbd_sample_dir):
    import cv2

    bgr = cv2.imread(str(rgbd_sample_dir / "color" / "00000.jpg"))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    depth = (
        cv2.imread(str(rgbd_sample_dir / "depth" / "00000.png"), cv2.IMREAD_UNCHANGED).astype(
            np.float32
        )
        / 1000.0
    )
    k_real = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    cloud = backproject(depth, k_real, np.eye(4), stride_px=2)
    vocab = ("sofa", "table", "lamp", "cup")
    ex = ObjectExtractor(ObjectsConfig(vocabulary=vocab, max_proposals=6), encoder=tiny_clip)
    objs = ex.extract(rgb, cloud=cloud, world_from_camera=np.eye(4), depth=depth)
    assert 1 <= len(objs) <= 6
    assert set(objs.labels) <= set(vocab)  # random weights: the label is any vocabulary word
    assert np.all((objs.confidences > 1.0 / len(vocab) - 1e-6) & (objs.confidences <= 1.0))
    assert objs.embeddings.shape == (len(objs), tiny_clip.dim)
    assert np.all(np.isfinite(objs.centroids)) and np.all(objs.extents >= 0)
    assert np.all(objs.centroids[:, 2] > 0.3)  # in front of the camera
    # boxes lie in the image
    assert np.all(objs.boxes[:, :2] >= 0) and np.all(objs.boxes[:, 2] <= 640)
    # the vocabulary embeddings are computed once and reused
    assert ex.vocabulary_embeddings() is ex.vocabulary_embeddings()


def test_grid_fallback_when_nothing_is_proposed(tiny_clip):
    flat = np.full((60, 80, 3), 90, np.uint8)  # one region covering everything: too large
    ex = ObjectExtractor(ObjectsConfig(grid_fallback=2, vocabulary=("a", "b")), encoder=tiny_clip)
    objs = ex.extract(flat, cloud=None, world_from_camera=np.eye(4))
    assert len(objs) == 4 and objs.boxes.tolist()[0] == [0, 0, 40, 30]


def test_unchanged_regions_reuse_their_embeddings(tiny_clip):
    """The same frame twice: every region is reused (no encoder pass) with the same
    embedding; a changed region (recoloured) and another camera are encoded again."""
    rgb, depth, seg = _scene()
    cloud = backproject(depth, K, np.eye(4))
    ex = ObjectExtractor(ObjectsConfig(min_object_pixels=20), encoder=tiny_clip)
    kw = dict(cloud=cloud, world_from_camera=np.eye(4), segmentation=seg, labels={})
    a = ex.extract(rgb, **kw)
    assert ex.stats == {"regions_encoded": 2, "regions_reused": 0}
    b = ex.extract(rgb, **kw)
    assert ex.stats == {"regions_encoded": 2, "regions_reused": 2}
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    changed = rgb.copy()
    changed[30:60, 20:60] = (30, 220, 30)  # the red box turned green
    c = ex.extract(changed, **kw)
    assert ex.stats == {"regions_encoded": 3, "regions_reused": 3}
    assert not np.allclose(c.embeddings[0], a.embeddings[0])
    ex.extract(rgb, camera="other", **kw)
    assert ex.stats["regions_encoded"] == 5
    # reuse is bounded: after reuse_max_frames the region is encoded again
    ex2 = ObjectExtractor(
        ObjectsConfig(min_object_pixels=20, reuse_max_frames=2), encoder=tiny_clip
    )
    for _ in range(4):
        ex2.extract(rgb, **kw)
    assert ex2.stats == {"regions_encoded": 4, "regions_reused": 4}


def test_without_depth_objects_are_placed_by_bearing():
    """A webcam (no depth, fixed pose): objects on the rays through their boxes at
    ``bearing_range_m``, flagged not located, not stacked at the camera."""
    from engram.perception.objects import bearing_points

    rgb, _depth, _seg = _scene()
    pose = np.eye(4)
    pose[:3, 3] = (1.0, 2.0, 0.5)
    ex = ObjectExtractor(ObjectsConfig(min_object_pixels=20, bearing_range_m=2.0), encoder=None)
    objs = ex.extract(rgb, cloud=None, world_from_camera=pose, intrinsics=K)
    assert len(objs) >= 2 and not objs.located.any()
    rel = objs.centroids - pose[:3, 3]
    np.testing.assert_allclose(np.linalg.norm(rel, axis=1), 2.0, rtol=1e-5)
    assert len({tuple(np.round(r, 3)) for r in rel.tolist()}) == len(objs)
    # the ray through a box centre projects back onto that centre
    for box, r in zip(objs.boxes, rel):
        u = K[0, 0] * r[0] / r[2] + K[0, 2]
        v = K[1, 1] * r[1] / r[2] + K[1, 2]
        assert abs(u - ((box[0] + box[2]) / 2 - 0.5)) < 1e-3
        assert abs(v - ((box[1] + box[3]) / 2 - 0.5)) < 1e-3
    np.testing.assert_allclose(objs.extents, 0.0)
    # a box at the principal point lies straight ahead
    ahead = bearing_points(np.array([[79, 59, 81, 61]]), K, np.eye(4), 3.0)
    np.testing.assert_allclose(ahead, [[0.0, 0.0, 3.0]], atol=1e-6)


def test_static_room_objects_stay_static_in_memory(rgbd_sample_dir):
    """Real frames played back and forth at 30 fps through proposals + tracker into the
    spatial memory: in a static room no object is classified moving or moved and no
    voxel is removed; the previous motion rule marked several (issue 16)."""
    import cv2

    from engram.memory.spatial import DynamicsConfig, SpatialConfig, SpatialMemory
    from engram.perception.geometry import voxel_downsample
    from engram.perception.tracking import ObjectTracker, TrackerConfig
    from engram.runtime.messages import Percept
    from tests.memory.spatial._rgbd import K_SAMPLE, real_sequence

    frames = real_sequence(rgbd_sample_dir)
    rgbs = [
        cv2.imread(str(rgbd_sample_dir / "color" / f"{i:05d}.jpg"))[:, :, ::-1].copy()
        for i in range(len(frames))
    ]
    ex = ObjectExtractor(ObjectsConfig(), encoder=None)
    tracker = ObjectTracker(TrackerConfig(first_id=1))
    percepts = []
    order = [0, 1, 2, 3, 4, 3, 2, 1] * 3
    for i, j in enumerate(order):
        depth, pose = frames[j]
        stamp = (i + 1) * 33_333_333
        cloud = backproject(depth, K_SAMPLE, pose, stride_px=4)
        objs = ex.extract(rgbs[j], cloud=cloud, world_from_camera=pose, depth=depth)
        objs = tracker.update(objs, stamp_ns=stamp)
        labels = cloud.sample(objs.label_image)
        pts, pids = voxel_downsample(
            cloud.points, 0.02, labels=np.where(np.isin(labels, objs.ids), labels, -1)
        )
        percepts.append(
            Percept(
                stamp_ns=stamp, world_from_camera=pose, object_ids=objs.ids,
                object_labels=list(objs.labels), object_confidences=objs.confidences,
                object_boxes=objs.boxes, object_centroids=objs.centroids,
                object_extents=objs.extents, points=pts, point_object_ids=pids,
            )
        )  # fmt: skip
    marked = {}
    for name, dyn in (("new", DynamicsConfig()), ("legacy", DynamicsConfig.legacy())):
        mem = SpatialMemory(SpatialConfig(dynamics=dyn))
        ever: set[int] = set()
        for p in percepts:
            mem.write(p)
            ever |= {o for o, r in mem.objects.records.items() if r.dynamic or r.moves}
        marked[name] = (len(ever), mem.counters["voxels_cleared"], len(mem.objects))
    assert marked["new"][2] >= 3  # the room's proposals were tracked
    assert marked["new"][:2] == (0, 0), marked
    assert marked["legacy"][0] > 0, marked
