"""The sim node says when the show phase ends: the episode's ``Instruction`` comes with
``phase`` "show" and again, same text and episode, with "act" at the step the robot
takes control (a policy acting end to end watches until then)."""

from __future__ import annotations

from engram.runtime.bus import InProcBus
from engram.runtime.messages import Instruction, RobotState
from engram.sim.node import SimNode, SimNodeConfig


def test_the_instruction_is_published_again_when_the_show_phase_ends():
    bus = InProcBus("sim-phase-1")
    instr = bus.subscribe("/instruction", "all(8)")
    states = bus.subscribe("/robot_state", "all(256)")
    node = SimNode(SimNodeConfig(task="cups", seed=2, camera_rate_hz=0.0), bus=bus)
    with node:
        assert node.wait(120)
    got = [m for m in instr.drain() if isinstance(m, Instruction)]
    assert [m.phase for m in got] == ["show", "act"]
    show, act = got
    assert act.text == show.text and "cup" in show.text
    assert act.episode_id == show.episode_id == "cups-2" and act.task == "cups"
    # "act" comes with the first step the robot controls: the decision time
    decision_ns = round(node.reports[0]["decision_time_s"] * 1e9)
    assert show.stamp_ns == 0 < act.stamp_ns == decision_ns
    stamps = [s.stamp_ns for s in states.drain() if isinstance(s, RobotState)]
    assert act.stamp_ns in stamps  # published with that step's robot state
    bus.close()
