"""``engram eval``: the command line of the evaluation (task success, memory QA).

Usage::

    engram eval --task T|all --episodes N --seed S [--no-memory | --memory-only]
                [--lifelong-layouts K] [--attempts A] [--json out.json] [--quick]
                [--executor skills|expert] [--mode planner|end_to_end]
                [--checkpoint NAME|PATH] [--harness pipeline|env]
                [--ray local|auto|ADDRESS [--workers N]]  (engram.planners.evaluation.distributed)
    engram eval memory-qa --episodes N --seed S [--json out.json] [--quick]
    engram eval memory-qa --hard --episodes N --seed S [--minutes 1,5,20] [--json out.json]

``engram.planners.evaluation.tasks`` says what the task evaluation measures,
``engram.planners.evaluation.memory_qa`` what the memory QA asks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from functools import partial

from engram.planners.evaluation.distributed import add_ray_arguments, check_ray_arguments
from engram.planners.evaluation.memory_qa import run_memory_qa
from engram.planners.evaluation.pipeline import EvalConfig
from engram.planners.evaluation.tasks import (
    bench_json,
    evaluate_lifelong,
    evaluate_tasks,
    format_table,
    lifelong_tasks,
)
from engram.planners.policies.diffusion.checkpoint import DEFAULT_CHECKPOINT
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
    parser.add_argument(
        "--json", default="", help="write the results here as JSON (shape: bench/README.md)"
    )
    parser.add_argument("--quick", action="store_true", help="small models and frames (fast)")
    parser.add_argument(
        "--hard",
        action="store_true",
        help="memory-qa: the harder benchmark (natural wordings, unanswerable, multi-hop, "
        "counting; long streams; flat-retrieval baseline): "
        "engram.planners.evaluation.memory_qa_hard",
    )
    parser.add_argument(
        "--minutes",
        default="1,5,20",
        help="memory-qa --hard: stream lengths in minutes of sim time (default 1,5,20)",
    )
    add_ray_arguments(parser)  # --ray local|auto|ADDRESS, --workers N: episodes as Ray tasks
    parser.add_argument(
        "--executor",
        choices=("skills", "expert"),
        default="skills",
        help="who moves the robot: the planner's skill controllers (default) or the "
        "learned diffusion action expert (the policy node)",
    )
    parser.add_argument(
        "--mode",
        choices=("planner", "end_to_end"),
        default="planner",
        help="with --executor expert: planner (the expert executes the planner's "
        "subgoals, default) or end_to_end (instruction + its own memory bank only)",
    )
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help=f"with --executor expert: a shipped checkpoint's name (default {DEFAULT_CHECKPOINT}) or "
        "a checkpoint from `engram train`",
    )
    parser.add_argument(
        "--perception",
        choices=("ground_truth", "camera"),
        default="ground_truth",
        help="ground_truth: the simulator's segmentation gives identity and labels; camera: "
        "RGB-D and pose only, objects proposed, tracked and named by perception (the "
        "sim-trained encoder), as on a real camera",
    )
    parser.add_argument(
        "--harness",
        choices=("pipeline", "env"),
        default="pipeline",
        help="pipeline (the launch graph in lockstep, default) or env (the expert end to "
        "end in the simulator directly, no bus: fast)",
    )


def run(args: argparse.Namespace) -> int:
    logging.getLogger("memory").setLevel(logging.ERROR)
    cfg = EvalConfig.quick() if args.quick else EvalConfig()
    if args.attempts:
        cfg = replace(cfg, attempts=args.attempts)
    cfg = replace(cfg, perception=getattr(args, "perception", "ground_truth"))
    if args.episodes < 1:
        print("engram eval: --episodes must be >= 1", file=sys.stderr)
        return 2
    if problem := check_ray_arguments(args, "engram eval"):
        print(problem, file=sys.stderr)
        return 2
    if args.what == "memory-qa" and args.ray:  # streams as Ray tasks
        from engram.planners.evaluation.distributed import run_memory_qa_distributed

        return run_memory_qa_distributed(
            episodes=args.episodes,
            seed=args.seed,
            json_path=args.json,
            config=cfg,
            address=args.ray,
            workers=args.workers,
        )
    if args.what == "memory-qa" and args.hard:
        from engram.planners.evaluation.memory_qa_hard import run_memory_qa_hard

        try:
            minutes = tuple(float(m) for m in args.minutes.split(",") if m.strip())
        except ValueError:
            minutes = ()
        if not minutes or min(minutes) <= 0:
            print(f"engram eval: --minutes {args.minutes!r}: expected e.g. 1,5,20", file=sys.stderr)
            return 2
        return run_memory_qa_hard(
            streams=args.episodes, seed=args.seed, minutes=minutes, json_path=args.json
        )
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
    if args.executor == "expert":
        from engram.planners.policies.diffusion.checkpoint import check_expert_task

        try:
            trained = check_expert_task(args.checkpoint, args.task)
        except (FileNotFoundError, ValueError) as exc:
            print(f"engram eval: {exc}", file=sys.stderr)
            return 2
        if args.task == "all":
            tasks = [t for t in tasks if t in trained]  # the tasks the expert learned
    print(
        f"engram eval: {', '.join(tasks)}, {args.episodes} episodes from seed {args.seed}",
        file=sys.stderr,
    )
    if args.harness == "env" and (args.executor != "expert" or args.mode != "end_to_end"):
        print(
            "engram eval: --harness env needs --executor expert --mode end_to_end",
            file=sys.stderr,
        )
        return 2
    try:
        if args.ray:  # episodes as Ray tasks (engram.planners.evaluation.distributed)
            from engram.planners.evaluation.distributed import evaluate_tasks_distributed

            evaluate = partial(evaluate_tasks_distributed, address=args.ray, workers=args.workers)
        else:
            evaluate = evaluate_tasks
        result = evaluate(
            tasks,
            episodes=args.episodes,
            seed=args.seed,
            conditions=conditions,
            config=cfg,
            executor=args.executor,
            mode=args.mode,
            checkpoint=args.checkpoint,
            harness=args.harness,
        )
    except ValueError as exc:  # e.g. a checkpoint that does not match this code
        print(f"engram eval: {exc}", file=sys.stderr)
        return 2
    lifelong = None
    layouts = min(args.episodes, 5) if args.lifelong_layouts < 0 else args.lifelong_layouts
    chosen = [t for t in tasks if t in lifelong_tasks()]
    if layouts > 0 and chosen and not args.no_memory and args.executor == "skills":
        lifelong = evaluate_lifelong(chosen, layouts=layouts, seed=args.seed, config=cfg)
    print(format_table(result, lifelong))
    if cfg.perception == "camera" or cfg.image_encoder == "sim_clip":
        print(
            "model: image encoder sim_clip (weights shipped in perception/weights)", file=sys.stderr
        )
    else:  # ground-truth labels; the open_clip architecture runs with random weights
        print(
            f"model: image encoder {cfg.perception_model}: random weights - its embeddings "
            "and any labels it gives are meaningless",
            file=sys.stderr,
        )
    if args.json:
        doc = bench_json(result, lifelong)
        doc["details"] = {"tasks": result["tasks"], "lifelong": lifelong}
        from engram.planners.evaluation.report import write_report  # CIs, plot, provenance

        doc = write_report(doc, args.json, config={"eval": cfg, "arguments": vars(args)})
        print(f"wrote {args.json} (plot: {doc['plot']})", file=sys.stderr)
    return 0
