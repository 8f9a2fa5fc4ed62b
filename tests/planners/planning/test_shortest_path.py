"""One shortest-path routine (``memory.spatial.places.graph_shortest_path``, scipy's
Dijkstra) serves the places graph and the planner's routes; checked against networkx."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest

from engram.memory.spatial.places import graph_shortest_path
from engram.planners.planning import grounding


def test_matches_networkx_on_random_graphs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        edges = [
            (int(a), int(b), float(rng.uniform(0.1, 5.0)))
            for a, b in rng.integers(0, n, (3 * n, 2))
            if a != b
        ]
        g = nx.Graph()
        g.add_nodes_from(range(n))
        for a, b, w in edges:  # parallel edges: the cheapest counts
            if not g.has_edge(a, b) or g[a][b]["weight"] > w:
                g.add_edge(a, b, weight=w)
        start, goal = int(rng.integers(n)), int(rng.integers(n))
        found = graph_shortest_path(n, edges, start, goal)
        if not nx.has_path(g, start, goal):
            assert found is None
            continue
        route, cost = found
        assert cost == pytest.approx(nx.shortest_path_length(g, start, goal, weight="weight"))
        assert route[0] == start and route[-1] == goal
        assert sum(g[a][b]["weight"] for a, b in itertools.pairwise(route)) == pytest.approx(cost)
    with pytest.raises(ValueError, match="node ids"):
        graph_shortest_path(3, [], 0, 5)


def test_planner_routes_use_it_with_arbitrary_place_ids():
    pos = {
        10: np.array([0.0, 0.0]),
        20: np.array([1.0, 0.0]),
        30: np.array([1.0, 1.0]),
        40: np.array([0.0, 1.0]),
        99: np.array([5.0, 5.0]),
    }
    edges = {10: {20, 40}, 20: {10, 30}, 30: {20, 40}, 40: {10, 30}, 99: set()}
    assert grounding._shortest_route(10, 30, pos, edges) in ([10, 20, 30], [10, 40, 30])
    assert grounding._shortest_route(10, 10, pos, edges) == [10]
    assert grounding._shortest_route(10, 99, pos, edges) == [10, 99]  # not joined
