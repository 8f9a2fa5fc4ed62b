"""The ``engram`` command line.

Subcommands are registered in ``COMMANDS`` as ``name -> (module, help)``. A
subcommand's module provides ``add_arguments(parser)`` and ``run(args) -> int``
and is imported only when that subcommand is used, so ``engram --help`` starts
fast and never imports torch, open_clip, whisper, open3d or mujoco.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("engram.runtime.demo", "run the main job: a MuJoCo episode through the full pipeline"),
    "launch": ("engram.runtime.launcher", "start (or --check) a declarative launch graph (YAML)"),
    "record": ("engram.runtime.recorder", "record bus topics to an MCAP file"),
    "replay": ("engram.runtime.replay", "replay an MCAP recording or a ROS 2 bag onto the bus"),
    "keys": ("engram.runtime.keys", "make a ZeroMQ CURVE key pair for a node"),
    "sim": ("engram.sim.cli", "simulation tools: list tasks, run or collect demonstrations"),
    "train": ("engram.planners.train", "train the memory-conditioned action expert"),
    "eval": ("engram.planners.evaluate", "evaluate task success or memory QA (JSON as BENCH.md)"),
    "live": ("engram.runtime.live", "live webcam/mic demo with a web page"),
    "memory": ("engram.memory.cli", "look into a memory store on disk: info, ask, export, import"),
}

_EPILOG = """\
examples:
  engram demo                          a MuJoCo episode through the whole pipeline
  engram launch launch/demo.yaml       start a launch graph
  engram launch --check graph.yaml     only validate a graph
  engram record -o run.mcap /frames    record topics to MCAP
  engram replay run.mcap               publish a recording back on the bus
  engram <command> --help              options of one command
"""


def _build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engram",
        description="Engram: a streaming runtime for embodied agents with memory.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = _import_command(name, module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _import_command(name: str, module_name: str):  # noqa: ANN202 - module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise SystemExit(
                f"engram {name}: not available in this build ({module_name} missing)"
            ) from exc
        raise


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in COMMANDS:
        selected = None
    parser = _build_parser(selected)
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
