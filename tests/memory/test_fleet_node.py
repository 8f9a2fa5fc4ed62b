"""The memory node's ``store`` setting: "sqlite" attaches nothing (the default, unchanged);
a Milvus Lite file makes two robots' nodes share their memories over the bus
(``MemoryQuery(memories=["fleet"])``), with each hit naming its robot; export / import
between a robot's checkpointed SQLite store and Milvus."""

from __future__ import annotations

import time

import pytest

from engram.memory.fleet.transfer import export_root, import_robot
from engram.memory.node import MemoryNode, MemoryNodeConfig
from engram.memory.store import Store
from engram.memory.system import MemorySystem, default_memories
from engram.runtime.bus import InProcBus
from engram.runtime.messages import MemoryQuery, Recall
from tests.memory._factories import percept

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

LONG_TERM = ["spatial", "temporal", "episodic", "semantic"]


def _node(bus, store: str, robot: str, root: str = "") -> MemoryNode:
    cfg = MemoryNodeConfig(
        heartbeat_hz=0,
        consolidate_every_s=0,
        text_encoder="",
        memories=LONG_TERM,
        store=store,
        robot_id=robot,
        root=root,
    )
    return MemoryNode(cfg, bus=bus, name=f"memory_{robot}")


def test_sqlite_store_attaches_nothing():
    bus = InProcBus("fleet-node-sqlite")
    node = _node(bus, "sqlite", "solo")
    with node:
        assert node.fleet is None
        bus.publish("/percepts", percept(1, ["red_cup"], centroids=[(1, 0, 0.5)]))
        deadline = time.monotonic() + 10
        while node.system.stats()["submitted"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        node.system.flush()
        reply = bus.request("/memory/query", MemoryQuery(text="x", memories=["fleet"]), timeout_s=5)
        assert "unknown" in reply.error  # no fleet without a fleet store
    bus.close()


def test_two_robot_nodes_share_through_milvus_lite(tmp_path):
    db = str(tmp_path / "fleet.db")
    bus_a, bus_b = InProcBus("fleet-node-a"), InProcBus("fleet-node-b")
    a, b = _node(bus_a, db, "alpha"), _node(bus_b, db, "beta")
    with a, b:
        bus_a.publish("/percepts", percept(1, ["red_cup"], centroids=[(2, 1, 0.5)]))
        bus_b.publish("/percepts", percept(2, ["blue_mug"], centroids=[(-1, 3, 0.5)]))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            a.system.stats()["dispatched"] and b.system.stats()["dispatched"]
        ):
            time.sleep(0.01)
        a.system.flush()
        b.system.flush()
        assert a.fleet.flush(timeout_s=20) and b.fleet.flush(timeout_s=20)
        reply = bus_b.request(
            "/memory/query", MemoryQuery(text="red cup", memories=["fleet"], top_k=10), timeout_s=10
        )
        assert isinstance(reply, Recall) and reply.error == "", reply.error
        assert reply.hits and {h["provenance"]["producer"] for h in reply.hits} == {"alpha"}
        spatial = [h for h in reply.hits if h["memory"] == "spatial"]
        assert spatial and spatial[0]["position"] == pytest.approx([2, 1, 0.5])
        # a plain query still goes to the robot's own memories
        own = bus_b.request("/memory/query", MemoryQuery(text="red cup"), timeout_s=10)
        assert all("red" not in h["text"] for h in own.hits)
    bus_a.close()
    bus_b.close()


def test_export_a_checkpointed_robot_then_import_it_back(tmp_path):
    root = tmp_path / "robot"
    with MemorySystem(default_memories(include=LONG_TERM), workers=1, root=root) as system:
        for k in range(3):
            system.write(percept(1 + k, ["green_box"], centroids=[(k, 0, 0)]))
    db = str(tmp_path / "x.db")
    n = export_root(root, db, robot_id="gamma", memories=LONG_TERM)
    assert n > 0
    dest = tmp_path / "imported"
    m = import_robot(db, "gamma", dest)
    assert m == n
    with Store(dest) as store:
        recs = list(store.scan("fleet"))
    assert len(recs) == n
    assert any(r.payload["memory"] == "spatial" and "green_box" in r.payload["text"] for r in recs)
    assert all(r.provenance.producer == "gamma" for r in recs)
