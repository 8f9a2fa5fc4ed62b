"""Persistence of the memory system (``engram.memory.recovery``): checkpoint + journal
replay, damaged checkpoints and journals set aside without loss, and a real SIGKILL of
a system writer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from engram.memory.base import Memory
from engram.memory.episodic import EpisodicMemory
from engram.memory.semantic import SemanticMemory
from engram.memory.store import Store, StoreConfig
from engram.memory.system import MemorySystem
from engram.memory.temporal import TemporalMemory
from engram.runtime.messages import MemoryQuery
from tests.memory._factories import S, percept
from tests.memory._system import Probe, feed, snapshot

REPO = Path(__file__).resolve().parents[2]


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
