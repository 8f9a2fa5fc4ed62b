"""Every launch graph of the project validates (node types, params, topics, groups)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engram.runtime.launcher import Launch

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
GRAPHS = sorted([*LAUNCH.glob("*.yaml"), *LAUNCH.glob("compose/*.yaml")])


def test_there_are_graphs():
    assert (LAUNCH / "sim_full.yaml") in GRAPHS


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: str(p.relative_to(LAUNCH)))
def test_graph_validates(path: Path):
    assert Launch.from_yaml(path).validate() == []


#: the nodes of the agent graph (``sim_full.yaml``): built from launch graphs only
_GRAPH_NODES = {"SimNode", "PerceptionNode", "MemoryNode", "PlannerNode"}


def test_no_second_wiring_of_the_agent_graph_in_python():
    """Applications load ``launch/*.yaml`` (``load_graph`` / ``build_nodes``); no package
    module constructs the agent graph's nodes itself."""
    root = LAUNCH.parent
    offenders = []
    for package in ("runtime", "perception", "memory", "planners", "sim"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    if name in _GRAPH_NODES:
                        offenders.append(f"{path.relative_to(root)}:{node.lineno} {name}(...)")
    assert offenders == []
