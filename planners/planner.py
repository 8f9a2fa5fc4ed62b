"""Closed-loop planning grounded in memory (RoboMemory's planner, critic and loop guard).

Pieces:

- ``Subgoal`` / ``Plan``: a plan is a list of subgoals over the skill library
  (``planners/skills.py``). A ``decide`` subgoal is a decision point: when the
  executive reaches it, the planner asks memory *then* (at decision time) and
  replaces it with the motor subgoals the answer implies.
- ``MemoryClient``: asks the memory system over the bus (``MemoryQuery`` ->
  ``Recall`` on ``/memory/query``); disabled, it answers nothing (the
  ``--no-memory`` ablation).
- ``Grounding``: the questions a plan needs, answered from memory recalls only:
  where is X now, where was X at the start, which labels were seen (how many
  tokens), what was observed in what order (the buttons' lights), where a sound
  was heard, the route through the places the robot has been, and what earlier
  attempts at the same layout decided and how they ended (lifelong learning).
- ``Planner`` (ABC) and ``RuleBasedPlanner``, the default: no language model,
  task recipes selected by ``Instruction.task`` or by the instruction's wording,
  plus a generic imperative parser ("pick up the red cube", "press the blue
  button", "go to the plant"). ``planners/reasoner.py`` adds an optional LLM
  planner behind the same interface.
- ``ClosedLoop``: the executive. For each subgoal it runs the skill's controller
  chunk by chunk (``tick`` returns the next action chunk), lets the robot settle,
  asks the ``Critic`` (fresh percepts and memory), records the outcome with the
  ``LoopDetector`` and, on failure, retries, asks the planner for an alternative,
  or aborts with a clear reason. Every status change is reported as a
  ``PlanStep`` (the node publishes them; the memory system stores them in the
  episode), including each ``decide`` with its answer and the layout it was made
  for, so that a later attempt at the same layout can avoid a choice that failed.

Lifelong learning. After an attempt the environment's verdict (or a user's) is a
terminal ``PlanStep`` (skill ``episode``) that closes the episode in episodic
memory. At a decision the planner recalls earlier episodes, keeps the ``decide``
steps made for the same layout (object positions on a 3 cm grid) and their
outcomes: a failed answer is not chosen again, a succeeded one is preferred when
memory has nothing better.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.planners.critic import Critic, LoopDetector, subgoal_key, world_signature
from engram.planners.skills import (
    ARM_SPACE,
    SkillConfig,
    SkillError,
    Verdict,
    WorldView,
    make_skill,
    resolve_label,
)
from engram.runtime.messages import Instruction, MemoryQuery, PlanStep, Recall

__all__ = [
    "SOUND_BANDS_HZ",
    "ClosedLoop",
    "Decision",
    "Grounding",
    "MemoryClient",
    "Plan",
    "Planner",
    "RuleBasedPlanner",
    "Subgoal",
    "detect_task",
    "layout_key",
]

log = logging.getLogger(__name__)

#: what a named sound sounds like: its dominant frequency band (Hz), prior knowledge
SOUND_BANDS_HZ: dict[str, tuple[float, float]] = {
    "doorbell": (430.0, 820.0),
    "bell": (430.0, 820.0),
    "phone": (850.0, 1650.0),
    "ringing": (850.0, 1650.0),
    "kettle": (1700.0, 2800.0),
    "whistling": (1700.0, 2800.0),
}


# ---------------------------------------------------------------------------------------
# plans


@dataclass
class Subgoal:
    """One step of a plan: a skill with arguments, what the critic should expect after
    it, and alternatives (other args) to try when the loop detector stops retries."""

    skill: str
    args: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""

    @property
    def key(self) -> str:
        return subgoal_key(self.skill, self.args)


@dataclass
class Plan:
    """A task's subgoals and the facts they were grounded in."""

    task: str
    instruction: str
    steps: list[Subgoal]
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    """What a ``decide`` step chose: the question, the answer (a compact token), where
    it came from (``memory``, ``lifelong``, ``guess``) and the layout it was made for."""

    question: str
    answer: str
    source: str
    layout: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def reason(self) -> str:
        return f"answer={self.answer} layout={self.layout} source={self.source}"


# ---------------------------------------------------------------------------------------
# memory access


class MemoryClient:
    """Recall through ``ask(MemoryQuery) -> Recall`` (e.g. a bus request). With
    ``enabled=False`` every recall is empty: the no-memory ablation."""

    def __init__(
        self, ask: Callable[[MemoryQuery], Recall] | None = None, *, enabled: bool = True
    ) -> None:
        self.ask = ask
        self.enabled = bool(enabled and ask is not None)
        self.queries = 0
        self.errors = 0
        self.last_error = ""

    def recall(
        self,
        text: str = "",
        *,
        memories: tuple[str, ...] = (),
        top_k: int = 20,
        near: Any = None,
        radius_m: float = 0.0,
        t0_ns: int = 0,
        t1_ns: int = 0,
    ) -> list[dict[str, Any]]:
        """Hits (dicts as in ``Recall.hits``); [] when disabled or on error."""
        if not self.enabled:
            return []
        query = MemoryQuery(
            text=text,
            memories=list(memories),
            top_k=int(top_k),
            near=None if near is None else np.asarray(near, np.float32)[:3],
            radius_m=float(radius_m),
            t0_ns=int(max(t0_ns, 0)),
            t1_ns=int(max(t1_ns, 0)),
        )
        self.queries += 1
        try:
            reply = self.ask(query)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - no answer is an empty answer
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("memory query %r failed: %s", text, self.last_error)
            return []
        if not isinstance(reply, Recall):
            self.errors += 1
            self.last_error = f"expected a Recall, got {type(reply).__name__}"
            return []
        if reply.error:
            self.errors += 1
            self.last_error = reply.error
            if memories and "unknown" in reply.error:  # that memory is not running: ask all
                return self.recall(
                    text, top_k=top_k, near=near, radius_m=radius_m, t0_ns=t0_ns, t1_ns=t1_ns
                )
            return []
        return list(reply.hits)


_FIRST_SAW = re.compile(r"^first saw (\S+) \((\w+)\)")
_OBSERVE = re.compile(r"observe\((\w+), ([^)\s]+)\)")
_HZ = re.compile(r"\((\d+(?:\.\d+)?) Hz")
_REASON = re.compile(r"(\w+)=(\S*)")


class Grounding:
    """Answers the questions plans need from memory recalls (see module docstring).
    Positions are (3,) float64 world metres; stamps are ``stamp_ns`` of the memory."""

    def __init__(self, memory: MemoryClient) -> None:
        self.memory = memory
        self.log: list[dict[str, Any]] = []  # question -> answer, for the decide steps

    @property
    def enabled(self) -> bool:
        return self.memory.enabled

    def _note(self, question: str, answer: Any) -> Any:
        self.log.append({"question": question, "answer": _jsonable(answer)})
        return answer

    def object_position(self, label: str) -> tuple[np.ndarray, int] | None:
        """Where is ``label`` now (its latest remembered position, and when seen)."""
        hits = self.memory.recall(label, memories=("spatial", "episodic"), top_k=40)
        best: tuple[np.ndarray, int] | None = None
        for prefer in ("spatial", "episodic"):
            for h in hits:
                d = h.get("data", {})
                if h.get("memory") != prefer or d.get("kind") != "object":
                    continue
                if d.get("label") != label or h.get("position") is None:
                    continue
                if d.get("present") is False:
                    continue
                stamp = int(d.get("last_seen_ns", h.get("stamp_ns", 0)))
                if best is None or stamp > best[1]:
                    best = (np.asarray(h["position"], np.float64), stamp)
            if best is not None:
                break
        return self._note(f"where is {label}", best)

    def first_position(self, label: str, *, since_ns: int = 0) -> tuple[np.ndarray, int] | None:
        """Where was ``label`` when first seen (at or after ``since_ns``)."""
        hits = self.memory.recall(f"first saw {label}", memories=("episodic",), top_k=40)
        best: tuple[np.ndarray, int] | None = None
        for h in hits:
            m = _FIRST_SAW.match(h.get("text", ""))
            if not m or m.group(1) != label or h.get("position") is None:
                continue
            stamp = int(h.get("stamp_ns", 0))
            if stamp >= since_ns and (best is None or stamp < best[1]):
                best = (np.asarray(h["position"], np.float64), stamp)
        if best is None:
            hits = self.memory.recall(
                f"when was {label} first seen", memories=("temporal",), top_k=10, t0_ns=since_ns
            )
            for h in hits:
                d = h.get("data", {})
                if d.get("object") == label and h.get("position") is not None:
                    best = (np.asarray(h["position"], np.float64), int(h.get("stamp_ns", 0)))
                    break
        return self._note(f"where was {label} at the start", best)

    def labels_seen(self, prefix: str, *, since_ns: int = 0) -> list[str]:
        """Distinct object labels starting with ``prefix`` seen since ``since_ns``."""
        # Spatial memory keeps one record per segmented object and the timeline keeps
        # each percept's labels; the episodic memory is not asked here because its
        # entity resolution may merge identical-looking objects (two tokens -> one).
        words = prefix.replace("_", " ").strip()
        labels = set()
        for mem in ("spatial", "temporal"):
            for h in self.memory.recall(words, memories=(mem,), top_k=100, t0_ns=since_ns):
                d = h.get("data", {})
                if d.get("kind") == "object":
                    names = [str(d.get("label", ""))]
                    last = int(d.get("last_seen_ns", h.get("stamp_ns", 0)))
                elif d.get("kind") == "percept":
                    names = [str(x) for x in d.get("labels", [])]
                    last = int(h.get("stamp_ns", 0))
                else:
                    continue
                if last >= since_ns:
                    labels.update(n for n in names if n.startswith(prefix))
        return self._note(f"which {prefix} were seen", sorted(labels))

    def observations(self, event: str, *, since_ns: int = 0) -> list[tuple[int, str]]:
        """(stamp_ns, label) of ``observe(event, label)`` steps since ``since_ns``, in time
        order (e.g. the buttons' lights coming on)."""
        hits = self.memory.recall(
            f"observe {event}", memories=("episodic",), top_k=60, t0_ns=since_ns
        )
        out = set()
        for h in hits:
            m = _OBSERVE.search(h.get("text", ""))
            if m and m.group(1) == event and int(h.get("stamp_ns", 0)) >= since_ns:
                out.add((int(h["stamp_ns"]), m.group(2)))
        return self._note(f"when did {event} happen", sorted(out))

    def sounds(self, *, since_ns: int = 0) -> list[dict[str, Any]]:
        """Sounds heard since ``since_ns``: stamp_ns, peak_hz, position (where the robot
        was), text; in time order."""
        out: dict[int, dict[str, Any]] = {}
        for text, mem, kind in (
            ("heard sound tone noise", "episodic", "heard"),
            ("heard sound tone noise", "temporal", "sound"),
        ):
            for h in self.memory.recall(text, memories=(mem,), top_k=60, t0_ns=since_ns):
                if h.get("data", {}).get("kind") != kind or h.get("position") is None:
                    continue
                m = _HZ.search(h.get("text", ""))
                stamp = int(h.get("stamp_ns", 0))
                if m is None or stamp < since_ns or stamp in out:
                    continue
                out[stamp] = {
                    "stamp_ns": stamp,
                    "peak_hz": float(m.group(1)),
                    "position": np.asarray(h["position"], np.float64),
                    "text": h.get("text", ""),
                }
        return self._note("what was heard", [out[k] for k in sorted(out)])

    def where_heard(self, sound: str, *, since_ns: int = 0) -> tuple[np.ndarray, int] | None:
        """Where the robot was when it heard ``sound`` (a name in ``SOUND_BANDS_HZ``)."""
        band = next((b for name, b in SOUND_BANDS_HZ.items() if name in sound.lower()), None)
        heard = self.sounds(since_ns=since_ns)
        if band is not None:
            heard = [s for s in heard if band[0] <= s["peak_hz"] <= band[1]]
        if not heard:
            return self._note(f"where was the {sound} heard", None)
        first = heard[0]
        return self._note(f"where was the {sound} heard", (first["position"], first["stamp_ns"]))

    def places(self, near: np.ndarray, *, radius_m: float = 60.0) -> list[dict[str, Any]]:
        """Places of the spatial memory's topology graph within ``radius_m``: place_id,
        position (3,), neighbours (ids)."""
        hits = self.memory.recall(
            "", memories=("spatial",), near=near, radius_m=radius_m, top_k=1000
        )
        out = []
        for h in hits:
            d = h.get("data", {})
            if d.get("kind") == "place" and h.get("position") is not None:
                out.append(
                    {
                        "place_id": int(d["place_id"]),
                        "position": np.asarray(h["position"], np.float64),
                        "neighbours": [int(n) for n in d.get("neighbours", [])],
                    }
                )
        return out

    def route(self, start_xy: np.ndarray, goal_xy: np.ndarray) -> list[np.ndarray]:
        """Waypoints [x, y] through the places the robot has been, from the place nearest
        ``start_xy`` to the place nearest ``goal_xy`` (A*); [] when none are known."""
        start3 = np.array([start_xy[0], start_xy[1], 0.0])
        places = self.places(start3)
        if not places:
            return self._note("route", [])
        pos = {p["place_id"]: p["position"][:2] for p in places}
        edges: dict[int, set[int]] = {p["place_id"]: set() for p in places}
        for p in places:
            for n in p["neighbours"]:
                if n in edges:
                    edges[p["place_id"]].add(n)
                    edges[n].add(p["place_id"])
        ids = list(pos)
        arr = np.array([pos[i] for i in ids])
        s = ids[int(np.argmin(np.linalg.norm(arr - start_xy[:2], axis=1)))]
        g = ids[int(np.argmin(np.linalg.norm(arr - goal_xy[:2], axis=1)))]
        path = _astar(s, g, pos, edges)
        return self._note("route", [pos[i] for i in path])

    def past_decisions(self, question: str, layout: str, hint: str) -> list[tuple[str, str]]:
        """(answer, outcome) of earlier decisions on ``question`` at ``layout``, from the
        episodes in episodic memory (``hint``: words of the instruction)."""
        hits = self.memory.recall(f"episode {hint}", memories=("episodic",), top_k=60)
        out = []
        for h in hits:
            d = h.get("data", {})
            if d.get("kind") != "episode" or d.get("outcome") not in ("succeeded", "failed"):
                continue
            for step in d.get("steps", []):
                if step.get("skill") != "decide":
                    continue
                fields = dict(_REASON.findall(step.get("reason", "")))
                if fields.get("layout") == layout and fields.get("question", question) == question:
                    out.append((fields.get("answer", ""), d["outcome"]))
        return self._note(f"earlier attempts at {question} here", out)


def _astar(
    start: int, goal: int, pos: dict[int, np.ndarray], edges: dict[int, set[int]]
) -> list[int]:
    if start == goal:
        return [start]
    frontier = [(0.0, start)]
    came: dict[int, int | None] = {start: None}
    cost = {start: 0.0}
    while frontier:
        _, cur = heapq.heappop(frontier)
        if cur == goal:
            break
        for nxt in sorted(edges.get(cur, ())):
            c = cost[cur] + float(np.linalg.norm(pos[cur] - pos[nxt]))
            if c < cost.get(nxt, math.inf):
                cost[nxt] = c
                came[nxt] = cur
                heapq.heappush(frontier, (c + float(np.linalg.norm(pos[nxt] - pos[goal])), nxt))
    if goal not in came:
        return [start, goal]
    path = [goal]
    while came[path[-1]] is not None:
        path.append(came[path[-1]])  # type: ignore[arg-type]
    return path[::-1]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [round(float(v), 3) for v in value.reshape(-1)]
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    return value


def layout_key(world: WorldView, *, grid_m: float = 0.03) -> str:
    """A short key of the scene as perceived now: labels and positions on a ``grid_m``
    grid (plus the base position for a mobile robot). Same layout, same key."""
    parts = [
        f"{label}:{','.join(str(int(v)) for v in np.round(obj.position[:2] / grid_m))}"
        for label, obj in sorted(world.objects.items())
    ]
    if world.robot is not None and world.robot.world_from_ee is None:
        x, y, _ = world.base_pose()
        parts.append(f"base:{round(x / 0.25)},{round(y / 0.25)}")
    return f"{zlib.crc32('|'.join(parts).encode()):08x}"


# ---------------------------------------------------------------------------------------
# planners


_TASK_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("cups", re.compile(r"cup that hides|which cup|under (the|which) cup", re.I)),
    ("button_sequence", re.compile(r"order (they|the buttons) lit|in the order", re.I)),
    ("count", re.compile(r"count the|once for each", re.I)),
    ("put_back", re.compile(r"back where it was|put .+ back", re.I)),
    ("fetch_seen", re.compile(r"go to the .+ you saw", re.I)),
    ("where_heard", re.compile(r"room where you heard", re.I)),
    ("tour", re.compile(r"follow the tour", re.I)),
]


def detect_task(instruction: Instruction) -> str:
    """The recipe for an instruction: its ``task`` when a recipe exists, else by wording
    (``tour`` for the show phase of the apartment tasks), else ``generic``."""
    text = instruction.text or ""
    if re.search(r"follow the tour", text, re.I):
        return "tour"
    if instruction.task in _RECIPES and not (
        instruction.task in ("fetch_seen", "where_heard") and not re.search(r"go to", text, re.I)
    ):
        return instruction.task
    for name, pattern in _TASK_PATTERNS:
        if pattern.search(text):
            return name
    return "generic"


@dataclass
class PlanContext:
    """What a recipe may use: the instruction, the current view, memory, a seeded RNG."""

    instruction: Instruction
    world: WorldView
    grounding: Grounding
    rng: np.random.Generator
    episode_start_ns: int = 0


class Planner(ABC):
    """Instruction -> plan of subgoals; decision points; replanning after failures."""

    name = "planner"

    @abstractmethod
    def plan(self, ctx: PlanContext) -> Plan:
        """The initial plan for ``ctx.instruction``."""

    @abstractmethod
    def decide(
        self, ctx: PlanContext, plan: Plan, subgoal: Subgoal
    ) -> tuple[list[Subgoal], Decision]:
        """Resolve a ``decide`` subgoal now (ask memory): the subgoals replacing it."""

    def replan(
        self, ctx: PlanContext, plan: Plan, index: int, verdict: Verdict, action: str
    ) -> list[Subgoal] | None:
        """The subgoals to run from ``index`` on after ``plan.steps[index]`` failed.

        ``action`` is the loop detector's: ``retry`` (the same subgoal again, after
        re-observing), ``alternative`` (something else: the subgoal's next alternative
        args, else None), ``abort``. None = give up."""
        failed = plan.steps[index]
        rest = plan.steps[index + 1 :]
        if action in ("retry", "alternative") and failed.skill == "place":
            # a place that failed has lost the object: find it, pick it up again, place
            obj = failed.args.get("object", "")
            again = [Subgoal("look_for", {"object": obj}), Subgoal("pick", {"object": obj}), failed]
            return again + rest
        if action == "retry":
            again = [failed]
            if failed.skill in ("pick", "lift", "press", "push"):
                again = [Subgoal("look_for", {"object": failed.args.get("object", "")}), *again]
            return again + rest
        if action == "alternative" and failed.alternatives:
            alt = Subgoal(
                failed.skill,
                {**failed.args, **failed.alternatives[0]},
                expect=dict(failed.expect),
                alternatives=failed.alternatives[1:],
                description=failed.description,
            )
            return [alt, *rest]
        return None


class _Recipe(ABC):
    """A task's plan: initial subgoals and how its decision is made from memory."""

    question = "task"

    @abstractmethod
    def initial(self, ctx: PlanContext) -> list[Subgoal]: ...

    def decide(self, ctx: PlanContext, subgoal: Subgoal) -> tuple[list[Subgoal], Decision]:
        raise SkillError(f"{type(self).__name__} has no decision")


def _choose(
    ctx: PlanContext,
    question: str,
    candidates: list[str],
    remembered: str | None,
    *,
    layout: str,
) -> Decision:
    """Pick an answer: memory's unless it failed here before; else an answer that
    succeeded here before; else a uniform guess among candidates that did not fail."""
    past = ctx.grounding.past_decisions(question, layout, ctx.instruction.text) if layout else []
    failed = {a for a, outcome in past if outcome == "failed"}
    worked = [a for a, outcome in past if outcome == "succeeded"]
    if remembered is not None and remembered not in failed:
        return Decision(question, remembered, "memory", layout)
    for a in worked:
        if a in candidates or not candidates:
            return Decision(question, a, "lifelong", layout)
    pool = [c for c in candidates if c not in failed] or list(candidates)
    if not pool:
        raise SkillError(f"no candidate answer for {question}")
    source = "lifelong" if failed & set(candidates) else "guess"
    return Decision(question, pool[int(ctx.rng.integers(len(pool)))], source, layout)


class _Cups(_Recipe):
    """Watch the cube being covered; lift the cup standing where memory last saw it."""

    question = "which_cup"

    def initial(self, ctx):
        return [
            Subgoal("watch", {"until": "hidden:prize", "settle_s": 0.2, "max_s": 8.0}),
            Subgoal("decide", {"question": self.question}),
        ]

    def decide(self, ctx, subgoal):
        cups = sorted(label for label in ctx.world.objects if label.startswith("cup"))
        if not cups:
            raise SkillError("no cup in view")
        seen = ctx.grounding.object_position("prize")
        remembered = None
        if seen is not None:
            p = seen[0]
            near = min(
                cups, key=lambda c: np.linalg.norm(ctx.world.objects[c].position[:2] - p[:2])
            )
            if np.linalg.norm(ctx.world.objects[near].position[:2] - p[:2]) < 0.08:
                remembered = near
        layout = layout_key(ctx.world)
        d = _choose(ctx, self.question, cups, remembered, layout=layout)
        expect: dict[str, Any] = {"visible": "prize", "radius_m": 0.06}
        if seen is not None:
            expect["near"] = seen[0][:2].tolist()
            d.facts["prize_last_seen"] = seen[0].tolist()
        lift = Subgoal(
            "lift", {"object": d.answer}, expect=expect, alternatives=[{"grasp_dz_m": -0.01}]
        )
        return [lift], d


class _Buttons(_Recipe):
    """Watch the lights; press the buttons in the order memory says they lit."""

    question = "button_order"

    def initial(self, ctx):
        return [
            Subgoal("watch", {"until": "lights_off", "settle_s": 0.3, "max_s": 12.0}),
            Subgoal("decide", {"question": self.question}),
        ]

    def decide(self, ctx, subgoal):
        buttons = sorted(
            label for label in ctx.world.objects if "button" in label and label.endswith("_cap")
        )
        if not buttons:
            raise SkillError("no button in view")
        lit = ctx.grounding.observations("light_on", since_ns=ctx.episode_start_ns)
        order: list[str] = []
        for _, label in lit:
            if label in buttons and label not in order:
                order.append(label)
        remembered = ",".join(order) if len(order) == len(buttons) else None
        layout = layout_key(ctx.world)
        perms = [",".join(p) for p in _permutations(buttons)]
        d = _choose(ctx, self.question, perms, remembered, layout=layout)
        d.facts["lit_order"] = order
        return [Subgoal("press", {"object": b}) for b in d.answer.split(",")], d


def _permutations(items: list[str]) -> list[list[str]]:
    if len(items) <= 1:
        return [list(items)]
    out = []
    for i, x in enumerate(items):
        for rest in _permutations(items[:i] + items[i + 1 :]):
            out.append([x, *rest])
    return out


class _Count(_Recipe):
    """Watch the tokens; press blue once per token memory saw, then green."""

    question = "token_count"
    max_count = 5  # prior: how many tokens there can be (for a guess)

    def initial(self, ctx):
        return [
            Subgoal("watch", {"until": "gone:token", "settle_s": 0.2, "max_s": 8.0}),
            Subgoal("decide", {"question": self.question}),
        ]

    def decide(self, ctx, subgoal):
        seen = ctx.grounding.labels_seen("token", since_ns=ctx.episode_start_ns)
        remembered = str(len(seen)) if seen else None
        candidates = [str(n) for n in range(1, 5)]
        layout = layout_key(ctx.world)
        d = _choose(ctx, self.question, candidates, remembered, layout=layout)
        d.facts["tokens_seen"] = seen
        blue = _label_like(ctx.world, "button blue cap")
        green = _label_like(ctx.world, "button green cap")
        steps = [Subgoal("press", {"object": blue}) for _ in range(int(d.answer))]
        return [*steps, Subgoal("press", {"object": green})], d


def _label_like(world: WorldView, name: str) -> str:
    label = resolve_label(name, world.objects)
    if not label:
        raise SkillError(f"no {name} in view (I see {', '.join(sorted(world.objects))})")
    return label


class _PutBack(_Recipe):
    """Cube to the tray, press blue, then back to where memory first saw it."""

    question = "start_position"

    def initial(self, ctx):
        cube = _label_like(ctx.world, "red cube") if ctx.world.objects else "cube_red"
        tray = resolve_label("tray", ctx.world.objects) or "tray"
        button = resolve_label("blue button cap", ctx.world.objects) or "button_blue_cap"
        return [
            Subgoal("wait", {"duration_s": 0.3}),
            Subgoal("pick", {"object": cube}, alternatives=[{"grasp_dz_m": -0.006}]),
            Subgoal("place", {"object": cube, "on": tray}),
            Subgoal("press", {"object": button}),
            Subgoal("pick", {"object": cube}, alternatives=[{"grasp_dz_m": -0.006}]),
            Subgoal("decide", {"question": self.question, "object": cube}),
        ]

    def decide(self, ctx, subgoal):
        cube = subgoal.args["object"]
        start = ctx.grounding.first_position(cube, since_ns=ctx.episode_start_ns)
        if start is not None:
            xy = start[0][:2]
            d = Decision(self.question, _xy_token(xy), "memory", "", {"start": start[0].tolist()})
        else:  # no memory: somewhere on the table in front of the robot
            xy = ctx.rng.uniform((-0.3, -0.15), (0.3, 0.2))
            d = Decision(self.question, _xy_token(xy), "guess")
        return [Subgoal("place", {"object": cube, "target": [float(xy[0]), float(xy[1])]})], d


def _xy_token(xy: np.ndarray) -> str:
    return f"{float(xy[0]):.3f},{float(xy[1]):.3f}"


class _Tour(_Recipe):
    """The show phase of the apartment tasks: watch until the question comes."""

    def initial(self, ctx):
        return [Subgoal("watch", {"until": "instruction", "max_s": 3600.0})]


class _GoTo(_Recipe):
    """Go where memory places something: an object (fetch_seen) or a sound (where_heard)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.question = "goal_" + kind

    def initial(self, ctx):
        return [Subgoal("decide", {"question": self.question})]

    def _target_name(self, text: str) -> str:
        if self.kind == "sound":
            m = re.search(r"heard the (.+?)[.?!]?$", text, re.I)
        else:
            m = re.search(r"go to the (.+?)(?: you saw.*)?[.?!]?$", text, re.I)
        return m.group(1).strip() if m else text

    def decide(self, ctx, subgoal):
        name = self._target_name(ctx.instruction.text)
        here = ctx.world.base_pose()
        target: np.ndarray | None = None
        facts: dict[str, Any] = {"target_name": name}
        if self.kind == "sound":
            found = ctx.grounding.where_heard(name, since_ns=ctx.episode_start_ns)
            stop_m, within_m = 0.0, 0.35
        else:
            label = self._label(ctx, name)
            facts["label"] = label
            found = ctx.grounding.object_position(label) if label else None
            if found is None and label:
                obj = ctx.world.get(label)  # in view now (also without memory)
                found = (obj.position, ctx.world.now_ns) if obj is not None else None
            stop_m, within_m = 0.35, 0.5
        if found is not None:
            target = found[0]
            source = "memory"
        else:
            # nothing known: a guess, somewhere 1.5-3 m away in a random direction
            ang = ctx.rng.uniform(-math.pi, math.pi)
            dist = ctx.rng.uniform(1.5, 3.0)
            target = np.array([here[0] + dist * math.cos(ang), here[1] + dist * math.sin(ang), 0])
            source = "guess"
        route = ctx.grounding.route(here[:2], target[:2]) if source == "memory" else []
        facts["route_len"] = len(route)
        d = Decision(self.question, _xy_token(target[:2]), source, "", facts)
        nav = Subgoal(
            "navigate_to",
            {
                "target": [float(target[0]), float(target[1])],
                "route": [[float(p[0]), float(p[1])] for p in route],
                "stop_m": stop_m,
                "within_m": within_m,
            },
        )
        return [nav, Subgoal("wait", {"duration_s": 3.0})], d

    @staticmethod
    def _label(ctx: PlanContext, name: str) -> str:
        known = set(ctx.world.objects)
        for h in ctx.grounding.memory.recall(name, memories=("episodic", "spatial"), top_k=40):
            lab = h.get("data", {}).get("label")
            if h.get("data", {}).get("kind") == "object" and lab:
                known.add(lab)
        return resolve_label(name, known)


class _Generic(_Recipe):
    """Imperative sentences over the skill library, one clause per subgoal:
    "pick up X", "put X on Y", "place X at x, y", "press X", "lift X", "push X left",
    "look for X", "go to X", "wait N seconds"."""

    _CLAUSE = re.compile(r"\s*(?:,\s*then|\bthen\b|\band then\b|;|\.)\s*", re.I)

    def initial(self, ctx):
        steps: list[Subgoal] = []
        for clause in self._CLAUSE.split(ctx.instruction.text or ""):
            clause = clause.strip()
            if clause:
                steps += self._parse(ctx, clause)
        if not steps:
            raise SkillError(f"cannot make a plan for {ctx.instruction.text!r}")
        return steps

    def _obj(self, ctx: PlanContext, name: str) -> str:
        return resolve_label(name, ctx.world.objects) or name.strip()

    def _parse(self, ctx: PlanContext, c: str) -> list[Subgoal]:
        if m := re.match(r"(?:pick up|pick|grab|take) (?:the )?(.+)", c, re.I):
            obj = self._obj(ctx, m.group(1))
            return [Subgoal("pick", {"object": obj}, alternatives=[{"grasp_dz_m": -0.006}])]
        if m := re.match(
            r"(?:put|place) (?:the )?(.+?) (?:on|onto|in|into) (?:the )?(.+)", c, re.I
        ):
            obj = self._obj(ctx, m.group(1))
            return [
                Subgoal("pick", {"object": obj}),
                Subgoal("place", {"object": obj, "on": self._obj(ctx, m.group(2))}),
            ]
        if m := re.match(r"(?:press|push the button|hit) (?:the )?(.+)", c, re.I):
            return [Subgoal("press", {"object": self._obj(ctx, m.group(1))})]
        if m := re.match(r"(?:lift|raise) (?:the )?(.+)", c, re.I):
            return [Subgoal("lift", {"object": self._obj(ctx, m.group(1))})]
        if m := re.match(
            r"push (?:the )?(.+?) (left|right|forward|away|back|towards you)", c, re.I
        ):
            d = {"left": [1, 0], "right": [-1, 0], "forward": [0, -1], "away": [0, -1]}.get(
                m.group(2).lower(), [0, 1]
            )
            return [
                Subgoal(
                    "push",
                    {"object": self._obj(ctx, m.group(1)), "direction": d, "distance_m": 0.06},
                )
            ]
        if m := re.match(r"(?:look for|find|search for) (?:the )?(.+)", c, re.I):
            return [Subgoal("look_for", {"object": self._obj(ctx, m.group(1))})]
        if m := re.match(r"wait(?: for)? (\d+(?:\.\d+)?) ?s", c, re.I):
            return [Subgoal("wait", {"duration_s": float(m.group(1))})]
        if re.match(r"(?:go|drive|navigate) to", c, re.I):
            return [Subgoal("decide", {"question": "goal_object", "kind": "object"})]
        if re.match(r"(?:watch|remember|observe|listen)", c, re.I):
            return [Subgoal("watch", {"until": "still", "settle_s": 0.5, "max_s": 10.0})]
        raise SkillError(f"cannot understand {c!r}")

    def decide(self, ctx, subgoal):
        return _GoTo("object").decide(ctx, subgoal)


_RECIPES: dict[str, Callable[[], _Recipe]] = {
    "cups": _Cups,
    "button_sequence": _Buttons,
    "count": _Count,
    "put_back": _PutBack,
    "fetch_seen": lambda: _GoTo("object"),
    "where_heard": lambda: _GoTo("sound"),
    "tour": _Tour,
    "generic": _Generic,
}


class RuleBasedPlanner(Planner):
    """The default planner: task recipes grounded in memory, no language model."""

    name = "rule"

    def plan(self, ctx: PlanContext) -> Plan:
        task = detect_task(ctx.instruction)
        steps = _RECIPES[task]().initial(ctx)
        return Plan(task=task, instruction=ctx.instruction.text, steps=steps)

    def decide(self, ctx, plan, subgoal):
        recipe = _RECIPES[plan.task]()
        return recipe.decide(ctx, subgoal)


# ---------------------------------------------------------------------------------------
# the executive


class ClosedLoop:
    """Plan -> act -> critic -> replan, one action chunk per ``tick``. See module doc.

    ``on_step(PlanStep)`` receives every status change. ``tick(world)`` returns the
    next (H, A) chunk; when there is nothing to do it returns a hold chunk.
    """

    def __init__(
        self,
        planner: Planner,
        *,
        grounding: Grounding,
        critic: Critic | None = None,
        loop: LoopDetector | None = None,
        skill_config: SkillConfig | None = None,
        on_step: Callable[[PlanStep], None] | None = None,
        seed: int = 0,
        settle_steps: int = 2,
        hold_steps: int = 2,
    ) -> None:
        self.planner = planner
        self.grounding = grounding
        self.critic = critic or Critic()
        self.loop = loop or LoopDetector()
        self.skill_config = skill_config or SkillConfig()
        self.on_step = on_step or (lambda step: None)
        self.seed = seed
        self.settle_steps = settle_steps
        self.hold_steps = hold_steps
        self.instruction: Instruction | None = None
        self.plan: Plan | None = None
        self.status = "idle"  # idle | running | done | failed
        self.reason = ""
        self.decisions: list[Decision] = []
        self.current: Subgoal | None = None
        self.current_seq = 0
        self._world = WorldView()
        self._gen: Iterator[np.ndarray] | None = None
        self._gripper: float | None = None  # last gripper command sent (arm)
        self._episode_start_ns = 0

    # ---- control --------------------------------------------------------------------------
    def start(self, instruction: Instruction, *, episode_start_ns: int | None = None) -> None:
        """Begin working on ``instruction`` (drops whatever was running)."""
        self.instruction = instruction
        self.plan = None
        self.status = "running"
        self.reason = ""
        self.decisions = []
        self.current = None
        self.loop.reset()
        self._gripper = None
        if episode_start_ns is not None:
            self._episode_start_ns = int(episode_start_ns)
        self._gen = self._run()

    def tick(self, world: WorldView) -> np.ndarray:
        """The next action chunk (H, A) float32 for ``world``."""
        self._world = world
        if world.gripper_command is None:
            world.gripper_command = self._gripper
        chunk = None
        if self._gen is not None:
            try:
                chunk = np.asarray(next(self._gen), np.float32)
            except StopIteration:
                self._gen = None
        if chunk is None:
            chunk = self._hold()
        if world.action_space == ARM_SPACE and chunk.ndim == 2 and chunk.shape[1] == 5:
            self._gripper = float(chunk[-1, 4])
        return chunk

    def _hold(self, steps: int | None = None) -> np.ndarray:
        n = steps or self.hold_steps
        if self._world.action_space == ARM_SPACE:
            _, _, closure = self._world.ee()
            out = np.zeros((n, 5), np.float32)
            out[:, 4] = round(closure)
            return out
        return np.zeros((n, 3), np.float32)

    # ---- steps ----------------------------------------------------------------------------
    def _emit(self, sg: Subgoal, status: str, *, attempt: int = 0, reason: str = "") -> PlanStep:
        ins = self.instruction
        step = PlanStep(
            stamp_ns=max(self._world.now_ns, 0),
            skill=sg.skill,
            args=_jsonable(sg.args),
            status=status,
            attempt=attempt,
            reason=reason,
            episode_id=ins.episode_id if ins is not None else "",
        )
        try:
            self.on_step(step)
        except Exception:  # noqa: BLE001 - reporting must not stop the robot
            log.exception("on_step failed")
        return step

    def _context(self) -> PlanContext:
        ins = self.instruction
        assert ins is not None
        rng = np.random.default_rng(
            zlib.crc32(f"{self.seed}:{ins.episode_id}:{ins.text}:{len(self.decisions)}".encode())
        )
        return PlanContext(ins, self._world, self.grounding, rng, self._episode_start_ns)

    def _run(self) -> Iterator[np.ndarray]:
        ctx = self._context()
        try:
            plan = self.plan = self.planner.plan(ctx)
        except Exception as exc:  # noqa: BLE001 - a plan that cannot be made is a failure
            self._finish("failed", f"no plan: {exc}")
            self._emit(Subgoal("task"), "aborted", reason=f"no plan: {exc}")
            return
        attempts: dict[str, int] = {}
        i = 0
        while i < len(plan.steps):
            sg = plan.steps[i]
            if sg.skill == "decide":
                try:
                    new, decision = self.planner.decide(self._context(), plan, sg)
                except Exception as exc:  # noqa: BLE001
                    self._emit(sg, "failed", reason=str(exc))
                    self._finish("failed", f"cannot decide {sg.args.get('question')}: {exc}")
                    self._emit(Subgoal("task"), "aborted", reason=self.reason)
                    return
                self.decisions.append(decision)
                plan.facts[decision.question] = {
                    "answer": decision.answer,
                    "source": decision.source,
                    **_jsonable(decision.facts),
                }
                args = {"question": decision.question, "answer": decision.answer}
                self._emit(
                    Subgoal("decide", args),
                    "succeeded",
                    reason=f"question={decision.question} {decision.reason()}",
                )
                plan.steps[i : i + 1] = new
                continue
            attempt = attempts.get(sg.key, 0)
            attempts[sg.key] = attempt + 1
            self.current = sg
            running = self._emit(sg, "running", attempt=attempt)
            self.current_seq = running.seq
            verdict = yield from self._execute(sg)
            self._emit(
                sg, "succeeded" if verdict.ok else "failed", attempt=attempt, reason=verdict.reason
            )
            decision = self.loop.record(sg.key, verdict, world_signature(self._world))
            if verdict.ok:
                i += 1
                continue
            new = None
            if decision.action != "abort":
                new = self.planner.replan(self._context(), plan, i, verdict, decision.action)
            if new is None:
                why = decision.reason if decision.action == "abort" else verdict.reason
                if decision.action != "abort":
                    self.loop.give_up(sg.key, f"no alternative after: {decision.reason}")
                self._finish("failed", f"{sg.skill} failed: {why}")
                self._emit(Subgoal("task"), "aborted", reason=self.reason)
                return
            plan.steps[i:] = new
        self.current = None
        self._finish("done", "")

    def _finish(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason
        self.current = None

    def _execute(self, sg: Subgoal) -> Iterator[np.ndarray]:
        """Run one subgoal's controller, settle, ask the critic -> Verdict."""
        try:
            skill = make_skill(sg.skill, self.skill_config)
        except KeyError as exc:
            return Verdict(False, str(exc))
        before = self._world
        trace: list[WorldView] = []
        try:
            for chunk in skill.run(lambda: self._world, sg.args):
                yield chunk
                if len(trace) < 256:
                    trace.append(self._world)
        except SkillError as exc:
            return Verdict(False, str(exc))
        except (KeyError, ValueError, TypeError) as exc:
            return Verdict(False, f"bad arguments {sg.args}: {exc}")
        if sg.skill not in ("watch", "decide") and self.settle_steps:
            yield self._hold(self.settle_steps)  # let fresh percepts arrive
        return self.critic.evaluate(sg, skill, before, self._world, trace, grounding=self.grounding)
