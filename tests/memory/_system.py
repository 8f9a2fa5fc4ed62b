"""Shared pieces of the memory-system tests (test_system.py, test_recovery.py): a
probe memory that records, blocks, sleeps or fails on demand, the real memories, a
scripted feed and its queries."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from engram.memory.base import Hit, Memory
from engram.memory.system import MemorySystem, default_memories
from engram.memory.working import WorkingConfig, WorkingMemory
from engram.runtime.messages import Instruction, MemoryQuery, Message, PlanStep
from tests.memory._factories import S, noisy, percept, sound, transcript, unit

D = 32


class Probe(Memory):
    """A test memory: records what it got, can block, sleep or fail on demand."""

    name = "probe"
    accepts = ("Percept", "Instruction")

    def __init__(self, name: str = "probe", *, sleep_s: float = 0.0, gate=None, fail_on=""):
        self.name = name  # type: ignore[misc]
        self.sleep_s, self.gate, self.fail_on = sleep_s, gate, fail_on
        self.got: list[int] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def write(self, msg: Message, *, topic: str = "") -> None:
        with self._lock:
            self.active += 1
            Probe.shared_active[0] += 1
            Probe.shared_max[0] = max(Probe.shared_max[0], Probe.shared_active[0])
        try:
            if self.gate is not None:
                self.gate.wait(10)
            if self.sleep_s:
                time.sleep(self.sleep_s)  # like numpy/faiss: releases the GIL
            if self.fail_on and getattr(msg, "text", "") == self.fail_on:
                raise ValueError(f"{self.name} refuses {self.fail_on!r}")
            self.got.append(msg.stamp_ns)
        finally:
            with self._lock:
                self.active -= 1
                Probe.shared_active[0] -= 1

    def recall(self, query: MemoryQuery) -> list[Hit]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return [
            Hit(self.name, 1.0 / (1 + i), text=f"{self.name} #{s}", stamp_ns=s, record_id=f"{s}")
            for i, s in enumerate(self.got[-query.top_k :][::-1])
        ]

    def save(self, directory: str | Path) -> None:
        Path(directory, "got.txt").write_text(" ".join(map(str, self.got)))

    def load(self, directory: str | Path) -> None:
        text = Path(directory, "got.txt").read_text().split()
        self.got = [int(x) for x in text]

    def __len__(self) -> int:
        return len(self.got)

    shared_active = [0]
    shared_max = [0]


def real_memories() -> list[Memory]:
    """Spatial (from the spatial package), temporal, episodic, semantic, working."""
    mems = default_memories(include=["spatial", "temporal", "episodic", "semantic"])
    return [*mems, WorkingMemory(WorkingConfig(dim=D, perceptual_tokens=4, capacity=8, heads=4))]


def feed(system: MemorySystem) -> None:
    rng = np.random.default_rng(0)
    scenes = {n: unit(rng.normal(size=D)) for n in ("kitchen", "hall")}
    objs = {n: unit(rng.normal(size=D)) for n in ("red_mug", "table_1", "door")}
    system.submit(Instruction(stamp_ns=0, text="bring the red mug", episode_id="ep"))
    for t in range(40):
        room = "kitchen" if t < 20 else "hall"
        labels = ["red_mug", "table_1"] if room == "kitchen" else ["door"]
        system.submit(
            percept(
                t + 1,
                labels,
                embedding=noisy(scenes[room], rng),
                object_embeddings=np.stack([noisy(objs[n], rng) for n in labels]),
                centroids=[(1, 0, 0.8), (1, 0, 0.375)][: len(labels)]
                if room == "kitchen"
                else [(4, 2, 1)],
                extents=[(0.08, 0.08, 0.1), (1.2, 0.8, 0.75)][: len(labels)]
                if room == "kitchen"
                else [(0.9, 0.1, 2)],
                camera=(0.0, float(t) * 0.1, 1.2),
                points=64,
                seq=t + 1,
            ),
            topic="/percepts",
        )
    system.submit(
        transcript(45, "the red mug is on the table", speaker="ann"), topic="/transcripts"
    )
    system.submit(sound(46, "doorbell"), topic="/sound_events")
    system.submit(
        PlanStep(
            stamp_ns=47 * S, skill="pick", args={"o": "red_mug"}, status="failed", episode_id="ep"
        )
    )


QUERIES = [
    MemoryQuery(text="red mug", top_k=8),
    MemoryQuery(text="door", top_k=5),
    MemoryQuery(text="when was the red mug last seen", top_k=4),
    MemoryQuery(near=np.array([1, 0, 0.8], np.float32), radius_m=0.5, top_k=6),
    MemoryQuery(text="doorbell", memories=["temporal", "episodic"], top_k=3),
]


def snapshot(hits: list[Hit]) -> list[tuple[str, str, float]]:
    return [(h.memory, h.record_id, round(h.score, 6)) for h in hits]
