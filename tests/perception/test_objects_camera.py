"""Camera-mode proposals without simulator help: support planes, self-filtered robot
pixels and shading do not become objects; a button's cap and housing are one object."""

from __future__ import annotations

import numpy as np

from engram.perception.geometry import backproject
from engram.perception.objects import ObjectExtractor, ObjectsConfig

H, W, F = 120, 160, 150.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])
# camera 1.4 m above the floor looking straight down (OpenCV axes: x right, y down, z forward)
POSE = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1.4], [0, 0, 0, 1]], np.float64)


def _scene():
    rgb = np.full((H, W, 3), 90, np.uint8)  # grey floor, z = 0
    depth = np.full((H, W), 1.4, np.float32)
    rgb[20:100, 60:150] = (200, 160, 110)  # table top, z = 0.40 (37% of the image)
    depth[20:100, 60:150] = 1.0
    rgb[50:66, 90:98] = (200, 30, 30)  # a red box 4 cm tall: lit half ...
    rgb[50:66, 98:106] = (120, 18, 18)  # ... and shaded half (same hue)
    depth[50:66, 90:106] = 0.96
    rgb[30:40, 120:130] = (60, 60, 60)  # a button: grey housing 2.5 cm tall ...
    depth[30:40, 120:130] = 0.975
    rgb[33:37, 123:127] = (30, 30, 200)  # ... with a blue cap on top
    depth[33:37, 123:127] = 0.965
    rgb[0:15, 0:40] = (230, 230, 235)  # the robot's arm: self-filtered, no depth
    depth[0:15, 0:40] = 0.0
    return rgb, depth


def _extract(cfg: ObjectsConfig):
    rgb, depth = _scene()
    cloud = backproject(depth, K, POSE, stride_px=1, max_depth_m=10.0)
    return ObjectExtractor(cfg).extract(
        rgb, cloud=cloud, world_from_camera=POSE, depth=depth, intrinsics=K
    )


def test_camera_filters_leave_the_objects_on_the_table():
    cfg = ObjectsConfig(
        min_object_pixels=8,
        grid_fallback=0,
        depth_required=True,
        remove_support_planes=True,
        chroma_edges=True,
        color_edge_threshold=0.2,
        proposal_width_px=640,
        max_object_size_m=0.3,
        merge_parts_max_m=0.075,
        grow_regions_px=3,
    )
    objs = _extract(cfg)
    cents = objs.centroids[np.argsort(objs.centroids[:, 0])]
    assert len(objs) == 2, objs.centroids  # the box and the button; no table, floor, robot
    box = (np.array([97.5, 57.5]) - K[:2, 2]) / F  # pixel centre -> metres at 1 m depth
    assert np.allclose(cents[0][:2], [box[0] * 0.96, -box[1] * 0.96], atol=0.01)
    assert 0.41 < cents[0][2] < 0.45 and 0.4 < cents[1][2] < 0.44


def test_without_the_filters_planes_robot_and_shading_are_proposed():
    objs = _extract(ObjectsConfig(min_object_pixels=8, grid_fallback=0, proposal_width_px=640))
    assert len(objs) > 2  # what the first camera mode did: table, robot, two box halves
