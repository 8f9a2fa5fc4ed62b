"""The harder memory-QA benchmark: the scripted household stream and its truth, the
questions (paraphrased, unanswerable, multi-hop), scoring, and memory against the flat
caption-retrieval baseline on a short stream (real MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from engram.planners.evaluation.memory_qa_hard import (
    POSITION_OK_M,
    Result,
    _run_streams,
    _summary,
    hard_bench_json,
    score,
)
from engram.planners.evaluation.memory_qa_world import Question, make_questions, make_stream
from engram.runtime.messages import Percept, SoundEvent, Transcript


def test_stream_is_deterministic_and_keeps_its_truth() -> None:
    a, b = make_stream(3, 2.0), make_stream(3, 2.0)
    assert len(a.messages) == len(b.messages) and a.moves == b.moves
    kinds = {type(m) for m in a.messages}
    assert kinds == {Percept, SoundEvent, Transcript}
    assert a.end_s == 120.0 and a.hidden_under in ("cup_0", "cup_1", "cup_2")
    stamps = [m.stamp_ns for m in a.messages]
    assert stamps == sorted(stamps)
    for t, label, old, new in a.moves:
        assert a.position_at(label, t - 0.5)[1] == old and a.position_at(label, t)[1] == new
    qs = make_questions(a, np.random.default_rng(0))
    tags = {t for q in qs for t in q.tags}
    assert {"paraphrase", "unanswerable", "multi_hop"} <= tags
    assert {q.qtype for q in qs} >= {"where_is", "when_seen", "which", "never_seen", "told"}
    with pytest.raises(ValueError):
        make_stream(0, 0)


def test_scoring() -> None:
    q = Question("where_is", "where is the red cube?", np.array([1.0, 2.0, 0.8]))
    assert score(q, Result(False, [1.1, 2.0, 0.8], "", 1.0)) == (True, pytest.approx(0.1))
    assert not score(q, Result(False, [1.0, 2.0 + POSITION_OK_M + 0.1, 0.8], "", 1.0))[0]
    assert score(q, Result(True, None, "", 0.0)) == (False, None)  # abstained: wrong
    un = Question("never_seen", "where is the vase?", None, ("unanswerable",), "abstain")
    assert score(un, Result(True, None, "", 0.0))[0] and not score(un, Result(False, 1, "", 1))[0]
    told = Question("told", "where are my keys?", ["bedroom", "drawer"], (), "words")
    assert score(told, Result(False, None, "in the bedroom drawer", 1.0))[0] is False
    assert score(told, Result(False, [0, 0, 0], "The keys are in the bedroom drawer", 1))[0]


def test_memory_beats_flat_retrieval_on_a_short_stream() -> None:
    from engram.memory.embedding import load_text_encoder

    rows = _run_streams([5], 1.0, load_text_encoder("minilm"), progress=False)
    summary = _summary(rows, {"memory": 0.5, "flat": 0.3, "none": 0.0})["1"]
    mem, flat = summary["memory"], summary["flat"]
    assert mem["paraphrase"]["accuracy"] >= 0.8
    assert mem["paraphrase"]["accuracy"] >= flat["paraphrase"]["accuracy"] + 0.2
    assert mem["unanswerable"]["abstention_f1"] >= 0.8
    assert mem["which"]["accuracy"] == 1.0
    doc = hard_bench_json({"summary": {"1": summary}})
    assert doc["bench"] == "memory-qa"
    cases = {r["case"] for r in doc["results"]}
    assert {"paraphrase, 1 min", "unanswerable, 1 min", "multi_hop, 1 min"} <= cases
    metrics = {r["metric"] for r in doc["results"]}
    assert {"accuracy", "abstention_f1", "position_error_m", "time_error_s"} <= metrics
    assert all("peer" in r and "peer_value" in r for r in doc["results"])
