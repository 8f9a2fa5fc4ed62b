"""Every launch graph of the project validates (node types, params, topics, groups)."""

from __future__ import annotations

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
