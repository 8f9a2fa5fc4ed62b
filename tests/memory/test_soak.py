"""A long stream keeps the memory system bounded: every memory's record count and its
checkpoint on disk stop growing once its capacity is reached, and so does the journal.

The stream is a robot touring twelve places for 2400 frames while forty objects move
between them and people talk about where things are, through ``MemorySystem`` with
small capacities and the periodic ``consolidate`` a memory node runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engram.memory.episodic import EpisodicConfig, EpisodicMemory
from engram.memory.semantic import SemanticConfig, SemanticMemory
from engram.memory.spatial import SpatialConfig, SpatialMemory
from engram.memory.store import Store, StoreConfig
from engram.memory.system import MemorySystem, MemorySystemConfig
from engram.memory.temporal import TemporalConfig, TemporalMemory
from engram.memory.working import WorkingConfig, WorkingMemory
from tests.memory._factories import noisy, percept, transcript, unit

D = 32
FRAMES = 2400
BOUNDS = {"episodic": 150, "working": 8}
MAX_VOXELS = 20_000
MAX_ITEMS = 400


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _checkpoint_bytes(system: MemorySystem, root: Path) -> dict[str, int]:
    system.checkpoint()
    out = {}
    for m in system.memories:
        cur = (root / "memories" / m.name / "CURRENT").read_text().strip()
        out[m.name] = _dir_bytes(root / "memories" / m.name / cur)
    out["journal"] = system._journal.disk_bytes()
    return out


def test_a_long_stream_keeps_every_memory_and_its_store_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    places = rng.uniform(-10, 10, size=(12, 3))
    places[:, 2] = 1.0
    names = [f"object_{i}" for i in range(40)]
    looks = np.stack([unit(rng.normal(size=D)) for _ in names])
    where = rng.integers(0, 12, size=40)  # object -> place
    memories = [
        SpatialMemory(SpatialConfig(max_voxels=MAX_VOXELS)),
        TemporalMemory(TemporalConfig(max_items=MAX_ITEMS, max_chunks=40)),
        EpisodicMemory(EpisodicConfig(capacity=BOUNDS["episodic"])),
        SemanticMemory(SemanticConfig(history_max=4)),
        WorkingMemory(WorkingConfig(dim=D, capacity=BOUNDS["working"])),
    ]
    cfg = MemorySystemConfig(workers=2, root=str(tmp_path), checkpoint_every=0)
    sizes: list[dict[str, int]] = []
    counts: list[dict[str, int]] = []
    with MemorySystem(memories, config=cfg) as system:
        for f in range(FRAMES):
            t = f * 0.5
            if f % 60 == 59:  # someone moves an object to another place
                where[int(rng.integers(0, 40))] = int(rng.integers(0, 12))
            here = (f // 20) % 12  # the robot spends 10 s at each place
            objs = np.flatnonzero(where == here)[:6]
            cam = places[here] + rng.normal(0, 0.3, 3)
            system.submit(
                percept(
                    t,
                    [names[o] for o in objs],
                    embedding=unit(rng.normal(size=D)),
                    object_embeddings=np.stack([noisy(looks[o], rng, 0.05) for o in objs])
                    if len(objs)
                    else np.zeros((0, D), np.float32),
                    centroids=places[where[objs]] + [0, 0, -0.2] if len(objs) else None,
                    camera=tuple(cam),
                    points=64,
                    ids=objs,
                ),
                topic="/percepts",
                timeout_s=None,
            )
            if f % 25 == 0:
                o = int(rng.integers(0, 40))
                text = f"the {names[o]} is on the table {int(where[o])}"
                system.submit(transcript(t, text, speaker="ann"), timeout_s=None)
            if f % 200 == 199:  # what MemoryNode does every consolidate_every_s
                system.flush()
                system.consolidate()
            if (f + 1) % (FRAMES // 8) == 0:
                system.flush()
                system.consolidate()
                counts.append({m.name: len(m) for m in system.memories})
                sizes.append(_checkpoint_bytes(system, tmp_path))
        assert system.stats()["dropped"] == 0
    half, end = counts[3], counts[7]
    # hard bounds from the configuration
    assert end["episodic"] <= BOUNDS["episodic"] and end["working"] <= BOUNDS["working"]
    spatial = memories[0]
    assert len(spatial.octree) <= MAX_VOXELS
    temporal = memories[1]
    assert temporal.stats()["items"] <= MAX_ITEMS + TemporalConfig().chunk_max_items
    # records: no growth from half-way to the end beyond noise
    for name in ("spatial", "temporal", "episodic", "working"):
        assert end[name] <= 1.2 * half[name] + 8, (name, half[name], end[name])
    # semantic: each of the 40 objects said to be on one of 8 tables keeps its current
    # fact plus at most history_max (4) superseded ones, a bound the stream approaches slowly
    assert end["semantic"] <= 40 * (1 + 4), end["semantic"]
    # disk: each checkpoint store holds at most as many dead bytes as live ones (records
    # rewritten at every checkpoint would otherwise pile up in the append-only array
    # files), so its size tracks the bounded records
    for name in ("temporal", "episodic", "semantic", "working"):
        cur = (tmp_path / "memories" / name / "CURRENT").read_text().strip()
        with Store(tmp_path / "memories" / name / cur, config=StoreConfig(read_only=True)) as st:
            g = st.garbage()
        slack = 1 << 16
        assert g["array_bytes"] <= 2 * g["array_live_bytes"] + slack, (name, g)
        assert g["sqlite_free_bytes"] <= 0.5 * g["sqlite_bytes"] + slack, (name, g)
    for name, size in sizes[7].items():
        assert size <= 2.2 * sizes[3][name] + 2 * (1 << 16), (name, sizes[3][name], size)
