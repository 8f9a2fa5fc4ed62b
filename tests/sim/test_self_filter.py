"""The robot's self-filter removes the depth of its own body (from its geometry and joint
state, not the segmentation) and keeps what stands in front of it, like a held cube."""

from __future__ import annotations

import mujoco
import numpy as np

from engram.sim.envs import make
from engram.sim.robots import ROBOT_PART_LABELS
from engram.sim.self_filter import SELF_GROUP, robot_geoms, self_filter_depth


def test_self_filter_drops_the_arm_and_keeps_a_cube_in_front_of_it():
    env = make("put_back", width_px=160, height_px=120)
    try:
        env.reset(seed=0)
        m = env.model
        bodies = {
            mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, int(b))
            for b in m.geom_bodyid[robot_geoms(m)]
        }
        assert {"link3", "hand", "finger_left"} <= bodies and "cube_red" not in bodies
        frame = env.render_frame()
        robot_ids = [int(k) for k, v in frame.labels.items() if v in ROBOT_PART_LABELS]
        on_robot = np.isin(frame.segmentation, robot_ids) & (frame.depth > 0)
        assert on_robot.sum() > 50  # the arm is in view
        depth = self_filter_depth(env, frame)
        assert (depth[on_robot] == 0).mean() > 0.97  # its pixels have no depth now
        assert np.array_equal(depth[~on_robot], frame.depth[~on_robot])  # nothing else lost
        assert np.all(m.geom_group[robot_geoms(m)] == SELF_GROUP)
        # a cube held just below the hand, in front of the arm: kept
        hand = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "hand")
        env.set_free_pose("cube_red", env.data.xpos[hand] + np.array([0, 0, -0.12]), 0.0)
        mujoco.mj_forward(m, env.data)
        frame = env.render_frame()
        cube_id = next(int(k) for k, v in frame.labels.items() if v == "cube_red")
        cube = frame.segmentation == cube_id
        assert cube.sum() > 5 and np.all(self_filter_depth(env, frame)[cube] > 0)
    finally:
        env.close()
