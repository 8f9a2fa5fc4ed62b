"""The A-MemGuard-style guard: injected contradictions are quarantined (not applied),
consistent updates go through, contradictions of a chain of facts are caught,
independent corroboration releases a quarantined fact, refuted sources get lessons,
every decision is in the audit log."""

from __future__ import annotations

from engram.memory.base import Provenance
from engram.memory.guard import GuardConfig
from engram.memory.semantic import SemanticConfig, SemanticMemory
from engram.runtime.messages import MemoryQuery
from tests.memory._factories import S, percept, transcript

MUG = (0.08, 0.08, 0.10)


def mug_on_table(t: float):
    return percept(
        t,
        ["red_mug", "table_1"],
        centroids=[(1.0, 0.0, 0.8), (1.0, 0.0, 0.375)],
        extents=[MUG, (1.2, 0.8, 0.75)],
    )


def observed_kitchen() -> SemanticMemory:
    mem = SemanticMemory()
    for t in range(5):
        mem.write(mug_on_table(t), topic="/percepts")
    mem.assert_fact(
        "table_1", "in", "kitchen", source="observation", producer="spatial", stamp_ns=5 * S
    )
    return mem


def test_injected_contradiction_is_quarantined_not_applied() -> None:
    mem = observed_kitchen()
    d = mem.assert_fact(
        "red_mug", "on", "garage_shelf", source="speech", producer="mallory", stamp_ns=6 * S
    )
    assert d.action == "quarantined" and not d.applied
    assert d.evidence_new < d.evidence_current
    (f,) = mem.facts("red_mug", "on")
    assert f.object == "table_1"  # unchanged
    (q,) = mem.quarantine
    assert (q["object"], q["producer"]) == ("garage_shelf", "mallory")
    entry = mem.audit[-1]
    assert entry["action"] == "quarantined" and f.fact_id in entry["conflicts"]
    assert "contradicts" in entry["reason"] and entry["producer"] == "mallory"
    # recall does not serve quarantined facts
    assert all(h.data["object"] != "garage_shelf" for h in mem.recall(MemoryQuery(text="red mug")))


def test_a_contradiction_of_a_chain_of_facts_is_caught() -> None:
    mem = observed_kitchen()
    # "red_mug in garage" contradicts red_mug on table_1 + table_1 in kitchen
    mem.write(
        transcript(6, "the red mug is in the garage", speaker="mallory"), topic="/transcripts"
    )
    assert mem.facts("red_mug", "in") == []
    assert mem.quarantine[0]["object"] == "garage"
    # ...but a claim consistent with the chain is accepted at once
    d = mem.assert_fact("red_mug", "in", "kitchen", source="speech", producer="ann", stamp_ns=7 * S)
    assert d.action == "accepted"


def test_consistent_updates_go_through() -> None:
    mem = observed_kitchen()
    # the camera now sees the mug on the shelf, frame after frame: evidence accumulates
    actions = []
    for t in range(10, 20):
        mem.write(
            percept(
                t,
                ["red_mug", "shelf"],
                centroids=[(3.0, 1.0, 1.25), (3.0, 1.0, 0.6)],
                extents=[MUG, (1.0, 0.4, 1.2)],
            ),
            topic="/percepts",
        )
        actions.append(mem.audit[-1]["action"])
    assert mem.facts("red_mug", "on")[0].object == "shelf"
    assert actions[0] == "quarantined" and "released" in actions  # held, then corroborated
    assert mem.where_before("red_mug").object == "table_1"
    # an old consensus weighs less: one fresh observation updates a fact last seen an hour ago
    mem2 = observed_kitchen()
    d = mem2.assert_fact(
        "red_mug", "on", "shelf", source="observation", producer="/percepts", stamp_ns=3600 * S
    )
    assert d.action == "updated"
    # adding facts about other things is never blocked
    d = mem2.assert_fact("cat", "on", "sofa", source="speech", producer="ann", stamp_ns=3601 * S)
    assert d.action == "accepted"


def test_independent_corroboration_releases_and_refutation_teaches_a_lesson() -> None:
    mem = observed_kitchen()
    for who in ("ann", "bob", "carl", "dora"):
        d = mem.assert_fact(
            "red_mug", "on", "windowsill", source="told", producer=who, stamp_ns=6 * S
        )
    assert d.action == "released"  # four independent people outweigh the camera
    assert mem.facts("red_mug", "on")[0].object == "windowsill"

    mem = observed_kitchen()
    mem.assert_fact(
        "red_mug", "on", "garage_shelf", source="speech", producer="mallory", stamp_ns=6 * S
    )
    trust_before = mem.guard.trust("speech", "speech:mallory")
    mem.write(mug_on_table(7), topic="/percepts")  # the camera confirms the old fact
    assert mem.quarantine == []
    assert mem.audit[-1]["action"] == "refuted"
    assert mem.guard.lessons == {"speech:mallory": 1}
    assert mem.guard.trust("speech", "speech:mallory") < trust_before
    # and a low-trust, low-confidence claim is rejected outright
    d = mem.assert_fact(
        "cat", "color", "green", source="inferred", confidence=0.05, producer="x", stamp_ns=8 * S
    )
    assert d.action == "rejected" and mem.facts("cat") == []


def test_every_decision_is_audited_and_quarantine_expires() -> None:
    cfg = SemanticConfig(guard=GuardConfig(quarantine_ttl_s=60.0))
    mem = SemanticMemory(cfg)
    prov = Provenance(source_topic="/ui", producer="ui")
    mem.assert_fact("door", "state", "open", source="observation", stamp_ns=0, provenance=prov)
    for t in range(1, 4):
        mem.assert_fact(
            "door", "state", "open", source="observation", stamp_ns=t * S, provenance=prov
        )
    mem.assert_fact("door", "state", "closed", source="speech", producer="eve", stamp_ns=5 * S)
    mem.assert_fact("lamp", "state", "on", source="observation", producer="cam", stamp_ns=200 * S)
    actions = [e["action"] for e in mem.audit]
    # first support logged once (repeats counted on the fact), quarantine, expiry, accept
    assert actions == ["accepted", "quarantined", "expired", "accepted"]
    assert mem.facts("door")[0].to_dict()["support"] == 4
    assert all("audit_id" in e and "reason" in e for e in mem.audit)
