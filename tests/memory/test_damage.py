"""Store damage that used to be silent or fatal (issue 18, defect 5): every loss is
detected and reported in ``stats()["load_errors"]`` and by ``engram memory info``."""

from __future__ import annotations

import argparse
import io
import os
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from engram.memory.base import Memory
from engram.memory.episodic import EpisodicMemory
from engram.memory.semantic import SemanticMemory
from engram.memory.store import Store, StoreConfig, StoreCorrupt
from engram.memory.system import MemorySystem, MemorySystemConfig
from engram.memory.temporal import TemporalMemory
from tests.memory._factories import percept

AFTER = 40  # messages journaled after the last checkpoint


def mems() -> list[Memory]:
    return [TemporalMemory(), EpisodicMemory(), SemanticMemory()]


def _unit(i: int) -> np.ndarray:
    v = np.random.default_rng(i).normal(size=16).astype(np.float32)
    return v / np.linalg.norm(v)


def _store_with_journal(root: Path) -> dict[str, int]:
    """A checkpoint of 20 percepts, then AFTER more only in the journal; closed as by a kill
    (the journal committed, no final checkpoint). Returns the memories' sizes."""
    system = MemorySystem(mems(), config=MemorySystemConfig(root=str(root), checkpoint_every=0))
    for i in range(20):
        system.submit(percept(i, ["red_mug", "table"], embedding=_unit(i)))
    system.flush()
    system.checkpoint()
    for i in range(20, 20 + AFTER):
        system.submit(percept(i, [f"thing_{i}"], embedding=_unit(i)))
    system.flush()
    sizes = {m.name: len(m) for m in system.memories}
    system.close(checkpoint=False)
    return sizes


def _info(root: Path) -> str:
    from engram.memory.cli import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = io.StringIO()
    with redirect_stdout(out):
        assert run(parser.parse_args(["info", str(root)])) == 0
    return out.getvalue()


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_a_lost_journal_is_detected_with_the_number_of_messages_lost(
    tmp_path: Path, how: str
) -> None:
    _store_with_journal(tmp_path)
    if how == "truncated":
        (tmp_path / "journal" / "store.sqlite").write_bytes(b"")  # 0 bytes: opens as empty
    else:
        shutil.rmtree(tmp_path / "journal")
    report = _info(tmp_path)
    assert f"problem: journal loss: messages 21..60 ({AFTER})" in report, report
    system = MemorySystem(mems(), config=MemorySystemConfig(root=str(tmp_path)))
    try:
        err = system.stats()["load_errors"]["journal loss"]
        assert f"({AFTER})" in err and "truncated or deleted" in err
        assert system.counters["lost_on_load"] == AFTER
        seq_before = system._jseq
        system.submit(percept(999, ["vase"], embedding=_unit(999)))
        system.flush()
        assert system._jseq == seq_before + 1  # numbering goes on after the lost ones
    finally:
        system.close(checkpoint=False)


def test_random_bytes_in_a_journal_array_file_are_detected_and_the_rest_replayed(
    tmp_path: Path,
) -> None:
    _store_with_journal(tmp_path)
    files = sorted((tmp_path / "journal" / "arrays").rglob("*.bin"))
    target = max(files, key=lambda p: p.stat().st_size)
    size = target.stat().st_size
    with open(target, "r+b") as fh:  # garble the last quarter (the newest messages' arrays)
        fh.seek(size * 3 // 4)
        fh.write(os.urandom(64))
    system = MemorySystem(mems(), config=MemorySystemConfig(root=str(tmp_path)))
    try:
        err = system.stats()["load_errors"]["journal damage"]
        assert "fails its checksum" in err and "skipped" in err
        skipped = system.counters["lost_on_load"]
        assert 1 <= skipped < AFTER
        assert system.counters["replayed"] == AFTER - skipped  # the rest came back
    finally:
        system.close(checkpoint=False)
    assert "problem: journal damage" in _info(tmp_path)


def test_array_checksums_catch_changed_bytes_in_any_store(tmp_path: Path) -> None:
    from engram.memory.store import Record

    with Store(tmp_path / "s") as store:
        store.put(Record("c", "a", arrays={"v": np.arange(100, dtype=np.float32)}))
        store.put(Record("c", "b", arrays={"v": np.ones(100, np.float32)}))
        store.commit()
    (path,) = (tmp_path / "s" / "arrays").rglob("*.bin")
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # one flipped byte in record a's array
    path.write_bytes(bytes(data))
    with Store(tmp_path / "s", config=StoreConfig(read_only=True)) as store:
        with pytest.raises(StoreCorrupt, match="fails its checksum"):
            store.get("c", "a")
        assert np.array_equal(store.get("c", "b").arrays["v"], np.ones(100, np.float32))
        with pytest.raises(StoreCorrupt, match="fails its checksum"):
            store.load_arrays("c", "v")
        assert any("checksum" in p for p in store.integrity_check())


def test_current_being_a_directory_is_set_aside_not_a_crash(tmp_path: Path) -> None:
    sizes = _store_with_journal(tmp_path)
    pointer = tmp_path / "memories" / "temporal" / "CURRENT"
    pointer.unlink()
    pointer.mkdir()  # IsADirectoryError from _load_lane before
    (pointer / "junk").write_text("x")
    system = MemorySystem(mems(), config=MemorySystemConfig(root=str(tmp_path)))
    try:
        err = system.stats()["load_errors"]["temporal"]
        assert "CURRENT set aside as" in err and "rebuilt from the journal" in err
        assert {m.name: len(m) for m in system.memories} == sizes  # nothing lost
        assert list(pointer.parent.glob("CURRENT.corrupt-*"))  # kept for inspection
    finally:
        system.close()
    assert pointer.is_file()  # the next checkpoint wrote a proper pointer again
