"""Perception skips the segments a frame lists as the robot's own parts
(``Frame.robot_labels``, filled by the sim node from the robot description)."""

from __future__ import annotations

import numpy as np

from engram.perception.geometry import backproject
from engram.perception.objects import ObjectExtractor, ObjectsConfig

K = np.array([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]])


def _frame():
    h, w = 60, 80
    rgb = np.full((h, w, 3), 120, np.uint8)
    depth = np.full((h, w), 2.0, np.float32)
    seg = np.full((h, w), -1, np.int32)
    seg[5:25, 5:25] = 1  # the robot's hand
    seg[30:55, 40:70] = 2  # an object
    return rgb, depth, seg, {"1": "hand", "2": "cube_red"}


def test_robot_parts_are_not_objects():
    rgb, depth, seg, labels = _frame()
    cloud = backproject(depth, K, np.eye(4))
    kw = dict(cloud=cloud, world_from_camera=np.eye(4), segmentation=seg, labels=labels)
    ex = ObjectExtractor(ObjectsConfig(embed_regions=False), encoder=None)
    assert ex.extract(rgb, robot_labels=["hand"], **kw).labels == ["cube_red"]
    assert ex.extract(rgb, **kw).labels == ["hand", "cube_red"]  # not listed: an object
    keep = ObjectExtractor(
        ObjectsConfig(embed_regions=False, skip_robot_labels=False), encoder=None
    )
    assert keep.extract(rgb, robot_labels=["hand"], **kw).labels == ["hand", "cube_red"]
