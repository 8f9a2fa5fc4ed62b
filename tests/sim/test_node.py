"""The sim node on a bus: publishes sensors, executes ActionChunks, watchdog, clocks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engram.runtime.bus import InProcBus
from engram.runtime.messages import ActionChunk, AudioChunk, Frame, Instruction, RobotState
from engram.runtime.node import load_node_class
from engram.sim.node import SimNode, SimNodeConfig
from engram.sim.robots import ROBOT_PART_LABELS


def _drain(sub) -> list:
    return sub.drain()


def test_registered_and_declared():
    assert load_node_class("sim") is SimNode
    assert SimNode.INPUTS["actions"].type == "ActionChunk"
    outs = {k: v.type for k, v in SimNode.OUTPUTS.items()}
    assert outs["frames"] == "Frame" and outs["robot_state"] == "RobotState"
    assert outs["audio"] == "AudioChunk" and outs["instruction"] == "Instruction"
    with pytest.raises(ValueError, match="clock"):
        SimNode(SimNodeConfig(clock="sometimes"), bus=InProcBus("x"))


def test_lockstep_episode_publishes_frames_state_and_instruction():
    bus = InProcBus("sim-test-1")
    frames = bus.subscribe("/frames", "all(256)")
    states = bus.subscribe("/robot_state", "all(256)")
    instr = bus.subscribe("/instruction", "all(8)")
    executed = bus.subscribe("/sim/executed_actions", "all(256)")
    node = SimNode(
        SimNodeConfig(task="cups", seed=2, width_px=64, height_px=48, camera_rate_hz=5.0),
        bus=bus,
    )
    with node:
        assert node.wait(120)
    report = node.reports[0]
    assert report["success"] and not report["external_control"]
    got_frames = _drain(frames)
    got_states = _drain(states)
    assert all(isinstance(f, Frame) for f in got_frames)
    assert len(got_frames) == pytest.approx(report["sim_time_s"] * 5, abs=1.5)
    f = got_frames[-1]
    assert f.rgb.shape == (48, 64, 3) and f.depth.shape == (48, 64)
    assert f.segmentation.dtype == np.int32 and "prize" in f.labels.values()
    # the robot's own parts come from the robot description, listed in every frame
    assert f.robot_labels and set(f.robot_labels) <= ROBOT_PART_LABELS
    assert "prize" not in f.robot_labels
    stamps = [m.stamp_ns for m in got_frames]
    assert stamps == sorted(stamps) and stamps[1] - stamps[0] == 200_000_000  # sim time, 5 Hz
    assert isinstance(got_states[0], RobotState) and got_states[0].world_from_ee is not None
    assert len(got_states) == report["steps"] + 1
    texts = [m.text for m in _drain(instr)]
    assert isinstance(texts[0], str) and "cup" in texts[0]
    assert len(_drain(executed)) == report["steps"]
    bus.close()


def _ee_z(states: list[RobotState]) -> np.ndarray:
    return np.array([s.world_from_ee[2, 3] for s in states])


def _put_back_node(bus: InProcBus, **config) -> SimNode:
    """put_back (0.2 s show phase, arm_ee_delta actions) driven by ActionChunks only."""
    base = dict(task="put_back", driver="actions", camera_rate_hz=0.0)
    return SimNode(SimNodeConfig(**{**base, **config}), bus=bus)


def _raise_arm(steps: int) -> ActionChunk:
    """``steps`` actions of +2 cm in z (arm_ee_delta: dx, dy, dz, dyaw, grip)."""
    up = np.tile(np.array([[0.0, 0.0, 0.02, 0.0, 0.0]], np.float32), (steps, 1))
    return ActionChunk(action_space="arm_ee_delta", actions=up, dt_s=0.1)


def test_action_chunk_execution_and_watchdog():
    """A chunk raising the arm is executed step by step; the watchdog stops the arm when
    no chunk arrives for watchdog_timeout_s (sim time in lock-step), mid-chunk."""
    bus = InProcBus("sim-test-2")
    states = bus.subscribe("/robot_state", "all(256)")
    node = _put_back_node(bus, watchdog_timeout_s=0.45, wait_for_actions_s=3.0, max_steps=20)
    with node:
        # a wrong chunk is rejected without harm, then a good one is executed
        wrong = ActionChunk(action_space="base_velocity", actions=np.zeros((3, 3), np.float32))
        bus.publish("/actions", wrong)
        deadline = time.monotonic() + 60
        while node.counters.get("chunks_rejected", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        bus.publish("/actions", _raise_arm(50))
        assert node.wait(120)
    report = node.reports[0]
    assert report["external_control"] and report["chunks_rejected"] == 1
    assert report["watchdog_stops"] > 0
    z = _ee_z(_drain(states))
    rise = z[-1] - z[0]
    # a few 2 cm steps (those after the 0.2 s show phase, within 0.45 s of the chunk's
    # arrival) are executed, then the watchdog stops the arm: not the chunk's full metre
    assert 0.03 < rise < 0.12, rise
    assert np.all(np.abs(np.diff(z[-8:])) < 0.002)  # stopped and holding
    assert node.counters["chunks_rejected"] == 1


def test_chunk_runs_out_then_robot_stops():
    bus = InProcBus("sim-test-3")
    states = bus.subscribe("/robot_state", "all(256)")
    node = _put_back_node(bus, watchdog_timeout_s=5.0, wait_for_actions_s=0.05, max_steps=25)
    with node:
        bus.publish("/actions", _raise_arm(8))
        assert node.wait(120)
    z = _ee_z(_drain(states))
    rise = z[-1] - z[0]
    assert 0.09 < rise < 0.14, rise  # 6 of the 8 actions fall after the show phase
    assert np.all(np.abs(np.diff(z[-8:])) < 0.002)
    assert node.reports[0]["watchdog_stops"] > 5


def test_apartment_node_publishes_scene_audio():
    bus = InProcBus("sim-test-4")
    audio = bus.subscribe("/audio", "all(1024)")
    instr = bus.subscribe("/instruction", "all(8)")
    node = SimNode(SimNodeConfig(task="where_heard", seed=1, camera_rate_hz=0.0), bus=bus)
    with node:
        assert node.wait(180)
    report = node.reports[0]
    chunks = _drain(audio)
    assert report["success"] and len(chunks) == report["steps"]
    assert all(isinstance(c, AudioChunk) and c.sample_rate_hz == 16000 for c in chunks)
    assert chunks[0].pcm.shape == (1600, 1) and chunks[0].world_from_mic is not None
    rms = np.array([np.sqrt(np.mean(c.pcm**2)) for c in chunks])
    assert rms.max() > 20 * np.median(rms)  # the sounds stand out of the noise
    texts = [m.text for m in _drain(instr) if isinstance(m, Instruction)]
    assert len(texts) == 2 and texts[1].startswith("Go to the room where you heard")


def test_realtime_clock_paces_to_the_wall_clock():
    bus = InProcBus("sim-test-5")
    states = bus.subscribe("/robot_state", "all(256)")
    node = SimNode(SimNodeConfig(task="cups", clock="realtime", camera_rate_hz=0.0), bus=bus)
    node.start()
    first = states.get(timeout_s=60)  # the env is built and stepping
    assert first is not None
    time.sleep(1.0)
    node.stop()
    got = [first, *_drain(states)]
    stamps = np.array([s.stamp_ns for s in got]) / 1e9
    assert abs(stamps[0] - time.time()) < 30  # wall-clock stamps, not simulation time
    assert len(got) >= 3
    # about one state per 0.1 s control step, not the thousands per second of lock-step
    assert np.mean(np.diff(stamps)) > 0.07
    assert len(got) <= 20


def test_bad_task_is_reported_not_fatal():
    bus = InProcBus("sim-test-6")
    node = SimNode(SimNodeConfig(task="no_such_task"), bus=bus)
    with node:
        assert node.wait(30)
    assert "no_such_task" in node.error and node.reports == []


def test_external_pacing_hooks_clock_stamps_and_hidden_show():
    """The harness API: pace() before every step's action (here it sends the step's
    chunk and waits for it), on_episode_end at each end, stamp_ns() on the node's clock,
    no frames during the show phase."""
    bus = InProcBus("sim-test-7")
    frames = bus.subscribe("/frames", "all(64)")
    states = bus.subscribe("/robot_state", "all(64)")
    paced: list[tuple[int, bool]] = []
    ends: list[tuple[int, float]] = []

    def pace() -> None:
        bus.publish("/actions", _raise_arm(1))
        paced.append((node.stamp_ns(), node.wait_for_chunk(30.0)))

    def on_episode_end(report: dict, env) -> None:
        ends.append((node.stamp_ns(), report["sim_time_s"]))

    node = SimNode(
        SimNodeConfig(
            task="put_back",
            driver="actions",
            episodes=2,
            max_steps=5,
            width_px=32,
            height_px=24,
            camera_rate_hz=10.0,
            hide_show_frames=True,
        ),
        bus=bus,
        pace=pace,
        on_episode_end=on_episode_end,
    )
    assert not node.wait_for_chunk(0.01)  # nothing received yet
    with node:
        assert node.wait(120)
    assert node.error == ""
    assert [r["steps"] for r in node.reports] == [5, 5]
    assert all(r["external_control"] and r["watchdog_stops"] == 0 for r in node.reports)
    stamps = np.array([p[0] for p in paced])
    assert len(paced) == 10 and all(p[1] for p in paced)  # each step's chunk arrived
    # lockstep: one 0.1 s control step apart, continuing across the two episodes
    assert np.all(np.diff(stamps) == 100_000_000), stamps
    # at an episode's end the clock reads that end; the last state message carries it
    assert [e[0] for e in ends] == [500_000_000, 1_000_000_000]
    assert [e[1] for e in ends] == pytest.approx([0.5, 0.5])
    assert _drain(states)[-1].stamp_ns == ends[-1][0]
    # put_back's show phase is 0.2 s: 2 of each episode's 5 frames are held back
    got = _drain(frames)
    assert node.counters["frames_hidden"] == 4 and len(got) == 6
    assert min(f.stamp_ns % 500_000_000 for f in got) >= 200_000_000
    bus.close()


def test_request_stop_from_the_pace_hook_ends_the_run():
    bus = InProcBus("sim-test-8")
    calls: list[int] = []

    def pace() -> None:
        calls.append(node.stamp_ns())
        if len(calls) == 3:
            node.request_stop()  # from the simulation thread itself

    node = SimNode(
        SimNodeConfig(task="put_back", driver="stop", episodes=0, camera_rate_hz=0.0),
        bus=bus,
        pace=pace,
    )
    with node:
        assert node.wait(120)
        assert not node.wait_for_chunk(5.0)  # stopping: returns at once
    assert len(calls) == 3 and node.reports == [] and node.error == ""
    bus.close()


def test_camera_mode_publishes_rgbd_and_pose_only():
    """``perception: camera`` withholds the simulator's privileges: no segmentation, no
    body names, no robot part list; the episode itself is unchanged."""
    bus = InProcBus("sim-test-camera")
    frames = bus.subscribe("/frames", "all(256)")
    node = SimNode(
        SimNodeConfig(
            task="cups", seed=2, width_px=64, height_px=48, camera_rate_hz=5.0,
            perception="camera",
        ),
        bus=bus,
    )  # fmt: skip
    with node:
        assert node.wait(120)
    assert node.reports[0]["success"]
    got = _drain(frames)
    assert got and all(f.segmentation is None and not f.labels for f in got)
    assert all(not f.robot_labels for f in got)
    assert got[-1].depth.shape == (48, 64) and got[-1].world_from_camera.shape == (4, 4)
    with pytest.raises(ValueError, match="perception"):
        SimNode(SimNodeConfig(perception="oracle"), bus=InProcBus("x2"))


def test_the_instruction_is_published_again_when_the_show_phase_ends():
    """The sim says when the show phase ends: the episode's ``Instruction`` comes with
    ``phase`` "show" and again, same text and episode, with "act" at the step the robot
    takes control (a policy acting end to end watches until then)."""
    bus = InProcBus("sim-phase-1")
    instr = bus.subscribe("/instruction", "all(8)")
    states = bus.subscribe("/robot_state", "all(256)")
    node = SimNode(SimNodeConfig(task="cups", seed=2, camera_rate_hz=0.0), bus=bus)
    with node:
        assert node.wait(120)
    got = [m for m in _drain(instr) if isinstance(m, Instruction)]
    assert [m.phase for m in got] == ["show", "act"]
    show, act = got
    assert act.text == show.text and "cup" in show.text
    assert act.episode_id == show.episode_id == "cups-2" and act.task == "cups"
    # "act" comes with the first step the robot controls: the decision time
    decision_ns = round(node.reports[0]["decision_time_s"] * 1e9)
    assert show.stamp_ns == 0 < act.stamp_ns == decision_ns
    stamps = [s.stamp_ns for s in _drain(states) if isinstance(s, RobotState)]
    assert act.stamp_ns in stamps  # published with that step's robot state
    bus.close()
