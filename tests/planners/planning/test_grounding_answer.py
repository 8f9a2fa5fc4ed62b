"""The planner asks the memory's answerer (the same one as `engram memory ask` and the
live page) through ``Grounding.answer`` over ``/memory/query``."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engram.memory.embedding import Embedders
from engram.memory.node import MemoryNode, MemoryNodeConfig
from engram.memory.system import MemorySystem, default_memories
from engram.planners.planning.grounding import Grounding
from engram.planners.planning.memory_client import MemoryClient
from engram.runtime.bus import InProcBus
from engram.runtime.messages import Percept


def _percept(t: float, labels: list[str], cents: list, exts: list) -> Percept:
    k = len(labels)
    return Percept(
        stamp_ns=int(t * 1e9),
        object_ids=np.arange(1, k + 1, dtype=np.int32),
        object_labels=labels,
        object_confidences=np.ones(k, np.float32),
        object_boxes=np.tile(np.array([[1, 1, 9, 9]], np.int32), (k, 1)),
        object_centroids=np.asarray(cents, np.float32),
        object_extents=np.asarray(exts, np.float32),
    )


def test_grounding_answer_uses_the_memory_answerer() -> None:
    bus = InProcBus("grounding-answer-test")
    emb = Embedders()
    system = MemorySystem(default_memories(emb, include=["spatial", "episodic"]), embedders=emb)
    cfg = MemoryNodeConfig(heartbeat_hz=0, consolidate_every_s=0, text_encoder="")
    node = MemoryNode(cfg, bus=bus, system=system, embedders=emb, name="memory")
    with node:
        for t in range(3):
            bus.publish(
                "/percepts",
                _percept(
                    t,
                    ["mug_white", "table"],
                    [(1, 0, 0.8), (1, 0, 0.375)],
                    [(0.08, 0.08, 0.1), (1.2, 0.8, 0.75)],
                ),
            )
        deadline = time.monotonic() + 10
        while system.stats()["submitted"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        system.flush()
        g = Grounding(MemoryClient(lambda q: bus.request("/memory/query", q, 5.0)))
        ans = g.answer("where is the white cup?")  # a synonym of the mug
        assert not ans["abstained"] and ans["value"] == pytest.approx([1, 0, 0.8], abs=0.02)
        assert ans["evidence"] and g.log[-1]["question"] == "where is the white cup?"
        assert g.answer("where is the red cube?")["abstained"]
    bus.close()
    assert Grounding(MemoryClient(None)).answer("where is the mug?") == {}
