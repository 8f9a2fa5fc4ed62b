"""``engram sim``: list tasks, run episodes, collect demonstrations.

    engram sim list
    engram sim run --task cups --seed 0 --policy expert [--episodes 5] [--out DIR] [--json]
    engram sim collect --task cups --episodes 50 --out data/cups [--images]

MuJoCo is imported only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run"]

_POLICIES = ("expert", "reactive", "stop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    sub.add_parser("list", help="list the tasks, their action spaces and chance rates")

    p = sub.add_parser("run", help="run episodes of a task with a built-in policy")
    p.add_argument("--task", default="cups", help="task name (see `engram sim list`)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--episodes", type=int, default=1, help="number of episodes")
    p.add_argument("--policy", choices=_POLICIES, default="expert", help="who acts")
    p.add_argument("--out", default="", help="write ground truth (and frames) here")
    p.add_argument("--frames", action="store_true", help="with --out: save the camera's frames")
    p.add_argument("--width-px", type=int, default=320, help="frame width (with --frames)")
    p.add_argument("--height-px", type=int, default=240, help="frame height (with --frames)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    c = sub.add_parser(
        "collect", help="record scripted-expert demonstrations (a LeRobotDataset v3)"
    )
    c.add_argument("--task", required=True, help="task name (see `engram sim list`)")
    c.add_argument("--episodes", type=int, required=True, help="number of episodes")
    c.add_argument("--out", required=True, help="output directory (a new LeRobotDataset)")
    c.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    c.add_argument("--policy", choices=_POLICIES, default="expert", help="who acts")
    c.add_argument("--images", action="store_true", help="also store the camera's RGB frames")
    c.add_argument("--width-px", type=int, default=128, help="image width with --images")
    c.add_argument("--height-px", type=int, default=96, help="image height with --images")
    c.add_argument("--camera", default="", help="camera for --images (default: the task's)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")


def _list() -> int:
    from engram.runtime import registry
    from engram.sim.envs import make

    for name in registry.known("task"):
        env = make(name)
        s = env.controller.space
        print(f"{name:16s} {env.description}")
        print(
            f"{'':16s} actions {s.name} [{', '.join(s.names)}], max {env.max_steps} steps "
            f"of {env.config.control_dt_s} s, chance {env.chance_success:.3f}"
        )
        env.close()
    print(f"{'model':16s} any MJCF model by path (SimNodeConfig.model_path): raw ctrl actions")
    return 0


def _run(args: argparse.Namespace) -> int:
    from engram.runtime import registry
    from engram.runtime.command import progress
    from engram.sim._io import write_png
    from engram.sim.envs import make

    kwargs = {"width_px": args.width_px, "height_px": args.height_px}
    env = make(args.task, **kwargs)
    out = Path(args.out) if args.out else None
    results = []
    for i in range(args.episodes):
        seed = args.seed + i
        policy = registry.get("policy", args.policy)(seed=seed)
        obs, info = env.reset(seed=seed)
        policy.reset(env)
        t0 = time.perf_counter()
        step = 0
        ticks = progress(  # a bar with the step limit as total, on a terminal only
            iter(int, 1), total=getattr(env, "max_steps", None), desc=f"seed {seed}", unit="step"
        )
        while True:
            next(ticks)
            if out is not None and args.frames:
                write_png(out / f"{args.task}_{seed}" / f"{step:05d}.png", env.render_frame().rgb)
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info).actions[0])
            step += 1
            if terminated or truncated:
                break
        ticks.close()
        row = {
            "task": args.task,
            "seed": seed,
            "policy": args.policy,
            "success": bool(info["success"]),
            "steps": step,
            "sim_time_s": round(env.t, 2),
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "instruction": info["instruction"],
        }
        if out is not None:
            row["ground_truth"] = str(env.log.save(out / f"{args.task}_{seed}.json"))
        results.append(row)
        if not args.json:
            print(
                f"{args.task} seed {seed}: {'success' if row['success'] else 'failure'} "
                f"in {step} steps ({row['sim_time_s']} s sim, {row['wall_time_s']} s wall)"
            )
    env.close()
    rate = sum(r["success"] for r in results) / len(results)
    if args.json:
        print(json.dumps({"success_rate": rate, "episodes": results}))
    else:
        print(f"success rate {rate:.2f} over {len(results)} episode(s)")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from engram.sim.collect import collect

    try:
        meta = _run_collect(collect, args)
    except ValueError as exc:
        print(f"engram sim collect: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(meta['episodes'])} episode(s) of {args.task} to {args.out} "
        f"(LeRobotDataset v3, success rate {meta['success_rate']:.2f})"
    )
    return 0


def _run_collect(collect, args: argparse.Namespace) -> dict:
    return collect(
        args.task,
        args.episodes,
        args.out,
        seed=args.seed,
        policy=args.policy,
        images=args.images,
        width_px=args.width_px,
        height_px=args.height_px,
        camera=args.camera or None,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "sim_command", None)
    if command is None:
        print("usage: engram sim {list,run,collect} ... (see engram sim --help)", file=sys.stderr)
        return 2
    if command == "run" and args.episodes < 1:
        print("engram sim run: --episodes must be >= 1", file=sys.stderr)
        return 2
    try:
        return {
            "list": lambda: _list(),
            "run": lambda: _run(args),
            "collect": lambda: _collect(args),
        }[command]()
    except (KeyError, ValueError, FileNotFoundError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"engram sim {command}: {text}", file=sys.stderr)
        return 2
