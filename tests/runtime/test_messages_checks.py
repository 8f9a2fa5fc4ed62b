"""Message construction shortcuts keep every check (runtime/messages.py, runtime/msg_checks.py).

A ``Frame`` is built per camera frame, so its construction takes shortcuts: a pose that
passed the rigidity check is remembered by its exact bytes, so are intrinsics that passed
theirs, stamps and plain fields of the declared type skip conversion, default poses / intrinsics are
copies of one constant, empty label containers skip the plain-data scan. These tests pin
down that the shortcuts never let a bad value through and never share state between
messages.
"""

from __future__ import annotations

import numpy as np
import pytest

from engram.runtime.messages import AudioChunk, Frame, MessageError, Percept, RobotState
from engram.runtime.msg_checks import _GOOD_INTRINSICS, _GOOD_POSES

RGB = np.zeros((4, 6, 3), np.uint8)


def test_a_pose_seen_before_is_still_judged_by_its_values():
    good = np.eye(4)
    good[:3, 3] = [1.0, 2.0, 3.0]
    Frame(rgb=RGB, world_from_camera=good)
    assert good.tobytes() in _GOOD_POSES  # remembered...
    bent = good.copy()
    bent[0, 1] = 0.5  # ...but the same array object edited in place is a new pose
    with pytest.raises(MessageError, match=r"world_from_camera.*not rigid"):
        Frame(rgb=RGB, world_from_camera=bent)
    good[0, 0] = np.nan  # edited in place after it was accepted once
    with pytest.raises(MessageError, match=r"world_from_camera.*NaN"):
        Frame(rgb=RGB, world_from_camera=good)
    with pytest.raises(MessageError, match="world_from_camera"):
        Frame(rgb=RGB, world_from_camera=np.eye(4)[:3])  # wrong shape, not a cache key
    # a remembered pose in another dtype is still converted (and the result is float64)
    as32 = Frame(rgb=RGB, world_from_camera=np.eye(4, dtype=np.float32))
    assert as32.world_from_camera.dtype == np.float64
    with pytest.raises(MessageError, match="world_from_mic"):
        AudioChunk(pcm=np.zeros((4, 1), np.float32), world_from_mic=np.eye(4) * 2)
    # other messages' poses go through the same check
    with pytest.raises(MessageError, match=r"world_from_base.*not rigid"):
        RobotState(world_from_base=np.diag([1.0, 1.0, -1.0, 1.0]))  # a reflection
    assert Percept(world_from_camera=np.eye(4)).world_from_camera.dtype == np.float64


def test_remembered_poses_are_bounded():
    for i in range(600):
        pose = np.eye(4)
        pose[0, 3] = float(i)
        Frame(rgb=RGB, world_from_camera=pose)
    assert len(_GOOD_POSES) <= 256


def test_default_pose_and_intrinsics_are_each_messages_own():
    a, b = Frame(rgb=RGB), Frame(rgb=RGB)
    assert a.intrinsics is not b.intrinsics and a.world_from_camera is not b.world_from_camera
    a.intrinsics[0, 0] = 500.0  # one message's (writable) default edited in place
    a.world_from_camera[0, 3] = 2.0
    c = Frame(rgb=RGB)
    assert c.intrinsics[0, 0] == 1.0 and c.world_from_camera[0, 3] == 0.0
    assert c.intrinsics.flags.writeable and c.intrinsics.dtype == np.float64
    assert RobotState().world_from_base.tolist() == np.eye(4).tolist()


def test_label_containers_are_still_scanned_when_not_empty():
    assert Frame(rgb=RGB, labels={}, robot_labels=[]).labels == {}
    with pytest.raises(MessageError, match=r"labels.*not valid Unicode"):
        Frame(rgb=RGB, labels={"1": "bad \udc80"})
    with pytest.raises(MessageError, match=r"robot_labels.*cannot be sent"):
        Frame(rgb=RGB, robot_labels=[object()])  # type: ignore[list-item]
    with pytest.raises(MessageError, match=r"labels.*not a str"):
        Frame(rgb=RGB, labels={1: "x"})  # type: ignore[dict-item]


def test_intrinsics_seen_before_are_still_judged_by_their_values():
    k = np.array([[500.0, 0.0, 3.0], [0.0, 500.0, 2.0], [0.0, 0.0, 1.0]])
    Frame(rgb=RGB, intrinsics=k)
    assert k.tobytes() in _GOOD_INTRINSICS  # remembered...
    k[0, 0] = -500.0  # ...but edited in place it is judged again
    with pytest.raises(MessageError, match=r"intrinsics.*focal lengths"):
        Frame(rgb=RGB, intrinsics=k)
    k[0, 0] = np.inf
    with pytest.raises(MessageError, match=r"intrinsics.*NaN or inf"):
        Frame(rgb=RGB, intrinsics=k)
    with pytest.raises(MessageError, match="intrinsics"):
        Frame(rgb=RGB, intrinsics=np.eye(4))  # wrong shape, not a cache key
    as_int = Frame(rgb=RGB, intrinsics=np.eye(3, dtype=np.int64))  # converted, not cached
    assert as_int.intrinsics.dtype == np.float64
    for i in range(600):
        Frame(rgb=RGB, intrinsics=np.diag([1.0 + i, 1.0 + i, 1.0]))
    assert len(_GOOD_INTRINSICS) <= 256  # bounded


def test_stamps_and_plain_fields_are_converted_or_refused_as_before():
    f = Frame(rgb=RGB, stamp_ns=np.int64(7), seq=np.uint32(3), camera=np.str_("left"))
    assert (type(f.stamp_ns), type(f.seq), type(f.camera)) == (int, int, str)
    assert (f.stamp_ns, f.seq, f.camera) == (7, 3, "left")
    for bad in ({"stamp_ns": -1}, {"seq": True}, {"stamp_ns": 1.5}, {"stamp_ns": 2**64}):
        with pytest.raises(MessageError):
            Frame(rgb=RGB, **bad)
    with pytest.raises(MessageError, match="camera"):
        Frame(rgb=RGB, camera=3)
