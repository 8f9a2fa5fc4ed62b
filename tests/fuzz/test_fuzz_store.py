"""Fuzz: the memory store's open path with damaged files (issue 18, defect 5). Any mix of
truncated, garbled, deleted or replaced-by-a-directory files opens without an exception,
and a store that comes back with fewer records than it had reports why in
``stats()["load_errors"]``: no silent loss."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engram.memory.episodic import EpisodicMemory
from engram.memory.system import MemorySystem, MemorySystemConfig
from engram.memory.temporal import TemporalMemory
from tests.fuzz._budget import budget
from tests.memory._factories import percept


def _mems() -> list:
    return [TemporalMemory(), EpisodicMemory()]


def _unit(i: int) -> np.ndarray:
    v = np.random.default_rng(i).normal(size=16).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("store") / "memory"
    system = MemorySystem(_mems(), config=MemorySystemConfig(root=str(root), checkpoint_every=0))
    for i in range(8):
        system.submit(percept(i, ["red_mug", "table"], embedding=_unit(i)))
    system.flush()
    system.checkpoint()
    for i in range(8, 16):  # only in the journal
        system.submit(percept(i, [f"thing_{i}"], embedding=_unit(i)))
    system.flush()
    sizes = {m.name: len(m) for m in system.memories}
    system.close(checkpoint=False)
    return root, sizes


damage = st.tuples(
    st.sampled_from(["truncate", "garble", "delete", "directory"]),
    st.integers(0, 10**6),  # which file (modulo the count)
    st.floats(0.0, 1.0),  # where in it
)


@given(st.lists(damage, min_size=1, max_size=3))
@budget(0.5)
def test_a_damaged_store_opens_and_reports_every_loss(
    pristine: tuple[Path, dict[str, int]], tmp_path_factory: pytest.TempPathFactory, ops: list
) -> None:
    source, sizes = pristine
    root = tmp_path_factory.mktemp("damaged") / "memory"
    shutil.copytree(source, root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "LOCK")
    for op, which, where in ops:
        files = [p for p in files if p.is_file()]
        if not files:
            break
        path = files[which % len(files)]
        size = path.stat().st_size
        if op == "truncate":
            os.truncate(path, int(size * where))
        elif op == "garble":
            with open(path, "r+b") as fh:
                fh.seek(int(max(size - 16, 0) * where))
                fh.write(os.urandom(16))
        elif op == "delete":
            path.unlink()
        else:
            path.unlink()
            path.mkdir()
    system = MemorySystem(_mems(), config=MemorySystemConfig(root=str(root)))
    try:
        got = {m.name: len(m) for m in system.memories}
        errors = system.stats()["load_errors"]
        if got != sizes:
            assert errors, f"records lost silently: {got} != {sizes} after {ops}"
        system.submit(percept(99, ["vase"], embedding=_unit(99)))  # and it works on
        system.flush()
    finally:
        system.close(checkpoint=False)
