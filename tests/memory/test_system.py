"""The memory system: parallel fan-out equals sequential, writes really overlap,
bounded input queue, failures isolated, merged ranking with provenance, latency
counters, checkpoint + journal replay, and a real SIGKILL of a system writer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engram.memory.base import Hit, Memory, Provenance
from engram.memory.episodic import EpisodicMemory
from engram.memory.semantic import SemanticMemory
from engram.memory.store import Store, StoreConfig
from engram.memory.system import MemorySystem, MemorySystemConfig, default_memories, merge_hits
from engram.memory.temporal import TemporalMemory
from engram.memory.working import WorkingConfig, WorkingMemory
from engram.runtime.messages import Instruction, MemoryQuery, Message, PlanStep
from tests.memory._factories import S, noisy, percept, sound, transcript, unit

REPO = Path(__file__).resolve().parents[2]
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


def test_checkpoint_and_journal_replay_restore_the_memories(tmp_path: Path) -> None:
    def mems() -> list[Memory]:
        return [TemporalMemory(), EpisodicMemory(), SemanticMemory(), Probe()]

    def written_ns(record_id: str) -> int:
        ckpt = tmp_path / "memories" / "temporal"
        ckpt = ckpt / (ckpt / "CURRENT").read_text()
        with Store(ckpt, config=StoreConfig(read_only=True)) as store:
            return store.get("temporal", record_id).written_ns

    system = MemorySystem(mems(), root=tmp_path)
    feed(system)
    system.flush()
    saved = system.checkpoint()
    assert set(saved) == {"temporal", "episodic", "semantic", "probe"}
    first = written_ns("i3")
    system.submit(percept(99, ["chair"]))
    system.checkpoint()  # incremental: a copy of the last one plus what changed
    assert written_ns("i3") == first and written_ns("meta") > first
    for t in range(100, 110):  # after the checkpoint: only in the journal
        system.submit(percept(t, ["blue_key"]))
    system.flush()
    q = MemoryQuery(text="blue key red mug", top_k=10, memories=["temporal", "semantic", "probe"])
    want = snapshot(system.recall(q))
    sizes = {m.name: len(m) for m in system.memories}
    system.close(checkpoint=False)  # as if the process had died (journal committed on close)

    again = MemorySystem(mems(), root=tmp_path)
    try:
        assert again.counters["replayed"] == 10
        assert {m.name: len(m) for m in again.memories} == sizes
        assert snapshot(again.recall(q)) == want
        assert (tmp_path / "memories" / "temporal" / "CURRENT").read_text().startswith("ckpt-")
    finally:
        again.close()
    third = MemorySystem(mems(), root=tmp_path)  # close() checkpointed: nothing to replay
    assert third.counters["replayed"] == 0 and len(third["temporal"]) == sizes["temporal"]
    third.close()


def test_a_damaged_checkpoint_or_journal_is_set_aside_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    def mems() -> list[Memory]:
        return [TemporalMemory(), EpisodicMemory(), SemanticMemory()]

    q = MemoryQuery(text="blue key red mug", top_k=10, memories=["temporal", "episodic"])
    mem_dir = tmp_path / "memories" / "temporal"

    def damage_current() -> Path:
        damaged = mem_dir / (mem_dir / "CURRENT").read_text().strip()
        (damaged / "store.sqlite").write_bytes(b"\x00garbage" * 512)
        return damaged

    system = MemorySystem(mems(), root=tmp_path)
    feed(system)
    system.flush()
    system.checkpoint()
    for t in range(100, 110):  # after the checkpoint: only in the journal
        system.submit(percept(t, ["blue_key"]))
    system.flush()
    sizes = {m.name: len(m) for m in system.memories}
    want = snapshot(system.recall(q))
    system.close(checkpoint=False)

    # 1. the only checkpoint is damaged: the journal still reaches back to the start
    damaged = damage_current()
    again = MemorySystem(mems(), root=tmp_path)
    try:
        err = again.stats()["load_errors"]["temporal"]
        assert str(damaged) in err and "corrupt" in err and "rebuilt from the journal" in err
        assert {m.name: len(m) for m in again.memories} == sizes
        assert snapshot(again.recall(q)) == want
        set_aside = list(mem_dir.glob(f"{damaged.name}.corrupt-*"))
        assert len(set_aside) == 1 and (set_aside[0] / "store.sqlite").exists()  # kept
        for t in range(110, 115):  # it keeps working, and checkpoints again (twice)
            again.submit(percept(t, ["lamp"]))
        again.flush()
        again.checkpoint()
        again.submit(percept(116, ["vase"]))
        again.flush()
        again.checkpoint()
        sizes = {m.name: len(m) for m in again.memories}
        want = snapshot(again.recall(q))
    finally:
        again.close(checkpoint=False)

    # 2. the newest of two checkpoints is damaged: the previous one + the journal (not
    # the leftover of an interrupted save, newer than both, which CURRENT never named)
    damaged = damage_current()
    ckpts = sorted(c for c in mem_dir.glob("ckpt-*") if len(c.name) == len(damaged.name))
    previous = [c for c in ckpts if c.name < damaged.name][-1]
    shutil.copytree(previous, mem_dir / "ckpt-9000000000000000")
    third = MemorySystem(mems(), root=tmp_path)
    try:
        err = third.stats()["load_errors"]["temporal"]
        assert str(damaged) in err and f"restored {previous.name}" in err
        assert {m.name: len(m) for m in third.memories} == sizes
        assert snapshot(third.recall(q)) == want
    finally:
        third.close()

    # 3. a garbled journal: set aside, the checkpoints still load, a new journal takes over
    (tmp_path / "journal" / "store.sqlite").write_bytes(b"not a database" * 300)
    fourth = MemorySystem(mems(), root=tmp_path)
    try:
        assert "journal" in fourth.stats()["load_errors"]
        assert len(list(tmp_path.glob("journal.corrupt-*"))) == 1
        assert {m.name: len(m) for m in fourth.memories} == sizes  # close() checkpointed
        fourth.submit(percept(130, ["vase"]))
        fourth.flush()
        assert fourth.recall(MemoryQuery(text="vase", memories=["temporal"]))
    finally:
        fourth.close()


_SYSTEM_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from engram.memory.system import MemorySystem, MemorySystemConfig
    from engram.memory.temporal import TemporalMemory
    from engram.memory.episodic import EpisodicMemory
    from engram.memory.semantic import SemanticMemory
    from tests.memory._factories import percept
    cfg = MemorySystemConfig(root=sys.argv[1], journal_batch=int(sys.argv[2]),
                             journal_interval_s=1e9, checkpoint_every=150)
    system = MemorySystem([TemporalMemory(), EpisodicMemory(), SemanticMemory()], config=cfg)
    rng = np.random.default_rng(0)
    i = 0
    while True:
        emb = rng.normal(size=16).astype(np.float32)
        ok = system.submit(percept(i, ["red_mug", "table"], embedding=emb / np.linalg.norm(emb)),
                           timeout_s=10)
        assert ok
        print(f"sub {i} committed {system.journal_committed}", flush=True)
        i += 1
    """
)


def test_sigkill_of_a_system_writer_recovers_committed_messages(tmp_path: Path) -> None:
    batch = 20
    proc = subprocess.Popen(
        [sys.executable, "-c", _SYSTEM_WRITER, str(tmp_path), str(batch)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    last_sub, committed = -1, 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "system writer died early"
        _, i, _, c = line.split()
        last_sub, committed = int(i), int(c)
        if committed >= 300 and last_sub % batch == batch // 2:  # past 2 checkpoints, mid-batch
            break
    proc.send_signal(signal.SIGKILL)
    for line in proc.stdout.read().splitlines():
        _, i, _, c = line.split()
        last_sub, committed = int(i), max(committed, int(c))
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    system = MemorySystem([TemporalMemory(), EpisodicMemory(), SemanticMemory()], root=tmp_path)
    try:
        assert system._journal.integrity_check() == []
        n = len(system["temporal"])
        assert committed <= n <= last_sub + 2, (committed, n, last_sub)
        assert (last_sub + 1) - n <= batch  # lost at most one journal batch
        stamps = sorted(it.stamp_ns for it in system["temporal"]._items.values())
        assert stamps == [i * S for i in range(n)]  # a prefix, no gaps, no duplicates
        (fact,) = system["semantic"].facts("red_mug") or [None]
        assert system["episodic"].stats()["entities"] >= 1
        assert system.recall(MemoryQuery(text="red mug", top_k=3))
        del fact
    finally:
        system.close()
    # the journal is pruned up to the oldest checkpoint a memory could fall back to: the
    # one before its current one (none yet: nothing is pruned)
    fallback, current = [], 0
    for name in ("temporal", "episodic", "semantic"):
        jseqs = sorted(int(c.name[5:]) for c in (tmp_path / "memories" / name).glob("ckpt-*"))
        assert 1 <= len(jseqs) <= 2  # the current checkpoint and at most one before it
        fallback.append(jseqs[0] if len(jseqs) == 2 else 0)
        current = max(current, jseqs[-1])
    with Store(tmp_path / "journal") as journal:
        kept = sorted(int(r.record_id) for r in journal.scan("journal"))
        assert kept == list(range(min(fallback) + 1, current + 1))
