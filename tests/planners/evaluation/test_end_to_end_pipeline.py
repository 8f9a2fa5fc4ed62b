"""The learned expert end to end through the full pipeline (sim -> perception -> policy
node -> sim, the shipped checkpoint): the node watches the show phase and acts only
after the sim's "act" instruction, and lifts the cup that hides the cube. Before the
phase was on the bus the node acted from the first step and this failed (cups 0/10)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from engram.planners.evaluation.pipeline import EvalConfig, Pipeline  # noqa: E402


def test_the_end_to_end_expert_watches_the_show_then_lifts_the_right_cup():
    pipe = Pipeline("cups", 601, config=EvalConfig.quick(), executor="expert", mode="end_to_end")
    node = pipe.policy_node
    phases: list[str] = []  # the simulator's phase at each chunk the expert samples
    act = node.policy.act

    def recording_act(*args, **kwargs):
        phases.append(pipe.sim.env.phase)
        return act(*args, **kwargs)

    node.policy.act = recording_act
    (report,) = pipe.run()
    assert phases and set(phases) == {"act"}, phases[:5]
    decision_steps = round(report["decision_time_s"] / pipe.sim.config.control_dt_s)
    assert node.counters["holds"] >= decision_steps  # every show step held and watched
    assert report["success"], report
