"""Geometry: back-projection (synthetic, real RGB-D, rendered MuJoCo), voxels, object boxes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engram.perception.geometry import (
    GeometryError,
    backproject,
    check_pose,
    object_boxes_3d,
    project,
    voxel_downsample,
)
from engram.perception.objects import ObjectExtractor, ObjectsConfig

K_PRIMESENSE = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_backproject_plane_masks_invalid_depth_and_round_trips():
    h, w = 48, 64
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    depth = np.full((h, w), 2.0, np.float32)
    depth[0, 0] = 0.0
    depth[1, 1] = np.nan
    depth[2, 2] = np.inf
    pose = np.eye(4)
    pose[:3, :3] = _rot_z(0.3)
    pose[:3, 3] = (1.0, -2.0, 0.5)
    cloud = backproject(depth, K, pose)
    assert cloud.points.shape == (h * w - 3, 3) and cloud.points.dtype == np.float32
    assert np.all(np.isfinite(cloud.points))
    assert {0, w + 1, 2 * w + 2}.isdisjoint(set(cloud.pixels.tolist()))
    # every point is 2 m in front of the camera, on its optical axis plane
    cam = (cloud.points - pose[:3, 3]) @ pose[:3, :3]
    np.testing.assert_allclose(cam[:, 2], 2.0, atol=1e-5)
    # projecting back lands on the source pixels
    uv, z = project(cloud.points, K, pose)
    v, u = np.divmod(cloud.pixels, w)
    np.testing.assert_allclose(uv, np.stack([u, v], 1), atol=1e-3)
    np.testing.assert_allclose(z, 2.0, atol=1e-5)
    strided = backproject(depth, K, pose, stride_px=4, max_depth_m=1.5)
    assert len(strided) == 0


def test_invalid_inputs_raise_clear_errors():
    depth = np.ones((4, 4), np.float32)
    bad_rot = np.eye(4)
    bad_rot[0, 0] = 2.0
    with pytest.raises(GeometryError, match="not a proper rotation"):
        backproject(depth, K_PRIMESENSE, bad_rot)
    nan_pose = np.eye(4)
    nan_pose[0, 3] = np.nan
    with pytest.raises(GeometryError, match="world_from_camera: contains NaN"):
        backproject(depth, K_PRIMESENSE, nan_pose)
    mirror = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(GeometryError, match="not a proper rotation"):
        check_pose(mirror)
    with pytest.raises(GeometryError, match=r"expected a \(4, 4\) pose"):
        check_pose(np.eye(3))
    with pytest.raises(GeometryError, match="focal lengths"):
        backproject(depth, np.diag([0.0, 1.0, 1.0]), np.eye(4))
    with pytest.raises(GeometryError, match="convert mm"):
        backproject(depth.astype(np.uint16), K_PRIMESENSE, np.eye(4))
    with pytest.raises(GeometryError, match="voxel_size_m"):
        voxel_downsample(np.zeros((3, 3)), 0.0)


def test_voxel_downsample_means_and_majority_labels():
    pts = np.array(
        [[0.01, 0.01, 0.01], [0.03, 0.03, 0.03], [0.02, 0.02, 0.02], [0.55, 0.0, 0.0]],
        np.float32,
    )
    labels = np.array([3, 7, 7, -1])
    out, out_labels = voxel_downsample(pts, 0.1, labels=labels)
    order = np.argsort(out[:, 0])
    np.testing.assert_allclose(out[order], [[0.02, 0.02, 0.02], [0.55, 0.0, 0.0]], atol=1e-6)
    assert out_labels[order].tolist() == [7, -1]
    rng = np.random.default_rng(0)
    many = rng.uniform(-1, 1, (20000, 3)).astype(np.float32)
    down, _ = voxel_downsample(many, 0.2)
    assert len(down) == 1000  # 10 x 10 x 10 voxels, all occupied
    assert voxel_downsample(np.zeros((0, 3)), 0.1, labels=np.zeros(0))[0].shape == (0, 3)


def test_object_boxes_ignore_flying_pixels():
    rng = np.random.default_rng(1)
    box = rng.uniform([0, 0, 0], [0.2, 0.1, 0.3], (2000, 3))
    flying = np.array([[3.0, 3.0, 3.0]])
    pts = np.concatenate([box, flying])
    labels = np.concatenate([np.full(2000, 5), [5]])
    centroids, extents, counts = object_boxes_3d(pts, labels, np.array([5, 9]))
    np.testing.assert_allclose(centroids[0], [0.1, 0.05, 0.15], atol=0.01)
    np.testing.assert_allclose(extents[0], [0.2, 0.1, 0.3], atol=0.01)
    assert counts.tolist() == [2001, 0] and np.all(np.isnan(centroids[1]))


# --- real RGB-D frames (Open3D test data, not made by this project) -------------------


def _redwood_poses(path: Path) -> list[np.ndarray]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return [
        np.array([[float(v) for v in lines[i + k].split()] for k in range(1, 5)])
        for i in range(0, len(lines), 5)
    ]


def _real_cloud(sample: Path, index: int, pose: np.ndarray) -> np.ndarray:
    import cv2

    depth_mm = cv2.imread(str(sample / "depth" / f"{index:05d}.png"), cv2.IMREAD_UNCHANGED)
    assert depth_mm is not None and depth_mm.dtype == np.uint16
    cloud = backproject(depth_mm.astype(np.float32) / 1000.0, K_PRIMESENSE, pose, stride_px=2)
    points, _ = voxel_downsample(cloud.points, 0.01)
    return points


def test_real_rgbd_frames_overlap_in_world(rgbd_sample_dir):
    from scipy.spatial import cKDTree

    poses = _redwood_poses(rgbd_sample_dir / "trajectory.log")
    assert len(poses) == 5
    first = _real_cloud(rgbd_sample_dir, 0, poses[0])
    tree = cKDTree(first)
    dist_true, _ = tree.query(_real_cloud(rgbd_sample_dir, 4, poses[4]))
    # the same scene from two viewpoints lands on the same surfaces in world
    assert np.median(dist_true) < 0.012
    assert np.mean(dist_true < 0.02) > 0.9
    # using the wrong pose for frame 4 visibly breaks the overlap (the check can fail)
    dist_wrong, _ = tree.query(_real_cloud(rgbd_sample_dir, 4, poses[0]))
    assert np.mean(dist_wrong < 0.02) < np.mean(dist_true < 0.02) - 0.2


# --- rendered MuJoCo scene ---------------------------------------------------------

_BOXES = {  # body name -> (centre, half sizes), metres, axis-aligned
    "red_box": ((0.25, 0.10, 0.05), (0.05, 0.08, 0.05)),
    "blue_box": ((-0.20, -0.15, 0.10), (0.10, 0.06, 0.10)),
}


def _scene_xml(width: int, height: int) -> str:
    bodies = "".join(
        f'<body name="{name}" pos="{c[0]} {c[1]} {c[2]}">'
        f'<geom type="box" size="{s[0]} {s[1]} {s[2]}" rgba="0.8 0.2 0.2 1"/></body>'
        for name, (c, s) in _BOXES.items()
    )
    return f"""
<mujoco>
  <visual><global offwidth="{width}" offheight="{height}"/><quality shadowsize="0"/></visual>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1"/>
    <geom name="floor" type="plane" size="3 3 0.1" rgba=".8 .8 .8 1"/>
    {bodies}
    <camera name="cam" pos="1.0 -0.9 0.8" xyaxes="0.669 0.743 0 -0.4 0.36 0.843" fovy="50"/>
  </worldbody>
</mujoco>"""


def _render_mujoco(width: int = 320, height: int = 240):
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco

    if not hasattr(mujoco, "Renderer"):
        pytest.fail("mujoco.Renderer is missing: the GL stack failed to load (MUJOCO_GL=egl)")
    model = mujoco.MjModel.from_xml_string(_scene_xml(width, height))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = mujoco.Renderer(model, height=height, width=width)
    try:
        renderer.update_scene(data, camera="cam")
        rgb = renderer.render().copy()
        renderer.enable_depth_rendering()
        renderer.update_scene(data, camera="cam")
        depth = renderer.render().copy()
        renderer.disable_depth_rendering()
        renderer.enable_segmentation_rendering()
        renderer.update_scene(data, camera="cam")
        seg = renderer.render().copy()
        renderer.disable_segmentation_rendering()
    finally:
        renderer.close()
    cam = model.camera("cam").id
    fovy = np.radians(model.cam_fovy[cam])
    f = (height / 2.0) / np.tan(fovy / 2.0)
    K = np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1.0]])
    # MuJoCo cameras look down -z with +y up; OpenCV looks down +z with +y down.
    world_from_camera = np.eye(4)
    world_from_camera[:3, :3] = data.cam_xmat[cam].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
    world_from_camera[:3, 3] = data.cam_xpos[cam]
    # segmentation: (object id, object type) -> body id per pixel, -1 = nothing
    geom_ids, types = seg[..., 0], seg[..., 1]
    is_geom = (types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (geom_ids >= 0)
    body = np.where(is_geom, model.geom_bodyid[np.clip(geom_ids, 0, None)], -1).astype(np.int32)
    labels = {str(b): model.body(b).name or "world" for b in range(model.nbody)}
    return rgb, depth.astype(np.float32), body, labels, K, world_from_camera


def test_mujoco_depth_lands_on_known_surfaces_and_objects_have_right_centroids():
    rgb, depth, body, labels, K, pose = _render_mujoco()
    cloud = backproject(depth, K, pose, max_depth_m=10.0)
    ids = cloud.sample(body)
    name_of = {int(k): v for k, v in labels.items()}
    floor = cloud.points[ids == 0]
    assert len(floor) > 10000
    assert np.abs(floor[:, 2]).max() < 0.01  # the floor is z = 0
    for name, (centre, half) in _BOXES.items():
        bid = next(b for b, n in name_of.items() if n == name)
        pts = cloud.points[ids == bid].astype(np.float64)
        assert len(pts) > 200, name
        # signed distance to the box surface: 0 on a face
        sdf = np.max(np.abs(pts - centre) - half, axis=1)
        assert np.abs(sdf).max() < 0.01, (name, np.abs(sdf).max())
    # objects from the segmentation image: right labels, centroids and sizes
    extractor = ObjectExtractor(ObjectsConfig(ignore_labels=("world",)), encoder=None)
    objs = extractor.extract(
        rgb, cloud=cloud, world_from_camera=pose, segmentation=body, labels=labels, depth=depth
    )
    assert sorted(objs.labels) == sorted(_BOXES)
    for label, centroid, extent, box in zip(objs.labels, objs.centroids, objs.extents, objs.boxes):
        centre, half = _BOXES[label]
        np.testing.assert_allclose(centroid, centre, atol=0.01)
        np.testing.assert_allclose(extent, 2 * np.asarray(half), atol=0.02)
        # the pixel box contains the projection of the centre
        uv, _ = project(np.asarray([centre]), K, pose)
        u, v = uv[0]
        assert box[0] <= u <= box[2] and box[1] <= v <= box[3]
    assert np.all(objs.confidences == 1.0) and objs.embeddings is None
