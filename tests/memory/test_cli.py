"""``engram memory``: info and ask on a store on disk, export -> import gives a store
that answers the same, a store in use or a wrong directory is named, nothing changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engram.memory.system import MemorySystem, MemorySystemConfig, default_memories
from engram.runtime.apps.cli import main as engram
from tests.memory._factories import percept, transcript, unit

NAMES = ["spatial", "temporal", "episodic", "semantic"]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    rng = np.random.default_rng(0)
    looks = {n: unit(rng.normal(size=32)) for n in ("red_mug", "blue_key", "table")}

    def see(t: float, labels: list[str], where: list[list[float]]) -> None:
        system.submit(
            percept(
                t,
                labels,
                embedding=unit(rng.normal(size=32)),
                object_embeddings=np.stack([looks[n] for n in labels]),
                centroids=where,
                camera=(0.0, 0.0, 1.2),
                points=64,
            )
        )

    system = MemorySystem(
        default_memories(include=NAMES), config=MemorySystemConfig(root=str(root))
    )
    for t in range(20):
        see(t, ["red_mug", "table"], [[1, 0, 0.8], [1, 0, 0.4]])
    system.submit(transcript(20, "the blue key is on the table", speaker="ann"))
    system.flush()
    system.checkpoint()
    for t in range(21, 26):  # after the checkpoint: only in the journal
        see(t, ["blue_key"], [[2, 1, 0.8]])
    system.flush()
    system.close(checkpoint=False)
    return root


def ask_json(root: Path, question: str, capsys: pytest.CaptureFixture, *extra: str) -> list:
    """The ranked recalls (--hits --json)."""
    capsys.readouterr()
    argv = ["memory", "ask", str(root), question, "--hits", "--json", "--text-encoder", "none"]
    argv += list(extra)
    assert engram(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_info_and_ask_read_the_store_without_changing_it(
    store: Path, capsys: pytest.CaptureFixture
) -> None:
    before = sorted((p.relative_to(store), p.stat().st_size) for p in store.rglob("ckpt-*/*"))
    assert engram(["memory", "info", str(store)]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "journal: 5 message(s) after the checkpoints" in out
    hits = ask_json(store, "blue key", capsys)
    assert hits and any("blue_key" in json.dumps(h) for h in hits[:3])
    spatial = ask_json(store, "blue key", capsys, "--memories", "spatial")
    assert spatial and {h["memory"] for h in spatial} == {"spatial"}
    assert spatial[0]["position"] == pytest.approx([2, 1, 0.8], abs=0.05)
    argv = ["memory", "ask", str(store), "red mug", "--hits", "--text-encoder", "none"]
    assert engram(argv) == 0
    assert "red_mug" in capsys.readouterr().out
    # an answer in words, with its evidence
    assert engram(["memory", "ask", str(store), "where is the red mug?"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The red mug is at (1.00, 0.00, 0.80)") and "evidence:" in out
    after = sorted((p.relative_to(store), p.stat().st_size) for p in store.rglob("ckpt-*/*"))
    assert after == before  # no checkpoint written by looking


def test_export_then_import_answers_the_same(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, copy = tmp_path / "export", tmp_path / "copy"
    assert engram(["memory", "export", str(store), str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["memories"]["spatial"]["kind"] == "files"
    assert manifest["memories"]["temporal"]["kind"] == "store" and manifest["journal"]
    assert (out / "temporal.jsonl").exists() and (out / "journal.jsonl").exists()
    assert engram(["memory", "import", str(out), str(copy)]) == 0
    for question in ("blue key", "red mug on the table"):
        assert ask_json(copy, question, capsys) == ask_json(store, question, capsys)


def test_a_store_in_use_or_not_a_store_is_named(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    running = MemorySystem(
        default_memories(include=NAMES), config=MemorySystemConfig(root=str(store))
    )
    try:
        assert engram(["memory", "ask", str(store), "mug", "--text-encoder", "none"]) == 2
        assert "open in a running process" in capsys.readouterr().err
    finally:
        running.close(checkpoint=False)
    assert engram(["memory", "info", str(tmp_path)]) == 2
    assert "not a memory store" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert engram(["memory", "export", str(store), str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert engram(["memory", "import", str(tmp_path / "full"), str(tmp_path / "new")]) == 2
    assert "not an Engram memory export" in capsys.readouterr().err


def test_ask_json_prints_the_answer_object_or_an_abstention(
    store: Path, capsys: pytest.CaptureFixture
) -> None:
    def answer(question: str) -> dict:
        capsys.readouterr()
        assert engram(["memory", "ask", str(store), question, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    mug = answer("where is the red mug?")
    assert {"answer", "kind", "value", "confidence", "abstained", "evidence"} <= mug.keys()
    assert mug["kind"] == "position" and mug["value"] == pytest.approx([1, 0, 0.8], abs=0.05)
    assert not mug["abstained"] and mug["evidence"]
    assert {"memory", "record_id", "stamp_ns", "position", "text"} <= mug["evidence"][0].keys()
    key = answer("where is the blue key?")  # seen after the checkpoint: from the journal
    assert key["value"] == pytest.approx([2, 1, 0.8], abs=0.05)
    cube = answer("where is the red cube?")  # never seen
    assert cube["abstained"] and cube["value"] is None and cube["answer"] == "I have not seen that."
    assert engram(["memory", "ask", str(store), "  "]) == 2
    assert "empty" in capsys.readouterr().err
    assert engram(["memory", "ask", str(store), "mug", "--memories", "nope"]) == 2
    assert "not in this store" in capsys.readouterr().err
    assert engram(["memory", "ask", str(store), "mug", "--text-encoder", "bogus"]) == 2
    assert "unknown" in capsys.readouterr().err
