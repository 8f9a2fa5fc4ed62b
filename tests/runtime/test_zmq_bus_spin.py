"""Waiting for a fast same-host stream without sleeping on the socket
(runtime/zmq_receiver.py): awake (``ZmqBusConfig.direct_spin_s``, never by default) or in
short naps (``direct_nap_gap_s``, on by default), only when the last two messages came within
that long of each other; a bad ``ENGRAM_BUS_SPIN_S`` / ``ENGRAM_BUS_NAP_S`` is a clear error."""

from __future__ import annotations

import select
import threading
import time

import numpy as np
import pytest

from engram.runtime.messages import Frame
from engram.runtime.shm import shm_supported
from engram.runtime.zmq_bus import ZmqBus, ZmqBusConfig

needs_shm = pytest.mark.skipif(not shm_supported(), reason="needs Linux x86-64 /dev/shm")


class _CountingPoll:
    """The consumer's poll object on its datagram socket, counting no-wait polls."""

    def __init__(self, fileno: int) -> None:
        self.poll_obj = select.poll()
        self.poll_obj.register(fileno, select.POLLIN)
        self.no_wait = 0

    def poll(self, timeout_ms: int) -> list:
        if timeout_ms == 0:
            self.no_wait += 1
        return self.poll_obj.poll(timeout_ms)


def _no_wait_polls_while_idle(url: str, spin_s: float, gap_s: float, nap_gap_s: float = 0) -> int:
    """Two messages ``gap_s`` apart, each taken by a waiting consumer; then how many
    no-wait polls a 0.1 s ``get`` with nothing to read makes."""
    bus = ZmqBus(url, poll_s=0.05, direct_spin_s=spin_s, direct_nap_gap_s=nap_gap_s)
    try:
        sub = bus.subscribe("/cam", "queue(2)")
        assert bus.wait_for_subscribers("/cam", 1, timeout_s=10)
        counter = _CountingPoll(sub.mailbox._receiver.notify.fileno())  # type: ignore[attr-defined]
        sub.mailbox._polls.poll = counter  # type: ignore[attr-defined]
        rgb = np.zeros((480, 640, 3), np.uint8)
        for i in range(3):
            if i:
                time.sleep(gap_s)
            bus.publish("/cam", Frame(rgb=rgb, camera=f"c{i}"))
            got = sub.get(timeout_s=5)
            assert got is not None and got.camera == f"c{i}"
        assert bus._notify is not None and bus._notify.sent == 3  # all went as datagrams
        counter.no_wait = 0
        t0 = time.monotonic()
        assert sub.get(timeout_s=0.1) is None
        assert time.monotonic() - t0 >= 0.09  # a timeout still waits its time
        return counter.no_wait
    finally:
        bus.close()


@needs_shm
def test_a_fast_stream_is_awaited_awake_a_slow_one_and_the_default_sleep(broker):
    assert ZmqBusConfig().direct_spin_s == 0.0  # off unless asked for
    fast = _no_wait_polls_while_idle(broker, spin_s=0.2, gap_s=0.0)
    slow = _no_wait_polls_while_idle(broker, spin_s=0.2, gap_s=0.3)
    default = _no_wait_polls_while_idle(broker, spin_s=0.0, gap_s=0.0)
    assert fast >= 20, fast  # polled awake (thousands on an idle core)
    assert slow <= 5 and default <= 5, (slow, default)  # one look per wait slice, then sleep


def test_a_bad_spin_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("ENGRAM_BUS_SPIN_S", "fast")
    with pytest.raises(ValueError, match="ENGRAM_BUS_SPIN_S"):
        ZmqBusConfig()
    monkeypatch.setenv("ENGRAM_BUS_SPIN_S", "0.0002")
    assert ZmqBusConfig().direct_spin_s == pytest.approx(0.0002)
    monkeypatch.setenv("ENGRAM_BUS_SPIN_S", "-1")
    with pytest.raises(ValueError, match="from 0 to 1"):
        ZmqBusConfig()


@needs_shm
def test_a_fast_stream_is_awaited_in_naps_a_slow_one_sleeps_on_the_socket(broker):
    assert ZmqBusConfig().direct_nap_gap_s == pytest.approx(0.0003)  # on by default
    fast = _no_wait_polls_while_idle(broker, spin_s=0.0, gap_s=0.0, nap_gap_s=0.05)
    slow = _no_wait_polls_while_idle(broker, spin_s=0.0, gap_s=0.3, nap_gap_s=0.05)
    # a few looks between naps at the start of each wait slice (0.05 s here), then asleep
    # on the socket: tens of looks in 0.1 s, not the thousands of a spin
    assert 3 <= fast <= 30, fast
    assert slow <= 5, slow


@needs_shm
def test_messages_that_come_while_the_consumer_naps_all_arrive_in_order(broker):
    bus = ZmqBus(broker, direct_nap_gap_s=0.01)
    try:
        sub = bus.subscribe("/cam", "queue(64)")
        assert bus.wait_for_subscribers("/cam", 1, timeout_s=10)
        rgb = np.zeros((480, 640, 3), np.uint8)

        def publish() -> None:
            for i in range(40):
                bus.publish("/cam", Frame(rgb=rgb, camera=f"c{i}"))
                time.sleep(0.0005 if i % 10 else 0.02)  # fast, with pauses past the naps

        thread = threading.Thread(target=publish)
        thread.start()
        got = [sub.get(timeout_s=5) for _ in range(40)]
        thread.join()
        assert [m.camera for m in got if m is not None] == [f"c{i}" for i in range(40)]
        assert sub.dropped == 0
    finally:
        bus.close()


def test_a_bad_nap_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("ENGRAM_BUS_NAP_S", "often")
    with pytest.raises(ValueError, match="ENGRAM_BUS_NAP_S"):
        ZmqBusConfig()
    monkeypatch.setenv("ENGRAM_BUS_NAP_S", "0")
    assert ZmqBusConfig().direct_nap_gap_s == 0.0  # off


def test_naps_pause_briefly_after_a_one_off_and_longer_while_it_recurs():
    from types import SimpleNamespace

    from engram.runtime.zmq_receiver import _NAP_BACKOFF_S, _NAP_RECUR_S, DirectMailbox

    shortest, longest = _NAP_BACKOFF_S
    r = SimpleNamespace(nap_off_until=0.0, nap_pause_s=0.0)
    DirectMailbox._pause_naps(r, 100.0)  # type: ignore[arg-type]  # a one-off hiccup
    assert r.nap_pause_s == shortest and r.nap_off_until == 100.0 + shortest
    pauses = []
    for _ in range(6):  # it keeps happening right after each pause: each twice as long
        DirectMailbox._pause_naps(r, r.nap_off_until + 0.001)  # type: ignore[arg-type]
        pauses.append(r.nap_pause_s)
    assert pauses[:3] == [2 * shortest, 4 * shortest, 8 * shortest]
    assert max(pauses) == longest  # capped
    DirectMailbox._pause_naps(r, r.nap_off_until + 2 * _NAP_RECUR_S)  # type: ignore[arg-type]
    assert r.nap_pause_s == shortest  # long after the last: a one-off again
