"""``TransformBuffer``: tf2-style look-ups in time (slerp of rotations, linear translations),
static transforms, extrapolation refused, bounded history; quaternions through scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engram.runtime.bridges.ros2 import geometry
from engram.runtime.bridges.ros2.geometry import TransformBuffer, interpolate_pose


def pose(yaw_deg: float, xyz=(0.0, 0.0, 0.0)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    m[:3, 3] = xyz
    return m


def test_lookup_interpolates_a_moving_camera_in_time():
    buf = TransformBuffer()
    buf.set_static("base_link", "camera", pose(0, (0.0, 0.0, 1.0)))
    buf.set("odom", "base_link", pose(0, (0.0, 0.0, 0.0)), stamp_ns=1_000)
    buf.set("odom", "base_link", pose(90, (2.0, 0.0, 0.0)), stamp_ns=2_000)
    mid = buf.lookup("odom", "camera", stamp_ns=1_500)
    np.testing.assert_allclose(mid, pose(45, (1.0, 0.0, 1.0)), atol=1e-9)
    quarter = buf.lookup("odom", "camera", stamp_ns=1_250)
    np.testing.assert_allclose(quarter, pose(22.5, (0.5, 0.0, 1.0)), atol=1e-9)
    np.testing.assert_allclose(buf.lookup("odom", "camera"), pose(90, (2.0, 0.0, 1.0)), atol=1e-9)
    # inverse direction, at a time
    np.testing.assert_allclose(
        buf.lookup("camera", "odom", stamp_ns=1_500), np.linalg.inv(mid), atol=1e-9
    )
    assert buf.lookup("odom", "camera", stamp_ns=2_500) is None  # extrapolation
    assert buf.lookup("odom", "camera", stamp_ns=500) is None
    assert buf.root("camera") == "odom"


def test_out_of_order_stamps_and_bounded_history():
    buf = TransformBuffer(cache_s=1e-6 * 5, max_history=4)  # 5 microseconds of history
    for t in (3_000, 1_000, 2_000, 4_000, 5_000, 6_000, 7_000):
        buf.set("map", "base", pose(0, (t / 1000.0, 0, 0)), stamp_ns=t)
    np.testing.assert_allclose(buf.lookup("map", "base", 6_500)[:3, 3], [6.5, 0, 0])
    assert buf.lookup("map", "base", 2_000) is None  # dropped: older than the cache
    assert len(buf._history["base"]) <= 4


def test_interpolate_pose_takes_the_short_way_round():
    a, b = pose(170), pose(-170)
    np.testing.assert_allclose(interpolate_pose(a, b, 0.5)[:3, :3], pose(180)[:3, :3], atol=1e-9)


def test_quaternions_match_scipy_and_keep_w_nonnegative():
    rng = np.random.default_rng(0)
    for q in Rotation.random(20, random_state=1).as_quat():
        m = geometry.quaternion_to_matrix(*(q * rng.uniform(0.5, 2.0)))  # not unit: normalised
        np.testing.assert_allclose(m, Rotation.from_quat(q).as_matrix(), atol=1e-12)
        back = geometry.matrix_to_quaternion(m)
        assert back[3] >= 0
        np.testing.assert_allclose(np.abs(back), np.abs(q), atol=1e-9)
    with pytest.raises(geometry.ConversionError, match="zero"):
        geometry.quaternion_to_matrix(0, 0, 0, 0)
    assert geometry.TransformTree is TransformBuffer
