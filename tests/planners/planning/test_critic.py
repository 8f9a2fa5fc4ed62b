"""The critic's checks and the loop detector, on hand-made world views."""

from __future__ import annotations

import numpy as np

from engram.planners.planning.critic import (
    Critic,
    LoopConfig,
    LoopDetector,
    subgoal_key,
    world_signature,
)
from engram.planners.planning.plans import Subgoal
from engram.planners.planning.skills.base import ObjectView, Verdict, WorldView, make_skill
from engram.planners.planning.skills.scene import SceneMonitor
from engram.runtime.messages import Percept, RobotState

from .._world import make_percept


def _robot(ee, *, width_m: float = 0.1, stamp_ns: int = 0) -> RobotState:
    pose = np.eye(4)
    pose[:3, :3] = np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = ee
    return RobotState(stamp_ns=stamp_ns, world_from_ee=pose, gripper_width_m=width_m)


def _view(objects: dict, ee=(0.0, 0.0, 0.7), *, width_m: float = 0.1) -> WorldView:
    views = {
        label: ObjectView(label, i, np.array(p, float), np.array(e, float), 0)
        for i, (label, (p, e)) in enumerate(objects.items())
    }
    return WorldView(views, _robot(ee, width_m=width_m))


CUBE = [0.04, 0.04, 0.04]


def test_pick_postcondition_sees_the_object_rise_with_the_gripper():
    critic = Critic()
    before = _view({"cube": ([0.1, 0.0, 0.42], CUBE)})
    held = _view({"cube": ([0.1, 0.0, 0.56], CUBE)}, ee=(0.1, 0.0, 0.58), width_m=0.04)
    left = _view({"cube": ([0.1, 0.0, 0.42], CUBE)}, ee=(0.1, 0.0, 0.58), width_m=0.0)
    sg = Subgoal("pick", {"object": "cube"})
    assert critic.evaluate(sg, make_skill("pick"), before, held, []).ok
    v = critic.evaluate(sg, make_skill("pick"), before, left, [])
    assert not v.ok and "did not rise" in v.reason
    gone = critic.evaluate(sg, make_skill("pick"), before, _view({}), [])
    assert not gone.ok and "not in view" in gone.reason
    assert critic.evaluations == 3 and critic.failures == 2


def test_place_postcondition_measures_the_error_to_the_target():
    critic = Critic()
    sg = Subgoal("place", {"object": "cube", "target": [0.2, 0.1]})
    before = _view({"cube": ([0.0, 0.0, 0.56], CUBE)}, ee=(0.0, 0.0, 0.58), width_m=0.04)
    near = _view({"cube": ([0.21, 0.1, 0.42], CUBE)}, ee=(0.21, 0.1, 0.58))
    far = _view({"cube": ([0.26, 0.1, 0.42], CUBE)}, ee=(0.26, 0.1, 0.58))
    still_held = _view({"cube": ([0.2, 0.1, 0.56], CUBE)}, ee=(0.2, 0.1, 0.58), width_m=0.04)
    ok = critic.evaluate(sg, make_skill("place"), before, near, [])
    assert ok.ok and abs(ok.details["error_m"] - 0.01) < 1e-6
    bad = critic.evaluate(sg, make_skill("place"), before, far, [])
    assert not bad.ok and "from the target" in bad.reason
    assert not critic.evaluate(sg, make_skill("place"), before, still_held, []).ok


def test_expectations_visible_near_absent_and_memory_agreement():
    critic = Critic()
    cup = ([0.0, 0.0, 0.6], [0.07, 0.07, 0.09])
    before = _view({"cup": ([0.0, 0.0, 0.445], [0.07, 0.07, 0.09])})
    lifted_with_prize = _view(
        {"cup": cup, "prize": ([0.0, 0.01, 0.415], [0.03] * 3)}, ee=(0, 0, 0.62)
    )
    lifted_empty = _view({"cup": cup}, ee=(0, 0, 0.62))
    sg = Subgoal(
        "lift", {"object": "cup"}, expect={"visible": "prize", "near": [0.0, 0.0], "radius_m": 0.05}
    )
    assert critic.evaluate(sg, make_skill("lift"), before, lifted_with_prize, []).ok
    v = critic.evaluate(sg, make_skill("lift"), before, lifted_empty, [])
    assert not v.ok and "expected to see prize" in v.reason
    far = Subgoal(
        "lift", {"object": "cup"}, expect={"visible": "prize", "near": [0.3, 0.0], "radius_m": 0.05}
    )
    assert (
        "expected" in critic.evaluate(far, make_skill("lift"), before, lifted_with_prize, []).reason
    )
    absent = Subgoal("wait", {}, expect={"absent": "prize"})
    assert not critic.evaluate(absent, make_skill("wait"), before, lifted_with_prize, []).ok

    class Remembers:
        def __init__(self, pos):
            self.pos = pos

        def object_position(self, label):
            return (np.array(self.pos), 0)

    agree = Subgoal("wait", {}, expect={"memory_agrees": "cup"})
    assert critic.evaluate(
        agree, make_skill("wait"), before, before, [], grounding=Remembers([0, 0, 0.445])
    ).ok
    stale = critic.evaluate(
        agree, make_skill("wait"), before, before, [], grounding=Remembers([0.3, 0, 0.445])
    )
    assert not stale.ok and "memory has cup" in stale.reason


def test_press_postcondition_uses_the_depth_reached():
    critic = Critic()
    skill = make_skill("press")
    sg = Subgoal("press", {"object": "cap"})
    v = critic.evaluate(sg, skill, _view({}), _view({}), [])
    assert not v.ok and "did not start" in v.reason
    skill.notes.update(cap_top_z=0.44, lowest_z=0.44 + 0.036 - 0.010)
    assert critic.evaluate(sg, skill, _view({}), _view({}), []).ok
    skill.notes.update(lowest_z=0.44 + 0.036 - 0.002)
    assert "deep" in critic.evaluate(sg, skill, _view({}), _view({}), []).reason


def test_loop_detector_bounds_retries_then_asks_for_an_alternative_then_aborts():
    loop = LoopDetector(LoopConfig(max_retries=2, max_alternatives=1))
    key = subgoal_key("pick", {"object": "cube"})
    fail = Verdict(False, "did not rise")
    # different world states each time: genuine retries
    assert loop.record(key, fail, ("s", 1)).action == "retry"
    assert loop.record(key, fail, ("s", 2)).action == "retry"
    d = loop.record(key, fail, ("s", 3))
    assert d.action == "alternative" and "failed 3 times" in d.reason
    alt = subgoal_key("pick", {"object": "cube", "grasp_dz_m": -0.006})
    assert loop.record(alt, fail, ("s", 4)).action == "retry"
    assert loop.record(alt, fail, ("s", 5)).action == "retry"
    assert loop.record(alt, fail, ("s", 6)).action == "abort"
    assert [f["action"] for f in loop.fired] == ["alternative", "abort"]


def test_loop_detector_sees_no_progress_and_cycles():
    loop = LoopDetector()
    key = subgoal_key("press", {"object": "button_blue_cap"})
    same = ("world", 0)
    assert loop.record(key, Verdict(False, "pressed only 0.3 mm deep"), same).action == "retry"
    d = loop.record(key, Verdict(False, "pressed only 0.3 mm deep"), same)
    assert d.action == "alternative" and "no change" in d.reason
    # pick succeeds, place fails, again and again: a cycle of period 2
    loop = LoopDetector(LoopConfig(max_retries=10, max_cycle_repeats=2))
    pick, place = subgoal_key("pick", {"object": "c"}), subgoal_key("place", {"object": "c"})
    decisions = []
    for i in range(3):
        loop.record(pick, Verdict(True), ("w", i))
        decisions.append(loop.record(place, Verdict(False, "slipped"), ("w", i)).action)
    assert decisions == ["retry", "retry", "alternative"]
    assert loop.cycle() == 2
    # the same subgoal succeeding again and again is progress, not a loop
    loop = LoopDetector()
    press = subgoal_key("press", {"object": "blue"})
    for i in range(5):
        loop.record(press, Verdict(True), ("w", i))
    assert loop.cycle() == 0 and loop.record(press, Verdict(False, "x"), ("w", 9)).action == "retry"


def test_loop_detector_budget_aborts():
    loop = LoopDetector(LoopConfig(max_subgoals=5))
    for i in range(4):
        loop.record(f"k{i}", Verdict(True))
    assert loop.record("k9", Verdict(False, "x")).action == "abort"


def test_world_signature_and_keys_ignore_noise():
    a = _view({"cube": ([0.1, 0.0, 0.42], CUBE)})
    b = _view({"cube": ([0.1012, 0.0, 0.4201], CUBE)})
    c = _view({"cube": ([0.13, 0.0, 0.42], CUBE)})
    assert world_signature(a) == world_signature(b) != world_signature(c)
    assert subgoal_key("place", {"target": [0.1001, 0.2]}) == subgoal_key(
        "place", {"target": [0.1, 0.2004]}
    )


def test_scene_monitor_sees_lights_in_thumbnails():
    mon = SceneMonitor()
    thumb = np.full((48, 64, 3), 40, np.uint8)
    boxes = np.array([[4, 4, 12, 12], [24, 4, 32, 12], [44, 4, 52, 12]], np.int32)

    def percept(t: int, lit: int | None) -> Percept:
        img = thumb.copy()
        if lit is not None:
            x1, y1, x2, y2 = boxes[lit]
            img[y1:y2, x1:x2] = 240
        labels = ["button_red_cap", "button_green_cap", "button_blue_cap"]
        return make_percept(labels, stamp_ns=t, boxes=boxes, thumbnail=img, image_width_px=64)

    events = []
    for t, lit in enumerate([2, 2, None, 0, 0, None, 1, None, None]):
        events += mon.update(percept(t, lit))
    on = [label for kind, label, _ in events if kind == "light_on"]
    assert on == ["button_blue_cap", "button_red_cap", "button_green_cap"]
    assert not mon.lit and mon.light_events == 3


def test_watch_ends_when_the_show_is_over_or_there_is_nothing_to_watch():
    def run(frames: list[list[str]], until: str) -> int:
        """Steps of 0.1 s until watch ends; frames[i] = labels in view at step i."""
        mon = SceneMonitor()
        skill = make_skill("watch")
        state = {"i": 0}

        def world() -> WorldView:
            i = state["i"]
            p = make_percept(frames[min(i, len(frames) - 1)], stamp_ns=i * 100_000_000)
            if state.get("seen") != i:
                mon.update(p)
                state["seen"] = i
            return WorldView.from_percepts([p], _robot((0, 0, 0.7), stamp_ns=p.stamp_ns), scene=mon)

        for chunk in skill.run(
            world, {"until": until, "settle_s": 0.2, "max_s": 20.0, "hold_steps": 1}
        ):
            state["i"] += len(chunk)
        return state["i"]

    shown = [["cup_0", "prize"]] * 10 + [["cup_0"]] * 30
    assert run(shown, "hidden:prize") == 11  # 0.2 s after the prize was covered
    tokens = [["token_0", "token_1"]] * 8 + [[]] * 30
    assert run(tokens, "gone:token") == 9
    nothing = [["cup_0"]] * 40  # the show happened while the camera was off
    assert run(nothing, "hidden:prize") == 10  # nothing changed for 1 s: nothing to watch
