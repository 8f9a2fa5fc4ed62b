"""``Grounding``: the questions a plan needs, answered from memory recalls only.

Where is X now, where was X at the start, which labels were seen (how many tokens),
what was observed in what order (the buttons' lights), where a sound was heard, the
route through the places the robot has been (shortest path over the spatial memory's places),
and what earlier attempts at the same layout decided and how they ended (lifelong
learning: ``layout_key`` names a layout, objects on a 3 cm grid).
"""

from __future__ import annotations

import itertools
import re
import zlib
from typing import Any

import numpy as np

from engram.memory.answer.names import SOUND_BANDS_HZ
from engram.planners.planning.memory_client import MemoryClient
from engram.planners.planning.skills.base import WorldView
from engram.sim.object_kinds import is_kind_label, kind_of, names_prefix, strip_track_id

__all__ = ["Grounding", "jsonable", "layout_key"]

#: two remembered objects of one kind closer than this are one object (camera mode: its
#: track broke and it came back under a new id); the count task's tokens stand >= 7 cm apart
SAME_OBJECT_M = 0.04
_FIRST_SAW = re.compile(r"^first saw (.+?) \((\w+)\)")
_OBSERVE = re.compile(r"observe\((\w+), ([^)]+)\)")
_HZ = re.compile(r"\((\d+(?:\.\d+)?) Hz")
_REASON = re.compile(r"(\w+)=(\S*)")


class Grounding:
    """Answers the questions plans need from memory recalls (see module docstring).
    Positions are (3,) float64 world metres; stamps are ``stamp_ns`` of the memory."""

    def __init__(self, memory: MemoryClient) -> None:
        self.memory = memory
        self.log: list[dict[str, Any]] = []  # question -> answer, for the decide steps

    @property
    def enabled(self) -> bool:
        return self.memory.enabled

    def _note(self, question: str, answer: Any) -> Any:
        self.log.append({"question": question, "answer": jsonable(answer)})
        return answer

    def answer(self, question: str) -> dict[str, Any]:
        """A question in plain words answered by the memory's answerer (the one behind
        ``/memory/query``, ``engram memory ask`` and the live page): the answer object
        (answer, kind, value, confidence, abstained, evidence); {} without memory."""
        return self._note(question, self.memory.answer(question))

    def object_position(self, label: str) -> tuple[np.ndarray, int] | None:
        """Where is ``label`` now (its latest remembered position, and when seen). The
        records labelled ``label`` count; when there are none, those of its kind
        (``prize`` finds what camera-mode perception called "yellow cube", see
        ``same_kind``)."""
        hits = self.memory.recall(label, memories=("spatial", "episodic"), top_k=40)
        best: tuple[np.ndarray, int] | None = None
        for exact, prefer in itertools.product((True, False), ("spatial", "episodic")):
            if not exact and prefer == "spatial":
                hits = hits + self._kind_hits(label, "", ("spatial", "episodic"))
            for h in hits:
                d = h.get("data", {})
                if h.get("memory") != prefer or d.get("kind") != "object":
                    continue
                if not _names(label, str(d.get("label", "")), exact):
                    continue
                if h.get("position") is None or d.get("present") is False:
                    continue
                stamp = int(d.get("last_seen_ns", h.get("stamp_ns", 0)))
                if best is None or stamp > best[1]:
                    best = (np.asarray(h["position"], np.float64), stamp)
            if best is not None:
                break
        return self._note(f"where is {label}", best)

    def _kind_hits(self, label: str, prefix: str, memories: tuple[str, ...]) -> list[dict]:
        """Recall hits for ``label``'s kind in words (``prize`` -> "yellow cube"); [] when
        the kind is the label itself or unknown (the label's own recall covers it)."""
        kind = kind_of(label)
        if kind is None or kind == label:
            return []
        return self.memory.recall(f"{prefix}{kind}", memories=memories, top_k=40)

    def first_position(self, label: str, *, since_ns: int = 0) -> tuple[np.ndarray, int] | None:
        """Where was ``label`` when first seen (at or after ``since_ns``)."""
        hits = self.memory.recall(f"first saw {label}", memories=("episodic",), top_k=40)
        best: tuple[np.ndarray, int] | None = None
        for exact in (True, False):
            if not exact:
                hits = hits + self._kind_hits(label, "first saw ", ("episodic",))
            for h in hits:
                m = _FIRST_SAW.match(h.get("text", ""))
                if not m or not _names(label, m.group(1), exact) or h.get("position") is None:
                    continue
                stamp = int(h.get("stamp_ns", 0))
                if stamp >= since_ns and (best is None or stamp < best[1]):
                    best = (np.asarray(h["position"], np.float64), stamp)
            if best is not None:
                break
        if best is None:
            hits = self.memory.recall(
                f"when was {label} first seen", memories=("temporal",), top_k=10, t0_ns=since_ns
            )
            for h in hits:
                d = h.get("data", {})
                if _names(label, str(d.get("object", "")), False) and h.get("position") is not None:
                    best = (np.asarray(h["position"], np.float64), int(h.get("stamp_ns", 0)))
                    break
        return self._note(f"where was {label} at the start", best)

    def labels_seen(self, prefix: str, *, since_ns: int = 0) -> list[str]:
        """Distinct objects named by ``prefix`` (``names_prefix``) seen since ``since_ns``:
        their labels; objects whose label is a kind several share (camera mode: every
        token is a "pink token") count once per object, as ``label#object_id``."""
        # Spatial memory keeps one record per segmented object and the timeline keeps
        # each percept's labels; the episodic memory is not asked here because its
        # entity resolution may merge identical-looking objects (two tokens -> one).
        words = prefix.replace("_", " ").strip()
        labels: set[str] = set()
        kind_ids: dict[str, dict[int, np.ndarray | None]] = {}
        for mem in ("spatial", "temporal"):
            for h in self.memory.recall(words, memories=(mem,), top_k=100, t0_ns=since_ns):
                d = h.get("data", {})
                oid = None
                if d.get("kind") == "object":
                    names = [str(d.get("label", ""))]
                    last = int(d.get("last_seen_ns", h.get("stamp_ns", 0)))
                    oid = d.get("object_id")
                elif d.get("kind") == "percept":
                    names = [str(x) for x in d.get("labels", [])]
                    last = int(h.get("stamp_ns", 0))
                else:
                    continue
                if last < since_ns:
                    continue
                for n in names:
                    if not names_prefix(n, prefix):
                        continue
                    if oid is not None and is_kind_label(n):
                        pos = h.get("position")
                        kind_ids.setdefault(n, {})[int(oid)] = (
                            None if pos is None else np.asarray(pos, np.float64)
                        )
                    else:
                        labels.add(n)
        # a kind's objects by id; the timeline's bare kind only when no object record has it
        labels -= set(kind_ids)
        for kind, ids in kind_ids.items():
            kept: list[np.ndarray] = []
            for oid, pos in sorted(ids.items()):
                # two ids of one kind at one spot are one object whose track broke
                if pos is not None and any(np.linalg.norm(pos - q) < SAME_OBJECT_M for q in kept):
                    continue
                if pos is not None:
                    kept.append(pos)
                labels.add(f"{kind}#{oid}")
        return self._note(f"which {prefix} were seen", sorted(labels))

    def observations(self, event: str, *, since_ns: int = 0) -> list[tuple[int, str]]:
        """(stamp_ns, label) of ``observe(event, label)`` steps since ``since_ns``, in time
        order (e.g. the buttons' lights coming on)."""
        hits = self.memory.recall(
            f"observe {event}", memories=("episodic",), top_k=60, t0_ns=since_ns
        )
        out = set()
        for h in hits:
            m = _OBSERVE.search(h.get("text", ""))
            if m and m.group(1) == event and int(h.get("stamp_ns", 0)) >= since_ns:
                out.add((int(h["stamp_ns"]), m.group(2)))
        return self._note(f"when did {event} happen", sorted(out))

    def sounds(self, *, since_ns: int = 0) -> list[dict[str, Any]]:
        """Sounds heard since ``since_ns``: stamp_ns, peak_hz, position (where the robot
        was), text; in time order."""
        out: dict[int, dict[str, Any]] = {}
        for text, mem, kind in (
            ("heard sound tone noise", "episodic", "heard"),
            ("heard sound tone noise", "temporal", "sound"),
        ):
            for h in self.memory.recall(text, memories=(mem,), top_k=60, t0_ns=since_ns):
                if h.get("data", {}).get("kind") != kind or h.get("position") is None:
                    continue
                m = _HZ.search(h.get("text", ""))
                stamp = int(h.get("stamp_ns", 0))
                if m is None or stamp < since_ns or stamp in out:
                    continue
                out[stamp] = {
                    "stamp_ns": stamp,
                    "peak_hz": float(m.group(1)),
                    "position": np.asarray(h["position"], np.float64),
                    "text": h.get("text", ""),
                }
        return self._note("what was heard", [out[k] for k in sorted(out)])

    def where_heard(self, sound: str, *, since_ns: int = 0) -> tuple[np.ndarray, int] | None:
        """Where the robot was when it heard ``sound`` (a name in ``SOUND_BANDS_HZ``)."""
        band = next((b for name, b in SOUND_BANDS_HZ.items() if name in sound.lower()), None)
        heard = self.sounds(since_ns=since_ns)
        if band is not None:
            heard = [s for s in heard if band[0] <= s["peak_hz"] <= band[1]]
        if not heard:
            return self._note(f"where was the {sound} heard", None)
        first = heard[0]
        return self._note(f"where was the {sound} heard", (first["position"], first["stamp_ns"]))

    def places(self, near: np.ndarray, *, radius_m: float = 60.0) -> list[dict[str, Any]]:
        """Places of the spatial memory's topology graph within ``radius_m``: place_id,
        position (3,), neighbours (ids)."""
        hits = self.memory.recall(
            "", memories=("spatial",), near=near, radius_m=radius_m, top_k=1000
        )
        out = []
        for h in hits:
            d = h.get("data", {})
            if d.get("kind") == "place" and h.get("position") is not None:
                out.append(
                    {
                        "place_id": int(d["place_id"]),
                        "position": np.asarray(h["position"], np.float64),
                        "neighbours": [int(n) for n in d.get("neighbours", [])],
                    }
                )
        return out

    def route(self, start_xy: np.ndarray, goal_xy: np.ndarray) -> list[np.ndarray]:
        """Waypoints [x, y] through the places the robot has been, from the place nearest
        ``start_xy`` to the place nearest ``goal_xy`` (shortest path); [] when none are known."""
        start3 = np.array([start_xy[0], start_xy[1], 0.0])
        places = self.places(start3)
        if not places:
            return self._note("route", [])
        pos = {p["place_id"]: p["position"][:2] for p in places}
        edges: dict[int, set[int]] = {p["place_id"]: set() for p in places}
        for p in places:
            for n in p["neighbours"]:
                if n in edges:
                    edges[p["place_id"]].add(n)
                    edges[n].add(p["place_id"])
        ids = list(pos)
        arr = np.array([pos[i] for i in ids])
        s = ids[int(np.argmin(np.linalg.norm(arr - start_xy[:2], axis=1)))]
        g = ids[int(np.argmin(np.linalg.norm(arr - goal_xy[:2], axis=1)))]
        path = _shortest_route(s, g, pos, edges)
        return self._note("route", [pos[i] for i in path])

    def past_decisions(self, question: str, layout: str, hint: str) -> list[tuple[str, str]]:
        """(answer, outcome) of earlier decisions on ``question`` at ``layout``, from the
        episodes in episodic memory (``hint``: words of the instruction)."""
        hits = self.memory.recall(f"episode {hint}", memories=("episodic",), top_k=60)
        out = []
        for h in hits:
            d = h.get("data", {})
            if d.get("kind") != "episode" or d.get("outcome") not in ("succeeded", "failed"):
                continue
            for step in d.get("steps", []):
                if step.get("skill") != "decide":
                    continue
                fields = dict(_REASON.findall(step.get("reason", "")))
                if fields.get("layout") == layout and fields.get("question", question) == question:
                    out.append((fields.get("answer", ""), d["outcome"]))
        return self._note(f"earlier attempts at {question} here", out)


def _names(name: str, label: str, exact: bool) -> bool:
    """Does a memory record labelled ``label`` name ``name``: the same label (``exact``),
    or the same kind of object (``kind_of``: ``prize`` / ``yellow cube``, ``cup_2`` /
    ``cup``), so one recipe grounds ground-truth names and camera-mode labels alike."""
    if name == label or strip_track_id(label) == name:
        return True
    if exact:
        return False
    kind = kind_of(name)
    return kind is not None and kind_of(label) == kind


def _shortest_route(
    start: int, goal: int, pos: dict[int, np.ndarray], edges: dict[int, set[int]]
) -> list[int]:
    """Place ids from ``start`` to ``goal``, straight-line edge costs; [start, goal] when
    the graph does not join them. The search is ``graph_shortest_path`` of the places
    graph (one shortest-path implementation for memory and planner)."""
    from engram.memory.spatial.places import graph_shortest_path

    ids = sorted(pos)
    index = {pid: i for i, pid in enumerate(ids)}
    weighted = [
        (index[a], index[b], float(np.linalg.norm(pos[a] - pos[b])))
        for a, nbs in edges.items()
        for b in nbs
        if a in index and b in index
    ]
    found = graph_shortest_path(len(ids), weighted, index[start], index[goal])
    if found is None:
        return [start, goal]
    return [ids[i] for i in found[0]]


def jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [round(float(v), 3) for v in value.reshape(-1)]
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    return value


def layout_key(world: WorldView, *, grid_m: float = 0.03) -> str:
    """A short key of the scene as perceived now: labels and positions on a ``grid_m``
    grid (plus the base position for a mobile robot). Same layout, same key."""
    parts = [
        f"{label}:{','.join(str(int(v)) for v in np.round(obj.position[:2] / grid_m))}"
        for label, obj in sorted(world.objects.items())
    ]
    if world.robot is not None and world.robot.world_from_ee is None:
        x, y, _ = world.base_pose()
        parts.append(f"base:{round(x / 0.25)},{round(y / 0.25)}")
    return f"{zlib.crc32('|'.join(parts).encode()):08x}"
