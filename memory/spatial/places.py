"""Topology graph of places (Mem4Nav's semantic topology graph).

A place is a node with a position (where it was created), a descriptor (running mean
of the embeddings of views taken there, float16), the landmark objects seen from it,
and visit evidence. The agent is at the place that is both within
``new_place_distance_m`` and at least ``new_place_similarity`` similar to its current
view (nearest such place); when no place qualifies, a new one is created. Moving from
place A to place B adds the edge A-B weighted by the traversal cost: centre of A to
where the agent left A, the distance it travelled, then to the centre of B (the
minimum over traversals). Shortest paths come from ``graph_shortest_path`` (Dijkstra in
scipy.sparse.csgraph), which the planner's routes use too.

Edges only join places the agent actually travelled between, so a path never goes
through a wall the agent could not pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Path", "Place", "PlaceGraph", "PlaceGraphConfig", "graph_shortest_path"]


def _norm(v: np.ndarray) -> float:
    """``float(np.linalg.norm(v))`` of a 1-D float vector, bit for bit (norm computes
    ``sqrt(v.dot(v))``, float32 stays float32), without norm's argument handling."""
    return float(np.sqrt(v.dot(v)))


def graph_shortest_path(
    n: int, edges: Iterable[tuple[int, int, float]], start: int, goal: int
) -> tuple[list[int], float] | None:
    """Shortest path in an undirected graph of ``n`` nodes with weighted ``edges``
    ``(a, b, cost)``: ``(node ids from start to goal, total cost)``, None if unreachable.

    The one shortest-path routine of Engram (the places graph here, the planner's routes
    in ``planners.planning.grounding``): Dijkstra from scipy.sparse.csgraph. Parallel
    edges keep their cheapest cost; a zero cost counts as a tiny positive one (sparse
    matrices cannot hold an explicit zero-cost edge)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    if not (0 <= start < n and 0 <= goal < n):
        raise ValueError(f"node ids must be in [0, {n}), got start={start}, goal={goal}")
    if start == goal:
        return [start], 0.0
    cheapest: dict[tuple[int, int], float] = {}
    for a, b, w in edges:
        key = (min(a, b), max(a, b))
        if a != b and math.isfinite(w):
            cheapest[key] = min(cheapest.get(key, math.inf), max(float(w), 1e-12))
    if not cheapest:
        return None
    rows, cols = zip(*cheapest)
    graph = csr_matrix((list(cheapest.values()), (rows, cols)), shape=(n, n))
    dist, pred = dijkstra(graph, directed=False, indices=start, return_predecessors=True)
    if not math.isfinite(dist[goal]):
        return None
    route = [goal]
    while route[-1] != start:
        route.append(int(pred[route[-1]]))
    route.reverse()
    return route, float(dist[goal])


@dataclass
class PlaceGraphConfig:
    """When places are created and how many are kept."""

    new_place_distance_m: float = 1.0  # a pose farther than this from every place starts a new one
    # a view less similar (cosine) than this to every near place starts a new one
    new_place_similarity: float = 0.7
    max_places: int = 100_000  # beyond this, the agent is assigned to the nearest place instead

    def validate(self) -> None:
        if not self.new_place_distance_m > 0:
            raise ValueError("PlaceGraphConfig.new_place_distance_m must be > 0")
        if not -1.0 <= self.new_place_similarity <= 1.0:
            raise ValueError("PlaceGraphConfig.new_place_similarity must be in [-1, 1]")
        if self.max_places < 1:
            raise ValueError("PlaceGraphConfig.max_places must be >= 1")


@dataclass
class Place:
    """One node of the graph."""

    place_id: int
    position: np.ndarray  # (3,) float64 world metres, where it was created
    descriptor: np.ndarray | None = None  # (D,) float16 running mean of view embeddings
    views: int = 0  # embeddings averaged into the descriptor
    visits: int = 0  # pose updates assigned to this place
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    landmarks: dict[int, int] = field(default_factory=dict)  # object id -> sightings from here


@dataclass
class Path:
    """A route through the graph: place ids in order, total cost in metres."""

    place_ids: list[int]
    cost_m: float
    positions: np.ndarray  # (P, 3) place positions along the route

    def __len__(self) -> int:
        return len(self.place_ids)


class PlaceGraph:
    """Places and traversal edges; see the module docstring."""

    def __init__(self, config: PlaceGraphConfig | None = None) -> None:
        self.config = config or PlaceGraphConfig()
        self.config.validate()
        self.places: list[Place] = []
        self.edges: dict[int, dict[int, float]] = {}  # a -> {b: cost_m}, symmetric
        self.traversals: dict[tuple[int, int], int] = {}  # (min, max) -> count
        self.current: int = -1  # place the agent is at (-1 before the first update)
        self._last_pos: np.ndarray | None = None  # last agent position seen
        self._exit_pos: np.ndarray | None = None  # last position assigned to ``current``
        self._travel_m = 0.0  # distance travelled since ``_exit_pos``
        self._positions = np.zeros((0, 3))  # (P, 3) cache of place positions

    def __len__(self) -> int:
        return len(self.places)

    @property
    def positions(self) -> np.ndarray:
        """(P, 3) place positions."""
        return self._positions

    # ------------------------------------------------------------------ updates

    def update(
        self, position: np.ndarray, *, embedding: np.ndarray | None = None, stamp_ns: int = 0
    ) -> int:
        """The agent is at ``position`` (3,) seeing ``embedding`` (D,) -> its place id.

        Creates a place or an edge as needed. The caller validates inputs.
        """
        cfg = self.config
        pos = np.asarray(position, dtype=np.float64)
        if self._last_pos is not None:
            self._travel_m += _norm(pos - self._last_pos)
        self._last_pos = pos.copy()
        chosen = -1
        if self.places:
            d = np.linalg.norm(self._positions - pos, axis=1)
            ok = d <= cfg.new_place_distance_m
            if embedding is not None and ok.any():
                sims = self._similarities(embedding, np.flatnonzero(ok))
                ok_idx = np.flatnonzero(ok)
                ok[ok_idx[sims < cfg.new_place_similarity]] = False
            if 0 <= self.current < len(ok) and ok[self.current]:
                chosen = self.current  # hysteresis: stay while the current place still fits
            elif ok.any():
                cand = np.flatnonzero(ok)
                chosen = int(cand[np.argmin(d[cand])])
            elif len(self.places) >= cfg.max_places:
                chosen = int(np.argmin(d))
        if chosen < 0:
            chosen = len(self.places)
            self.places.append(Place(chosen, pos.copy(), first_seen_ns=stamp_ns))
            self._positions = np.vstack([self._positions, pos[None]])
        place = self.places[chosen]
        if self.current >= 0 and chosen != self.current:
            prev = self.places[self.current]
            exit_pos = self._exit_pos if self._exit_pos is not None else prev.position
            cost = _norm(exit_pos - prev.position) + self._travel_m + _norm(pos - place.position)
            self._add_edge(self.current, chosen, cost)
        self.current = chosen
        self._exit_pos = pos.copy()
        self._travel_m = 0.0
        place.visits += 1
        place.last_seen_ns = max(place.last_seen_ns, stamp_ns)
        if embedding is not None:
            e = np.asarray(embedding, dtype=np.float32)
            if place.descriptor is None:
                place.descriptor = e.astype(np.float16)
                place.views = 1
            elif len(place.descriptor) == len(e):
                place.views += 1
                mean = place.descriptor.astype(np.float32)
                mean += (e - mean) / place.views
                place.descriptor = mean.astype(np.float16)
        return chosen

    def add_landmarks(self, place_id: int, object_ids: np.ndarray) -> None:
        """Record that ``object_ids`` were seen from ``place_id``."""
        marks = self.places[place_id].landmarks
        for oid in np.asarray(object_ids).tolist():
            marks[int(oid)] = marks.get(int(oid), 0) + 1

    def _add_edge(self, a: int, b: int, cost_m: float) -> None:
        old = self.edges.get(a, {}).get(b)
        cost = cost_m if old is None else min(old, cost_m)
        self.edges.setdefault(a, {})[b] = cost
        self.edges.setdefault(b, {})[a] = cost
        key = (min(a, b), max(a, b))
        self.traversals[key] = self.traversals.get(key, 0) + 1

    def _similarities(self, embedding: np.ndarray, idx: np.ndarray) -> np.ndarray:
        e = np.asarray(embedding, dtype=np.float32)
        e = e / max(_norm(e), 1e-12)
        out = np.ones(len(idx), np.float32)  # a place without a descriptor matches any view
        for j, i in enumerate(idx.tolist()):
            desc = self.places[i].descriptor
            if desc is not None and len(desc) == len(e):
                dv = desc.astype(np.float32)
                out[j] = float(np.dot(dv, e)) / max(_norm(dv), 1e-12)
        return out

    # ------------------------------------------------------------------ queries

    def neighbours(self, place_id: int) -> dict[int, float]:
        return dict(self.edges.get(place_id, {}))

    def places_near(self, point: np.ndarray, radius_m: float) -> list[tuple[int, float]]:
        """Places within ``radius_m`` of ``point`` (3,): [(place_id, distance_m)], nearest first."""
        if not self.places:
            return []
        d = np.linalg.norm(self._positions - np.asarray(point, np.float64), axis=1)
        idx = np.flatnonzero(d <= radius_m)
        idx = idx[np.argsort(d[idx], kind="stable")]
        return [(int(i), float(d[i])) for i in idx]

    def nearest_place(self, point: np.ndarray) -> int:
        """Id of the place nearest to ``point`` (3,); -1 if there are none."""
        if not self.places:
            return -1
        return int(
            np.argmin(np.linalg.norm(self._positions - np.asarray(point, np.float64), axis=1))
        )

    def place_of_object(self, object_id: int, position: np.ndarray | None = None) -> int:
        """The place an object is at: among the places it was seen from, the one nearest
        to its ``position`` (3,) (or the one that saw it most); else the nearest place."""
        seen = [p for p in self.places if object_id in p.landmarks]
        if seen:
            if position is None:
                return max(seen, key=lambda p: (p.landmarks[object_id], -p.place_id)).place_id
            pos = np.asarray(position, np.float64)
            return min(
                seen, key=lambda p: (float(np.linalg.norm(p.position - pos)), p.place_id)
            ).place_id
        return self.nearest_place(position) if position is not None else -1

    def shortest_path(self, start: int, goal: int) -> Path | None:
        """The cheapest route from place ``start`` to ``goal`` (``graph_shortest_path``:
        Dijkstra in scipy.sparse.csgraph). None if unreachable."""
        n = len(self.places)
        if not (0 <= start < n and 0 <= goal < n):
            raise ValueError(f"place ids must be in [0, {n}), got start={start}, goal={goal}")
        edges = [(a, b, w) for a, nbs in self.edges.items() for b, w in nbs.items()]
        found = graph_shortest_path(n, edges, start, goal)
        if found is None:
            return None
        route, cost = found
        return Path(route, cost, self._positions[route].copy())

    def path_from(self, position: np.ndarray, goal: int) -> Path | None:
        """Route from a pose ``position`` (3,): to its nearest place, then through the
        graph to ``goal``. ``cost_m`` includes the first leg."""
        start = self.nearest_place(position)
        if start < 0:
            return None
        path = self.shortest_path(start, goal)
        if path is None:
            return None
        pos = np.asarray(position, np.float64)
        first_leg = float(np.linalg.norm(pos - self._positions[start]))
        return Path(path.place_ids, path.cost_m + first_leg, path.positions)

    # ------------------------------------------------------------------ persistence

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays, JSON-able dict) that ``load_state`` restores exactly."""
        p = len(self.places)
        dims = {len(pl.descriptor) for pl in self.places if pl.descriptor is not None}
        dim = max(dims) if dims else 0
        desc = np.zeros((p, dim), np.float16)
        has_desc = np.zeros(p, bool)
        for i, pl in enumerate(self.places):
            if pl.descriptor is not None and len(pl.descriptor) == dim:
                desc[i] = pl.descriptor
                has_desc[i] = True
        ints = np.array(
            [[pl.views, pl.visits, pl.first_seen_ns, pl.last_seen_ns] for pl in self.places],
            np.int64,
        ).reshape(p, 4)
        arrays = {
            "places_positions": self._positions.copy(),
            "places_descriptors": desc,
            "places_has_descriptor": has_desc,
            "places_ints": ints,
        }
        meta = {
            "landmarks": [[[k, v] for k, v in pl.landmarks.items()] for pl in self.places],
            "edges": [[a, b, w] for a, nbs in self.edges.items() for b, w in nbs.items()],
            "traversals": [[a, b, c] for (a, b), c in self.traversals.items()],
            "current": self.current,
            "last_pos": None if self._last_pos is None else self._last_pos.tolist(),
            "exit_pos": None if self._exit_pos is None else self._exit_pos.tolist(),
            "travel_m": self._travel_m,
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        pos = np.asarray(arrays["places_positions"], np.float64).reshape(-1, 3)
        desc = np.asarray(arrays["places_descriptors"])
        has = np.asarray(arrays["places_has_descriptor"], bool)
        ints = np.asarray(arrays["places_ints"], np.int64).reshape(-1, 4)
        if not (len(pos) == len(desc) == len(has) == len(ints) == len(meta["landmarks"])):
            raise ValueError("places state: arrays differ in length")
        places = []
        for i in range(len(pos)):
            views, visits, first, last = (int(v) for v in ints[i])
            places.append(
                Place(
                    i,
                    pos[i].copy(),
                    desc[i].copy() if has[i] else None,
                    views,
                    visits,
                    first,
                    last,
                    {int(k): int(v) for k, v in meta["landmarks"][i]},
                )
            )
        edges: dict[int, dict[int, float]] = {}
        for a, b, w in meta["edges"]:  # both directions, in insertion order
            edges.setdefault(int(a), {})[int(b)] = float(w)
        self.places = places
        self._positions = pos.copy()
        self.edges = edges
        self.traversals = {(int(a), int(b)): int(c) for a, b, c in meta["traversals"]}
        self.current = int(meta["current"])
        self._last_pos = (
            None if meta["last_pos"] is None else np.array(meta["last_pos"], np.float64)
        )
        self._exit_pos = (
            None if meta["exit_pos"] is None else np.array(meta["exit_pos"], np.float64)
        )
        self._travel_m = float(meta["travel_m"])
