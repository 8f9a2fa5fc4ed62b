"""``engram eval``: the command line of the evaluation (task success, memory QA).

Usage::

    engram eval --task T|all --episodes N --seed S [--no-memory | --memory-only]
                [--lifelong-layouts K] [--attempts A] [--json out.json] [--quick]
    engram eval memory-qa --episodes N --seed S [--json out.json] [--quick]

``engram.planners.evaluation.tasks`` says what the task evaluation measures,
``engram.planners.evaluation.memory_qa`` what the memory QA asks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from engram.planners.evaluation.memory_qa import run_memory_qa
from engram.planners.evaluation.pipeline import EvalConfig
from engram.planners.evaluation.tasks import (
    bench_json,
    evaluate_lifelong,
    evaluate_tasks,
    format_table,
    lifelong_tasks,
)
from engram.runtime import registry

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what",
        nargs="?",
        default="tasks",
        choices=("tasks", "memory-qa"),
        help="tasks (default): success rates; memory-qa: questions about the past",
    )
    tasks = ", ".join(registry.known("task"))
    parser.add_argument("--task", default="all", help=f"one of {tasks}, or all")
    parser.add_argument(
        "--episodes", type=int, default=10, help="episodes per task (or QA streams)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--no-memory", action="store_true", help="only the no-memory ablation")
    group.add_argument("--memory-only", action="store_true", help="only the run with memory")
    parser.add_argument(
        "--lifelong-layouts",
        type=int,
        default=-1,
        help="lifelong check: layouts attempted repeatedly with the show hidden "
        f"({', '.join(lifelong_tasks())}); default min(episodes, 5), 0 = off",
    )
    parser.add_argument("--attempts", type=int, default=0, help="lifelong: attempts per layout")
    parser.add_argument("--json", default="", help="write the BENCH.md JSON here")
    parser.add_argument("--quick", action="store_true", help="small models and frames (fast)")


def run(args: argparse.Namespace) -> int:
    logging.getLogger("memory").setLevel(logging.ERROR)
    cfg = EvalConfig.quick() if args.quick else EvalConfig()
    if args.attempts:
        cfg = replace(cfg, attempts=args.attempts)
    if args.episodes < 1:
        print("engram eval: --episodes must be >= 1", file=sys.stderr)
        return 2
    if args.what == "memory-qa":
        return run_memory_qa(
            episodes=args.episodes, seed=args.seed, json_path=args.json, config=cfg
        )
    known = registry.known("task")
    tasks = list(known) if args.task == "all" else [args.task]
    unknown = [t for t in tasks if t not in known]
    if unknown:
        print(
            f"engram eval: unknown task {unknown[0]!r}; known: {', '.join(known)}, all",
            file=sys.stderr,
        )
        return 2
    conditions = (False,) if args.no_memory else (True,) if args.memory_only else (True, False)
    print(
        f"engram eval: {', '.join(tasks)}, {args.episodes} episodes from seed {args.seed}",
        file=sys.stderr,
    )
    result = evaluate_tasks(
        tasks, episodes=args.episodes, seed=args.seed, conditions=conditions, config=cfg
    )
    lifelong = None
    layouts = min(args.episodes, 5) if args.lifelong_layouts < 0 else args.lifelong_layouts
    chosen = [t for t in tasks if t in lifelong_tasks()]
    if layouts > 0 and chosen and not args.no_memory:
        lifelong = evaluate_lifelong(chosen, layouts=layouts, seed=args.seed, config=cfg)
    print(format_table(result, lifelong))
    if args.json:
        doc = bench_json(result, lifelong)
        doc["details"] = {"tasks": result["tasks"], "lifelong": lifelong}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
