"""The expert as the executor: waypoint actions, subgoal completion, the planner's wait.

- Waypoint labels are lossless: tracked by the executor's law from the measured pose
  they give back the scripted expert's own deltas, and replaying them succeeds (real
  MuJoCo).
- ``SubgoalTracker`` ends each subgoal of a scripted put_back demonstration where its
  training segment ends, and fails a grasp that closed on nothing.
- With ``executor: expert`` the planner holds a motion subgoal until the executor's
  report for *that* subgoal arrives (kinematic table, no simulator).
"""

from __future__ import annotations

import numpy as np

from engram.planners.planning.node import PlannerNode, PlannerNodeConfig
from engram.planners.policies.completion import SubgoalTracker
from engram.planners.policies.diffusion import features as F
from engram.planners.policies.diffusion.data import _stratified
from engram.planners.policies.scripted import ExpertPolicy
from engram.runtime.bus import InProcBus
from engram.runtime.messages import Instruction, PlanStep
from tests.planners._world import KinematicTable


def _demo(task: str, seed: int):
    from engram.sim.envs import make

    env = make(task)
    obs, info = env.reset(seed=seed)
    policy = ExpertPolicy()
    policy.reset(env)
    robot, actions, act = [], [], []
    while True:
        a = policy.act(obs, info).actions[0]
        robot.append(obs["robot"].copy())
        actions.append(a)
        act.append(info.get("phase") == "act")
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            break
    assert info["success"]
    return env, np.array(robot), np.array(actions), np.array(act)


def test_waypoint_labels_give_back_the_demonstration():
    for task in ("cups", "put_back"):
        env, robot, actions, act = _demo(task, 3)
        wps = F.waypoint_labels(robot, actions)
        # tracked from the pose measured at each step: the recorded deltas (a move the
        # episode ends in has no end to read its target from: sub-mm there)
        back = np.stack(
            [F.waypoints_to_deltas(wps[t : t + 1], robot[t])[0] for t in range(len(wps))]
        )
        assert np.allclose(back[act], actions[act], atol=5e-4), task  # < 0.5 mm
        # and replayed closed loop in the simulator they solve the task again
        obs, info = env.reset(seed=3)
        for t in range(len(wps)):
            a = F.waypoints_to_deltas(wps[t : t + 1], obs["robot"])[0] if act[t] else actions[t]
            obs, _, term, trunc, info = env.step(a)
            if term or trunc:
                break
        assert info["success"], task
        env.close()


def test_tracker_ends_subgoals_where_the_training_segments_end():
    env, robot, actions, act = _demo("put_back", 5)
    objects = np.zeros((len(robot), 1, 5), np.float32)
    env.close()
    # the segments' ends by the labelling rule (objects do not matter for the ends)
    labels = F.label_subgoals(robot, actions, act, objects, ["cube_red"])
    ends, skills = [], []
    for t in range(len(labels) - 1):
        if labels[t] is not None and (labels[t + 1] is None or labels[t + 1] is not labels[t]):
            ends.append(t)
            skills.append(labels[t][0].split()[0])
    assert skills[:4] == ["pick", "place", "press", "pick"]
    tracker = SubgoalTracker()
    t = int(np.flatnonzero(act)[0])
    grip = 0.0
    for skill, end in zip(skills[:4], ends[:4]):
        tracker.start(skill, robot[t], gripper=grip)
        verdict = None
        while verdict is None:
            verdict = tracker.update(actions[t], robot[t])
            grip = float(actions[t, 4])
            t += 1
        assert verdict[0] == "succeeded", (skill, verdict)
        assert abs((t - 1) - end) <= 2, (skill, t - 1, end)
    # fingers closing on nothing: a failed pick, not a success
    tracker.start("pick", robot[0])
    shut = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
    empty = robot[0].copy()
    empty[4] = 0.0
    out = [tracker.update(shut, empty) for _ in range(3)]
    assert out[-1] == ("failed", "the gripper closed on nothing")


def test_planner_waits_for_the_executors_report_on_the_running_subgoal():
    bus = InProcBus("t-executor")
    bus.serve("/memory/query", lambda q: None)
    node = PlannerNode(
        PlannerNodeConfig(autotick=False, heartbeat_hz=0.0, executor="expert", use_memory=False),
        bus=bus,
    )
    steps: list[PlanStep] = []
    node.loop.on_step = steps.append
    published = []
    bus.subscribe("/actions", "queue(8)")  # nothing may arrive: the expert moves the arm
    node.publish = lambda port, msg: published.append(port)  # type: ignore[method-assign]
    world = KinematicTable(
        {
            "cube_red": ([0.1, 0.0, 0.42], [0.04, 0.04, 0.04]),
            "tray": ([-0.15, 0.05, 0.41], [0.16, 0.12, 0.02]),
        }
    )
    node.on_instruction(Instruction(stamp_ns=0, text="Put the red cube on the tray."))

    def tick(n: int) -> None:
        for _ in range(n):
            world.t_ns += 100_000_000
            node.on_robot_state(world.robot_state())
            node.on_percepts(world.percept())
            node.step()

    tick(30)  # no report: the pick stays running however long it takes
    running = [s for s in steps if s.status == "running"]
    assert [s.skill for s in running] == ["pick"] and "actions" not in published
    pick = running[0]
    report = {"skill": "pick", "args": {"object": "cube_red"}, "status": "succeeded"}
    wrong = PlanStep(**{**report, "args": {"object": "cube_red", "subgoal_seq": pick.seq + 99}})
    node.on_subgoal_status(wrong)  # about another subgoal: ignored
    tick(5)
    assert not any(s.status == "succeeded" for s in steps)
    # the executor lifted the cube and says so: the critic checks it, the place runs
    world.held = "cube_red"
    world.closure = 1.0
    world.objects["cube_red"][2] += 0.1
    world.ee = world.objects["cube_red"] + [0.0, 0.0, 0.02]
    node.on_subgoal_status(
        PlanStep(**{**report, "args": {"object": "cube_red", "subgoal_seq": pick.seq}})
    )
    tick(5)
    assert [(s.skill, s.status) for s in steps][-2:] == [
        ("pick", "succeeded"),
        ("place", "running"),
    ]
    place = steps[-1]
    node.on_subgoal_status(
        PlanStep(
            skill="place",
            args={"subgoal_seq": place.seq},
            status="failed",
            reason="not finished after 150 steps",
        )
    )
    tick(3)
    failed = [s for s in steps if s.skill == "place" and s.status == "failed"]
    assert failed and "executor: not finished" in failed[0].reason


def test_memory_samples_cover_every_stretch_of_the_past():
    rng = np.random.default_rng(0)
    for _ in range(50):
        past = _stratified(rng, 80, 16)
        assert len(set(past.tolist())) == 16 and (np.diff(past) > 0).all()
        # every 5-step stretch (a light of the show phase) has a sample
        assert all(((past >= s) & (past < s + 5)).any() for s in range(0, 80, 5))


def test_an_external_press_beside_the_cap_is_not_a_press():
    """The critic checks an expert's press from the views: depth counts only over the cap."""
    from engram.planners.planning.loop import _external_notes
    from engram.planners.planning.skills.base import WorldView, make_skill

    world = KinematicTable({"button_blue_cap": ([0.1, 0.0, 0.43], [0.03, 0.03, 0.01])})

    def view() -> WorldView:
        return WorldView.from_percepts([world.percept()], world.robot_state())

    before = view()
    for dx in (0.0, 0.05):  # straight over the cap, then 5 cm beside it
        skill = make_skill("press")
        trace = []
        for z in (0.55, 0.47, 0.45, 0.47):
            world.ee = np.array([0.1 + dx, 0.0, z])
            trace.append(view())
        _external_notes(skill, {"object": "button_blue_cap"}, before, trace)
        verdict = skill.check(before, trace[-1], trace, {"object": "button_blue_cap"})
        assert verdict.ok == (dx == 0.0), (dx, verdict)
