"""One recipe grounds ground-truth names (``prize``, ``cup_2``) and camera-mode labels
(``yellow cube``, three objects all called ``cup``) alike."""

from __future__ import annotations

import numpy as np

from engram.planners.planning.grounding import Grounding
from engram.planners.planning.memory_client import MemoryClient
from engram.planners.planning.skills.base import WorldView, resolve_label
from engram.planners.planning.skills.scene import SceneMonitor
from engram.runtime.messages import Percept, Recall
from engram.sim.object_kinds import kind_of, strip_track_id


def _percept(stamp_ns: int, ids: list[int], labels: list[str], cents: list) -> Percept:
    k = len(ids)
    return Percept(
        stamp_ns=stamp_ns,
        object_ids=np.asarray(ids, np.int32),
        object_labels=labels,
        object_confidences=np.ones(k, np.float32),
        object_boxes=np.tile(np.array([[1, 1, 9, 9]], np.int32), (k, 1)),
        object_centroids=np.asarray(cents, np.float32).reshape(k, 3),
        object_extents=np.full((k, 3), 0.05, np.float32),
    )


def test_body_names_and_camera_labels_share_kinds():
    assert kind_of("prize") == kind_of("yellow cube") == kind_of("yellow cube#17") == "yellow cube"
    assert kind_of("cup_2") == "cup" and kind_of("button_blue_cap") == "blue button"
    assert kind_of("token_0") == "pink token" and kind_of("mug_red") == "red mug"
    assert kind_of("table_leg_0") is None and strip_track_id("cup#-5") == "cup"
    keys = ["cup#3", "yellow cube#9", "red button#4"]
    assert resolve_label("prize", keys) == "yellow cube#9"  # body name -> what the camera says
    assert resolve_label("button_red_cap", keys) == "red button#4"
    assert resolve_label("cup#3", keys) == "cup#3" and resolve_label("cup#8", keys) == ""
    # ground-truth labels still resolve as before
    assert resolve_label("red cube", ["cube_red", "tray"]) == "cube_red"


def test_camera_mode_world_keeps_every_object_of_one_label():
    p = _percept(10, [3, 4, 5], ["cup", "cup", "cup"], [[0, 0, 0.4], [0.2, 0, 0.4], [0.4, 0, 0.4]])
    assert list(WorldView.from_percepts([p]).objects) == ["cup"]  # by label: one cup
    world = WorldView.from_percepts([p], key_by_id=True)
    assert sorted(world.objects) == ["cup#3", "cup#4", "cup#5"]
    assert world.get("cup#4").position[0] == np.float32(0.2)
    # a kind finds the most recently seen of its objects (an older track may be stale)
    old = _percept(5, [7], ["red cube"], [[0.9, 0, 0.4]])
    new = _percept(10, [8], ["red cube"], [[0.1, 0, 0.5]])
    world = WorldView.from_percepts([old, new], key_by_id=True)
    assert world.get("cube_red").object_id == 8
    scene = SceneMonitor(key_by_id=True)
    scene.update(p)
    assert set(scene.first_seen) == {"cup#3", "cup#4", "cup#5"}


def test_grounding_finds_the_prize_by_what_the_camera_called_it():
    records = [
        {"memory": "spatial", "position": [0.1, 0.2, 0.42],
         "data": {"kind": "object", "label": "yellow cube", "last_seen_ns": 5}},
        {"memory": "episodic", "position": [0.3, 0.0, 0.42], "stamp_ns": 2,
         "text": "first saw red cube (object) at (0.30, 0.00, 0.42)", "data": {}},
        {"memory": "episodic", "stamp_ns": 3, "text": "observe(light_on, red button#4) succeeded",
         "data": {}},
    ]  # fmt: skip

    def ask(query):
        return Recall(hits=records)

    g = Grounding(MemoryClient(ask))
    found = g.object_position("prize")
    assert found is not None and np.allclose(found[0], [0.1, 0.2, 0.42])
    start = g.first_position("cube_red")
    assert start is not None and np.allclose(start[0], [0.3, 0.0, 0.42])
    assert g.observations("light_on") == [(3, "red button#4")]
    assert g.object_position("cup_2") is None


def test_tokens_are_counted_per_object_when_the_camera_calls_them_all_pink_token():
    """Regression (round 2: count 0/4 in camera mode): ``labels_seen("token")`` found no
    "pink token" (it is not a prefix) and would have counted one label for three tokens."""
    from engram.sim.object_kinds import is_kind_label, names_prefix

    def obj(label, oid, stamp=5):
        return {"memory": "spatial", "position": [0.0, 0.1 * oid, 0.42],
                "data": {"kind": "object", "label": label, "object_id": oid,
                         "last_seen_ns": stamp}}  # fmt: skip

    camera = [
        obj("pink token", 11),
        obj("pink token", 12),
        obj("pink token", 13),
        obj("pink token", 14, stamp=1),  # seen before the episode: not counted
        {"memory": "spatial", "position": [0.0, 1.21, 0.42],  # token 12 under a new id
         "data": {"kind": "object", "label": "pink token", "object_id": 15,
                  "last_seen_ns": 7}},
        obj("blue button", 20),
        {"memory": "temporal", "stamp_ns": 6,
         "data": {"kind": "percept", "labels": ["pink token", "blue button"]}},
    ]  # fmt: skip
    truth = [
        obj("token_0", 3),
        obj("token_1", 4),
        {"memory": "temporal", "stamp_ns": 6,
         "data": {"kind": "percept", "labels": ["token_0", "token_1", "token_2"]}},
    ]  # fmt: skip
    for records, want in (
        (camera, ["pink token#11", "pink token#12", "pink token#13"]),
        (truth, ["token_0", "token_1", "token_2"]),
    ):
        g = Grounding(MemoryClient(lambda query, r=records: Recall(hits=r)))
        assert g.labels_seen("token", since_ns=2) == want
    assert names_prefix("pink token#3", "token") and names_prefix("token_2", "token")
    assert not names_prefix("pink token", "tok") and not names_prefix("red cube", "token")
    assert is_kind_label("cup#4") and not is_kind_label("cup_1") and not is_kind_label("tray")
