"""``Command``: an ``engram`` subcommand as registered (kind ``"command"``) by each package.

A command names a module that provides ``add_arguments(parser)`` and ``run(args) -> int``,
plus a one-line help. Registering one imports nothing: the module is imported only when
that subcommand runs, so ``engram --help`` stays fast::

    register("command", "sim", Command("engram.sim.cli", "simulation tools: ..."))
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    """An ``engram`` subcommand: its module (``add_arguments``, ``run``) and help line."""

    module: str  # dotted module name, imported only when the command runs
    help: str  # one line for ``engram --help``

    def load(self) -> ModuleType:
        """Import the command's module."""
        return importlib.import_module(self.module)
