"""The memory system: parallel fan-out equals sequential, writes really overlap,
bounded input queue, failures isolated, merged ranking with provenance, latency
counters (persistence and recovery: test_recovery.py)."""

from __future__ import annotations

import threading

import pytest

from engram.memory.base import Hit, Provenance
from engram.memory.system import MemorySystem, MemorySystemConfig, merge_hits
from engram.runtime.messages import Instruction, MemoryQuery
from tests.memory._factories import S, percept
from tests.memory._system import QUERIES, Probe, feed, real_memories, snapshot


def test_parallel_fan_out_gives_the_same_recalls_as_sequential() -> None:
    a = MemorySystem(real_memories(), workers=4)
    b = MemorySystem(real_memories(), workers=1)
    assert a.names == ["spatial", "temporal", "episodic", "semantic", "working"]
    try:
        feed(a)
        feed(b)
        a.flush()
        b.flush()
        seen_memories = set()
        for q in QUERIES:
            par = a.recall(q)
            seq = b.recall(q, parallel=False)
            assert snapshot(par) == snapshot(seq), q.text
            seen_memories |= {h.memory for h in par}
            for h in par:
                assert 0.0 <= h.score <= 1.0 and "raw_score" in h.data
                assert isinstance(h.provenance, Provenance)
        assert len(seen_memories) >= 3
        # every memory, spatial included, answers about the mug
        for name in ("spatial", "temporal", "episodic", "semantic"):
            hits = a.recall(MemoryQuery(text="red mug", memories=[name]))
            assert hits and {h.memory for h in hits} == {name}, name
        working = a.recall(
            MemoryQuery(embedding=a["working"].entries()[0][0, 0], memories=["working"])
        )
        assert working and working[0].memory == "working"
        st = a.stats()["memories"]
        for name in a.names:
            assert st[name]["latency"]["write"]["count"] > 0
            assert (
                st[name]["latency"]["recall"]["count"] > 0
                and "p95_ms" in st[name]["latency"]["recall"]
            )
            assert st[name]["errors"] == 0
    finally:
        a.close()
        b.close()


def test_writes_to_different_memories_overlap_in_time() -> None:
    Probe.shared_active[0] = Probe.shared_max[0] = 0
    probes = [Probe(f"p{i}", sleep_s=0.02) for i in range(3)]
    with MemorySystem(probes, workers=3) as system:
        for t in range(5):
            system.submit(percept(t, ["x"]))
        system.flush()
    assert Probe.shared_max[0] >= 2  # at least two memories were writing at once
    for p in probes:  # each memory still sees its messages in order, one at a time
        assert p.got == [t * S for t in range(5)] and p.max_active <= 1


def test_slow_recalls_are_shared_between_the_pool_and_the_caller() -> None:
    threads: dict[str, str] = {}

    class Slow(Probe):
        def recall(self, query: MemoryQuery) -> list[Hit]:
            threads[self.name] = threading.current_thread().name
            return super().recall(query)

    probes = [Slow(f"s{i}", sleep_s=0.03) for i in range(4)]  # sleep: the GIL is free
    with MemorySystem(probes, workers=1) as system:
        system.submit(percept(1, ["x"]))
        system.flush()
        q = MemoryQuery(text="x", top_k=3)
        system.recall(q)  # learns how long each recall takes
        threads.clear()
        hits = system.recall(q)
    assert sorted(h.memory for h in hits) == sorted(p.name for p in probes)[:3]
    here = [n for n, t in threads.items() if t == threading.current_thread().name]
    assert len(here) == 2 and len(threads) == 4  # two in this thread, two on the worker


def test_bounded_input_queue_drops_when_full_and_keeps_order() -> None:
    gate = threading.Event()
    probe = Probe(gate=gate)
    cfg = MemorySystemConfig(input_queue=3, lane_depth=1, workers=1)
    with MemorySystem([probe], config=cfg) as system:
        results = [system.submit(percept(t, ["x"]), timeout_s=0.02) for t in range(20)]
        assert results.count(False) > 0 and system.stats()["dropped"] == results.count(False)
        gate.set()
        system.flush()
        accepted = [t * S for t, ok in enumerate(results) if ok]
        assert probe.got == accepted  # nothing accepted was lost, order kept


def test_failures_are_isolated_and_slow_memories_left_out() -> None:
    bad = Probe("bad", fail_on="boom")
    good = Probe("good")
    slow = Probe("slow")
    with MemorySystem([bad, good, slow], config=MemorySystemConfig(recall_timeout_s=0.2)) as system:
        errors = system.write(Instruction(stamp_ns=5, text="boom"))
        assert list(errors) == ["bad"] and "refuses" in errors["bad"]
        assert good.got == [5] and bad.got == []
        assert system.stats()["memories"]["bad"]["errors"] == 1
        slow.sleep_s = 0.5
        system.recall(MemoryQuery(text="x"))  # learns that "slow" is slow (ran inline)
        hits = system.recall(MemoryQuery(text="x"))  # now in its lane, under the timeout
        assert {h.memory for h in hits} == {"good"}  # slow timed out, bad has nothing
        with pytest.raises(ValueError, match="unknown"):
            system.recall(MemoryQuery(text="x", memories=["nope"]))
        with pytest.raises(TypeError, match="Message"):
            system.submit("not a message")  # type: ignore[arg-type]


def test_merge_normalises_scores_and_interleaves_by_rank() -> None:
    a = [Hit("a", 0.9, record_id="a1"), Hit("a", 0.5, record_id="a2")]
    b = [Hit("b", 42.0, record_id="b1"), Hit("b", 7.0, record_id="b2")]  # not in [0, 1]
    merged = merge_hits([("a", a), ("b", b)], 3)
    # b's rank scores: 1.0, 0.5; the 0.5 tie goes to the earlier memory
    assert [h.record_id for h in merged] == ["b1", "a1", "a2"]
    assert merged[0].score == 1.0 and merged[0].data["raw_score"] == 42.0


def test_unbounded_queries_are_refused_quickly_with_clear_errors() -> None:
    """Issue 18, defect 2: top_k=10**9 ran 72 s and 17 GB; a 10 MB question 48.5 s."""
    import time

    from engram.runtime.messages import MAX_TOP_K, MessageError

    with pytest.raises(MessageError, match=f"top_k: must be an int from 1 to {MAX_TOP_K}"):
        MemoryQuery(text="mug", top_k=10**9)
    with pytest.raises(MessageError, match=r"MemoryQuery\.text: must be a str of at most"):
        MemoryQuery(text="x" * 10_000_000)
    system = MemorySystem(real_memories())
    try:
        feed(system)
        query = MemoryQuery(text="red mug", top_k=MAX_TOP_K)
        t0 = time.perf_counter()
        assert len(system.recall(query)) <= MAX_TOP_K
        assert time.perf_counter() - t0 < 10
        query.top_k = 10**9  # changed after validation: the system checks again
        with pytest.raises(ValueError, match="top_k must be"):
            system.recall(query)
        query.top_k, query.text = 5, "y" * 10_000_000
        with pytest.raises(ValueError, match="question over"):
            system.recall(query)
    finally:
        system.close()


def test_a_backlog_is_dispatched_in_batches_in_order_and_recovers(tmp_path) -> None:
    # A held lane makes the dispatcher wait while 45 messages queue up; it then hands each
    # lane batches of them. Every message must still reach each memory once, in order,
    # a bad one failing alone; checkpoints land exactly every 10 messages; a lane never
    # holds more than its depth; and a reopened system has everything (checkpoint + journal).
    gate = threading.Event()
    held, bad = Probe("held", gate=gate), Probe("bad", fail_on="boom")
    cfg = MemorySystemConfig(
        root=str(tmp_path / "m"), checkpoint_every=10, lane_depth=4, input_queue=64, workers=2
    )
    msgs = [Instruction(stamp_ns=t, text="boom" if t == 17 else f"m{t}") for t in range(1, 46)]
    batches: list[int] = []
    at_checkpoint: list[int] = []
    most_queued = [0]
    with MemorySystem([held, bad], config=cfg) as system:
        apply_batch, checkpoint = system._apply_batch_task, system.checkpoint

        def spy_batch(lane, items):  # noqa: ANN001, ANN202
            batches.append(len(items))
            most_queued[0] = max(most_queued[0], *(ln.queued for ln in system._lanes))
            return apply_batch(lane, items)

        def spy_checkpoint(**kw):  # noqa: ANN003, ANN202
            at_checkpoint.append(system._dispatched_jseq)
            return checkpoint(**kw)

        system._apply_batch_task = spy_batch  # type: ignore[method-assign]
        system.checkpoint = spy_checkpoint  # type: ignore[method-assign]
        assert all(system.submit(m, timeout_s=1.0) for m in msgs)
        gate.set()
        assert system.flush(timeout_s=30)
        assert held.got == list(range(1, 46))
        assert bad.got == [t for t in range(1, 46) if t != 17]
        assert system.stats()["memories"]["bad"]["errors"] == 1
        assert max(batches) > 1  # the backlog did go as batches
        assert most_queued[0] <= cfg.lane_depth
        assert at_checkpoint == [10, 20, 30, 40]
        system.close(checkpoint=False)  # 41-45 only in the journal
    held2, bad2 = Probe("held"), Probe("bad")
    with MemorySystem([held2, bad2], config=cfg) as again:
        again.flush()
        assert held2.got == list(range(1, 46))
        assert bad2.got == [t for t in range(1, 46) if t != 17]
