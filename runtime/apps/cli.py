"""The ``engram`` command line.

Subcommands are ``Command`` entries of the registry (kind ``"command"``), each package
registering its own in its ``register`` module. A subcommand's module provides
``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when that
subcommand is used, so ``engram --help`` starts fast and never imports torch,
open_clip, whisper, open3d or mujoco.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from types import ModuleType

from engram.runtime import registry
from engram.runtime.command import Command, HelpFormatter, describe_subcommands, quiet_third_party

__all__ = ["commands", "main"]


def commands() -> dict[str, Command]:
    """Every registered subcommand by name (imports no command module)."""
    return {name: registry.get("command", name) for name in registry.known("command")}


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
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in commands().items():
        p = sub.add_parser(
            name, help=command.help, description=command.help, formatter_class=HelpFormatter
        )
        if name == selected:
            module = _import_command(name, command)
            module.add_arguments(p)
            describe_subcommands(p)  # nested subcommands: defaults shown, a description each
            p.set_defaults(_run=module.run)
    return parser


def _import_command(name: str, command: Command) -> ModuleType:
    try:
        return command.load()
    except ModuleNotFoundError as exc:
        if exc.name and command.module.startswith(exc.name):
            raise SystemExit(
                f"engram {name}: not available in this build ({command.module} missing)"
            ) from exc
        raise


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in registry.known("command"):
        selected = None
    parser = _build_parser(selected)
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_third_party()  # no "Loading weights" bars from transformers in any command
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
