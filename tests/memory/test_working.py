"""MemoryVLA working memory: shapes, retrieval by cross-attention with a timestep
encoding, gated fusion, consolidation of the most similar adjacent entries, per-episode
reset, gradients for the action expert, and the Memory wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engram.memory.base import Provenance
from engram.memory.working import (
    PerceptualCognitiveBank,
    WorkingConfig,
    WorkingMemory,
    timestep_encoding,
)
from engram.runtime.messages import Instruction, MemoryQuery
from tests.memory._factories import S, noisy, percept, unit

D, NP = 32, 4


def small(**kw) -> PerceptualCognitiveBank:
    torch.manual_seed(0)
    cfg = WorkingConfig(dim=D, perceptual_tokens=NP, cognitive_tokens=1, capacity=4, heads=4, **kw)
    return PerceptualCognitiveBank(cfg)


def test_shapes_and_timestep_encoding() -> None:
    bank = small()
    bank.reset(3)
    p, c, t = torch.randn(3, NP, D), torch.randn(3, 1, D), torch.tensor([0.0, 5.0, 9.0])
    pf, cf = bank(p, c, t)
    assert pf.shape == (3, NP, D) and cf.shape == (3, 1, D)
    assert bank.count.tolist() == [1, 1, 1]
    # an empty bank retrieves zeros, so the first step's retrieval is exactly zero
    bank.reset(3)
    hp, hc = bank.retrieve(p, c, t)
    assert torch.count_nonzero(hp) == 0 and torch.count_nonzero(hc) == 0
    enc = timestep_encoding(torch.tensor([0.0, 1.0]), 8)
    assert enc.shape == (2, 8) and torch.allclose(enc[0, 1::2], torch.ones(4))  # cos(0) = 1
    with pytest.raises(ValueError, match=r"p must have shape \(3, 4, 32\)"):
        bank(torch.randn(3, NP + 1, D), c, t)


def test_retrieval_depends_on_stored_entries_and_their_timesteps() -> None:
    bank = small().eval()
    bank.reset(1)
    x = torch.randn(1, NP, D)
    c = torch.randn(1, 1, D)
    with torch.no_grad():
        bank.write(torch.randn(1, NP, D), torch.randn(1, 1, D), torch.tensor([0.0]))
        bank.write(torch.randn(1, NP, D), torch.randn(1, 1, D), torch.tensor([1.0]))
        h1, _ = bank.retrieve(x, c, torch.tensor([2.0]))
        assert torch.count_nonzero(h1) > 0
        h2, _ = bank.retrieve(x, c, torch.tensor([200.0]))  # the query's time matters
        assert not torch.allclose(h1, h2)
        bank.bank_t[0, 0] = 50.0  # and the entries' times (relative to each other)
        h3, _ = bank.retrieve(x, c, torch.tensor([2.0]))
        assert not torch.allclose(h1, h3)
        # gated fusion: a convex mix of current and retrieved tokens, elementwise
        fused = bank.fuse(x, h1, bank.p_gate)
        lo, hi = torch.minimum(x, h1), torch.maximum(x, h1)
        assert torch.all(fused >= lo - 1e-5) and torch.all(fused <= hi + 1e-5)


def test_consolidation_merges_the_most_similar_adjacent_pair() -> None:
    bank = small(write_fused=False)
    bank.reset(2)
    rng = np.random.default_rng(0)
    distinct = [torch.from_numpy(unit(rng.normal(size=D))) for _ in range(4)]
    seq = [distinct[0], distinct[1], distinct[2], distinct[2] + 0.01, distinct[3]]  # 2 ~ 3
    merged = []
    for step, v in enumerate(seq):
        p = v.expand(2, NP, D).clone()
        c = v.expand(2, 1, D).clone()
        merged = bank.write(p, c, torch.full((2,), float(step)))
    assert merged == [2, 2] and bank.count.tolist() == [4, 4]  # capacity 4
    assert bank.bank_t[0, :4].tolist() == [0.0, 1.0, 2.5, 4.0]  # merged pair averaged
    assert torch.allclose(bank.bank_c[0, 2, 0], (seq[2] + seq[3]) / 2)
    # per-episode reset of one batch element only
    bank.reset(mask=torch.tensor([True, False]))
    assert bank.count.tolist() == [0, 4]


def test_gradients_flow_for_the_action_expert() -> None:
    bank = small()
    bank.reset(2)
    p = torch.randn(2, NP, D, requires_grad=True)
    c = torch.randn(2, 1, D)
    bank(p.detach(), c, torch.zeros(2))  # something to retrieve
    pf, cf = bank(p, c, torch.ones(2))
    (pf.sum() + cf.sum()).backward()
    assert p.grad is not None and bank.p_attn.q.weight.grad is not None
    assert bank.p_gate.weight.grad.abs().sum() > 0


def test_working_memory_wrapper_recall_and_reset() -> None:
    # (save -> load is checked for every memory: test_testing.py)
    rng = np.random.default_rng(1)
    scenes = [unit(rng.normal(size=D)) for _ in range(3)]
    wm = WorkingMemory(
        WorkingConfig(dim=D, perceptual_tokens=NP, capacity=4, heads=4, write_fused=False)
    )
    for i in range(30):
        e = noisy(scenes[i // 10], rng, 0.02)
        wm.write(percept(i, [f"s{i // 10}"], embedding=e, object_embeddings=e[None]))
    assert len(wm) == 4 and wm.stats()["merges"] == 26
    hits = wm.recall(MemoryQuery(embedding=scenes[1], top_k=1))
    assert "s1" in hits[0].text and 10 * S <= hits[0].stamp_ns <= 19 * S
    assert hits[0].data["frames"] >= 1
    first = percept(40, ["x"], embedding=scenes[0], seq=7)
    wm.write(first, topic="/percepts")
    assert hits[0].provenance.source_topic == "" and wm._meta[-1]["provenance"] == (
        Provenance.of(first, "/percepts").to_dict()
    )
    wm.write(Instruction(text="new task"))  # a new episode empties the bank
    assert len(wm) == 0 and wm.recall(MemoryQuery(embedding=scenes[0])) == []
    with pytest.raises(ValueError, match="dimension 7"):
        wm.write(percept(40, ["x"], embedding=unit(np.ones(7))))


def test_a_write_runs_its_torch_ops_on_one_thread_of_the_caller_only() -> None:
    # Default intra-op threads made each write's tiny torch ops wake OpenMP workers (~4 ms
    # a write on 2 busy cores instead of ~0.5): the write limits its own thread to one,
    # restores it after, and leaves every other thread's setting alone.
    import threading

    wm = WorkingMemory(WorkingConfig(dim=D, perceptual_tokens=NP, capacity=4, heads=4))
    wm.write_in_numpy = False  # the torch write (a bank on another device, or on request)
    rng = np.random.default_rng(2)
    e = unit(rng.normal(size=D))
    wm.write(percept(0, ["a"], embedding=e, object_embeddings=e[None]))  # builds the bank
    seen: list[int] = []
    original = wm.bank.write

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    wm.bank.write = spy
    outside: list[int] = []

    def writer() -> None:
        torch.set_num_threads(2)  # this thread's own count (as torch's default on 2 cores)
        before = torch.get_num_threads()
        wm.write(percept(1, ["b"], embedding=e, object_embeddings=e[None]))
        outside.extend([before, torch.get_num_threads()])

    main_before = torch.get_num_threads()
    t = threading.Thread(target=writer)
    t.start()
    t.join()
    assert seen == [1]  # inside the write
    assert outside[0] == outside[1]  # restored on the writer's thread
    torch.set_num_threads(main_before)


def test_the_numpy_write_on_a_cpu_bank_matches_the_bank_s_torch_write() -> None:
    # _write_cpu repeats the bank's write / consolidate / merge in numpy (dispatch cost):
    # the same stream through both leaves the same entries, merges and metadata
    rng = np.random.default_rng(3)
    scenes = [unit(rng.normal(size=D)) for _ in range(4)]
    cfg = WorkingConfig(dim=D, perceptual_tokens=NP, capacity=4, heads=4, write_fused=False)
    ways = [WorkingMemory(cfg), WorkingMemory(cfg)]
    ways[1].write_in_numpy = False
    for i in range(40):
        e = noisy(scenes[(i // 7) % 4], rng, 0.05)
        k = 1 + i % NP + (i % 3 == 0)  # 1..NP+1 objects: padding and cutting
        objs = np.stack([noisy(e, rng, 0.1) for _ in range(k)])
        msg = percept(i, [f"o{i}_{j}" for j in range(k)], embedding=e, object_embeddings=objs)
        for wm in ways:
            wm.write(msg)
    numpy_way, torch_way = ways
    assert numpy_way.stats()["merges"] == torch_way.stats()["merges"] == 36
    assert numpy_way._meta == torch_way._meta
    for got, want in zip(numpy_way.entries(), torch_way.entries(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(numpy_way.bank.count[0]) == 4
