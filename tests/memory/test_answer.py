"""The answerer: intents, natural names, answers with evidence, abstentions, spoken facts."""

from __future__ import annotations

import numpy as np
import pytest

from engram.memory.answer import (
    NOT_SEEN,
    Answerer,
    NameTable,
    calibrate_threshold,
    parse_intent,
)
from engram.memory.embedding import Embedders
from engram.memory.system import MemorySystem, default_memories
from engram.runtime.messages import MemoryQuery
from tests.memory._factories import percept, transcript

CUP = (0.08, 0.08, 0.09)
TABLE = (1.2, 0.8, 0.75)


@pytest.mark.parametrize(
    ("question", "kind", "target", "extra"),
    [
        ("which cup hid the cube?", "which", "cube", {"category": "cup"}),
        ("Under which cup is the yellow block?", "which", "yellow block", {"category": "cup"}),
        ("Which cup was the cube under?", "which", "cube", {"category": "cup"}),
        ("where is the red cube?", "where_is", "red cube", {}),
        ("Where did I leave my keys?", "where_is", "keys", {}),
        ("can you tell me where the white mug is?", "where_is", "white mug", {}),
        ("have you seen the plant?", "where_is", "plant", {}),
        ("where was the mug at the start?", "where_was", "mug", {}),
        ("where was the mug before it was moved?", "where_was", "mug", {}),
        ("where was the mug 10 minutes ago?", "where_was", "mug", {"ago_s": 600.0}),
        ("when was the plant last seen?", "when_seen", "plant", {"when": "last"}),
        ("at what time did you first spot the book?", "when_seen", "book", {"when": "first"}),
        ("how many different tokens have you seen?", "how_many", "tokens", {}),
        ("when did you hear the doorbell?", "when_heard", "doorbell", {}),
        ("where were you when you heard the kettle?", "where_heard", "kettle", {}),
        ("what did ann say?", "said", "", {"speaker": "ann"}),
        (
            "what was on the table before the cup was moved?",
            "what_at",
            "table",
            {"relation": "on", "when": "before", "reference": "cup was moved"},
        ),
        ("what is the meaning of life?", "unknown", "what is the meaning of life", {}),
    ],
)
def test_intents_cover_natural_wordings(question, kind, target, extra) -> None:
    it = parse_intent(question)
    assert (it.kind, it.target) == (kind, target), it
    for key, value in extra.items():
        assert getattr(it, key) == value, it


def test_names_colours_synonyms_and_internal_labels() -> None:
    names = NameTable()
    assert names.name("prize") == "yellow cube"  # internal-only label renamed
    assert names.name("mug_white") == "white mug"
    assert names.name("cup_2") == "cup 2"
    assert names.match("yellow block", "prize") > 0.5
    assert names.match("cube", "prize") == 1.0
    assert names.match("red cube", "prize") == 0.0  # the colour contradicts
    assert names.match("red block", "cube_red") == pytest.approx(0.9)  # a synonym
    assert names.match("crimson cube", "cube_red") == 1.0  # a colour variant
    assert names.match("cup 2", "cup_1") == 0.0 and names.match("cup 2", "cup_2") == 1.0
    assert names.match("white cup", "mug_white") > 0.5  # mug ~ cup
    assert names.match("garage shelf", "shelf_study") == 0.0  # a room it is not in
    assert names.match("study shelf", "shelf_study") == 1.0
    assert names.match("gizmo", "cube_red") == 0.0  # no encoder: unknown words match nothing


def test_unknown_words_use_the_injected_encoder_only_when_needed() -> None:
    calls: list[str] = []
    vocab = {"gizmo": [1.0, 0.0], "red cube": [0.2, 1.0], "container": [0.0, 1.0]}

    def embed(text: str) -> np.ndarray:
        calls.append(text)
        return np.asarray(vocab.get(text, [0.0, 1.0]), np.float32)

    names = NameTable(embed=embed, embedding_min=0.6)
    assert names.match("red block", "cube_red") > 0 and calls == []  # words decided
    assert names.match("gizmo", "cube_red") == 0.0  # cosine 0.2: too far
    assert names.match("container", "cube_red") > 0.9 and calls


def _cups_scene(system: MemorySystem) -> None:
    """Three cups hover over a table with a yellow cube (label prize) under cup_1's
    spot, come down over it (the cube disappears), then cup_1 is lifted."""
    spots = {"cup_0": (0.3, 0.0), "cup_1": (-0.1, 0.1), "cup_2": (-0.4, 0.0)}
    for t in range(30):
        labels, cents, exts = ["table"], [(0.0, 0.0, 0.375)], [TABLE]
        z = 0.80 if t >= 8 else 0.95
        for cup, (x, y) in spots.items():
            lift = 0.12 if (cup == "cup_1" and t >= 25) else 0.0
            labels.append(cup)
            cents.append((x, y, z + lift))
            exts.append(CUP)
        if t < 8 or t >= 25:
            labels.append("prize")
            cents.append((-0.1, 0.1, 0.765))
            exts.append((0.03, 0.03, 0.03))
        system.submit(percept(t * 0.1, labels, centroids=cents, extents=exts, seq=t))
    system.flush()


@pytest.fixture
def system():
    mems = default_memories(Embedders(), include=["spatial", "temporal", "episodic", "semantic"])
    with MemorySystem(mems, embedders=Embedders()) as s:
        yield s


def test_which_cup_hid_the_cube_names_it_with_evidence(system: MemorySystem) -> None:
    _cups_scene(system)
    a = Answerer.for_system(system)
    for q in ("which cup hid the cube?", "under which cup was the yellow block?"):
        ans = a.ask(q).to_dict()
        assert not ans["abstained"] and ans["value"] == "cup_1", ans
        assert ans["kind"] == "label" and ans["confidence"] >= 0.5
        ids = {e["record_id"] for e in ans["evidence"]}
        assert len(ids) >= 2 and all(e["memory"] for e in ans["evidence"])
        assert "cup 1" in ans["answer"]
    where = a.ask("where is the yellow cube?").to_dict()
    assert where["kind"] == "position" and where["value"][:2] == pytest.approx(
        [-0.1, 0.1], abs=0.02
    )
    assert where["evidence"] and where["evidence"][0]["position"] is not None
    # never seen: an explicit abstention, not the nearest hit
    for q in ("where is the red cube?", "where is the purple vase?", "which cup hid the ball?"):
        ans = a.ask(q).to_dict()
        assert ans["abstained"] and ans["answer"].startswith(NOT_SEEN[:-1]), ans
    assert a.ask("how many cups did you see?").value == 3
    assert a.ask("when did you first see the cube?").value == pytest.approx(0.0)
    # "N minutes ago" before anything was remembered abstains
    assert a.ask("where was the cube an hour ago?").abstained
    with pytest.raises(ValueError, match="empty"):
        a.ask("  ")


def test_spoken_facts_answer_later_questions(system: MemorySystem) -> None:
    """Transcripts go into episodic (who said what, where, when) and semantic memory (the
    fact); "where are my keys?" is answered from them."""
    pose = np.eye(4)
    pose[:3, 3] = (2.0, 1.0, 1.2)
    said = transcript(12, "the keys are in the kitchen drawer", speaker="ann")
    said.world_from_robot = pose
    system.submit(said)
    system.submit(transcript(20, "my glasses are on the desk", speaker="ben"))
    system.flush()
    a = Answerer.for_system(system)
    keys = a.ask("where are my keys?").to_dict()
    assert not keys["abstained"] and "kitchen drawer" in keys["answer"] and "ann" in keys["answer"]
    mems = {e["memory"] for e in keys["evidence"]}
    assert mems == {"semantic", "episodic"}
    spoken = next(e for e in keys["evidence"] if e["memory"] == "episodic")
    assert spoken["position"] == pytest.approx([2.0, 1.0, 1.2]) and spoken["t_s"] == 12.0
    assert "desk" in a.ask("where did I put my glasses?").answer
    assert "glasses" in a.ask("what did ben say?").answer
    assert a.ask("where is my wallet?").abstained


def test_calibrated_threshold_separates_right_answers_from_unanswerable() -> None:
    conf = [0.0, 0.1, 0.3, 0.8, 0.9, 1.0, 1.0]
    answerable = [False, False, False, True, True, True, True]
    right = [False, False, False, True, True, True, True]
    thr = calibrate_threshold(conf, answerable, right)
    assert 0.3 < thr < 0.8  # in the middle of the margin
    with pytest.raises(ValueError):
        calibrate_threshold([], [], [])


def test_answerer_works_over_recall_dicts_like_a_bus_client(system: MemorySystem) -> None:
    _cups_scene(system)
    calls: list[MemoryQuery] = []

    def over_the_bus(q: MemoryQuery) -> list[dict]:
        calls.append(q)
        return [h.to_dict() for h in system.recall(q)]

    ans = Answerer(over_the_bus, memories=system.names).ask("which cup hid the cube?")
    assert ans.value == "cup_1" and calls
    assert all(set(q.memories) <= set(system.names) for q in calls)


def test_what_was_on_the_table_before_the_mug_was_moved(system: MemorySystem) -> None:
    """Multi-hop: when was the mug last seen on the table, and what stood there then."""
    table, shelf = ((0.0, 0.0, 0.375), TABLE), ((3.0, 0.0, 0.5), (1.0, 0.4, 1.0))
    mug_on_table, plate = (0.2, 0.1, 0.8), (-0.3, -0.1, 0.8)
    mug_on_shelf, token = (3.1, 0.0, 1.05), (0.4, -0.2, 0.8)
    for t in range(20):
        labels, cents, exts = ["table", "shelf"], [table[0], shelf[0]], [table[1], shelf[1]]
        labels += ["mug_white", "plate_white"]
        cents += [mug_on_table if t < 8 else mug_on_shelf, plate]
        exts += [CUP, CUP]
        if t >= 12:  # a token arrives after the move
            labels.append("token_0")
            cents.append(token)
            exts.append(CUP)
        system.submit(percept(float(t), labels, centroids=cents, extents=exts, seq=t))
    system.flush()
    a = Answerer.for_system(system)
    before = a.ask("what was on the table before the white cup was moved?").to_dict()
    assert not before["abstained"] and before["value"] == ["mug_white", "plate_white"], before
    assert before["evidence"][0]["memory"] == "semantic"
    now = a.ask("what is on the table?").to_dict()
    assert set(now["value"]) >= {"plate_white", "token_0"}
    assert a.ask("where was the mug before it was moved?").value[:2] == pytest.approx(
        [0.2, 0.1], abs=0.02
    )


def test_answer_fields_of_query_and_recall_are_validated() -> None:
    from engram.runtime.messages import MessageError, Recall

    assert MemoryQuery(text="where is the mug?", answer=True).answer is True
    with pytest.raises(MessageError, match="answer"):
        MemoryQuery(text="x", answer="yes")  # type: ignore[arg-type]
    assert Recall(answer={"answer": NOT_SEEN, "abstained": True}).answer["abstained"]
    with pytest.raises(MessageError, match="answer"):
        Recall(answer={"answer": "cup 1"})  # no abstained flag
