"""The memory contract checker (like ``engram.runtime.testing.check_node`` for nodes).

``check_memory(cls_or_factory)`` builds a memory (``factory()``: a ``Memory`` class
with its defaults, or any function returning one) and runs it through the
``Memory`` contract, raising ``MemoryContractError`` listing every problem;
``memory_problems`` returns them. ``tests/memory/test_testing.py`` runs it over
every registered memory (``registry.known("memory")``).

What is checked, in order, on a scripted stream (``standard_messages``: an
instruction, robot states, percepts of a mug on a table with points and
embeddings, a transcript, a sound, plan steps) and ``standard_queries``:

1. the class: a ``Memory`` with a docstring, a ``name``, ``accepts`` naming message types;
2. empty: ``len`` 0, ``stats()["records"]`` 0, every recall an empty list;
3. write: every message is taken; afterwards ``len`` > 0 equals ``stats()["records"]``;
4. recall: lists of ``Hit`` of this memory, at most ``top_k``, finite scores, and at
   least one query answered;
5. consolidate runs;
6. save -> load into a fresh memory gives the same ``len``, ``stats`` and recalls
   (compared query by query, as recalls may reinforce what they return); a second
   save into the same directory after more writes (incremental) loads as well;
7. bad input (a percept whose embeddings change dimension, one whose pose or
   embedding was corrupted after construction) is either taken or refused with a
   ``ValueError`` that says why, and then nothing is lost: the memory still equals
   its saved twin (``len``, ``stats`` but the rejection counters, recalls);
   loading from a directory holding no save is refused the same way;
8. reset: back to empty, then the stream is taken again.
"""

from __future__ import annotations

import inspect
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from engram.memory.base import Hit, Memory
from engram.runtime.messages import (
    MESSAGE_TYPES,
    Instruction,
    MemoryQuery,
    Message,
    Percept,
    PlanStep,
    RobotState,
    SoundEvent,
    Transcript,
)

__all__ = [
    "MemoryContractError",
    "check_memory",
    "memory_problems",
    "standard_messages",
    "standard_queries",
]

S = 1_000_000_000  # ns per second
D_IMAGE = 32  # image-space embedding size of the scripted stream
D_AUDIO = 16  # audio-space embedding size
#: stats counters that a refused write may change (they count refusals)
_REFUSAL_COUNTERS = frozenset({"rejected", "errors"})

MemoryFactory = Callable[[], Memory]


class MemoryContractError(AssertionError):
    """A memory breaks the ``Memory`` contract; ``problems`` lists how."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{what}: {len(self.problems)} problem(s):\n{lines}")


# ---------------------------------------------------------------------------
# the scripted stream


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _pose(x: float, y: float, z: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = (x, y, z)
    return pose


def standard_messages(seed: int = 0) -> list[tuple[Message, str]]:
    """A short episode as ``(message, topic)`` pairs, in stamp order: the robot walks
    past a red mug standing on a table (and a blue box), hears a doorbell, is told
    where the box is, picks the mug. Deterministic for a given ``seed``."""
    rng = np.random.default_rng(seed)
    looks = {name: _unit(rng.normal(size=D_IMAGE)) for name in ("red_mug", "table_1", "blue_box")}
    ids = {"red_mug": 11, "table_1": 12, "blue_box": 13}
    geometry = {  # centroid, extent: the mug stands on the table (top at 0.75 m)
        "red_mug": ((1.0, 0.0, 0.80), (0.08, 0.08, 0.10)),
        "table_1": ((1.0, 0.0, 0.375), (1.2, 0.8, 0.75)),
        "blue_box": ((-0.5, 1.5, 0.10), (0.2, 0.2, 0.2)),
    }
    out: list[tuple[Message, str]] = [
        (
            Instruction(
                stamp_ns=S // 2, text="put the red mug on the shelf", task="cups", episode_id="ep1"
            ),
            "/instruction",
        )
    ]
    for t in range(6):
        x = 0.2 * t
        out.append((RobotState(stamp_ns=t * S, world_from_base=_pose(x, -1.0, 0.0)), "/robot"))
        labels = ["red_mug", "table_1"] + (["blue_box"] if t % 2 else [])
        k = len(labels)
        cen = np.array([geometry[n][0] for n in labels], np.float32)
        ext = np.array([geometry[n][1] for n in labels], np.float32)
        objs = np.stack([_unit(looks[n] + 0.05 * rng.normal(size=D_IMAGE)) for n in labels])
        pts = np.concatenate(
            [c + (rng.random((40, 3)) - 0.5) * e for c, e in zip(cen, ext)]
        ).astype(np.float32)
        pids = np.repeat(np.array([ids[n] for n in labels], np.int32), 40)
        out.append(
            (
                Percept(
                    stamp_ns=t * S + S // 10,
                    keyframe=True,
                    world_from_camera=_pose(x, -1.0, 1.2),
                    embedding=_unit(objs.mean(0)),
                    object_ids=np.array([ids[n] for n in labels], np.int32),
                    object_labels=labels,
                    object_confidences=np.full(k, 0.9, np.float32),
                    object_boxes=np.tile(np.array([[10, 10, 50, 50]], np.int32), (k, 1)),
                    object_centroids=cen,
                    object_extents=ext,
                    object_embeddings=objs,
                    points=pts,
                    point_object_ids=pids,
                ),
                "/percepts",
            )
        )
        if t == 3:
            out.append(
                (
                    Transcript(
                        stamp_ns=int(3.5 * S),
                        text="the blue box is in the garage",
                        start_ns=int(3.5 * S),
                        end_ns=int(4.4 * S),
                        speaker="ann",
                    ),
                    "/transcripts",
                )
            )
            out.append(
                (
                    SoundEvent(
                        stamp_ns=int(4.2 * S),
                        label="doorbell",
                        start_ns=int(4.2 * S),
                        end_ns=int(4.7 * S),
                        energy_db=-20.0,
                        peak_hz=880.0,
                        embedding=_unit(rng.normal(size=D_AUDIO)),
                    ),
                    "/sound_events",
                )
            )
        if t == 4:
            out.append(
                (
                    PlanStep(
                        stamp_ns=int(4.5 * S),
                        skill="pick",
                        args={"object": "red_mug"},
                        status="succeeded",
                        episode_id="ep1",
                    ),
                    "/plan",
                )
            )
    out.append(
        (
            PlanStep(stamp_ns=int(5.5 * S), skill="done", status="succeeded", episode_id="ep1"),
            "/plan",
        )
    )
    return out


def standard_queries(seed: int = 0) -> list[MemoryQuery]:
    """Queries on ``standard_messages(seed)``: words, an image embedding (the mug's
    look), a place, a time window, a sound, a time question."""
    rng = np.random.default_rng(seed)
    mug = _unit(rng.normal(size=D_IMAGE))  # the first look drawn by standard_messages
    return [
        MemoryQuery(text="red mug", top_k=5),
        MemoryQuery(embedding=mug, top_k=5),
        MemoryQuery(near=np.array([1.0, 0.0, 0.8], np.float32), radius_m=1.5, top_k=5),
        MemoryQuery(text="table", t0_ns=2 * S, t1_ns=4 * S, top_k=5),
        MemoryQuery(text="doorbell", top_k=3),
        MemoryQuery(text="where is the blue box", top_k=3),
        MemoryQuery(text="when was the red mug last seen", top_k=3),
    ]


def _bad_messages(messages: Sequence[tuple[Message, str]]) -> list[tuple[str, Message]]:
    """Percepts that should be refused (or may be ignored): built valid, then broken."""
    last = [m for m, _ in messages if isinstance(m, Percept)][-1]
    stamp = max(m.stamp_ns for m, _ in messages) + S
    out: list[tuple[str, Message]] = []
    wider = cast(Percept, last.replace(stamp_ns=stamp))
    wider.embedding = _unit(np.ones(D_IMAGE + 3))
    wider.object_embeddings = np.tile(wider.embedding, (wider.num_objects, 1))
    out.append(("a percept whose embeddings change dimension", wider))
    nan_pose = cast(Percept, last.replace(stamp_ns=stamp))
    nan_pose.world_from_camera = np.full((4, 4), np.nan)
    out.append(("a percept with a NaN pose", nan_pose))
    nan_emb = cast(Percept, last.replace(stamp_ns=stamp))
    nan_emb.embedding = np.full(D_IMAGE, np.nan, np.float32)
    nan_emb.object_embeddings = np.full((nan_emb.num_objects, D_IMAGE), np.nan, np.float32)
    out.append(("a percept with NaN embeddings", nan_emb))
    return out


# ---------------------------------------------------------------------------
# comparing memories


def _canon(value: Any) -> Any:
    """A comparable form of hits: arrays as lists, floats rounded to 6 decimals."""
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, np.ndarray):
        return _canon(value.tolist())
    if isinstance(value, np.generic):
        return _canon(value.item())
    if isinstance(value, float):
        return value if not math.isfinite(value) else round(value, 6)
    return value


def _stats(mem: Memory, *, ignore: frozenset[str] = frozenset()) -> dict[str, Any]:
    return {k: v for k, v in _canon(mem.stats()).items() if k not in ignore}


def _differences(
    a: Memory, b: Memory, queries: Sequence[MemoryQuery], *, ignore: frozenset[str] = frozenset()
) -> list[str]:
    """How ``b`` differs from ``a`` (queried in lockstep, so both reinforce alike)."""
    out = []
    if len(a) != len(b):
        out.append(f"len {len(b)} != {len(a)}")
    sa, sb = _stats(a, ignore=ignore), _stats(b, ignore=ignore)
    if sa != sb:
        keys = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
        out.append(f"stats differ in {keys}")
    for i, q in enumerate(queries):
        try:
            ha = [_canon(h.to_dict()) for h in a.recall(q)]
            hb = [_canon(h.to_dict()) for h in b.recall(q)]
        except Exception as exc:  # noqa: BLE001 - reported
            out.append(f"query {i} ({_describe(q)}) failed: {exc!r}")
            continue
        if ha != hb:
            out.append(f"query {i} ({_describe(q)}) recalls {len(hb)} hits that differ")
    return out


def _describe(q: MemoryQuery) -> str:
    parts = []
    if q.text:
        parts.append(repr(q.text))
    if q.embedding is not None:
        parts.append("embedding")
    if q.near is not None:
        parts.append("near")
    if q.t0_ns or q.t1_ns:
        parts.append("time window")
    return ", ".join(parts) or "empty"


# ---------------------------------------------------------------------------
# the checker


def memory_problems(
    cls_or_factory: type[Memory] | MemoryFactory,
    *,
    messages: Sequence[tuple[Message, str]] | None = None,
    queries: Sequence[MemoryQuery] | None = None,
) -> list[str]:
    """Every way the memory built by ``cls_or_factory()`` breaks the ``Memory`` contract
    (empty when it keeps it); see the module docstring for what is checked."""
    factory: MemoryFactory = cls_or_factory  # type: ignore[assignment]
    messages = list(standard_messages() if messages is None else messages)
    queries = list(standard_queries() if queries is None else queries)
    try:
        mem = factory()
    except Exception as exc:  # noqa: BLE001 - reported
        return [f"cannot be built with its defaults: {exc!r}"]
    problems = _class_problems(mem)
    if problems:
        return problems
    problems += _empty_problems(mem, queries)
    try:
        for msg, topic in messages:
            mem.write(msg, topic=topic)
    except Exception as exc:  # noqa: BLE001 - reported
        return [*problems, f"write of the scripted stream failed: {exc!r}"]
    problems += _recall_problems(mem, queries)
    try:
        mem.consolidate(now_ns=max(m.stamp_ns for m, _ in messages))
    except Exception as exc:  # noqa: BLE001 - reported
        problems.append(f"consolidate failed: {exc!r}")
    with tempfile.TemporaryDirectory(prefix="check_memory-") as tmp:
        problems += _persistence_problems(factory, mem, messages, queries, Path(tmp))
        problems += _bad_input_problems(factory, mem, messages, queries, Path(tmp))
    problems += _reset_problems(mem, messages, queries)
    return problems


def check_memory(
    cls_or_factory: type[Memory] | MemoryFactory,
    *,
    messages: Sequence[tuple[Message, str]] | None = None,
    queries: Sequence[MemoryQuery] | None = None,
) -> None:
    """Raise ``MemoryContractError`` listing every problem (see ``memory_problems``)."""
    problems = memory_problems(cls_or_factory, messages=messages, queries=queries)
    if problems:
        what = getattr(cls_or_factory, "__qualname__", repr(cls_or_factory))
        raise MemoryContractError(what, problems)


def _class_problems(mem: Any) -> list[str]:
    if not isinstance(mem, Memory):
        return [f"the factory returned {type(mem).__name__}, not a engram.memory.base.Memory"]
    problems = []
    cls = type(mem)
    if not (cls.__doc__ or "").strip():
        problems.append("the class has no docstring")
    if not isinstance(mem.name, str) or not mem.name or mem.name == "memory":
        problems.append(f"name must be the memory's own short name, got {mem.name!r}")
    if not isinstance(mem.accepts, tuple) or not mem.accepts:
        problems.append(f"accepts must be a non-empty tuple of message types, got {mem.accepts!r}")
    else:
        unknown = [t for t in mem.accepts if t not in MESSAGE_TYPES]
        if unknown:
            problems.append(f"accepts names unknown message types {unknown}")
    if inspect.isabstract(cls):
        problems.append("the class is abstract")
    return problems


def _empty_problems(mem: Memory, queries: Sequence[MemoryQuery]) -> list[str]:
    problems = []
    if len(mem) != 0:
        problems.append(f"a new memory has len {len(mem)}, not 0")
    records = mem.stats().get("records")
    if records != 0:
        problems.append(f"a new memory's stats()['records'] is {records!r}, not 0")
    for i, q in enumerate(queries):
        try:
            hits = mem.recall(q)
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"recall on an empty memory failed (query {i}): {exc!r}")
            continue
        if hits != []:
            problems.append(f"recall on an empty memory returned {hits!r} (query {i})")
    return problems


def _recall_problems(mem: Memory, queries: Sequence[MemoryQuery]) -> list[str]:
    problems = []
    if len(mem) <= 0:
        problems.append("after the scripted stream len is 0: nothing was remembered")
    records = mem.stats().get("records")
    if records != len(mem):
        problems.append(f"stats()['records'] is {records!r} but len is {len(mem)}")
    answered = 0
    for i, q in enumerate(queries):
        try:
            hits = mem.recall(q)
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"recall failed (query {i}, {_describe(q)}): {exc!r}")
            continue
        if not isinstance(hits, list) or not all(isinstance(h, Hit) for h in hits):
            problems.append(f"recall must return a list of Hit (query {i})")
            continue
        answered += bool(hits)
        if len(hits) > q.top_k:
            problems.append(f"recall returned {len(hits)} hits for top_k={q.top_k} (query {i})")
        for h in hits:
            if h.memory != mem.name:
                problems.append(f"a hit names memory {h.memory!r}, not {mem.name!r}")
                break
            if not math.isfinite(float(h.score)):
                problems.append(f"a hit has the score {h.score!r} (query {i})")
                break
    if not answered:
        problems.append("no query of the scripted stream got a hit")
    return problems


def _persistence_problems(
    factory: MemoryFactory,
    mem: Memory,
    messages: Sequence[tuple[Message, str]],
    queries: Sequence[MemoryQuery],
    tmp: Path,
) -> list[str]:
    problems = []
    saved = tmp / "saved"
    saved.mkdir()
    try:
        mem.save(saved)
        back = factory()
        back.load(saved)
    except Exception as exc:  # noqa: BLE001 - reported
        return [f"save -> load failed: {exc!r}"]
    problems += [f"after save -> load: {d}" for d in _differences(mem, back, queries)]
    # more writes, then an (incremental) save into the same directory
    later = max(m.stamp_ns for m, _ in messages) + S
    more = [(m.replace(stamp_ns=later + m.stamp_ns), t) for m, t in messages[-4:]]
    try:
        for msg, topic in more:
            mem.write(msg, topic=topic)
        mem.save(saved)
        again = factory()
        again.load(saved)
    except Exception as exc:  # noqa: BLE001 - reported
        return [*problems, f"a second save into the same directory failed: {exc!r}"]
    problems += [f"after a second save -> load: {d}" for d in _differences(mem, again, queries)]
    return problems


def _bad_input_problems(
    factory: MemoryFactory,
    mem: Memory,
    messages: Sequence[tuple[Message, str]],
    queries: Sequence[MemoryQuery],
    tmp: Path,
) -> list[str]:
    problems = []
    for n, (what, bad) in enumerate(_bad_messages(messages)):
        twin_dir = tmp / f"twin{n}"
        twin_dir.mkdir()
        mem.save(twin_dir)
        twin = factory()
        twin.load(twin_dir)
        try:
            mem.write(bad, topic="/bad")
        except ValueError as exc:
            if not str(exc).strip():
                problems.append(f"{what}: refused with a ValueError that says nothing")
            lost = _differences(twin, mem, queries, ignore=_REFUSAL_COUNTERS)
            problems += [f"{what} was refused but changed the memory: {d}" for d in lost]
        except Exception as exc:  # noqa: BLE001 - reported
            problems.append(f"{what}: refused with {exc!r}; bad input must raise ValueError")
            continue
    empty = tmp / "no-save"
    empty.mkdir()
    before = len(mem)
    try:
        mem.load(empty)
    except (ValueError, OSError) as exc:
        if not str(exc).strip():
            problems.append("load of a directory without a save: an error that says nothing")
        if len(mem) != before:
            problems.append("a refused load of a directory without a save changed the memory")
    except Exception as exc:  # noqa: BLE001 - reported
        problems.append(
            f"load of a directory without a save raised {exc!r}; expected ValueError or OSError"
        )
    else:
        problems.append("load of a directory without a save was accepted")
    return problems


def _reset_problems(
    mem: Memory, messages: Sequence[tuple[Message, str]], queries: Sequence[MemoryQuery]
) -> list[str]:
    problems = []
    try:
        mem.reset()
    except Exception as exc:  # noqa: BLE001 - reported
        return [f"reset failed: {exc!r}"]
    problems += [f"after reset: {p}" for p in _empty_problems(mem, queries)]
    try:
        for msg, topic in messages:
            mem.write(msg, topic=topic)
    except Exception as exc:  # noqa: BLE001 - reported
        problems.append(f"after reset the scripted stream cannot be written again: {exc!r}")
    if len(mem) <= 0:
        problems.append("after reset and the scripted stream again, len is 0")
    return problems
