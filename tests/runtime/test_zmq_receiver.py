"""Receiving on the consumer's thread (runtime/zmq_receiver.py) and the decode trust rules.

A consumer waiting in ``get`` on a same-host ``queue(n)`` / ``latest`` subscription resolves
and decodes the datagram itself (no hand-off from the receiver thread); when nobody waits the
receiver thread keeps filling the mailbox by policy; closing wakes a waiting consumer; a ring
file that is not ours and private is refused (its payloads would be trusted); a datagram says
whether its sender runs as our user; messages rebuilt without their constructor equal the
checked ones; the plain-float pose check agrees with the numpy one; ZeroMQ messages read
together are decoded only for the newest ``depth`` and never handed out out of order."""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest

from engram.runtime.bus import BusClosed
from engram.runtime.codec import DecodeError, decode, encode
from engram.runtime.messages import Frame, Heartbeat
from engram.runtime.msg_checks import _pose_problem_np, pose_problem
from engram.runtime.shm import SHM_DIR, ShmError, ShmReader, ShmWriter, shm_supported
from engram.runtime.shm_notify import NotifyReceiver
from engram.runtime.zmq_bus import ZmqBus

needs_shm = pytest.mark.skipif(not shm_supported(), reason="needs Linux x86-64 /dev/shm")

FAST = {"poll_s": 0.02}


def _big(i: int) -> Frame:
    return Frame(rgb=np.full((480, 640, 3), i % 256, np.uint8), camera=f"c{i}")


@needs_shm
def test_a_waiting_consumer_resolves_and_decodes_on_its_own_thread(broker, monkeypatch):
    threads: list[str] = []
    original = ShmReader.resolve

    def resolve(self, parts):  # noqa: ANN001, ANN202
        threads.append(threading.current_thread().name)
        return original(self, parts)

    monkeypatch.setattr(ShmReader, "resolve", resolve)
    pub, sub_bus = ZmqBus(broker, **FAST), ZmqBus(broker, **FAST)
    try:
        sub = sub_bus.subscribe("/cam", "queue(4)")
        assert pub.wait_for_subscribers("/cam", 1, timeout_s=10)
        time.sleep(0.2)
        got: list[Frame] = []

        def consume() -> None:
            for _ in range(3):
                msg = sub.get(timeout_s=10)
                assert isinstance(msg, Frame)
                got.append(msg)

        consumer = threading.Thread(target=consume, name="the-consumer")
        consumer.start()
        for i in range(3):
            time.sleep(0.15)  # the consumer waits in get() when each one arrives
            (buf,) = pub.loan("/cam", ((480, 640, 3), np.uint8))
            buf[:] = i + 1
            pub.publish("/cam", Frame(rgb=buf, camera=f"c{i}"))
        consumer.join(timeout=15)
        assert [m.camera for m in got] == ["c0", "c1", "c2"]
        assert [int(m.rgb[0, 0, 0]) for m in got] == [1, 2, 3]
        assert threads == ["the-consumer"] * 3  # not the receiver thread ("zmq-sub:/cam")
    finally:
        pub.close()
        sub_bus.close()


@needs_shm
def test_without_a_waiting_consumer_the_thread_fills_the_mailbox_by_policy(broker):
    pub, sub_bus = ZmqBus(broker, **FAST), ZmqBus(broker, **FAST)
    try:
        latest = sub_bus.subscribe("/cam", "latest")
        assert pub.wait_for_subscribers("/cam", 1, timeout_s=10)
        time.sleep(0.2)
        for i in range(8):
            pub.publish("/cam", _big(i))
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while latest.received < 8 and time.monotonic() < deadline:
            time.sleep(0.01)  # nobody calls get(): the receiver thread takes them
        assert latest.received == 8 and latest.dropped == 7
        msg = latest.get(timeout_s=1)
        assert isinstance(msg, Frame) and msg.camera == "c7" and msg.seq == 8
        assert latest.get(timeout_s=0.1) is None
    finally:
        pub.close()
        sub_bus.close()


@needs_shm
def test_small_messages_and_closing_reach_a_waiting_consumer(broker):
    pub, sub_bus = ZmqBus(broker, **FAST), ZmqBus(broker, **FAST)
    try:
        sub = sub_bus.subscribe("/hb", "queue(8)")
        assert pub.wait_for_subscribers("/hb", 1, timeout_s=10)
        time.sleep(0.1)
        pub.publish("/hb", Heartbeat(node="n1"))
        msg = sub.get(timeout_s=5)
        assert isinstance(msg, Heartbeat) and msg.node == "n1"
        errors: list[BaseException] = []

        def wait_forever() -> None:
            try:
                sub.get(timeout_s=None)
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        waiter = threading.Thread(target=wait_forever)
        waiter.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        sub.close()
        waiter.join(timeout=5)
        assert not waiter.is_alive() and time.monotonic() - t0 < 1.0
        assert len(errors) == 1 and isinstance(errors[0], BusClosed)
    finally:
        pub.close()
        sub_bus.close()


@needs_shm
def test_a_ring_that_others_can_write_is_refused():
    writer = ShmWriter()
    reader = ShmReader(False)
    try:
        frames = [b"/t\0", *encode(_big(1))]
        desc = writer.wrap("/t", frames)
        assert desc is not None
        ring = next(iter(writer._rings.values()))
        os.chmod(SHM_DIR / ring.name, 0o644)  # another user could now write frames into it
        with pytest.raises(ShmError, match="not ours"):
            reader.frames(desc[1:])
        os.chmod(SHM_DIR / ring.name, 0o600)
        again = ShmReader(False)
        try:
            assert decode(again.frames(desc[1:])).camera == "c1"
        finally:
            again.close()
    finally:
        reader.close()
        writer.close()


def test_a_datagram_says_whether_its_sender_is_our_user():
    receiver = NotifyReceiver()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x02" + (1).to_bytes(4, "little") * 2 + b"ab", b"\0" + receiver.address)
        deadline = time.monotonic() + 2
        got = receiver.recv()
        while got is None and time.monotonic() < deadline:
            time.sleep(0.01)
            got = receiver.recv()
        assert got is not None
        frames, ours = got
        assert [bytes(f) for f in frames] == [b"a", b"b"] and ours
        if os.getuid() == 0:  # as root, a child can become another user and send one
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    os.setuid(65534)
                    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                        s.sendto(
                            b"\x02" + (1).to_bytes(4, "little") * 2 + b"cd",
                            b"\0" + receiver.address,
                        )
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            got = receiver.recv()
            assert got is not None and [bytes(f) for f in got[0]] == [b"c", b"d"]
            assert got[1] is False  # another user's message is checked in full
    finally:
        receiver.close()


def test_rebuilt_without_the_constructor_only_when_asked():
    frame = Frame(rgb=np.zeros((4, 4, 3), np.uint8))
    frame.intrinsics = np.full((3, 3), np.nan)  # spoiled after construction
    frames = [bytes(f) for f in encode(frame)]
    with pytest.raises(DecodeError, match="intrinsics"):
        decode(frames)
    with pytest.raises(DecodeError, match="intrinsics"):
        decode(frames, trusted=True)  # values trusted, structure still checked
    fast = decode(frames, validated=True)  # what a same-user publisher built: not re-checked
    assert isinstance(fast, Frame) and np.isnan(fast.intrinsics).all()
    with pytest.raises(DecodeError):
        decode([frames[0], frames[1][:-1], *frames[2:]], validated=True)  # sizes still are


def test_plain_float_pose_check_agrees_with_numpy():
    rng = np.random.default_rng(0)
    for i in range(400):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        pose = np.eye(4)
        pose[:3, :3] = rot
        pose[:3, 3] = rng.normal(size=3) * 10
        kind = i % 6
        if kind == 1:
            pose[:3, :3] += rng.normal(size=(3, 3)) * 10 ** rng.uniform(
                -6, -3
            )  # near the tolerance
        elif kind == 2:
            pose[:3, 0] *= -1  # a reflection
        elif kind == 3:
            pose[3, rng.integers(4)] += 10 ** rng.uniform(-7, -5)
        elif kind == 4:
            pose[rng.integers(4), rng.integers(4)] = [np.nan, np.inf, -np.inf][i % 3]
        elif kind == 5:
            pose = pose.astype(np.float32)
        assert pose_problem(pose) == _pose_problem_np(pose), (i, pose)


@needs_shm
def test_drain_and_len_see_datagrams_still_in_the_socket(broker):
    pub = ZmqBus(broker, **FAST)
    sub_bus = ZmqBus(broker, poll_s=0.02, direct_grace_s=60.0)  # the thread never takes over
    try:
        sub = sub_bus.subscribe("/cam", "queue(8)")
        assert pub.wait_for_subscribers("/cam", 1, timeout_s=10)
        time.sleep(0.2)
        pub.publish("/cam", _big(0))
        first = sub.get(timeout_s=5)  # a consumer was here: its datagrams wait for it
        assert isinstance(first, Frame) and first.camera == "c0"
        for i in range(1, 4):
            pub.publish("/cam", _big(i))
        deadline = time.monotonic() + 5
        while len(sub.mailbox) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sub.mailbox) >= 1  # pending in the socket counts
        time.sleep(0.1)
        assert [m.camera for m in sub.drain()] == ["c1", "c2", "c3"]
        assert sub.received == 4 and sub.dropped == 0
    finally:
        pub.close()
        sub_bus.close()


@needs_shm
@pytest.mark.parametrize("policy", ["latest", "queue(2)"])
def test_zeromq_messages_read_together_keep_the_newest_in_publisher_order(broker, policy):
    """A datagram subscription's receiver thread reads its ZeroMQ messages (inline ones, and
    those sent there because its datagram queue was full) in one go: only the newest
    ``depth`` are decoded and put, in order; one older than a delivered message (another
    path overtook it) is dropped, counted, never handed out after it."""
    sub_bus = ZmqBus(broker, **FAST)
    try:
        sub = sub_bus.subscribe("/cam", policy)
        (receiver,) = sub_bus._receivers
        decoded: list[int] = []
        original = receiver._decode

        def counting(parts, ours):  # noqa: ANN001, ANN202
            msg = original(parts, ours)
            decoded.append(msg.seq)
            return msg

        receiver._decode = counting  # type: ignore[method-assign]
        key, pub_id = b"/cam\0", os.urandom(8)

        def message(wire: int) -> list[bytes]:
            head = key + b"I" + pub_id + wire.to_bytes(8, "little")
            return [head, *(bytes(f) for f in encode(Heartbeat(node="n", seq=wire)))]

        depth = sub.policy.depth
        assert receiver._deliver_batch([message(w) for w in (3, 4, 5, 6, 7)]) == depth
        assert decoded == list(range(8 - depth, 8))  # the older ones were never decoded
        assert receiver._deliver_batch([message(2), message(7)]) == 0  # stale: not put
        assert receiver._deliver_batch([message(9)]) == 1
        got = [m.seq for m in sub.drain()]
        assert got == ([9] if depth == 1 else [7, 9])
        assert sub.received == 8 and sub.dropped == 8 - len(got)
    finally:
        sub_bus.close()
