"""InProcBus: freshness policies under a slow subscriber, request/reply, closing."""

from __future__ import annotations

import threading
import time

import pytest

from engram.runtime.bus import BusClosed, InProcBus, QueuePolicy, make_bus
from engram.runtime.messages import Instruction, MemoryQuery, Recall


def msg(i: int) -> Instruction:
    return Instruction(text=str(i))


@pytest.fixture
def bus():
    b = InProcBus("test-bus")
    yield b
    b.close()


def test_policy_parse():
    assert QueuePolicy.parse("latest") == QueuePolicy("latest", 1)
    assert QueuePolicy.parse("queue(8)") == QueuePolicy("queue", 8)
    assert QueuePolicy.parse("all") == QueuePolicy("all", 64)
    assert QueuePolicy.parse(" all(3) ") == QueuePolicy("all", 3)
    assert str(QueuePolicy.parse("queue(5)")) == "queue(5)"
    for bad in ["queue", "newest", "queue(0)", "all(-1)", ""]:
        with pytest.raises(ValueError, match="policy"):
            QueuePolicy.parse(bad)


def test_latest_keeps_only_the_newest(bus):
    sub = bus.subscribe("/t", "latest")
    for i in range(10):
        bus.publish("/t", msg(i))
    assert [m.text for m in sub.drain()] == ["9"]
    assert sub.received == 10 and sub.dropped == 9


def test_queue_is_bounded_and_drops_oldest(bus):
    sub = bus.subscribe("/t", "queue(3)")
    for i in range(10):
        bus.publish("/t", msg(i))
    assert len(sub.mailbox) == 3
    assert [m.text for m in sub.drain()] == ["7", "8", "9"]
    assert sub.dropped == 7


def test_all_applies_backpressure_without_dropping(bus):
    sub = bus.subscribe("/t", "all(2)")
    published = []

    def producer():
        for i in range(6):
            bus.publish("/t", msg(i))
            published.append(i)

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    deadline = time.monotonic() + 2.0
    while len(published) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert t.is_alive(), "the publisher should block while the subscriber is full"
    assert len(published) == 2 and len(sub.mailbox) == 2
    got = []
    while len(got) < 6:
        m = sub.get(2.0)
        assert m is not None, "publisher did not resume after the subscriber drained"
        got.append(m.text)
    t.join(2.0)
    assert not t.is_alive()
    assert got == [str(i) for i in range(6)]
    assert sub.dropped == 0


def test_policies_are_per_subscription(bus):
    fast = bus.subscribe("/t", "queue(100)")
    slow = bus.subscribe("/t", "latest")
    for i in range(5):
        bus.publish("/t", msg(i))
    assert len(fast.drain()) == 5
    assert [m.text for m in slow.drain()] == ["4"]


def test_seq_is_assigned_per_topic_unless_set(bus):
    sub_a, sub_b = bus.subscribe("/a"), bus.subscribe("/b")
    for _ in range(3):
        bus.publish("/a", Instruction(text="x"))
    bus.publish("/b", Instruction(text="y"))
    bus.publish("/b", Instruction(text="z", seq=42))
    assert [m.seq for m in sub_a.drain()] == [1, 2, 3]
    assert [m.seq for m in sub_b.drain()] == [1, 42]


def test_publish_rejects_non_messages(bus):
    with pytest.raises(TypeError, match="expected a Message"):
        bus.publish("/t", {"text": "hi"})


def test_request_reply_and_timeouts(bus):
    bus.serve("/recall", lambda q: Recall(query_text=q.text))
    assert bus.request("/recall", MemoryQuery(text="keys"), timeout_s=1.0).query_text == "keys"
    with pytest.raises(ValueError, match="already has a server"):
        bus.serve("/recall", lambda q: q)

    bus.serve("/slow", lambda q: (time.sleep(1.0), Recall())[1])
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="/slow"):
        bus.request("/slow", MemoryQuery(text="x"), timeout_s=0.1)
    assert time.monotonic() - t0 < 0.9

    with pytest.raises(TimeoutError, match="no server"):
        bus.request("/nobody", MemoryQuery(text="x"), timeout_s=0.05)

    def broken(q):
        raise KeyError("missing index")

    bus.serve("/broken", broken)
    with pytest.raises(KeyError, match="missing index"):
        bus.request("/broken", MemoryQuery(text="x"), timeout_s=1.0)


def test_close_unblocks_and_refuses(bus):
    sub = bus.subscribe("/t", "queue(2)")
    got: list[object] = []

    def reader():
        try:
            sub.get(5.0)
        except BusClosed as exc:
            got.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.05)
    bus.close()
    t.join(2.0)
    assert got and isinstance(got[0], BusClosed)
    with pytest.raises(BusClosed):
        bus.publish("/t", msg(1))
    with pytest.raises(BusClosed):
        bus.subscribe("/t")


def test_unsubscribe_stops_delivery(bus):
    sub = bus.subscribe("/t", "queue(4)")
    sub.close()
    bus.publish("/t", msg(1))
    assert sub.received == 0


def test_make_bus_inproc_is_shared_per_name_and_rejects_unknown_urls():
    a, b = make_bus("inproc://shared-x"), make_bus("inproc://shared-x")
    assert a is b and a is not make_bus("inproc://shared-y")
    a.close()
    assert make_bus("inproc://shared-x") is not a  # a closed bus is replaced
    with pytest.raises(ValueError, match="unknown bus URL"):
        make_bus("udp://nope")
