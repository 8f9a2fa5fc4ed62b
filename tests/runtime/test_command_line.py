"""What every ``engram`` command line shares: defaults in --help, plain text, a description
for every subcommand, progress bars only on terminals, quiet third-party bars, launch -v."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engram.runtime.apps.cli import _build_parser, commands
from engram.runtime.command import HelpFormatter, plain, progress, quiet_third_party

REPO = Path(__file__).resolve().parents[2]


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_help_shows_defaults_plain_text_and_descriptions(name):
    top = _build_parser(name)
    [(_, parser)] = [(n, p) for n, p in _subparsers(top) if n == name]
    todo = [(name, parser)]
    while todo:
        label, p = todo.pop()
        text = p.format_help()
        assert "``" not in text and ":class:`" not in text, f"RST markup in {label} --help"
        assert p.description, f"engram {label} has no description"
        assert issubclass(p.formatter_class, HelpFormatter), f"engram {label}: plain formatter"
        formatter = HelpFormatter(prog=label)
        for action in p._actions:
            default = action.default
            if (
                not action.option_strings
                or action.help == argparse.SUPPRESS
                or default in (None, "", [], (), argparse.SUPPRESS)
                or isinstance(default, bool)
            ):
                continue
            assert action.help, f"engram {label} {action.option_strings[0]} has no help"
            assert "default" in formatter._get_help_string(action).lower(), (
                f"engram {label} {action.option_strings[0]}: default not shown"
            )
        todo += [(f"{label} {n}", sub) for n, sub in _subparsers(p)]


def test_formatter_adds_defaults_once_and_strips_rst():
    parser = argparse.ArgumentParser(
        prog="x", description="see ``engram sim``", formatter_class=HelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2.0, help="speed (``x``)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--flag", action="store_true", help="a flag")
    text = parser.format_help()
    assert "speed (x) (default: 2.0)" in text
    assert "seed (default 0)" in text and "(default: 0)" not in text
    assert "a flag" in text and "default: False" not in text
    assert "see engram sim" in text
    assert plain(":class:`Frame` and ``x``") == "Frame and x"


def test_progress_is_silent_when_piped_and_has_a_total_on_a_terminal():
    piped = io.StringIO()
    assert list(progress(range(5), desc="x", file=piped)) == [0, 1, 2, 3, 4]
    assert piped.getvalue() == ""  # no bar, no carriage returns

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    assert list(progress(range(3), desc="episodes", file=tty)) == [0, 1, 2]
    assert "3/3" in tty.getvalue() and "episodes" in tty.getvalue()


def test_quiet_third_party_turns_hub_and_transformers_bars_off(monkeypatch):
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(var, raising=False)
    quiet_third_party()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"


def test_launch_verbose_prints_each_nodes_heartbeat_summary():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engram.runtime.apps.cli",
            "launch",
            "-v",
            "launch/demo.yaml",
            "--duration-s",
            "2.5",
            "--status-every-s",
            "0.8",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if ": running, up " in line]
    assert any(line.startswith("engram launch: camera: running") for line in lines), out.stderr
    assert any("stats: running" in line and "received" in line for line in lines)
    assert len(lines) >= 4  # periodic: both nodes, at least twice
