"""Datagram notifications on a same-host bus (runtime/shm_notify.py): lossy subscriptions get
shared-memory descriptors and small messages straight from the publisher's thread, plain
ones (shared memory off in their process) and lossless ones over ZeroMQ, each message
exactly once and in order; a closed subscription is forgotten; garbage datagrams are
decode errors; a frame that finds its ring full is dropped for datagram subscribers, not
reordered; a full datagram queue sends the newest messages over ZeroMQ, handed out in
order; a shared-memory payload skips whole-array scans on decode, an inline one not."""

from __future__ import annotations

import itertools
import socket
import time

import numpy as np
import pytest

from engram.runtime.bus import Subscription
from engram.runtime.codec import DecodeError, decode, encode
from engram.runtime.messages import Frame
from engram.runtime.shm import shm_supported
from engram.runtime.trust import scan_values
from engram.runtime.zmq_bus import ZmqBus

pytestmark = pytest.mark.skipif(not shm_supported(), reason="needs Linux x86-64 /dev/shm")

FAST = {"poll_s": 0.02}


def _frame(i: int, big: bool) -> Frame:
    shape = (480, 640, 3) if big else (8, 8, 3)
    return Frame(rgb=np.full(shape, i % 256, np.uint8), camera=f"c{i}")


def _collect(sub: Subscription, n: int, timeout_s: float = 15.0) -> list[Frame]:
    got: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        msg = sub.get(timeout_s=0.1)
        if isinstance(msg, Frame):
            got.append(msg)
    return got


def test_each_subscription_gets_every_message_once_in_order(broker, monkeypatch):
    pub = ZmqBus(broker, **FAST)
    fast_bus = ZmqBus(broker, **FAST)
    monkeypatch.setenv("ENGRAM_SHM", "0")
    plain_bus = ZmqBus(broker, **FAST)  # reads shared memory, takes no datagrams
    try:
        fast = fast_bus.subscribe("/cam", "queue(64)")
        lossless = fast_bus.subscribe("/cam", "all(64)")
        plain = plain_bus.subscribe("/cam", "queue(64)")
        assert pub.wait_for_subscribers("/cam", 3, timeout_s=10)
        time.sleep(0.2)
        for i in range(12):
            pub.publish("/cam", _frame(i, big=i % 3 != 0))  # shared memory and small inline
            time.sleep(0.005)
        for sub in (fast, lossless, plain):
            got = _collect(sub, 12)
            assert [m.seq for m in got] == list(range(1, 13)), sub
            assert all(int(m.rgb.max()) == int(m.camera[1:]) for m in got)
            assert sub.get(timeout_s=0.2) is None  # nothing twice
        assert pub._notify is not None and pub._notify.sent == 12  # only the fast lossy one
        assert plain_bus._notify is None
        fast.close()
        deadline = time.monotonic() + 5
        while pub._notify.count(b"/cam\0") and time.monotonic() < deadline:
            pub.subscriber_count("/cam")  # reads the unsubscription events
            time.sleep(0.02)
        assert pub._notify.count(b"/cam\0") == 0  # a closed subscription is forgotten
    finally:
        plain_bus.close()
        fast_bus.close()
        pub.close()


def test_garbage_datagrams_are_decode_errors_and_the_receiver_lives_on(broker):
    pub = ZmqBus(broker, **FAST)
    sub_bus = ZmqBus(broker, **FAST)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sub = sub_bus.subscribe("/cam", "queue(8)")
        assert pub.wait_for_subscribers("/cam", 1, timeout_s=10)
        assert pub._notify is not None
        (addr,) = pub._notify._peers[b"/cam\0"]
        bad = [b"", b"\x01", b"\x09" + b"\xff" * 40, b"\x02" + (10**6).to_bytes(4, "little") * 2]
        bad.append(b"\x02\x03\x00\x00\x00\x03\x00\x00\x00abcdef")  # frames that are not a message
        for data in bad:
            raw.sendto(data, b"\0" + addr)
        time.sleep(0.1)
        pub.publish("/cam", _frame(7, big=True))
        (got,) = _collect(sub, 1)
        assert int(got.rgb[0, 0, 0]) == 7
        assert sub.decode_errors == len(bad)
    finally:
        raw.close()
        sub_bus.close()
        pub.close()


def test_a_frame_that_finds_its_ring_full_is_dropped_for_datagram_subscribers(broker, monkeypatch):
    pub = ZmqBus(broker, **FAST)
    fast_bus = ZmqBus(broker, **FAST)
    monkeypatch.setenv("ENGRAM_SHM", "0")
    plain_bus = ZmqBus(broker, **FAST)
    try:
        fast = fast_bus.subscribe("/cam", "queue(16)")
        plain = plain_bus.subscribe("/cam", "queue(16)")
        assert pub.wait_for_subscribers("/cam", 2, timeout_s=10)
        time.sleep(0.2)
        shm = pub._shm
        assert shm is not None and pub._notify is not None
        wrap = shm.wrap

        def full_once(topic: str, frames: list, readers: int = 0) -> list | None:
            if frames[0] and _frame_no(frames) == 2:  # every slot in use, for this one
                shm.full = True
                return None
            return wrap(topic, frames, readers)

        monkeypatch.setattr(shm, "wrap", full_once)
        for i in range(1, 4):
            pub.publish("/cam", _frame(i, big=True))
            time.sleep(0.01)
        assert [int(m.camera[1:]) for m in _collect(fast, 2)] == [1, 3]  # no late 2
        assert [int(m.camera[1:]) for m in _collect(plain, 3)] == [1, 2, 3]  # over ZeroMQ
        assert fast.get(timeout_s=0.3) is None
        assert pub._notify.dropped == 1
    finally:
        plain_bus.close()
        fast_bus.close()
        pub.close()


def _frame_no(frames: list) -> int:
    return int(decode(frames[1:]).camera[1:])  # type: ignore[attr-defined]


def test_shared_memory_payloads_skip_whole_array_scans_inline_ones_do_not():
    depth = np.ones((48, 64), np.float32)
    frames = [bytes(f) for f in encode(Frame(rgb=np.zeros((48, 64, 3), np.uint8), depth=depth))]
    hostile = bytearray(frames[2])
    hostile[:4] = np.float32(-1.0).tobytes()  # negative depth, written after validation
    frames[2] = bytes(hostile)
    with pytest.raises(DecodeError, match="negative depth"):
        decode(frames)
    msg = decode(frames, trusted=True)  # validated where it was built (same host)
    assert isinstance(msg, Frame) and msg.depth is not None and msg.depth[0, 0] == -1.0
    assert scan_values()  # the thread is back to scanning
    bad_shape = [frames[0], frames[1], frames[2][:-4]]
    with pytest.raises(DecodeError):  # shapes and sizes are still checked
        decode(bad_shape, trusted=True)
    assert scan_values()


def test_a_full_datagram_queue_sends_the_newest_over_zeromq_in_order(broker, monkeypatch):
    """A consumer that lags leaves ``net.unix.max_dgram_qlen`` datagrams in the kernel; the
    messages after them go to it over ZeroMQ (not dropped at the sender: the newest is
    delivered), the older datagrams are then stale (dropped, never handed out after a newer
    message) and a plain subscriber of the same topic does not get the fallbacks twice."""
    qlen = int(open("/proc/sys/net/unix/max_dgram_qlen").read())
    n = qlen + 5
    pub = ZmqBus(broker, **FAST)
    sub_bus = ZmqBus(broker, poll_s=0.02, direct_grace_s=60.0)  # the thread never takes over
    monkeypatch.setenv("ENGRAM_SHM", "0")
    plain_bus = ZmqBus(broker, **FAST)
    try:
        sub = sub_bus.subscribe("/cam", f"queue({n + 4})")
        plain = plain_bus.subscribe("/cam", f"queue({n + 4})")
        assert pub.wait_for_subscribers("/cam", 2, timeout_s=10)
        time.sleep(0.2)
        pub.publish("/cam", _frame(0, big=True))
        first = sub.get(timeout_s=5)  # a consumer was here: its datagrams wait for it
        assert isinstance(first, Frame) and first.seq == 1
        assert sub.get(timeout_s=0.05) is None  # (waited on the socket: the thread stops
        time.sleep(0.1)  # watching it at its next poll)
        for i in range(1, n + 1):
            pub.publish("/cam", _frame(i, big=i % 2 == 0))  # shared memory and small
            time.sleep(0.001)
        assert pub._notify is not None
        over = pub._notify.fallback  # (the kernel holds qlen or qlen + 1)
        assert 1 <= over <= n - qlen and pub._notify.sent == 1 + n - over
        deadline = time.monotonic() + 5  # the receiver thread delivers the fallbacks
        while sub.received < 1 + over and time.monotonic() < deadline:
            time.sleep(0.01)
        got = [m.seq for m in sub.drain()]  # reads the queued (older) datagrams too
        assert got == list(range(n + 2 - over, n + 2)), got  # the newest, in order
        assert sub.received == n + 1 and sub.dropped == n - over  # the stale ones counted
        # over ZeroMQ (its high-water marks may drop some of a burst under load), never twice
        seqs = [m.seq for m in _collect(plain, n + 1, 3.0)]
        assert seqs[:1] == [1] and all(a < b for a, b in itertools.pairwise(seqs)), seqs
        assert plain.get(timeout_s=0.2) is None  # nothing twice
    finally:
        plain_bus.close()
        sub_bus.close()
        pub.close()
