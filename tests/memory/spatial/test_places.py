"""Topology graph of places: an apartment tour through doors, shortest paths."""

import itertools

import numpy as np
import pytest

from engram.memory.spatial import PlaceGraph, PlaceGraphConfig, SpatialConfig, SpatialMemory
from engram.runtime.messages import MemoryQuery, RobotState
from tests.memory.spatial._helpers import make_percept, unit

# Four 4 x 4 m rooms: A (SW), B (SE), C (NE), D (NW). Doors: A-B, B-C, C-D (no A-D door).
ROOMS = {"A": (0, 4, 0, 4), "B": (4, 8, 0, 4), "C": (4, 8, 4, 8), "D": (0, 4, 4, 8)}
# walls as (x0, y0, x1, y1) segments; doors are gaps in them
WALLS = [
    (0, 0, 8, 0), (0, 8, 8, 8), (0, 0, 0, 8), (8, 0, 8, 8),  # outside
    (4, 0, 4, 1.5), (4, 2.5, 4, 5.5), (4, 6.5, 4, 8),  # x = 4 with doors A-B and D-C
    (0, 4, 4, 4),  # A-D: solid
    (4, 4, 5.5, 4), (6.5, 4, 8, 4),  # B-C with a door at x in [5.5, 6.5]
]  # fmt: skip
TOUR = [(1, 2), (3, 2), (4, 2), (6, 2), (6, 3), (6, 4), (6, 6), (5, 6), (4, 6), (2, 6), (1, 6.5),
        (2, 6), (4, 6), (6, 6), (6, 4), (6, 2), (4, 2), (2, 2), (1, 1)]  # fmt: skip
SOFA = np.array([1.0, 7.0, 0.4])  # in room D


def _room_of(p):
    for name, (x0, x1, y0, y1) in ROOMS.items():
        if x0 <= p[0] <= x1 and y0 <= p[1] <= y1:
            return name
    return None


def _segments_cross(p, q, a, b):
    def orient(u, v, w):
        return np.sign((v[0] - u[0]) * (w[1] - u[1]) - (v[1] - u[1]) * (w[0] - u[0]))

    return orient(p, q, a) != orient(p, q, b) and orient(a, b, p) != orient(a, b, q)


def _crosses_wall(p, q):
    return any(_segments_cross(p[:2], q[:2], w[:2], w[2:]) for w in WALLS)


def _tour_positions(step_m=0.1):
    out = []
    for (x0, y0), (x1, y1) in itertools.pairwise(TOUR):
        n = max(1, int(np.hypot(x1 - x0, y1 - y0) / step_m))
        for s in np.arange(n) / n:
            out.append((x0 + s * (x1 - x0), y0 + s * (y1 - y0), 0.0))
    out.append((*TOUR[-1], 0.0))
    return np.array(out)


def _all_pairs_costs(graph):
    """Floyd-Warshall over the place graph: (P, P) shortest costs (inf = unreachable)."""
    n = len(graph)
    d = np.full((n, n), np.inf)
    np.fill_diagonal(d, 0.0)
    for a, nbs in graph.edges.items():
        for b, w in nbs.items():
            d[a, b] = min(d[a, b], w)
    for k in range(n):
        d = np.minimum(d, d[:, k : k + 1] + d[k : k + 1, :])
    return d


def _pose(p):
    t = np.eye(4)
    t[:3, 3] = p
    return t


@pytest.fixture(scope="module")
def toured_memory():
    """A SpatialMemory fed a robot tour (RobotState) and camera percepts with room
    embeddings and the objects visible in each room."""
    rng = np.random.default_rng(0)
    room_emb = {name: unit(rng, 32) for name in ROOMS}
    sofa_emb = unit(rng, 32)
    mem = SpatialMemory(SpatialConfig())
    stamp = 1_000_000_000
    for i, p in enumerate(_tour_positions()):
        mem.write(RobotState(stamp_ns=stamp, world_from_base=_pose(p)))
        if i % 3 == 0:
            room = _room_of(p)
            view = room_emb[room] + 0.05 * unit(rng, 32)
            objects = []
            if room == "D":
                objects.append({"id": 7, "label": "sofa", "centroid": SOFA, "embedding": sofa_emb})
            mem.write(
                make_percept(
                    stamp_ns=stamp,
                    world_from_camera=_pose(p + np.array([0.0, 0.0, 1.2])),
                    objects=objects,
                    embedding=view / np.linalg.norm(view),
                )
            )
        stamp += 100_000_000
    return mem, room_emb, sofa_emb


def test_tour_connects_rooms_through_doors(toured_memory):
    mem, _, _ = toured_memory
    graph = mem.places
    assert 10 <= len(graph) <= 40
    rooms = {_room_of(p.position) for p in graph.places}
    assert rooms == {"A", "B", "C", "D"}
    for a, nbs in graph.edges.items():
        for b, w in nbs.items():
            pa, pb = graph.places[a].position, graph.places[b].position
            assert not _crosses_wall(pa, pb), f"edge {a}-{b} goes through a wall"
            assert w >= np.linalg.norm(pa - pb) - 1e-9  # traversal cost >= straight line
    assert np.all(np.isfinite(_all_pairs_costs(graph)))  # connected
    # room A and room D share a wall but no door: no edge joins them
    for a, nbs in graph.edges.items():
        for b in nbs:
            assert {_room_of(graph.places[a].position), _room_of(graph.places[b].position)} != {
                "A",
                "D",
            }


def test_shortest_paths_are_valid_and_optimal(toured_memory):
    mem, _, _ = toured_memory
    graph = mem.places
    brute = _all_pairs_costs(graph)
    rng = np.random.default_rng(1)
    pairs = [(graph.nearest_place([1, 2, 0]), graph.nearest_place([1, 6.5, 0]))]
    pairs += [tuple(rng.choice(len(graph), 2, replace=False)) for _ in range(20)]
    for s, t in pairs:
        path = graph.shortest_path(int(s), int(t))
        assert path is not None and path.place_ids[0] == s and path.place_ids[-1] == t
        cost = 0.0
        for a, b in zip(path.place_ids[:-1], path.place_ids[1:]):
            assert b in graph.edges[a]  # consecutive places are adjacent
            cost += graph.edges[a][b]
            assert not _crosses_wall(graph.places[a].position, graph.places[b].position)
        assert path.cost_m == pytest.approx(cost)
        assert path.cost_m == pytest.approx(brute[s, t])  # A* is optimal
    # from room A to room D the route goes through B and C (doors), not through the wall
    a_to_d = graph.shortest_path(*pairs[0])
    visited = [_room_of(p) for p in a_to_d.positions]
    assert visited[0] == "A" and visited[-1] == "D"
    assert "B" in visited and "C" in visited
    assert a_to_d.cost_m > 10.0  # the straight line is 4.5 m


def test_object_place_and_path_from_current_pose(toured_memory):
    mem, room_emb, _sofa_emb = toured_memory
    place = mem.place_of_object(7)
    assert _room_of(mem.places.places[place].position) == "D"
    assert 7 in mem.places.places[place].landmarks
    # the tour ended in room A
    assert _room_of(mem.world_from_robot[:3, 3]) == "A"
    path = mem.path_to_object(7)
    assert path.place_ids[-1] == place
    assert _room_of(path.positions[0]) == "A"
    start = mem.world_from_robot[:3, 3]
    legs = np.linalg.norm(start - path.positions[0]) + np.linalg.norm(SOFA - path.positions[-1])
    inner = sum(mem.places.edges[a][b] for a, b in zip(path.place_ids[:-1], path.place_ids[1:]))
    assert path.cost_m == pytest.approx(inner + legs)
    # places near a point
    near = mem.places.places_near(np.array([6.0, 6.0, 0.0]), 1.5)
    assert near and all(_room_of(mem.places.places[i].position) == "C" for i, d in near if d < 1.0)
    assert [d for _, d in near] == sorted(d for _, d in near)
    # recall by a room's view embedding finds a place in that room
    hits = mem.recall(MemoryQuery(embedding=room_emb["C"], top_k=3))
    assert hits[0].data["kind"] == "place"
    assert _room_of(hits[0].position) == "C"
    # recall of the sofa by text only (no embedding): label fallback
    hits = mem.recall(MemoryQuery(text="where is the sofa", top_k=3))
    assert hits[0].data["label"] == "sofa" and hits[0].data["place_id"] == place


def test_new_place_on_distance_or_dissimilar_view():
    g = PlaceGraph(PlaceGraphConfig(new_place_distance_m=1.0, new_place_similarity=0.8))
    e1 = np.array([1.0, 0, 0], np.float32)
    e2 = np.array([0.0, 1, 0], np.float32)
    assert g.update(np.zeros(3), embedding=e1) == 0
    assert g.update(np.array([0.5, 0, 0]), embedding=e1) == 0  # near and similar
    assert g.update(np.array([0.6, 0, 0]), embedding=e2) == 1  # near but a new view
    assert g.update(np.array([2.0, 0, 0]), embedding=e2) == 2  # far
    assert g.update(np.array([0.1, 0, 0]), embedding=e1) == 0  # back to the first place
    assert set(g.edges[0]) == {1, 2} and set(g.edges[1]) == {0, 2}
    assert g.edges[1][2] == pytest.approx(1.4)
    assert g.places[0].visits == 3 and g.places[0].views == 3
    with pytest.raises(ValueError, match="place ids"):
        g.shortest_path(0, 9)
    assert g.shortest_path(2, 2).place_ids == [2]


def test_unreachable_places_have_no_path():
    g = PlaceGraph()
    g.update(np.zeros(3))
    g._last_pos = None
    g.current = -1  # teleported: no travel between the two places
    g.update(np.array([10.0, 0, 0]))
    assert len(g) == 2 and g.shortest_path(0, 1) is None


def test_the_fast_norm_is_numpys_norm_bit_for_bit():
    from engram.memory.spatial.places import _norm

    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for n in (3, 512):
            for scale in (1e-3, 1.0, 1e3):
                for _ in range(300):
                    v = (rng.normal(size=n) * scale).astype(dtype)
                    assert _norm(v) == float(np.linalg.norm(v))
