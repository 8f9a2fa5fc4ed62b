"""``ZmqBus.publish`` reads each of its sockets' (un)subscriptions at most every
``_DRAIN_EVERY_S`` (a ``getsockopt`` per publish and socket was ~4% of a flat-out camera
publisher's loop each) and still sees a new lossy or lossless subscription without anyone
asking ``wait_for_subscribers``."""

from __future__ import annotations

import time

from engram.runtime import zmq_bus
from engram.runtime.messages import Instruction
from engram.runtime.zmq_bus import ZmqBus


def test_publish_reads_subscriptions_at_most_every_interval_and_still_sees_new_ones(broker):
    bus = ZmqBus(broker)
    try:
        reads: list[bool] = []
        real = bus._drain_subscriptions

        def counted(sock) -> None:  # noqa: ANN001
            reads.append(sock is bus._lossy)
            real(sock)

        bus._drain_subscriptions = counted  # type: ignore[method-assign]
        first = bus.subscribe("/t", "queue(1000)")
        assert bus.wait_for_subscribers("/t", 1, timeout_s=10)
        reads.clear()
        start = time.monotonic()
        for i in range(300):
            bus.publish("/t", Instruction(text=str(i)))
        elapsed = time.monotonic() - start
        lossy = sum(reads)  # at most once per interval (the old code: once per publish)
        most = elapsed / zmq_bus._DRAIN_EVERY_S + 2
        assert lossy <= most, (lossy, elapsed)
        assert len(reads) - lossy <= most  # the lossless socket too (it was every publish)
        assert first.get(timeout_s=5) is not None  # (a lossy queue: some may be dropped)
        # a subscription made now gets messages published a little later, unasked
        second = bus.subscribe("/t", "latest")
        deadline, seen = time.monotonic() + 10, None
        while seen is None and time.monotonic() < deadline:
            bus.publish("/t", Instruction(text="late"))
            seen = second.get(timeout_s=0.01)
        assert seen is not None and seen.text == "late"
        third = bus.subscribe("/t", "all(100)")  # and a lossless one
        deadline, seen = time.monotonic() + 10, None
        while seen is None and time.monotonic() < deadline:
            bus.publish("/t", Instruction(text="later"))
            seen = third.get(timeout_s=0.01)
        assert seen is not None and seen.text == "later"
    finally:
        bus.close()
