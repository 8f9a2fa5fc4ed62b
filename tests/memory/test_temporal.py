"""Temporal memory: chunking, HCAM detail recall in a long timeline, TWM segment
selection among distractors (real MiniLM), time questions, capacity, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engram.memory.embedding import Embedders
from engram.memory.temporal import TemporalConfig, TemporalMemory, parse_time_intent
from engram.runtime.messages import MemoryQuery
from tests.memory._factories import S, minilm, noisy, percept, sound, transcript, unit

D = 48


def scene_vectors(names: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: unit(rng.normal(size=D)) for n in names}


def test_chunks_are_cut_by_content_change_and_by_time() -> None:
    rng = np.random.default_rng(1)
    scenes = scene_vectors(["kitchen", "hall", "garage"])
    mem = TemporalMemory(TemporalConfig(chunk_max_s=1000, chunk_max_items=1000))
    for i, name in enumerate(["kitchen"] * 20 + ["hall"] * 20 + ["garage"] * 20):
        mem.write(percept(i * 0.5, [name + "_thing"], embedding=noisy(scenes[name], rng)))
    segs = mem.between(0, 0)
    assert [s.n_items for s in segs] == [20, 20, 20]
    assert segs[1].start_ns == 10 * S and "hall_thing" in segs[1].text

    timed = TemporalMemory(TemporalConfig(chunk_max_s=10.0))
    for i in range(60):  # one unchanging scene, 1 Hz
        timed.write(percept(i, ["chair"], embedding=noisy(scenes["hall"], rng)))
    assert len(timed.between(0, 0)) == 6


def _long_timeline(mem: TemporalMemory, rng: np.random.Generator, key_obj: np.ndarray) -> int:
    scenes = scene_vectors([f"room{k}" for k in range(15)], seed=3)
    labels = {f"room{k}": [f"thing{k}", f"stuff{k}"] for k in range(15)}
    needle = -1
    t = 0.0
    for k in range(15):
        name = f"room{k}"
        obj_base = np.stack([scenes[name], -scenes[name]])
        for _ in range(200):
            labs = list(labels[name])
            objs = np.stack([noisy(v, rng, 0.2) for v in obj_base])
            if k == 8 and needle < 0 and t > 8 * 100 + 60:  # once, deep inside room8
                labs.append("blue_key")
                objs = np.concatenate([objs, noisy(key_obj, rng, 0.05)[None]])
                needle = int(t * 2)
            mem.write(
                percept(
                    t,
                    labs,
                    embedding=noisy(scenes[name], rng),
                    object_embeddings=objs,
                    centroids=rng.normal(size=(len(labs), 3)),
                )
            )
            t += 0.5
    return needle


def test_hcam_finds_a_detail_inside_a_long_timeline() -> None:
    rng = np.random.default_rng(2)
    key_obj = unit(rng.normal(size=D))
    mem = TemporalMemory(TemporalConfig(chunk_max_s=30.0, chunk_max_items=64, top_chunks=3))
    needle = _long_timeline(mem, rng, key_obj)
    assert len(mem) == 3000
    before = mem.counters["items_scored"]
    # by the object's appearance only (no words)
    hits = mem.recall(MemoryQuery(embedding=noisy(key_obj, rng, 0.1), top_k=3))
    assert hits and hits[0].record_id == f"item:{needle}"
    assert hits[0].data["object"] == "blue_key"  # the position is the key's centroid
    scored = mem.counters["items_scored"] - before
    assert scored <= 3 * 64 < 0.1 * len(mem)  # details of the top chunks only
    # by its name
    hits = mem.recall(MemoryQuery(text="the blue key", top_k=3))
    assert hits[0].record_id == f"item:{needle}"


def test_twm_picks_the_segment_that_answers_the_query_among_distractors() -> None:
    embed = minilm()
    mem = TemporalMemory(TemporalConfig(chunk_max_s=20.0), embedders=Embedders({"text": embed}))
    topics = [
        "the cat is sleeping on the sofa in the living room",
        "we are out of milk, add it to the shopping list",
        "I left the red mug on the kitchen table",
        "the weather forecast says rain tomorrow afternoon",
        "the printer in the office is jammed again",
        "turn left at the hallway to reach the bathroom",
    ]
    for k, text in enumerate(topics):
        t0 = k * 30.0
        for j in range(6):
            mem.write(percept(t0 + j, [f"object{k}"]))
        mem.write(transcript(t0 + 6, text, speaker="alice", embed=embed))
    query = MemoryQuery(text="where did I put my coffee cup?")
    best = mem.select_segments(query, budget_segments=1)
    assert len(best) == 1 and "red mug" in best[0].text
    # a budget in items: each segment costs its 7 items
    two = mem.select_segments(query, budget_segments=None, budget_items=14)
    assert len(two) == 2 and sum(s.n_items for s in two) <= 14
    assert two == sorted(two, key=lambda s: s.start_ns)  # time order
    # segment refinement keeps the most relevant item of the chosen segment
    refined = mem.select_segments(query, budget_segments=1, items_per_segment=1)
    (iid,) = refined[0].item_ids
    assert mem._items[iid].kind == "transcript"
    # a budget in tokens (words a model would read): refined segments, 20 words at most
    words = mem.select_segments(query, budget_segments=None, budget_tokens=20, items_per_segment=1)
    assert "red mug" in words[-1].text or any("red mug" in w.text for w in words)
    assert sum(len(mem._items[i].text.split()) for w in words for i in w.item_ids) <= 20


def _scripted(mem: TemporalMemory) -> None:
    rng = np.random.default_rng(4)
    scenes = scene_vectors(["kitchen", "hall", "garage", "office"], seed=5)
    for t in range(0, 11):
        mem.write(percept(t, ["red_mug", "table"], embedding=noisy(scenes["kitchen"], rng)))
    for t in range(11, 20):
        mem.write(percept(t, ["door"], embedding=noisy(scenes["hall"], rng)))
    mem.write(sound(20, "bell"))
    for t in range(21, 31):
        mem.write(percept(t, ["red_mug", "shelf"], embedding=noisy(scenes["garage"], rng)))
    for t in range(31, 41):
        mem.write(percept(t, ["desk"], embedding=noisy(scenes["office"], rng)))


def test_time_questions_last_first_order_before_after_between() -> None:
    mem = TemporalMemory(TemporalConfig(chunk_max_s=60.0))
    _scripted(mem)
    assert mem.last_seen("red mug").stamp_ns == 30 * S
    assert mem.first_seen("red mug").stamp_ns == 0
    assert mem.last_seen("red mug", t1_ns=20 * S).stamp_ns == 10 * S
    assert mem.last_seen("unicorn") is None
    assert [w for w, _ in mem.order(["desk", "red mug", "door", "unicorn"])] == [
        "red mug",
        "door",
        "desk",
    ]
    assert mem.before("bell", n=1)[0].stamp_ns == 19 * S
    assert mem.after("bell", n=1)[0].stamp_ns == 21 * S
    segs = mem.between(12 * S, 18 * S)
    assert segs and all("door" in s.text for s in segs)
    # the same through recall(), as a planner asks
    hits = mem.recall(MemoryQuery(text="when was the red mug last seen?"))
    assert hits[0].stamp_ns == 30 * S and hits[0].data["intent"] == "last"
    hits = mem.recall(MemoryQuery(text="what happened before the bell?", top_k=2))
    assert [h.stamp_ns for h in hits] == [19 * S, 10 * S]  # nearest first, repeats skipped
    hits = mem.recall(MemoryQuery(t0_ns=32 * S, t1_ns=35 * S))
    assert hits and all(h.data["kind"] == "segment" for h in hits)
    hits = mem.recall(MemoryQuery(text="red mug", t0_ns=15 * S, top_k=20))
    assert hits and all(h.stamp_ns >= 15 * S for h in hits)
    assert parse_time_intent("what came after the bell rang") == ("after", "the bell rang")


def test_capacity_compresses_old_chunks_into_summaries() -> None:
    rng = np.random.default_rng(6)
    scenes = scene_vectors([f"s{k}" for k in range(50)], seed=7)
    mem = TemporalMemory(
        TemporalConfig(chunk_max_s=1000, chunk_max_items=10, max_items=100, max_chunks=30)
    )
    for i in range(500):
        name = f"s{i // 10}"
        mem.write(percept(i, [f"label{i // 10}"], embedding=noisy(scenes[name], rng)))
    st = mem.stats()
    assert st["items"] <= 100 + 10 and st["chunks"] <= 30
    assert st["compressed_chunks"] > 0
    old = mem.recall(MemoryQuery(text="label0"))  # long compressed: answered by its summary
    assert old and old[0].data["kind"] == "segment" and old[0].data["compressed"]
    recent = mem.recall(MemoryQuery(text="label49"))
    assert recent[0].record_id.startswith("item:")


def test_a_loaded_timeline_answers_time_questions(tmp_path: Path) -> None:
    # (the generic save -> load round trip, incremental saves included, is checked for
    # every memory: test_testing.py)
    mem = TemporalMemory(TemporalConfig(chunk_max_s=60.0))
    _scripted(mem)
    mem.save(tmp_path)
    mem.write(percept(50, ["red_mug"]))  # incremental save writes only what changed
    mem.save(tmp_path)
    back = TemporalMemory()
    back.load(tmp_path)
    assert back.last_seen("red mug").stamp_ns == 50 * S


def test_bad_input_raises_and_changes_nothing() -> None:
    mem = TemporalMemory()
    mem.write(percept(0, ["a"], embedding=unit(np.ones(D))))
    with pytest.raises(ValueError, match="dimension 7"):
        mem.write(percept(1, ["b"], embedding=unit(np.ones(7))))
    assert len(mem) == 1


def test_a_hit_matched_by_words_is_at_the_object_not_the_camera() -> None:
    mem = TemporalMemory()
    mem.write(percept(0, ["table", "red_mug"], centroids=[[2, 0, 0.7], [1, 1, 0.8]]))
    mem.write(percept(1, ["chair"], centroids=[[-1, 0, 0.4]], camera=(3.0, 3.0, 1.0)))
    hits = mem.recall(MemoryQuery(text="red mug"))
    assert hits[0].data["object"] == "red_mug"
    assert hits[0].position == pytest.approx((1.0, 1.0, 0.8))
    last = mem.recall(MemoryQuery(text="when was the chair last seen?"))[0]
    assert last.data["object"] == "chair" and last.position == pytest.approx((-1.0, 0.0, 0.4))


def test_an_unchanging_scene_is_one_hit_with_its_frame_count() -> None:
    mem = TemporalMemory(TemporalConfig(chunk_max_s=60.0))
    for t in range(20):  # the same view for 20 s, then something else
        mem.write(percept(t, ["cup_0", "cup_1"]))
    for t in range(20, 25):
        mem.write(percept(t, ["cup_1", "plate"]))
    hits = mem.recall(MemoryQuery(text="cup", top_k=5))
    texts = [h.text.split(" ", 1)[1] for h in hits]
    assert len(texts) == len(set(texts)) == 2  # one per distinct view, not 25 frames
    first = next(h for h in hits if "cup_0" in h.text)
    assert first.data["frames"] == 20 and first.data["span_ns"] == [0, 19 * S]


def test_item_and_object_vectors_stay_exact_only_past_the_faiss_threshold() -> None:
    """Regression (issue 20): the temporal memory never searches its item / object indexes
    (it reads them by id), so they must not build a FAISS copy of every vector above
    ``exact_max`` (a day at 1 Hz held 2.35 GB with it, 1.26 GB without)."""
    from engram.memory.index import IndexConfig

    mem = TemporalMemory(TemporalConfig(index=IndexConfig(exact_max=8)))
    rng = np.random.default_rng(0)
    for t in range(40):
        mem.write(
            percept(
                float(t),
                ["cup", "book"],
                embedding=unit(rng.normal(size=16)),
                object_embeddings=np.stack([unit(rng.normal(size=16)) for _ in range(2)]),
            )
        )
    for table in (mem._item_index, mem._obj_index):
        assert table and all(len(idx) > 8 and not idx.uses_faiss for idx in table.values())
    hits = mem.recall(MemoryQuery(text="cup", top_k=3))
    assert hits  # recall still works on the exact indexes
