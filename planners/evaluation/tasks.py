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
the current view alone and cannot learn from earlier attempts). Subgoals are
executed by the skill controllers, which keep no memory, so nothing else needs
ablating (the diffusion action expert, which is not used here, has its own
switch, ``use_memory=False``). The table shows both per task with the chance
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

Nothing needs preparing on a fresh machine: subgoals are executed by the skill
controllers (``engram.planners.planning.skills.base`` says why they, not the action expert, are the
tool for these subgoals), perception uses its default random-weight encoder
(identity and 3D come from the simulator's segmentation, as intended) and memory
the MiniLM text encoder shipped in a PyPI package.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from engram.planners.evaluation.pipeline import EvalConfig, Pipeline, make_memory_node
from engram.runtime import registry

__all__ = [
    "bench_json",
    "evaluate_lifelong",
    "evaluate_tasks",
    "format_table",
    "lifelong_tasks",
]


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
) -> dict[str, Any]:
    """Success per task and condition: ``{"tasks": {task: {"memory": {...},
    "no_memory": {...}, "chance": p}}}``; each condition has success_rate, successes,
    episodes, reports."""
    cfg = config or EvalConfig()
    out: dict[str, Any] = {"tasks": {}, "episodes": episodes, "seed": seed}
    for task in tasks:
        row: dict[str, Any] = {"chance": float(registry.get("task", task).chance)}
        for use_memory in conditions:
            t0 = time.monotonic()
            reports = []
            for i in range(episodes):
                # a fresh pipeline (and memory) per episode: episodes are independent;
                # learning across attempts is what --lifelong measures
                pipe = Pipeline(task, seed + i, episodes=1, use_memory=use_memory, config=cfg)
                reports += pipe.run()
            ok = sum(1 for r in reports if r["success"])
            name = "memory" if use_memory else "no_memory"
            row[name] = {
                "success_rate": ok / max(1, len(reports)),
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
        "| task | with memory | no memory | chance |",
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
            cells.append(f"{c['success_rate']:.0%} ({c['successes']}/{c['episodes']})")
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
    for task, r in result["tasks"].items():
        mem, none = r.get("memory"), r.get("no_memory")
        main = mem or none
        extra = {"episodes": main["episodes"], "chance": round(r["chance"], 4)}
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
