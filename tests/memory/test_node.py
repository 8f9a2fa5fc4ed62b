"""MemoryNode: percepts, speech and tasks in over the bus, recall over request/reply
(in-process bus, and ZeroMQ from another OS process), query embedding, errors as
replies, heartbeat health, registration as node type "memory"."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import tempfile
import time
from collections.abc import Iterator

import numpy as np
import pytest

from engram.memory.embedding import Embedders
from engram.memory.episodic import EpisodicMemory
from engram.memory.node import MemoryNode, MemoryNodeConfig
from engram.memory.semantic import SemanticMemory
from engram.memory.system import MemorySystem
from engram.memory.temporal import TemporalMemory
from engram.runtime.bus import InProcBus, make_bus
from engram.runtime.messages import Instruction, MemoryQuery, Recall
from engram.runtime.node import load_node_class
from tests.memory._factories import minilm, percept, transcript

MUG = (0.08, 0.08, 0.1)


def make_node(bus, embed) -> MemoryNode:
    emb = Embedders({"text": embed})
    system = MemorySystem(
        [
            TemporalMemory(embedders=emb),
            EpisodicMemory(embedders=emb),
            SemanticMemory(embedders=emb),
        ],
        embedders=emb,
    )
    cfg = MemoryNodeConfig(heartbeat_hz=0, consolidate_every_s=0, text_encoder="")
    return MemoryNode(cfg, bus=bus, system=system, embedders=emb, name="memory")


def wait_until(cond, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_memory_node_answers_queries_over_the_bus() -> None:
    assert load_node_class("memory") is MemoryNode
    embed = minilm()
    bus = InProcBus("memory-node-test")
    node = make_node(bus, embed)
    with node:
        bus.publish("/instruction", Instruction(text="bring me the mug", episode_id="e1"))
        for t in range(5):
            bus.publish(
                "/percepts",
                percept(
                    t,
                    ["red_mug", "kitchen_table"],
                    centroids=[(1, 0, 0.8), (1, 0, 0.375)],
                    extents=[MUG, (1.2, 0.8, 0.75)],
                ),
            )
        bus.publish(
            "/transcripts", transcript(6, "the printer is jammed", speaker="ann", embed=embed)
        )
        assert wait_until(lambda: node.system.stats()["submitted"] == 7)
        node.system.flush()
        # no shared word with "red_mug on kitchen_table": the node embeds the text itself
        reply = bus.request(
            "/memory/query",
            MemoryQuery(text="where is my coffee cup?", memories=["semantic"]),
            timeout_s=5,
        )
        assert isinstance(reply, Recall) and reply.error == ""
        assert (
            reply.hits[0]["memory"] == "semantic" and reply.hits[0]["data"]["subject"] == "red_mug"
        )
        assert reply.query_text == "where is my coffee cup?"
        reply = bus.request("/memory/query", MemoryQuery(text="red mug", top_k=6), timeout_s=5)
        assert {h["memory"] for h in reply.hits} >= {"temporal", "episodic"}
        assert all(
            {"score", "text", "stamp_ns", "provenance", "record_id"} <= h.keys() for h in reply.hits
        )
        # errors come back as replies; the node keeps serving
        bad = bus.request("/memory/query", MemoryQuery(text="x", memories=["nope"]), timeout_s=5)
        assert "unknown" in bad.error and bad.hits == []
        wrong = bus.request("/memory/query", Instruction(text="hi"), timeout_s=5)
        assert "expects a MemoryQuery" in wrong.error
        hb = node.heartbeat()
        assert hb.counters["memory_submitted"] == 7 and hb.counters["requests"] == 4
        assert "temporal_write_p95" in hb.latency_ms and hb.info["records"]["semantic"] >= 1
    assert node.system._closed  # stopping the node closed the system
    bus.close()


@pytest.fixture
def ipc_url() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="egm", dir="/tmp")  # unix socket paths must be short
    yield f"ipc://{directory}/bus"
    shutil.rmtree(directory, ignore_errors=True)


def _ask(url: str, out: mp.Queue) -> None:
    """Another process (a planner, a UI): ask the memory over ZeroMQ."""
    bus = make_bus(url, poll_s=0.02)
    try:
        reply = bus.request("/memory/query", MemoryQuery(text="red mug", top_k=3), timeout_s=20)
        out.put({"error": reply.error, "hits": reply.hits})
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put({"error": repr(exc), "hits": []})
    finally:
        bus.close()


def test_memory_node_serves_another_process_over_zeromq(ipc_url: str) -> None:
    pytest.importorskip("zmq")
    from engram.runtime.zmq_broker import serve_broker

    broker = serve_broker(ipc_url)
    bus = make_bus(ipc_url, poll_s=0.02)
    emb = Embedders({})
    system = MemorySystem([TemporalMemory(embedders=emb), EpisodicMemory(embedders=emb)])
    node = MemoryNode(
        MemoryNodeConfig(heartbeat_hz=0, consolidate_every_s=0, text_encoder=""),
        bus=bus,
        system=system,
        embedders=emb,
    )
    try:
        with node:
            for t in range(3):
                system.write(percept(t, ["red_mug"], embedding=np.ones(8, np.float32) / np.sqrt(8)))
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            child = ctx.Process(target=_ask, args=(ipc_url, out))
            child.start()
            result = out.get(timeout=60)
            child.join(timeout=10)
        assert result["error"] == ""
        assert result["hits"] and "red_mug" in result["hits"][0]["text"]
        assert result["hits"][0]["memory"] in ("temporal", "episodic")
    finally:
        bus.close()
        broker.close()


def test_spoken_memories_are_answered_over_the_bus() -> None:
    """Transcripts published on /transcripts (as the speech node does) become facts with
    who / when / where; a query with answer=True gets the answer object beside the hits."""
    bus = InProcBus("memory-node-answer-test")
    node = make_node(bus, minilm())
    with node:
        for t in range(3):
            bus.publish(
                "/percepts",
                percept(
                    t,
                    ["red_mug", "kitchen_table"],
                    centroids=[(1, 0, 0.8), (1, 0, 0.375)],
                    extents=[MUG, (1.2, 0.8, 0.75)],
                ),
            )
        heard = transcript(5, "the keys are in the kitchen drawer", speaker="ann")
        bus.publish("/transcripts", heard)
        assert wait_until(lambda: node.system.stats()["submitted"] == 4)
        node.system.flush()
        reply = bus.request(
            "/memory/query", MemoryQuery(text="where are my keys?", answer=True), timeout_s=5
        )
        assert isinstance(reply, Recall) and reply.error == "" and reply.hits
        ans = reply.answer
        assert not ans["abstained"] and "kitchen drawer" in ans["answer"] and "ann" in ans["answer"]
        assert {e["memory"] for e in ans["evidence"]} == {"semantic", "episodic"}
        assert ans["evidence"][0]["t_s"] == 5.0
        never = bus.request(
            "/memory/query", MemoryQuery(text="where is the red cube?", answer=True), timeout_s=5
        )
        assert never.answer["abstained"] and never.answer["answer"].startswith("I have not seen")
        plain = bus.request("/memory/query", MemoryQuery(text="red mug"), timeout_s=5)
        assert plain.answer == {} and plain.hits  # no answer unless asked for
        assert node.heartbeat().counters["answers"] == 2
    bus.close()


def test_partial_transcripts_are_not_stored_only_their_final() -> None:
    """The speech node publishes partials (final=False) while someone speaks; only the
    final sentence becomes a memory, so a half-heard one leaves no episode or fact."""
    bus = InProcBus("memory-node-partials-test")
    node = make_node(bus, minilm())
    with node:
        partial = transcript(5, "the keys are in the kit", speaker="ann")
        partial.final = False
        bus.publish("/transcripts", partial)
        bus.publish("/transcripts", transcript(5, "the keys are in the kitchen drawer"))
        assert wait_until(lambda: node.system.stats()["submitted"] == 1)
        node.system.flush()
        assert node.heartbeat().counters["partial_transcripts_skipped"] == 1
        reply = bus.request("/memory/query", MemoryQuery(text="keys kit", top_k=20), timeout_s=5)
        blob = json.dumps(reply.hits, default=str)
        assert "the keys are in the kitchen drawer" in blob
        assert '"the keys are in the kit"' not in blob
    bus.close()
