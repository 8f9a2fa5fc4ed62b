"""Contract tests over every registered environment (Gymnasium API, determinism, errors)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from engram.runtime import registry
from engram.sim.envs import make

ALL = sorted([*registry.known("task"), "model"])


def _rollout(env, seed: int, steps: int) -> list[dict[str, np.ndarray]]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs]
    for _ in range(steps):
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append(obs)
        assert isinstance(reward, float)
        if terminated or truncated:
            break
    return out


@pytest.mark.parametrize("name", ALL)
def test_env_contract(name):
    from gymnasium.utils.env_checker import check_env

    env = make(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite Box bounds, asymmetric action box
        check_env(env, skip_render_check=True)

    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs), {k: v.shape for k, v in obs.items()}
    for key in ("phase", "instruction", "success", "decision_time_s", "executed_action"):
        assert key in info
    assert info["phase"] in ("show", "act")
    action = env.action_space.sample()
    obs, _, _, _, info = env.step(action)
    assert env.observation_space.contains(obs)
    assert info["executed_action"].shape == env.action_space.shape

    # same seed, same episode (random actions from the same seed too)
    a = _rollout(env, 11, 6)
    b = _rollout(env, 11, 6)
    assert len(a) == len(b)
    for oa, ob in zip(a, b):
        for key in oa:
            np.testing.assert_array_equal(oa[key], ob[key])

    # bad actions are refused with a message naming the problem
    with pytest.raises(ValueError, match=r"shape"):
        env.step(np.zeros(env.action_space.shape[0] + 1, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(env.action_space.shape, np.nan, np.float32))

    # the ground-truth log is JSON
    log = json.loads(json.dumps(env.ground_truth()))
    assert log["task"] == env.task_name
    env.close()
    env.close()  # idempotent


def test_different_seeds_give_different_layouts():
    env = make("cups")
    a, _ = env.reset(seed=1)
    b, _ = env.reset(seed=2)
    assert not np.array_equal(a["objects"], b["objects"])


def test_unknown_task_and_option_are_named():
    with pytest.raises(KeyError, match=r"known: .*cups"):
        make("no_such_task")
    with pytest.raises(TypeError, match="n_cupz"):
        make("cups", n_cupz=3)
    with pytest.raises(ValueError, match="render_mode"):
        make("cups", render_mode="video")


def test_step_after_end_raises():
    env = make("cups", max_steps=2)
    env.reset(seed=0)
    env.step(env.stop_action())
    _, _, terminated, truncated, _ = env.step(env.stop_action())
    assert truncated and not terminated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.stop_action())


def test_image_observations_and_render_modes():
    env = make("cups", obs_images=True, width_px=48, height_px=36, render_mode="rgbd")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["rgb"].shape == (36, 48, 3) and obs["rgb"].dtype == np.uint8
    assert obs["depth"].shape == (36, 48) and float(obs["depth"].max()) > 0
    assert obs["segmentation"].dtype == np.int32
    frame = env.render()
    assert frame.rgb.shape == (36, 48, 3) and frame.intrinsics.shape == (3, 3)
    env.close()
    env = make("count", render_mode="rgb_array", width_px=40, height_px=30)
    env.reset(seed=0)
    assert env.render().shape == (30, 40, 3)
    env.close()


def test_any_mjcf_model_by_path(tmp_path):
    from engram.sim.scene import load_model

    xml = tmp_path / "pendulum.xml"
    xml.write_text(
        """<mujoco><worldbody><light pos="0 0 3"/>
        <camera name="front" pos="0 -2 1" xyaxes="1 0 0 0 0.45 0.9"/>
        <body name="pole" pos="0 0 1"><joint name="hinge" axis="0 1 0"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.5" size="0.03"/></body></worldbody>
        <actuator><motor joint="hinge" ctrlrange="-1 1"/></actuator></mujoco>"""
    )
    model = load_model(xml)
    assert model.nq == 1 and model.nu == 1
    env = make("model", model_path=str(xml), width_px=32, height_px=24)
    obs, _ = env.reset(seed=0)
    assert obs["robot"].shape == (2,) and env.action_space.shape == (1,)
    for _ in range(5):
        obs, *_ = env.step(np.array([1.0], np.float32))
    assert obs["robot"][1] != 0.0  # the motor moved the pole
    frame = env.render_frame()
    assert frame.camera == "front" and frame.depth.max() > 0
    labels = set(frame.labels.values())
    assert "pole" in labels
    env.close()

    with pytest.raises(FileNotFoundError, match=r"missing\.xml"):
        load_model(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<mujoco><worldbody><geom type='nope'/></worldbody></mujoco>")
    with pytest.raises(ValueError, match=r"bad\.xml"):
        load_model(bad)


def test_controllers_track_commands():
    """The arm's differential IK follows end-effector deltas; the base follows velocities."""
    env = make("put_back")
    env.reset(seed=0)
    env.step(env.stop_action())
    env.step(env.stop_action())  # show phase over
    start = env.controller.ee_pos()
    for _ in range(10):
        env.step(np.array([0.02, 0.0, -0.01, 0.05, 0.0], np.float32))
    for _ in range(5):
        env.step(np.array([0.0, 0.0, 0.0, 0.0, 0.0], np.float32))
    moved = env.controller.ee_pos() - start
    np.testing.assert_allclose(moved, [0.2, 0.0, -0.1], atol=0.01)
    mat = env.controller.ee_mat()
    assert mat[2, 2] < -0.99  # still pointing down

    env = make("where_heard")
    env.reset(seed=0)
    base = env.unwrapped
    while base.phase != "act":
        env.step(env.stop_action())
    x0, y0, yaw0 = base.controller.pose()
    for _ in range(10):  # 1 s forward at 0.3 m/s in the base frame
        env.step(np.array([0.3, 0.0, 0.0], np.float32))
    x1, y1, yaw1 = base.controller.pose()
    travelled = np.array([x1 - x0, y1 - y0])
    heading = np.array([np.cos(yaw0), np.sin(yaw0)])
    assert abs(float(travelled @ heading) - 0.3) < 0.05
    assert abs(yaw1 - yaw0) < 0.02
