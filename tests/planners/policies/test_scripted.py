"""The scripted policies behind the one ``Policy`` base, found through the registry."""

from __future__ import annotations

import numpy as np
import pytest

from engram.planners.policies.base import Policy
from engram.planners.policies.scripted import ExpertPolicy, ReactivePolicy, StopPolicy
from engram.runtime import registry
from engram.runtime.messages import ActionChunk
from engram.sim.tasks.spec import make_env


@pytest.mark.parametrize(
    ("name", "cls"), [("expert", ExpertPolicy), ("reactive", ReactivePolicy), ("stop", StopPolicy)]
)
def test_registered_as_policies(name, cls):
    assert registry.get("policy", name) is cls
    assert issubclass(cls, Policy) and cls.name == name


def test_policies_share_the_lifecycle_and_return_one_action_chunks():
    env = make_env("cups")
    try:
        obs, info = env.reset(seed=0)
        for name in ("expert", "reactive", "stop"):
            policy = registry.get("policy", name)(seed=0)
            with pytest.raises(ValueError, match="environment"):
                policy.reset()  # a scripted policy needs its environment
            policy.reset(env)
            chunk = policy.act(obs, info)
            assert isinstance(chunk, ActionChunk) and chunk.actions.shape[0] == 1
            assert chunk.action_space == env.controller.space.name
            assert chunk.dt_s == env.config.control_dt_s
            np.testing.assert_array_equal(chunk.actions[0], env.stop_action())  # show phase
            policy.observe(obs, info)
            policy.close()
    finally:
        env.close()


def test_act_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        ExpertPolicy().act({}, {"phase": "act"})
