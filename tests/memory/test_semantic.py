"""Semantic memory: facts from geometry and speech, updates that keep history
("where was it before?"), similarity recall with the real MiniLM, persistence."""

from __future__ import annotations

from pathlib import Path

from engram.memory.embedding import Embedders
from engram.memory.semantic import SemanticConfig, SemanticMemory, normalise_name
from engram.runtime.messages import MemoryQuery
from tests.memory._factories import S, minilm, percept, transcript

MUG = (0.08, 0.08, 0.10)


def mug_on(t: float, support: str, top_z: float, xy=(1.0, 0.0), size=(1.2, 0.8)) -> object:
    """A percept of red_mug standing on ``support`` whose top is at ``top_z``."""
    return percept(
        t,
        ["red_mug", support],
        centroids=[(*xy, top_z + MUG[2] / 2), (*xy, top_z / 2)],
        extents=[MUG, (*size, top_z)],
    )


def test_on_relation_is_derived_from_object_geometry() -> None:
    mem = SemanticMemory()
    mem.write(mug_on(0, "table_1", 0.75), topic="/percepts")
    (f,) = mem.facts("red_mug")
    assert (f.subject, f.relation, f.object, f.source) == (
        "red_mug",
        "on",
        "table_1",
        "observation",
    )
    assert f.provenance.source_topic == "/percepts"
    # side by side at the same height is not "on"
    mem2 = SemanticMemory()
    mem2.write(
        percept(0, ["red_mug", "book"], centroids=[(0, 0, 0.8), (0.5, 0, 0.8)], extents=[MUG, MUG])
    )
    assert mem2.facts() == []


def test_update_supersedes_and_keeps_history() -> None:
    mem = SemanticMemory()
    for t in range(3):
        mem.write(mug_on(t, "table_1", 0.75), topic="/percepts")
    # much later the camera sees it on the shelf, repeatedly: a consistent update
    for t in range(3600, 3605):
        mem.write(mug_on(t, "shelf", 1.2, xy=(3.0, 1.0), size=(1.0, 0.4)), topic="/percepts")
    (now,) = mem.facts("red_mug", "on")
    assert now.object == "shelf" and now.valid_from_ns == 3600 * S
    hist = mem.history("red_mug", "on")
    assert [(f.object, f.status) for f in hist] == [("table_1", "superseded"), ("shelf", "current")]
    assert hist[0].valid_to_ns == 3600 * S and hist[0].superseded_by == now.fact_id
    assert mem.where_before("red_mug").object == "table_1"
    assert [f.object for f in mem.facts("red_mug", at_ns=10 * S)] == ["table_1"]
    # recall: the present by default, the past when asked about it
    now_hits = mem.recall(MemoryQuery(text="red mug"))
    assert [h.data["object"] for h in now_hits] == ["shelf"]
    past = mem.recall(MemoryQuery(text="where was the red mug before?"))
    assert past[0].data["object"] == "table_1" and past[0].data["status"] == "superseded"


def test_facts_from_speech() -> None:
    parse = SemanticMemory._from_speech
    assert parse("I put the keys in the drawer and the door is open. The cat is on the sofa") == [
        ("keys", "in", "drawer"),
        ("door", "state", "open"),
        ("cat", "on", "sofa"),
    ]
    assert parse("The Red Mug is next to the sink!") == [("red_mug", "near", "sink")]
    assert parse("hello there") == []
    # what speech recognition made of "the keys are in the kitchen drawer" in a live run
    assert parse("The key must be in the kitchen drawer.") == [("key", "in", "kitchen_drawer")]
    assert parse("The remote's on the sofa") == [("remote", "on", "sofa")]
    assert normalise_name("  The Red  Mug ") == "red_mug"
    mem = SemanticMemory()
    mem.write(transcript(0, "the keys are in the drawer", speaker="ann"), topic="/transcripts")
    (f,) = mem.facts("keys")
    assert f.source == "speech" and f.object == "drawer"
    assert "speech:/transcripts:ann" in f.supporters  # one supporter per voice


def test_similarity_recall_with_the_real_text_encoder() -> None:
    embed = minilm()
    mem = SemanticMemory(embedders=Embedders({"text": embed}))
    mem.assert_fact("red_mug", "on", "kitchen_table", source="observation", stamp_ns=1)
    mem.assert_fact("cat", "on", "sofa", source="observation", stamp_ns=1)
    mem.assert_fact("printer", "in", "office", source="observation", stamp_ns=1)
    hits = mem.recall(MemoryQuery(text="where is my coffee cup?"))  # no word in common
    assert hits[0].data["subject"] == "red_mug"


def test_fact_history_quarantine_and_audit_survive_save_load(tmp_path: Path) -> None:
    # (the generic save -> load round trip is checked for every memory: test_testing.py)
    mem = SemanticMemory(SemanticConfig())
    for t in range(3):
        mem.write(mug_on(t, "table_1", 0.75), topic="/percepts")
    mem.write(transcript(5, "the red mug is in the garage", speaker="eve"), topic="/transcripts")
    mem.save(tmp_path)
    back = SemanticMemory()
    back.load(tmp_path)
    assert [f.to_dict() for f in back.facts(include_history=True)] == [
        f.to_dict() for f in mem.facts(include_history=True)
    ]
    assert back.quarantine == mem.quarantine and back.audit == mem.audit
