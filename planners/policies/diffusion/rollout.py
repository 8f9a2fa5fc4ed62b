"""The action expert driving a simulated task directly (no bus): training's periodic
closed-loop validation and ``engram eval --executor expert --harness env``.

End to end (MemoryVLA style): every control step the expert sees the environment's
own observation (robot, objects, task extras: what ``features.py`` lays out) and the
instruction's MiniLM embedding. In the show phase it only writes the step into its
memory bank (``observe``; the robot's actions are ignored there); in the act phase it
samples a chunk every ``execute_steps`` steps and executes that many of its actions,
observing the steps in between (receding horizon); a waypoint expert's actions are
turned into the arm's deltas one step at a time, from the pose measured then. Without memory (``use_memory``
False on the policy) the bank is emptied before every chunk, so the same network
must act from the current observation alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engram.planners.policies.diffusion.features import CAP_TOP_M as _CAP_TOP_M

__all__ = ["TextCache", "oracle_subgoals", "run_env_episode", "run_env_planner_episode", "validate"]


class TextCache:
    """MiniLM text embeddings, computed once per distinct text."""

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> None:
        self._embed = embed
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self._cache:
            if self._embed is None:
                self._embed = _minilm()
            self._cache[text] = np.asarray(self._embed([text]), np.float32)[0]
        return self._cache[text]


_MINILM: list[Any] = []  # the process's MiniLM text encoder, loaded once (seconds)


def _minilm() -> Callable[[Sequence[str]], np.ndarray]:
    if not _MINILM:
        from engram.perception.encoders import make_encoder

        _MINILM.append(make_encoder("minilm").encode_texts)
    return _MINILM[0]


def run_env_episode(
    policy: Any, task: str, seed: int, *, text: TextCache, execute_steps: int = 4, env: Any = None
) -> dict[str, Any]:
    """One end-to-end episode of ``task`` with ``policy`` (an ``ActionExpertPolicy``):
    ``{"task", "seed", "success", "steps", "chunks"}``."""
    from engram.sim.envs import make

    own = env is None
    env = env or make(task)
    try:
        obs, info = env.reset(seed=seed)
        policy.reset(seed=seed)
        queue: list[np.ndarray] = []
        steps = chunks = 0
        while True:
            emb = text(str(info.get("instruction", "")))
            o = {**obs, "step": steps}
            if info.get("phase") != "act":
                policy.observe(o, instruction_embedding=emb)
                action = env.stop_action()
            else:
                if not queue:
                    chunk = policy.act(
                        o, instruction_embedding=emb, raw=True, text=text, task_name=task
                    )
                    queue = list(chunk.actions[: max(1, execute_steps)])
                    chunks += 1
                else:
                    policy.observe(o, instruction_embedding=emb)
                # closed loop: a waypoint is tracked from the arm's pose now
                actions = policy.to_controller(queue.pop(0)[None], obs["robot"])
                if getattr(policy, "guard", None):  # a pointed press stroke carried through
                    actions = policy.guard(actions, obs["robot"])
                actions = _turn_to_grasp(policy, env, actions, obs["robot"])
                action = actions[0]
                if getattr(policy, "executed", None) and policy.executed(action, obs["robot"]):
                    queue = []  # the pointed subgoal is done: point anew
                    # and the step that finished it (the next motion's start) is held
                    hold = np.zeros_like(action)
                    hold[4:] = action[4:]
                    action = hold
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            if terminated or truncated:
                return {
                    "task": task,
                    "seed": seed,
                    "success": bool(info["success"]),
                    "steps": steps,
                    "chunks": chunks,
                }
    finally:
        if own:
            env.close()


def _turn_to_grasp(policy: Any, env: Any, actions: np.ndarray, robot: np.ndarray) -> np.ndarray:
    """End to end in the simulator: the open gripper of a pointed pick / lift turns to
    the object's yaw, read from the simulator as this harness reads every object's
    position (the pipeline's policy node estimates it from the perceived points,
    ``PolicyNode.grasp_yaw``); the expert's state carries no object yaw."""
    from engram.planners.policies.completion import turn_to_yaw

    pointed = getattr(policy, "committed", None)
    if pointed is None or pointed[0] not in ("pick", "lift") or float(actions[0, 4]) >= 0.5:
        return actions
    try:
        yaw = env.body_yaw(pointed[1])
    except (ValueError, AttributeError):
        return actions  # not a body of this scene
    out = np.array(actions, np.float32, copy=True)
    out[:, 3] = turn_to_yaw(yaw, float(robot[3]))
    return out


def validate(
    policy: Any, tasks: Sequence[str], *, episodes: int, seed: int, text: TextCache
) -> dict[str, float]:
    """Success rate per task over ``episodes`` end-to-end episodes (seeds seed..)."""
    out = {}
    for task in tasks:
        ok = sum(
            run_env_episode(policy, task, seed + i, text=text)["success"] for i in range(episodes)
        )
        out[task] = ok / max(1, episodes)
    return out


def oracle_subgoals(task: str, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """The scripted expert's subgoals for (task, seed), in order: (skill, object label,
    target [x, y]) as ``features.label_subgoals`` cuts its demonstration (what a
    perfect planner with perfect grounding hands the executor)."""
    from engram.planners.policies.diffusion import features as F
    from engram.planners.policies.scripted import ExpertPolicy, run_episode
    from engram.sim.envs import make

    env = make(task)
    rec: dict[str, list[Any]] = {"robot": [], "actions": [], "act": [], "objects": []}
    state: dict[str, Any] = {}

    def on_step(obs: Any, action: Any, info: Any) -> None:
        rec["robot"].append(state["obs"]["robot"])
        rec["objects"].append(state["obs"]["objects"])
        rec["act"].append(state["info"].get("phase") == "act")
        rec["actions"].append(np.asarray(action, np.float32))
        state["obs"], state["info"] = obs, info

    try:
        obs, info = env.reset(seed=seed)
        state["obs"], state["info"] = obs, info
        names = list(info.get("object_names", []))
        policy = ExpertPolicy()
        # run_episode resets the env itself with the same seed: the same episode
        orig_reset = env.reset

        def reset(**kw: Any) -> Any:
            o, i = orig_reset(**kw)
            state["obs"], state["info"] = o, i
            return o, i

        env.reset = reset  # type: ignore[method-assign]
        run_episode(env, policy, seed=seed, on_step=on_step)
    finally:
        env.close()
    labels = F.label_subgoals(
        np.stack(rec["robot"]),
        np.stack(rec["actions"]),
        np.asarray(rec["act"], bool),
        np.stack(rec["objects"]).reshape(len(rec["act"]), -1, 5),
        names,
    )
    out: list[tuple[str, str, np.ndarray]] = []
    prev: Any = None
    for item in labels:
        # one tuple per segment (consecutive presses of one button are separate)
        if item is not None and item is not prev:
            prev = item
            skill, _, label = item[0].partition(" ")
            match = [n for n in names if n.replace("_", " ") == label]
            out.append((skill, match[0] if match else label, np.asarray(item[1], np.float32)))
    return out


def run_env_planner_episode(
    policy: Any,
    task: str,
    seed: int,
    *,
    text: TextCache,
    execute_steps: int = 4,
    grounded: bool = True,
    press_attempts: int = 3,
) -> dict[str, Any]:
    """Planner mode in the simulator with an oracle planner: the scripted expert's
    subgoals (``oracle_subgoals``) in order, each executed by ``policy`` until the
    executor's own completion rule (``completion.SubgoalTracker``) reports it; the
    target is the object's simulated position at the subgoal's start (``grounded``;
    a place keeps the demonstration's target), else the demonstration's.
    ``{"task", "seed", "success", "steps", "chunks", "subgoals", "aim_m"}``: aim_m per
    press / pick, the xy distance from the target where the tool went lowest.

    A press is checked for depth as in the pipeline: the tracker gets the cap's top
    (its simulated body height + ``_CAP_TOP_M``, ``sim/tasks/_tabletop.py`` cap_top;
    the node uses the perceived top) and a press that fails (too shallow) is retried,
    up to ``press_attempts`` times in all, as the planner retries a failed subgoal;
    ``{"shallow": n}`` counts those failures."""
    from engram.planners.policies.completion import SubgoalTracker
    from engram.sim.envs import make

    plan = oracle_subgoals(task, seed)
    env = make(task)
    try:
        obs, info = env.reset(seed=seed)
        names = list(info.get("object_names", []))
        policy.reset(seed=seed)
        tracker = SubgoalTracker()
        queue: list[np.ndarray] = []
        steps = chunks = k = 0
        goal: np.ndarray | None = None
        started = False
        aims: list[float] = []
        low: tuple[float, float] = (np.inf, np.inf)
        grip = 0.0
        shallow = tries = 0
        while True:
            o = {**obs, "step": steps}
            if info.get("phase") != "act" or k >= len(plan):
                emb = text(str(info.get("instruction", "")))
                policy.observe(o, instruction_embedding=emb)
                action = env.stop_action()
            else:
                skill, label, demo_goal = plan[k]
                if goal is None:
                    goal = demo_goal
                    objs = np.asarray(obs["objects"], np.float32).reshape(-1, 5)
                    seen = label in names and objs[names.index(label), 0] > 0.5
                    if grounded and skill != "place" and seen:
                        goal = objs[names.index(label), 1:3].copy()
                    cap: dict[str, Any] = {}
                    if skill == "press" and seen:
                        o5 = objs[names.index(label)]
                        cap = {"cap_top_z": float(o5[3]) + _CAP_TOP_M, "cap_xy": o5[1:3]}
                    tracker.start(skill, obs["robot"], gripper=grip, **cap)
                    started, low = True, (np.inf, np.inf)
                    if getattr(policy, "begin_subgoal", None):
                        policy.begin_subgoal()
                from engram.planners.policies.diffusion.features import subgoal_text

                emb = text(subgoal_text(skill, label))
                og = {**o, "goal": goal}
                if not queue:
                    chunk = policy.act(og, instruction_embedding=emb, raw=True)
                    queue = list(chunk.actions[: max(1, execute_steps)])
                    chunks += 1
                action = policy.to_controller(queue.pop(0)[None], obs["robot"])[0]
                grip = float(action[4])
                if getattr(policy, "executed", None):
                    policy.executed(action, obs["robot"])
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            if started and goal is not None and k < len(plan):
                z = float(obs["robot"][2])
                if z < low[0]:
                    low = (z, float(np.linalg.norm(obs["robot"][:2] - goal)))
                verdict = tracker.update(action, obs["robot"])
                if verdict is not None:
                    if plan[k][0] in ("press", "pick", "lift"):
                        aims.append(low[1])
                    retry = plan[k][0] == "press" and verdict[0] == "failed"
                    shallow += int(retry)
                    tries = tries + 1 if retry else 0
                    if not retry or tries >= press_attempts:
                        k, tries = k + 1, 0
                    goal, queue, started = None, [], False
            if terminated or truncated:
                return {
                    "task": task,
                    "seed": seed,
                    "success": bool(info["success"]),
                    "steps": steps,
                    "chunks": chunks,
                    "subgoals": k,
                    "aim_m": aims,
                    "shallow": shallow,
                }
    finally:
        env.close()
