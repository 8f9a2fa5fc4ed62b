"""The memory tasks: experts succeed, memoryless policies do not, the information is gone
at decision time, and the ground-truth logs say what happened when."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from engram.planners.policies.scripted import ExpertPolicy, ReactivePolicy, run_episode
from engram.runtime import registry
from engram.sim.envs import make

TASKS = registry.known("task")

SEEDS = range(20)
#: a memoryless policy may beat chance by at most this much over 20 seeds (about 2.4
#: binomial standard deviations at chance 1/3; deterministic seeds, so not flaky)
REACTIVE_MARGIN = 0.25


@functools.cache
def _env(task: str):
    return make(task)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_scripted_expert_succeeds(task):
    env = _env(task)
    results = [run_episode(env, ExpertPolicy(), seed=s)[0] for s in SEEDS]
    rate = float(np.mean(results))
    assert rate >= 0.95, (
        f"{task}: expert success {rate:.2f}, failed seeds {[s for s, ok in zip(SEEDS, results) if not ok]}"
    )


@pytest.mark.parametrize("task", sorted(TASKS))
def test_reactive_policy_is_at_chance(task):
    env = _env(task)
    results = [run_episode(env, ReactivePolicy(seed=s), seed=1000 + s)[0] for s in SEEDS]
    rate = float(np.mean(results))
    assert rate <= env.chance_success + REACTIVE_MARGIN, (
        f"{task}: memoryless success {rate:.2f} vs chance {env.chance_success:.2f}"
    )


def _at_decision(task: str, seed: int, answer):
    env = make(task)
    obs, info = env.reset(seed=seed, options={"answer": answer})
    policy = ExpertPolicy()
    policy.reset(env)
    while info["decision_time_s"] is None:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info).actions[0])
        assert not (terminated or truncated)
    return env, obs


@pytest.mark.parametrize(
    ("task", "answers"),
    [
        ("cups", (0, 2)),
        ("button_sequence", (["red", "green", "blue"], ["blue", "red", "green"])),
        ("count", (1, 4)),
        ("fetch_seen", ("mug_red", "plant")),
    ],
)
def test_decision_time_observation_does_not_depend_on_the_answer(task, answers):
    """Same layout, different answers: at decision time the observation is identical,
    so no policy without memory can do better than chance."""
    env_a, a = _at_decision(task, 5, answers[0])
    env_b, b = _at_decision(task, 5, answers[1])
    assert env_a.expert_answer() != env_b.expert_answer()
    assert env_a.decision_time_s == env_b.decision_time_s
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=f"{task}: obs[{key!r}]")


def test_where_heard_decision_observation_does_not_depend_on_the_sound_asked():
    env = make("where_heard")
    env.reset(seed=4)
    labels = list(env.sound_rooms.values())
    env_a, a = _at_decision("where_heard", 4, labels[0])
    env_b, b = _at_decision("where_heard", 4, labels[1])
    assert env_a.expert_answer() != env_b.expert_answer()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=f"obs[{key!r}]")
    # the sounds were over and the base is elsewhere at decision time
    for sound in env_a.ground_truth()["sounds"]:
        assert sound["end_s"] < env_a.decision_time_s
    room_now = env_a.layout.room_of(a["robot"][:2])
    assert room_now not in env_a.sound_rooms


def test_put_back_start_is_not_observable_once_on_tray():
    """Starts 30 cm apart leave decision-time observations within 1 cm of each other,
    below the 3 cm success tolerance."""
    _, a = _at_decision("put_back", 2, [-0.25, -0.1])
    _, b = _at_decision("put_back", 2, [0.0, 0.12])
    for key in ("robot", "objects"):
        assert np.max(np.abs(a[key] - b[key])) < 0.01, key


def test_cups_images_at_decision_time_do_not_show_the_answer():
    """Rendered RGB-D at decision time: the same pixels whichever cup hides the cube."""
    env_a, _ = _at_decision("cups", 8, 0)
    env_b, _ = _at_decision("cups", 8, 1)
    fa = env_a.render_frame()
    fb = env_b.render_frame()
    differ = np.any(fa.rgb.astype(int) != fb.rgb.astype(int), axis=-1)
    assert differ.mean() < 0.002
    np.testing.assert_allclose(fa.depth, fb.depth, atol=1e-3)


def test_cups_ground_truth_records_visibility_and_events():
    env = make("cups")
    ok, _, _ = run_episode(env, ExpertPolicy(), seed=1)
    gt = env.ground_truth()
    assert ok and gt["success"] is True
    times = np.array(gt["times_s"])
    prize = np.array(gt["objects"]["prize"]["visible"], bool)
    decision = gt["decision_time_s"]
    assert prize[times < 0.5].all()  # shown first
    lifted = next(e for e in gt["events"] if e["type"] == "lifted")
    hidden = (times >= decision) & (times < lifted["t"])
    assert hidden.sum() >= 5 and not prize[hidden].any()  # hidden until its cup is lifted
    assert prize[-1]  # and seen again once it is
    kinds = [e["type"] for e in gt["events"]]
    for kind in ("prize_shown", "covered", "act_phase", "lifted", "episode_end"):
        assert kind in kinds
    assert lifted["cup"] == gt["answer"]["cup"]
    pos = np.array(gt["objects"]["prize"]["positions_m"])
    assert pos.shape == (len(times), 3)


def test_wrong_answer_fails():
    """The success criteria discriminate: acting on a wrong memory fails."""
    for task, wrong in (
        ("cups", lambda env: env.cups[(env.answer_index + 1) % 3]),
        ("count", lambda env: env.n_tokens % 4 + 1),
    ):
        env = make(task)
        env.reset(seed=0)
        policy = ExpertPolicy()
        policy.reset(env)
        policy._answer = lambda env=env, wrong=wrong: wrong(env)
        obs, info = env.reset(seed=0)
        policy.reset(env)
        policy._answer = lambda env=env, wrong=wrong: wrong(env)
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info).actions[0])
            if terminated or truncated:
                break
        assert not info["success"], task


def test_gripper_holds_by_friction_only():
    """No welds or equality constraints; a lifted cube falls when the gripper opens."""
    env = make("put_back")
    assert env.model.neq == 0
    env.reset(seed=0)
    policy = ExpertPolicy()
    policy.reset(env)
    obs, info = env.reset(seed=0)
    policy.reset(env)
    z0 = env.table_z_m
    while env.body_pos("cube_red")[2] < z0 + 0.1:  # until the expert has lifted the cube
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info).actions[0])
        assert not (terminated or truncated)
    for _ in range(5):  # hold still: the cube stays up
        env.step(np.array([0, 0, 0, 0, 1.0], np.float32))
    assert env.body_pos("cube_red")[2] > z0 + 0.09
    for _ in range(8):  # open: it drops to the table (or tray)
        env.step(np.array([0, 0, 0, 0, 0.0], np.float32))
    assert env.body_pos("cube_red")[2] < z0 + 0.04


def test_where_heard_audio_is_loud_in_the_sound_room_only():
    env = make("where_heard")
    obs, info = env.reset(seed=2)
    policy = ExpertPolicy()
    policy.reset(env)
    rms, times = [], []
    while info["phase"] == "show":
        obs, _, _, _, info = env.step(policy.act(obs, info).actions[0])
        rms.append(float(np.sqrt(np.mean(obs["audio"] ** 2))))
        times.append(env.t)
    rms, times = np.array(rms), np.array(times)
    sounds = env.ground_truth()["sounds"]
    assert len(sounds) == 2 and sounds[0]["room"] != sounds[1]["room"]
    during = np.zeros(len(times), bool)
    for s in sounds:
        during |= (times > s["start_s"] + 0.1) & (times <= s["end_s"])
    assert rms[during].mean() > 20 * rms[~during].mean()
    assert env.audio.chunk(0.0, 16, np.zeros(3)).dtype == np.float32


def test_fetch_seen_target_was_seen_and_is_out_of_view_at_decision():
    env = make("fetch_seen")
    for seed in range(3):
        ok, _, info = run_episode(env, ExpertPolicy(), seed=seed)
        gt = env.ground_truth()
        answer = gt["answer"]
        assert ok
        assert len(answer["seen_at_s"]) >= 3
        assert max(answer["seen_at_s"]) < gt["decision_time_s"]
        times = np.array(gt["times_s"])
        visible = np.array(gt["objects"][answer["object"]]["visible"], bool)
        assert not visible[np.isclose(times, gt["decision_time_s"])].any()
        assert "Go to the" in info["instruction"]
