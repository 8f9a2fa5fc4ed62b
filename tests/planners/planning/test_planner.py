"""The planner node on an in-process bus with hand-made percepts and memory recalls.

A kinematic tabletop (``_world.py``) executes the action chunks; a stub memory
service answers ``/memory/query`` with hand-made hits. No simulator, no models.
"""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest

from engram.planners.planning.grounding import Grounding, layout_key
from engram.planners.planning.memory_client import MemoryClient
from engram.planners.planning.node import PlannerNode, PlannerNodeConfig
from engram.planners.planning.planner import detect_task
from engram.planners.planning.reasoner import LLMPlanner, OpenAIReasoner, ReasonerError, parse_steps
from engram.planners.planning.skills.base import WorldView, estimate_yaw, resolve_label
from engram.runtime.bus import InProcBus
from engram.runtime.messages import Instruction, MemoryQuery, Recall
from tests.planners._world import KinematicTable

CUPS = {
    "cup_0": ([-0.15, 0.0, 0.445], [0.07, 0.07, 0.09]),
    "cup_1": ([0.0, 0.05, 0.445], [0.07, 0.07, 0.09]),
    "cup_2": ([0.15, 0.0, 0.445], [0.07, 0.07, 0.09]),
    "prize": ([0.0, 0.05, 0.415], [0.03, 0.03, 0.03]),
}
CUPS_TEXT = "Watch the yellow cube. Then lift the cup that hides it."


def _hit(label: str, pos, *, memory: str = "episodic", kind: str = "object", text: str = ""):
    return {
        "memory": memory,
        "score": 1.0,
        "text": text or f"{label} (object) at {pos}",
        "stamp_ns": 100_000_000,
        "position": list(pos),
        "data": {"kind": kind, "label": label, "last_seen_ns": 100_000_000},
    }


class StubMemory:
    """Answers /memory/query from a function of the query; records the queries."""

    def __init__(self, bus: InProcBus, answer) -> None:
        self.queries: list[MemoryQuery] = []
        self.answer = answer
        bus.serve("/memory/query", self.serve)

    def serve(self, q: MemoryQuery) -> Recall:
        self.queries.append(q)
        return Recall(query_seq=q.seq, query_text=q.text, hits=self.answer(q))


def _node(bus: InProcBus, **cfg) -> tuple[PlannerNode, list]:
    node = PlannerNode(PlannerNodeConfig(autotick=False, heartbeat_hz=0.0, **cfg), bus=bus)
    steps: list = []
    node.loop.on_step = steps.append  # collect the plan steps as they are published
    return node, steps


def _drive(node: PlannerNode, world: KinematicTable, steps: int, *, each=None) -> None:
    for _ in range(steps):
        if each is not None:
            each(world)
        node.on_robot_state(world.robot_state())
        node.on_percepts(world.percept())
        chunk = node.step()
        assert chunk is not None and chunk.action_space == "arm_ee_delta"
        world.run_chunk(chunk)
        if node.loop.status != "running":
            return


def _cups_show(world: KinematicTable) -> None:
    """The prize is visible for the first 3 steps, then covered; lifting its cup shows it."""
    if world.t_ns >= 300_000_000 and world.held is None and "prize" not in world.hidden:
        if world.objects["cup_1"][2] < 0.5:
            world.hidden.add("prize")
    if world.held == "cup_1" and world.objects["cup_1"][2] > 0.5:
        world.hidden.discard("prize")


def _cups_memory(q: MemoryQuery) -> list:
    if "prize" in q.text:
        return [_hit("prize", [0.0, 0.05, 0.415])]
    return []


def test_plans_from_memory_and_replans_after_an_injected_failure():
    bus = InProcBus("t-plan")
    memory = StubMemory(bus, _cups_memory)
    node, steps = _node(bus)
    world = KinematicTable(CUPS)
    world.slips = 1  # the first grasp slips: the critic must see it and the planner retry
    node.on_instruction(Instruction(stamp_ns=0, text=CUPS_TEXT, task="cups", episode_id="cups-1"))
    _drive(node, world, 300, each=_cups_show)

    assert node.loop.status == "done", node.loop.reason
    decide = [s for s in steps if s.skill == "decide"]
    assert decide and decide[0].args["answer"] == "cup_1" and "source=memory" in decide[0].reason
    lifts = [(s.status, s.attempt) for s in steps if s.skill == "lift" and s.status != "running"]
    assert lifts == [("failed", 0), ("succeeded", 1)]
    failed = next(s for s in steps if s.skill == "lift" and s.status == "failed")
    assert "rose only" in failed.reason
    assert world.held == "cup_1" and "prize" not in world.hidden
    assert any("prize" in q.text for q in memory.queries)
    # the watch ended only after the prize was covered (decision time)
    watch_done = next(s for s in steps if s.skill == "watch" and s.status == "succeeded")
    assert watch_done.stamp_ns >= 300_000_000


def test_wrong_answer_fails_the_critic_and_the_loop_detector_stops_retries():
    bus = InProcBus("t-loop")
    # memory says the prize is under cup_0 (it is not): lifting cup_0 shows no prize
    StubMemory(bus, lambda q: [_hit("prize", [-0.15, 0.0, 0.415])] if "prize" in q.text else [])
    node, steps = _node(bus, max_retries=1)
    world = KinematicTable(CUPS)

    node.on_instruction(Instruction(stamp_ns=0, text=CUPS_TEXT, task="cups", episode_id="cups-2"))
    _drive(node, world, 600, each=_cups_show)

    assert node.loop.status == "failed"
    fails = [s for s in steps if s.skill == "lift" and s.status == "failed"]
    assert fails and "expected to see prize" in fails[0].reason
    fired = node.loop.loop.fired
    assert fired and fired[-1]["action"] == "abort"
    assert len(fails) <= 4  # bounded: retry, then the alternative grasp, then stop
    assert any(s.skill == "task" and s.status == "aborted" for s in steps)


def test_generic_instruction_picks_and_places():
    bus = InProcBus("t-generic")
    StubMemory(bus, lambda q: [])
    node, steps = _node(bus)
    world = KinematicTable(
        {
            "cube_red": ([0.1, 0.0, 0.42], [0.04, 0.04, 0.04]),
            "tray": ([-0.15, 0.05, 0.41], [0.16, 0.12, 0.02]),
        }
    )
    node.on_instruction(Instruction(stamp_ns=0, text="Put the red cube on the tray."))
    _drive(node, world, 300)
    assert node.loop.status == "done", node.loop.reason
    assert [s.skill for s in steps if s.status == "succeeded"] == ["pick", "place"]
    assert np.linalg.norm(world.objects["cube_red"][:2] - world.objects["tray"][:2]) < 0.03


def test_button_order_comes_from_observations_in_memory():
    bus = InProcBus("t-buttons")
    seen = []

    def answer(q: MemoryQuery) -> list:
        seen.append(q.text)
        if q.text.startswith("observe"):  # the observe steps the node published
            hits = []
            for t, label in (
                (3, "button_blue_cap"),
                (1, "button_green_cap"),
                (5, "button_red_cap"),
            ):
                hits.append(
                    {
                        "memory": "episodic",
                        "score": 0.8,
                        "text": f"observe(light_on, {label}) succeeded",
                        "stamp_ns": t * 100_000_000,
                        "data": {"kind": "step_succeeded"},
                    }
                )
            return hits
        return []

    StubMemory(bus, answer)
    node, _steps = _node(bus)
    caps = {
        f"button_{c}_cap": ([x, 0.0, 0.44], [0.048, 0.048, 0.016])
        for c, x in (("red", -0.15), ("green", 0.0), ("blue", 0.15))
    }
    world = KinematicTable(caps)
    node.on_instruction(
        Instruction(
            stamp_ns=0,
            text="Watch the buttons light up. Then press them in the order they lit up.",
            task="button_sequence",
            episode_id="b-1",
        )
    )
    node.scene.light_events = 1  # as if lights had been seen (no thumbnails here)
    _drive(node, world, 400)
    assert node.loop.status == "done", node.loop.reason
    assert world.presses == ["button_green_cap", "button_blue_cap", "button_red_cap"]


def test_no_memory_ablation_asks_nothing_and_guesses():
    bus = InProcBus("t-nomem")
    memory = StubMemory(bus, _cups_memory)
    node, steps = _node(bus, use_memory=False, seed=3)
    world = KinematicTable(CUPS)
    node.on_instruction(Instruction(stamp_ns=0, text=CUPS_TEXT, task="cups", episode_id="cups-9"))
    _drive(node, world, 300, each=_cups_show)
    assert memory.queries == []
    decide = next(s for s in steps if s.skill == "decide")
    assert "source=guess" in decide.reason


def test_lifelong_avoids_the_choice_that_failed_at_this_layout():
    world = KinematicTable(CUPS)
    world.hidden.add("prize")
    view = WorldView.from_percepts([world.percept()], world.robot_state())
    key = layout_key(view)

    def answer(q: MemoryQuery) -> list:
        if q.text.startswith("episode"):
            steps = [
                {
                    "skill": "decide",
                    "status": "succeeded",
                    "reason": f"question=which_cup answer=cup_2 layout={key} source=guess",
                },
            ]
            return [
                {
                    "memory": "episodic",
                    "score": 0.5,
                    "text": "episode",
                    "stamp_ns": 1,
                    "data": {"kind": "episode", "outcome": "failed", "steps": steps},
                }
            ]
        return []  # the show was not seen: memory does not know where the prize is

    bus = InProcBus("t-lifelong")
    StubMemory(bus, answer)
    grounding = Grounding(MemoryClient(lambda q: bus.request("/memory/query", q)))
    assert grounding.past_decisions("which_cup", key, CUPS_TEXT) == [("cup_2", "failed")]
    from engram.planners.planning.planner import RuleBasedPlanner
    from engram.planners.planning.plans import Subgoal
    from engram.planners.planning.recipes import PlanContext

    planner = RuleBasedPlanner()
    ins = Instruction(text=CUPS_TEXT, task="cups", episode_id="cups-5")
    answers = set()
    for seed in range(12):
        ctx = PlanContext(ins, view, grounding, np.random.default_rng(seed))
        plan = planner.plan(ctx)
        _new, decision = planner.decide(ctx, plan, Subgoal("decide", {"question": "which_cup"}))
        answers.add(decision.answer)
        assert decision.source == "lifelong"
    assert answers == {"cup_0", "cup_1"}  # never the cup that failed here


def test_memory_client_turns_errors_and_timeouts_into_no_answer():
    def broken(q):
        raise TimeoutError("no reply")

    client = MemoryClient(broken)
    assert client.recall("prize") == [] and client.errors == 1
    client = MemoryClient(lambda q: Recall(query_seq=q.seq, error="boom"))
    assert client.recall("prize") == [] and client.last_error == "boom"
    assert MemoryClient(None).recall("x") == [] and not MemoryClient(None).enabled


def test_labels_tasks_and_yaw():
    labels = ["cube_red", "button_blue", "button_blue_cap", "plant", "teddy_brown"]
    assert resolve_label("red cube", labels) == "cube_red"
    assert resolve_label("the blue button", labels) == "button_blue"
    assert resolve_label("blue button cap", labels) == "button_blue_cap"
    assert resolve_label("potted plant", labels) == "plant"
    assert resolve_label("brown teddy bear", labels) == "teddy_brown"
    assert resolve_label("green book", labels) == ""
    assert detect_task(Instruction(text="Go to the red mug you saw earlier.")) == "fetch_seen"
    assert (
        detect_task(Instruction(text="Follow the tour of the apartment.", task="fetch_seen"))
        == "tour"
    )
    assert detect_task(Instruction(text="pick up the cube")) == "generic"
    # a 7 cm square rotated by 0.3 rad: the footprint's yaw modulo 90 degrees
    g = np.stack(np.meshgrid(np.linspace(-0.035, 0.035, 8), np.linspace(-0.035, 0.035, 8)), -1)
    c, s = np.cos(0.3), np.sin(0.3)
    pts = g.reshape(-1, 2) @ np.array([[c, s], [-s, c]])
    assert abs(estimate_yaw(pts) - 0.3) < 0.03
    assert estimate_yaw(pts[:3]) is None


# ---- the optional LLM reasoner, against a tiny local server --------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    replies: list = []
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        status, content = type(self).replies.pop(0)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def llm_server():
    _Handler.replies, _Handler.requests = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Handler
    server.shutdown()
    server.server_close()


def test_llm_planner_over_an_openai_compatible_server(llm_server):
    url, handler = llm_server
    plan_text = (
        "Sure.\n```json\n"
        '{"steps": [{"skill": "pick", "args": {"object": "cube_red"}, "why": "grab it"},'
        ' {"skill": "place", "args": {"object": "cube_red", "on": "tray"}}]}\n```'
    )
    handler.replies = [(200, plan_text), (200, "I cannot do that."), (500, "")]
    reasoner = OpenAIReasoner(url, model="tiny-local", timeout_s=5)
    planner = LLMPlanner(reasoner)
    world = KinematicTable(
        {"cube_red": ([0.1, 0.0, 0.42], [0.04] * 3), "tray": ([-0.1, 0, 0.41], [0.16, 0.12, 0.02])}
    )
    view = WorldView.from_percepts([world.percept()], world.robot_state())
    from engram.planners.planning.recipes import PlanContext

    grounding = Grounding(MemoryClient(None))
    ins = Instruction(text="Tidy up: the cube goes onto the tray.")
    plan = planner.plan(PlanContext(ins, view, grounding, np.random.default_rng(0)))
    assert plan.task == "llm" and [s.skill for s in plan.steps] == ["pick", "place"]
    path, body = handler.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "tiny-local"
    assert body["messages"][0]["role"] == "system" and "cube_red" in body["messages"][1]["content"]
    # a reply without JSON: falls back to the rule-based planner, reason kept
    plan = planner.plan(
        PlanContext(
            Instruction(text="pick up the red cube"), view, grounding, np.random.default_rng(0)
        )
    )
    assert plan.task == "generic" and "no JSON" in plan.facts["reasoner_error"]
    with pytest.raises(ReasonerError, match="HTTP 500"):
        reasoner.complete([{"role": "user", "content": "hi"}])
    with pytest.raises(ReasonerError, match="unknown skill"):
        parse_steps('{"steps": [{"skill": "teleport", "args": {}}]}')
    down = OpenAIReasoner("http://127.0.0.1:9/v1", timeout_s=0.5)
    with pytest.raises(ReasonerError):
        down.complete([{"role": "user", "content": "hi"}])


def test_push_moves_the_object_along_the_direction():
    bus = InProcBus("t-push")
    StubMemory(bus, lambda q: [])
    node, steps = _node(bus)
    world = KinematicTable({"cube_red": ([0.1, 0.0, 0.42], [0.04, 0.04, 0.04])})
    node.on_instruction(Instruction(stamp_ns=0, text="Push the red cube left."))
    _drive(node, world, 200)
    assert node.loop.status == "done", node.loop.reason
    moved = world.objects["cube_red"][0] - 0.1
    assert moved > 0.03 and abs(world.objects["cube_red"][1]) < 0.01
    assert [s.skill for s in steps if s.status == "succeeded"] == ["push"]
