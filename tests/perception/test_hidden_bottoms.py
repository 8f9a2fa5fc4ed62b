"""Regression (issue 17 round 5b): in camera mode a cube's 3D box started 0.7-2 cm above
its real bottom (the table band goes with the support plane; in a tray the smoothed
colour edges give its base to the tray), so a top grasp closed at its top edge and the
cube fell while carried back (put_back 4/8). Its box now reaches down to the surface
just below its lowest pixels (``perception.bottoms``)."""

from __future__ import annotations

import numpy as np
import pytest

from engram.perception.bottoms import extend_hidden_bottoms
from engram.perception.geometry import backproject
from engram.perception.objects import ObjectExtractor
from tests.perception._camera import camera_objects_config


@pytest.fixture(scope="module")
def frames():
    """The put_back scene in the tabletop camera (240 x 180, as ``--quick``): the cube
    at its start on the table, then resting in the tray."""
    pytest.importorskip("mujoco")
    from engram.sim._gl import import_mujoco
    from engram.sim.envs import make
    from engram.sim.self_filter import self_filter_depth

    mujoco = import_mujoco()
    env = make("put_back", width_px=240, height_px=180)
    out = []
    try:
        env.reset(seed=11002)
        for where in ("table", "tray"):
            if where == "tray":
                tray = env.data.xpos[env.tray]
                env.set_free_pose("cube_red", (tray[0], tray[1], 0.4285), 0.6)
                mujoco.mj_forward(env.model, env.data)
            f = env.render_frame()
            cube = env.data.xpos[env.cube].copy()
            out.append((where, f, self_filter_depth(env, f), cube))
    finally:
        env.close()
    return out


def _cube_box(f, depth, cube, gap_m: float) -> tuple[float, float]:
    cloud = backproject(depth, f.intrinsics, f.world_from_camera, stride_px=1)
    cfg = camera_objects_config(embed_regions=False, hidden_bottom_max_gap_m=gap_m)
    objs = ObjectExtractor(cfg).extract(
        f.rgb, cloud=cloud, world_from_camera=f.world_from_camera, depth=depth,
        intrinsics=f.intrinsics,
    )  # fmt: skip
    small = objs.extents[:, :2].max(axis=1) < 0.08  # not the tray under it
    dist = np.where(small, np.linalg.norm(objs.centroids[:, :2] - cube[:2], axis=1), np.inf)
    k = int(np.argmin(dist))
    assert dist[k] < 0.015
    c, e = objs.centroids[k], objs.extents[k]
    return float(c[2] - e[2] / 2), float(c[2] + e[2] / 2)


def test_a_cube_box_reaches_down_to_the_table_and_into_the_tray(frames):
    for where, f, depth, cube in frames:
        true_bottom, true_top = cube[2] - 0.02, cube[2] + 0.02
        old_bottom, _ = _cube_box(f, depth, cube, 0.0)
        bottom, top = _cube_box(f, depth, cube, 0.03)
        assert old_bottom > true_bottom + 0.004, (where, old_bottom, true_bottom)
        assert abs(bottom - true_bottom) < 0.003, (where, bottom, true_bottom)
        assert abs(top - true_top) < 0.004, (where, top, true_top)


def test_only_a_touching_surface_below_extends_a_box():
    h, w = 12, 10
    label = np.full((h, w), -1, np.int32)
    label[2:5, 3:7] = 0  # an object; the row below it lies at z = 0.40
    depth = np.full((h, w), 1.0, np.float32)
    world = np.zeros((h, w, 3))
    world[..., 2] = 0.45 - 0.01 * np.arange(h)[:, None]  # one cm lower per row
    valid = np.ones((h, w), bool)
    cent, ext = np.array([[0.0, 0.0, 0.435]]), np.array([[0.04, 0.04, 0.03]])
    args = (label, np.array([0]), cent, ext)
    c, e = extend_hidden_bottoms(*args, depth, world, valid, max_gap_m=0.03)
    assert np.isclose(c[0, 2] - e[0, 2] / 2, 0.40) and np.isclose(c[0, 2] + e[0, 2] / 2, 0.45)
    far = depth.copy()
    far[5:] = 2.0  # what lies below in the image is a wall 1 m behind: not a support
    c, e = extend_hidden_bottoms(*args, far, world, valid, max_gap_m=0.03)
    assert np.allclose(c, cent) and np.allclose(e, ext)
    c, e = extend_hidden_bottoms(*args, depth, world, valid, max_gap_m=0.005)
    assert np.allclose(c, cent) and np.allclose(e, ext)  # more than max_gap_m below
