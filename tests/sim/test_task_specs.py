"""Every registered task: its ``TaskSpec`` is complete and consistent, and the task is a
gymnasium environment (``gymnasium.make("engram/<task>-v0")`` passes ``check_env``)."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import pytest

from engram.runtime import registry
from engram.runtime.registry import load
from engram.sim.tasks import register_gymnasium
from engram.sim.tasks.spec import TaskSpec, make_env

TASKS = registry.known("task")


def test_the_six_tasks_are_registered():
    assert set(TASKS) >= {
        "cups",
        "button_sequence",
        "put_back",
        "count",
        "fetch_seen",
        "where_heard",
    }
    assert [t for t in TASKS if registry.get("task", t).lifelong] == [
        "button_sequence",
        "count",
        "cups",
    ]


@pytest.mark.parametrize("task", TASKS)
def test_spec_is_complete(task):
    from engram.planners.planning.recipes import Recipe

    spec = registry.get("task", task)
    assert isinstance(spec, TaskSpec) and spec.name == task
    assert spec.kind in ("tabletop", "apartment")
    assert 0.0 < spec.chance < 1.0
    assert spec.instruction_patterns and all(re.compile(p) for p in spec.instruction_patterns)
    assert issubclass(load(spec.recipe), Recipe)
    env = make_env(task, width_px=32, height_px=24)
    try:
        assert env.task_name == task
        assert spec.chance == pytest.approx(env.chance_success)  # the default config's
        assert (env.observer_camera == "head") == (spec.kind == "apartment")
        # the act-phase instruction is recognised by the task's own patterns
        env.reset(seed=0)
        for _ in range(2000):
            _, _, terminated, truncated, info = env.step(env.action_space.sample() * 0)
            if info["phase"] == "act" or terminated or truncated:
                break
        text = info["instruction"]
        assert any(re.search(p, text, re.I) for p in spec.instruction_patterns), text
    finally:
        env.close()


def test_sound_names_are_what_where_heard_asks_about():
    spec = registry.get("task", "where_heard")
    assert set(spec.sound_names) == {"doorbell", "kettle whistling", "phone ringing"}


@pytest.mark.parametrize("task", TASKS)
def test_gymnasium_make_and_check_env(task):
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    assert f"engram/{task}-v0" in register_gymnasium()
    env = gymnasium.make(f"engram/{task}-v0", width_px=32, height_px=24, obs_images=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # infinite Box bounds, asymmetric action box
            check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_importing_the_task_package_loads_no_simulator():
    code = (
        "import sys, engram.sim, engram.sim.tasks, engram.sim.tasks.spec, gymnasium\n"
        "assert 'engram/cups-v0' in gymnasium.registry\n"
        "assert 'mujoco' not in sys.modules, 'mujoco imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
