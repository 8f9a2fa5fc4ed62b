"""``Command``: an ``engram`` subcommand as registered (kind ``"command"``) by each package.

Also what every command's command line shares: ``HelpFormatter`` (defaults shown, plain
text), ``progress`` (a bar with a total on a terminal, nothing when piped) and
``quiet_third_party`` (no progress bars or chatter from transformers / huggingface_hub).

A command names a module that provides ``add_arguments(parser)`` and ``run(args) -> int``,
plus a one-line help. Registering one imports nothing: the module is imported only when
that subcommand runs, so ``engram --help`` stays fast::

    register("command", "sim", Command("engram.sim.cli", "simulation tools: ..."))
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

__all__ = [
    "Command",
    "HelpFormatter",
    "describe_subcommands",
    "plain",
    "progress",
    "quiet_third_party",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Command:
    """An ``engram`` subcommand: its module (``add_arguments``, ``run``) and help line."""

    module: str  # dotted module name, imported only when the command runs
    help: str  # one line for ``engram --help``

    def load(self) -> ModuleType:
        """Import the command's module."""
        return importlib.import_module(self.module)


_RST = re.compile(r"``([^`]*)``|:[a-z]+:`([^`]*)`")


def plain(text: str) -> str:
    """Help text without reStructuredText markup (``x`` and :role:`x` become x)."""
    return _RST.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse formatter for every ``engram`` parser: each option's default is shown
    (unless its help already says it, or it is None / a flag), descriptions and epilogs
    keep their line breaks, and RST markup from docstrings is stripped.

    Use: ``argparse.ArgumentParser(..., formatter_class=HelpFormatter)``.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = plain(action.help or "")
        default = action.default
        if (
            "%(default)" in help_text
            or "default" in help_text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default in ([], "", ())
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return help_text
        return f"{help_text} (default: %(default)s)" if help_text else "(default: %(default)s)"

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _format_usage(self, *args: Any, **kwargs: Any) -> str:
        return plain(super()._format_usage(*args, **kwargs))


def describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Give every nested subcommand of ``parser`` (``sim run``, ``memory info``, ...) the
    ``HelpFormatter`` and, when it has none, its one-line help as its description."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:  # argparse has no public walk over subparsers
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, sub in action.choices.items():
            if not sub.description and helps.get(name):
                sub.description = helps[name]
            describe_subcommands(sub)


def quiet_third_party() -> None:
    """No download/loading progress bars or info chatter from transformers and
    huggingface_hub ("Loading weights ...") in Engram's commands; our own bars remain."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers = sys.modules.get("transformers")
    if transformers is not None:  # already imported: the env vars came too late
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    file: Any = None,
) -> Iterator[T]:
    """``iterable`` with a progress bar (with its total) on stderr when stderr is a
    terminal; when piped or redirected, no bar and no carriage returns at all."""
    stream = sys.stderr if file is None else file
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not (hasattr(stream, "isatty") and stream.isatty()):
        yield from iterable
        return
    from tqdm import tqdm

    bar = tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
    try:
        yield from bar
    finally:
        bar.close()
