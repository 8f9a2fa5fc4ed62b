import numpy as np
import pytest

from engram.memory.spatial import ShortTermConfig, ShortTermMemory

S = 1_000_000_000


def test_eviction_uses_frequency_and_age():
    stm = ShortTermMemory(ShortTermConfig(capacity=3, frequency_weight=0.5))
    for oid in (1, 2, 3):
        stm.observe(oid, label=f"o{oid}", position=np.zeros(3), embedding=None, stamp_ns=oid * S)
    for _ in range(5):  # object 1 is old but seen often
        stm.touch(1)
    # scores at t=4 s: 1 -> 0.5*6 - 0.5*3 = 1.5; 2 -> 0.5 - 1 = -0.5; 3 -> 0.5 - 0.5 = 0
    scores = stm.eviction_scores(4 * S)
    assert scores[1] == pytest.approx(1.5) and scores[2] == pytest.approx(-0.5)
    evicted = stm.observe(4, label="o4", position=np.zeros(3), embedding=None, stamp_ns=4 * S)
    assert evicted == 2 and set(stm.entries) == {1, 3, 4} and stm.evictions == 1
    # re-observing refreshes instead of inserting
    assert stm.observe(3, label="o3", position=np.ones(3), embedding=None, stamp_ns=5 * S) is None
    assert stm.entries[3].frequency == 2 and np.all(stm.entries[3].position == 1)
    assert len(stm) == 3


def test_pure_recency_when_frequency_weight_is_zero():
    stm = ShortTermMemory(ShortTermConfig(capacity=2, frequency_weight=0.0))
    stm.observe(1, label="a", position=np.zeros(3), embedding=None, stamp_ns=1 * S)
    for _ in range(10):
        stm.touch(1)
    stm.observe(2, label="b", position=np.zeros(3), embedding=None, stamp_ns=2 * S)
    assert stm.observe(3, label="c", position=np.zeros(3), embedding=None, stamp_ns=3 * S) == 1


def test_positions_are_robot_relative():
    stm = ShortTermMemory()
    stm.observe(5, label="cup", position=np.array([2.0, 1.0, 0.5]), embedding=None, stamp_ns=S)
    stm.observe(6, label="door", position=np.array([-3.0, 0.0, 0.0]), embedding=None, stamp_ns=S)
    # robot at (1, 1, 0) facing +y (yaw 90 degrees): world +x is the robot's -y (right)
    pose = np.eye(4)
    pose[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    pose[:3, 3] = [1.0, 1.0, 0.0]
    rel = stm.relative_positions(pose)
    np.testing.assert_allclose(rel[5], [0.0, -1.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(rel[6], [-1.0, 4.0, 0.0], atol=1e-12)
    near = stm.near_robot(pose, 2.0)
    assert [k for k, _ in near] == [5]


def test_config_validation():
    with pytest.raises(ValueError, match="capacity"):
        ShortTermMemory(ShortTermConfig(capacity=0))
