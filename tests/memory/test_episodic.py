"""Episodic memory: entity resolution and its merge log, episodes from instructions and
plan steps, the forgetting curve and reinforcement on recall, bounded capacity,
consolidation (duplicate merge, gist), persistence."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engram.memory.episodic import EpisodicConfig, EpisodicMemory
from engram.runtime.messages import Instruction, MemoryQuery, PlanStep
from tests.memory._factories import S, _track_ids, noisy, percept, sound, transcript, unit

D = 32


@pytest.fixture
def looks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {n: unit(rng.normal(size=D)) for n in ("red_mug", "red_mug_2", "table", "cup")}


def see(
    mem: EpisodicMemory,
    t: float,
    objs: list[tuple[str, np.ndarray, tuple]],
    rng,
    ids: list[int] | None = None,
) -> None:
    mem.write(
        percept(
            t,
            [o[0] for o in objs],
            embedding=unit(np.ones(D)),
            object_embeddings=np.stack([noisy(o[1], rng, 0.03) for o in objs]),
            centroids=[o[2] for o in objs],
            ids=ids,
        ),
        topic="/percepts",
    )


def test_entity_resolution_merges_observations_and_logs_decisions(looks) -> None:
    rng = np.random.default_rng(1)
    mem = EpisodicMemory()
    for t in range(5):  # the same mug and table, seen 5 times
        see(
            mem,
            t,
            [("red_mug", looks["red_mug"], (1, 0, 0.8)), ("table", looks["table"], (1, 0, 0.4))],
            rng,
        )
    # the detector calls it "cup" once (the tracker keeps its id): same appearance, same
    # place -> the same entity
    mug_id = int(_track_ids(["red_mug"])[0])
    see(mem, 5, [("cup", looks["red_mug"], (1.05, 0, 0.8))], rng, ids=[mug_id])
    # a second, different-looking red mug seen together with the first: a new entity
    see(
        mem,
        6,
        [
            ("red_mug", looks["red_mug"], (1, 0, 0.8)),
            ("red_mug", looks["red_mug_2"], (1.1, 0, 0.8)),
        ],
        rng,
    )
    # the first mug moves 2 m: resolved as "moved", with an event and a log entry
    see(mem, 7, [("red_mug", looks["red_mug"], (3, 0, 0.8))], rng)
    ents = {(e["label"], e["count"]) for e in mem.entities("object")}
    assert ("red_mug", 8) in ents and ("table", 5) in ents and ("red_mug", 1) in ents
    mug = next(e for e in mem.entities() if e["label"] == "red_mug" and e["count"] == 8)
    assert mug["aliases"] == {"red_mug": 7, "cup": 1}
    assert mug["position"] == pytest.approx((3, 0, 0.8), abs=1e-5)
    log = list(mem.merge_log)
    assert [e["action"] for e in log].count("create") == 3
    moved = [e for e in log if e["action"] == "moved"]
    assert (
        len(moved) == 1 and moved[0]["dist_m"] > 1.5 and moved[0]["provenance"]["stamp_ns"] == 7 * S
    )
    assert any(e["kind"] == "moved" for e in mem.events())
    hits = mem.recall(MemoryQuery(text="red mug", top_k=3))
    assert hits[0].record_id == f"entity:{mug['key']}" and hits[0].position is not None
    # a tracked object (same perception id) stays itself even when it looks different
    see(mem, 8, [("red_mug", looks["cup"], (5, 5, 0.8))], rng, ids=[1234])
    see(mem, 9, [("red_mug", looks["table"], (5, 5, 0.9))], rng, ids=[1234])
    assert len([e for e in mem.entities() if e["label"] == "red_mug"]) == 3


def test_duplicate_entities_merge_on_consolidation_and_merge_can_be_undone(looks) -> None:
    rng = np.random.default_rng(2)
    mem = EpisodicMemory(EpisodicConfig(merge_min_cos_same_label=0.999, merge_min_cos=0.999))
    # strict thresholds at ingest, no tracker (a new object id each time): three noisy
    # sightings become three entities
    for t in range(3):
        see(mem, t, [("cup", looks["cup"], (0, 0, 0))], rng, ids=[100 + t])
    assert len(mem.entities()) == 3
    mem.config.entity_merge_min_cos = 0.9
    mem.consolidate(now_ns=3 * S)
    (ent,) = mem.entities()
    assert ent["count"] == 3
    merges = [e for e in mem.merge_log if e["action"] == "merge_entities"]
    assert len(merges) == 2 and merges[0]["absorbed_state"]["data"]["label"] == "cup"
    mem.undo_merge(merges[-1]["log_id"])
    assert sorted(e["count"] for e in mem.entities()) == [1, 2]
    with pytest.raises(KeyError, match="log_id"):
        mem.undo_merge(10_000)


def test_forgetting_curve_and_reinforcement_on_recall() -> None:
    cfg = EpisodicConfig(base_strength_s=100.0, importance_gain=0.0, recall_growth=3.0)
    mem = EpisodicMemory(cfg)
    mem.write(transcript(0, "the doorbell rang twice", speaker="ann"))
    mem.write(transcript(0, "the kettle is boiling", speaker="ann"))
    ev = {e["text"].split()[3]: e["key"] for e in mem.events() if e["kind"] == "speech"}
    s0 = mem.strength_s(ev["doorbell"])
    assert s0 == pytest.approx(100.0)
    # R = exp(-t / S)
    assert mem.retention(ev["kettle"], now_ns=50 * S) == pytest.approx(math.exp(-0.5))
    # recalling the doorbell at t=0 reinforces it: S *= 3
    (hit,) = mem.recall(MemoryQuery(text="doorbell", top_k=1))
    assert hit.record_id == f"event:{ev['doorbell']}" and hit.data["retention"] == 1.0
    assert mem.strength_s(ev["doorbell"]) == pytest.approx(3 * s0)
    assert mem.strength_s(ev["kettle"]) == pytest.approx(s0)
    # at t=250 s: kettle R = e^-2.5 = 0.08, doorbell R = e^-0.83 = 0.43
    mem.config.forget_below = 0.1
    mem.consolidate(now_ns=250 * S)
    assert ev["doorbell"] in mem and ev["kettle"] not in mem
    assert mem.stats()["forgotten"] >= 1
    # a weaker memory also ranks lower: retention scales the recall score
    mem.write(transcript(250, "the doorbell is broken", speaker="ann"))
    hits = mem.recall(MemoryQuery(text="doorbell", top_k=2))
    assert hits[0].text.endswith('"the doorbell is broken"')


def test_capacity_is_bounded_and_forgets_the_weakest_first() -> None:
    cfg = EpisodicConfig(capacity=40, base_strength_s=60.0)
    mem = EpisodicMemory(cfg)
    mem.write(transcript(0, "remember the code is 4711", speaker="bob"))
    mem.write(sound(0, "noise0"))  # as old as the speech, less important
    important = next(e["key"] for e in mem.events() if e["kind"] == "speech")
    for i in range(1, 60):
        mem.write(sound(i, f"noise{i}"))
    assert len(mem) <= 40
    kept = " ".join(e["text"] for e in mem.events())
    assert important in mem  # importance 0.6 -> stronger than noise of the same age
    assert "noise0 " not in kept and "noise1 " not in kept  # the oldest noise went first
    assert "noise59 " in kept


def test_episode_from_instruction_steps_and_outcome_with_keyframes() -> None:
    rng = np.random.default_rng(3)
    mem = EpisodicMemory(EpisodicConfig(keyframes_per_episode=4))
    mem.write(Instruction(stamp_ns=0, text="bring me the red mug", episode_id="ep1"))
    for t in range(1, 21):
        mem.write(percept(t, ["red_mug"], embedding=noisy(np.ones(D), rng)))
    for status in ("running", "failed"):
        mem.write(
            PlanStep(
                stamp_ns=21 * S,
                skill="pick",
                args={"object": "red_mug"},
                status=status,
                reason="slipped",
                episode_id="ep1",
            )
        )
    mem.write(
        PlanStep(
            stamp_ns=22 * S,
            skill="pick",
            args={"object": "red_mug"},
            attempt=1,
            status="succeeded",
            episode_id="ep1",
        )
    )
    mem.write(PlanStep(stamp_ns=30 * S, skill="done", status="succeeded", episode_id="ep1"))
    (ep,) = mem.episodes()
    assert ep["outcome"] == "succeeded" and ep["end_ns"] == 30 * S
    assert [(s["skill"], s["status"], s["attempt"]) for s in ep["steps"]] == [
        ("pick", "failed", 0),
        ("pick", "succeeded", 1),
    ]
    assert 0 < len(ep["keyframes"]) <= 4 and ep["entities"]
    kinds = [e["kind"] for e in mem.events()]
    assert "step_failed" in kinds and "episode_end" in kinds
    hit = mem.recall(MemoryQuery(text="bring the red mug episode", top_k=5))
    ep_hits = [h for h in hit if h.record_id.startswith("episode:")]
    assert ep_hits and ep_hits[0].data["outcome"] == "succeeded"
    # a new instruction interrupts an open episode
    mem.write(Instruction(stamp_ns=40 * S, text="open the door", episode_id="ep2"))
    mem.write(Instruction(stamp_ns=41 * S, text="wipe the table", episode_id="ep3"))
    outcomes = {e["episode_id"]: e["outcome"] for e in mem.episodes()}
    assert outcomes == {"ep1": "succeeded", "ep2": "interrupted", "ep3": ""}
    # an old, weak episode is summarised to its gist, not dropped
    mem.consolidate(now_ns=10**7 * S)
    ep1 = next(e for e in mem.episodes() if e["episode_id"] == "ep1")
    assert ep1["gist"] and ep1["keyframes"] == [] and ep1["outcome"] == "succeeded"


def test_a_loaded_memory_keeps_its_merge_log_and_resolves_against_its_entities(
    tmp_path: Path, looks
) -> None:
    # (the generic save -> load round trip is checked for every memory: test_testing.py)
    rng = np.random.default_rng(4)
    mem = EpisodicMemory()
    mem.write(Instruction(stamp_ns=0, text="find the mug", episode_id="e"))
    for t in range(4):
        see(mem, t, [("red_mug", looks["red_mug"], (1, 0, 0.8))], rng)
    mem.write(transcript(5, "the mug is hot", speaker="ann"))
    mem.save(tmp_path)
    back = EpisodicMemory()
    back.load(tmp_path)
    assert list(back.merge_log) == list(mem.merge_log)
    see(back, 6, [("red_mug", looks["red_mug"], (1, 0, 0.8))], rng)
    assert [e["count"] for e in back.entities("object")] == [5]


def test_look_alikes_the_perception_tells_apart_stay_two_entities(looks) -> None:
    rng = np.random.default_rng(3)
    mem = EpisodicMemory()
    cup = looks["cup"]
    # two identical cups 20 cm apart, told apart by the perception's object ids
    for t in range(3):
        see(mem, t, [("cup_a", cup, (1, 0, 0.8)), ("cup_b", cup, (1.2, 0, 0.8))], rng, ids=[7, 8])
    # later seen one at a time: each keeps resolving to its own entity
    see(mem, 3, [("cup_b", cup, (1.2, 0, 0.8))], rng, ids=[8])
    see(mem, 4, [("cup_a", cup, (1.0, 0, 0.8))], rng, ids=[7])
    counts = {e["label"]: e["count"] for e in mem.entities("object")}
    assert counts == {"cup_a": 4, "cup_b": 4}
    # a label flicker of a tracked object still merges into it (same id, new label) ...
    see(mem, 5, [("mug", cup, (1.0, 0, 0.8))], rng, ids=[7])
    # ... and so does an untracked observation that looks the same (no id to tell apart)
    see(mem, 6, [("tumbler", cup, (1.21, 0, 0.8))], rng, ids=[-1])
    ents = {e["label"]: e for e in mem.entities("object")}
    assert set(ents) == {"cup_a", "cup_b"}
    assert ents["cup_a"]["aliases"] == {"cup_a": 4, "mug": 1}


def test_remembered_perception_ids_are_bounded() -> None:
    mem = EpisodicMemory(EpisodicConfig(tracks_max=16))
    rng = np.random.default_rng(4)
    for t in range(60):  # a tracker handing out a new id every frame
        see(mem, t, [("box", unit(rng.normal(size=D)), (t, 0, 0))], rng, ids=[1000 + t])
    assert len(mem._tracks) == 16
    assert ("object", 1059) in mem._tracks and ("object", 1000) not in mem._tracks


def test_the_fast_distance_is_numpys_norm_bit_for_bit():
    from engram.memory.episodic.entities import _norm

    rng = np.random.default_rng(0)
    for _ in range(2000):
        a, b = tuple(rng.normal(size=3) * 10), tuple(rng.normal(size=3) * 10)
        d = np.subtract(a, b)
        assert _norm(d) == float(np.linalg.norm(d))
