"""ZeroMQ bus over real sockets and real OS processes: pub/sub over ipc:// and tcp://,
request/reply with timeouts, freshness policies under a slow subscriber (with
backpressure across processes), and hostile bytes injected into a live subscriber."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import socket
import time
from collections.abc import Callable

import msgpack
import numpy as np
import pytest
import zmq

from engram.runtime.bus import BusClosed, make_bus
from engram.runtime.codec import encode
from engram.runtime.messages import Frame, Heartbeat, Instruction, MemoryQuery, Percept, Recall
from engram.runtime.shm_notify import INLINE
from engram.runtime.zmq_broker import serve_broker
from engram.runtime.zmq_bus import ZmqBus

SPAWN = mp.get_context("spawn")
FAST = {"poll_s": 0.02}  # quick shutdown in tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["ipc", "tcp"])
def any_url(request: pytest.FixtureRequest, ipc_url: str) -> str:
    return ipc_url if request.param == "ipc" else f"tcp://127.0.0.1:{_free_port()}"


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# ---------------------------------------------------------------------------
# child processes (top level so that 'spawn' can import them)


def _echo_peer(url: str) -> None:
    """Republish /in on /out, answer /recall, until an Instruction 'stop' arrives."""
    bus = make_bus(url, **FAST)
    sub = bus.subscribe("/in", "queue(32)")
    bus.serve(
        "/recall",
        lambda q: Recall(query_seq=q.seq, query_text=q.text, hits=[{"pid": os.getpid()}]),
    )
    assert bus.wait_for_subscribers("/out", 1, timeout_s=20)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bus.publish("/out", Heartbeat(node="echo", info={"pid": os.getpid()}))  # "ready"
        msg = sub.get(timeout_s=0.05)
        if msg is None:
            continue
        bus.publish("/out", msg)
        if isinstance(msg, Instruction) and msg.text == "stop":
            break
    time.sleep(0.2)
    bus.close()


def _flood_publisher(url: str, count: int, progress: mp.Value) -> None:  # type: ignore[valid-type]
    """Publish ``count`` 64 KB frames as fast as send allows, counting in ``progress``."""
    bus = make_bus(url, all_block_timeout_s=60.0, **FAST)  # backpressure, not a stuck peer
    assert bus.wait_for_subscribers("/flood", 1, timeout_s=20)
    rgb = np.zeros((128, 170, 3), np.uint8)
    for i in range(count):
        rgb[0, 0, 0] = i % 256
        bus.publish("/flood", Frame(rgb=rgb.copy(), seq=i + 1))
        progress.value = i + 1
    bus.close()


# ---------------------------------------------------------------------------
# across processes


def test_pubsub_and_request_across_processes(any_url: str) -> None:
    handle = serve_broker(any_url)
    bus = make_bus(any_url, **FAST)
    child = SPAWN.Process(target=_echo_peer, args=(any_url,), daemon=True)
    child.start()
    try:
        assert isinstance(bus, ZmqBus)
        out = bus.subscribe("/out", "queue(64)")
        ready = out.get(timeout_s=20)
        assert isinstance(ready, Heartbeat), ready
        child_pid = ready.info["pid"]
        assert child_pid == child.pid != os.getpid()
        assert bus.wait_for_subscribers("/in", 1, timeout_s=10)

        rng = np.random.default_rng(1)
        sent = [
            Frame(
                rgb=rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                depth=rng.random((480, 640), dtype=np.float32),
                labels={"7": "mug"},
            ),
            Percept(
                object_ids=np.array([3], np.int32),
                object_labels=["mug"],
                object_confidences=np.array([0.9], np.float32),
                object_boxes=np.array([[1, 2, 3, 4]], np.int32),
                object_centroids=np.zeros((1, 3), np.float32),
                object_extents=np.ones((1, 3), np.float32),
            ),
            Instruction(text="stop"),
        ]
        for msg in sent:
            bus.publish("/in", msg)
        assert [m.seq for m in sent] == [1, 2, 3]  # the bus numbered them per topic
        got = []
        while len(got) < len(sent):
            msg = out.get(timeout_s=10)
            assert msg is not None, f"echo stopped after {len(got)} messages"
            if not isinstance(msg, Heartbeat):
                got.append(msg)
        assert got == sent  # payload equality, seq included

        reply = bus.request("/recall", MemoryQuery(text="where is the mug", seq=42), 5.0)
        assert isinstance(reply, Recall)
        assert (reply.query_seq, reply.query_text) == (42, "where is the mug")
        assert reply.hits == [{"pid": child_pid}]
        assert out.decode_errors == 0
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
        bus.close()
        handle.close()
    assert child.exitcode == 0


def test_all_policy_applies_backpressure_to_another_process(broker: str) -> None:
    count = 150
    progress = SPAWN.Value("i", 0)
    bus = make_bus(broker, **FAST)
    sub = bus.subscribe("/flood", "all(4)")
    child = SPAWN.Process(target=_flood_publisher, args=(broker, count, progress), daemon=True)
    child.start()
    try:
        assert wait_until(lambda: progress.value > 0, 20), "publisher never started"
        # We read nothing: the publisher must stall with a bounded number in flight.
        stalled = progress.value
        for _ in range(20):
            time.sleep(0.1)
            if progress.value == stalled:
                break
            stalled = progress.value
        time.sleep(0.3)
        assert progress.value == stalled < count, "publisher was not blocked"
        assert stalled <= 4 + 40, f"{stalled} messages in flight: queues are not bounded"
        # Now drain: every message arrives, in order, none dropped.
        seqs = []
        while len(seqs) < count:
            msg = sub.get(timeout_s=10)
            assert msg is not None, f"stopped after {len(seqs)} of {count}"
            seqs.append(msg.seq)
            assert msg.rgb[0, 0, 0] == (msg.seq - 1) % 256
        assert seqs == list(range(1, count + 1))
        assert sub.dropped == 0
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
        bus.close()
    assert child.exitcode == 0 and progress.value == count


# ---------------------------------------------------------------------------
# a stuck subscriber (issue 18, defect 1): it costs only itself


def _run_with_deadline(fn: Callable[[], None], timeout_s: float) -> bool:
    """Run ``fn`` in a daemon thread; False if it did not finish in time (it hung)."""
    import threading

    worker = threading.Thread(target=fn, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return not worker.is_alive()


def test_a_subscriber_that_never_reads_does_not_freeze_its_publisher(broker: str) -> None:
    import threading

    count = 60
    pub = make_bus(broker, all_block_timeout_s=0.3, **FAST)
    good_bus = make_bus(broker, **FAST)
    stuck_bus = make_bus(broker, **FAST)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.SUB)  # a local peer that subscribes and never reads
    raw.rcvhwm = 1
    raw.setsockopt(zmq.RCVBUF, 4096)
    try:
        assert isinstance(pub, ZmqBus)
        raw.connect(pub._lossless_ep)
        raw.subscribe(b"/cam\0")
        good = good_bus.subscribe("/cam", "all(8)")
        stuck = stuck_bus.subscribe("/cam", "all(2)")  # a node whose handler hangs
        assert pub.wait_for_subscribers("/cam", 3, timeout_s=10)
        seqs: list[int] = []

        def read_good() -> None:
            while len(seqs) < count:
                msg = good.get(timeout_s=20)
                if msg is None:
                    return
                seqs.append(msg.seq)

        reader = threading.Thread(target=read_good, daemon=True)
        reader.start()
        rgb = np.zeros((240, 320, 3), np.uint8)  # 230 KB: kernel buffers fill in a few

        def publish_all() -> None:
            for _ in range(count):
                pub.publish("/cam", Frame(rgb=rgb))

        t0 = time.monotonic()
        assert _run_with_deadline(publish_all, 30.0), "the publisher froze on a stuck peer"
        elapsed = time.monotonic() - t0
        reader.join(20)
        assert seqs == list(range(1, count + 1)), "the healthy subscriber lost messages"
        assert pub.stalled["/cam"] >= 1  # the forced drops are counted at the publisher
        assert elapsed < 15, elapsed  # a couple of 0.3 s waits, not one per message
        # the stuck subscription counts what it missed once it reads again
        held = stuck.drain()
        assert 0 < len(held) < count and stuck.lost == 0
        got = [m.seq for m in held]
        deadline = time.monotonic() + 10
        while got[-1] <= count and time.monotonic() < deadline:
            # what was still queued in sockets, then (once ZeroMQ resumes its pipe) new ones
            pub.publish("/cam", Frame(rgb=rgb))
            msg = stuck.get(timeout_s=0.2)
            if msg is not None:
                got.append(msg.seq)
        assert got[-1] > count, got
        assert got == sorted(got)
        assert len(got) + stuck.lost == got[-1], (len(got), stuck.lost)  # all accounted for
    finally:
        raw.close(linger=0)
        ctx.term()
        pub.close()
        good_bus.close()
        stuck_bus.close()


def test_heartbeats_are_not_blocked_by_a_full_lossless_topic(broker: str) -> None:
    """Lossy traffic (heartbeats) goes out while a lossless publish waits (forever here)."""
    pub = make_bus(broker, all_block_timeout_s=0, **FAST)
    sub_bus = make_bus(broker, **FAST)
    try:
        full = sub_bus.subscribe("/data", "all(1)")  # never read
        beats = sub_bus.subscribe("/heartbeat", "queue(8)")
        assert pub.wait_for_subscribers("/data", 1) and pub.wait_for_subscribers("/heartbeat", 1)
        rgb = np.zeros((240, 320, 3), np.uint8)

        def flood() -> None:
            try:
                for _ in range(1000):
                    pub.publish("/data", Frame(rgb=rgb))
            except BusClosed:
                pass

        import threading

        threading.Thread(target=flood, daemon=True).start()
        assert wait_until(lambda: full.received >= 1, 5)
        time.sleep(0.3)  # the flood is now waiting on the full subscriber
        assert _run_with_deadline(lambda: pub.publish("/heartbeat", Heartbeat(node="n")), 2.0)
        assert isinstance(beats.get(timeout_s=2), Heartbeat)
    finally:
        pub.close()
        sub_bus.close()


# ---------------------------------------------------------------------------
# freshness policies (real sockets; publisher and subscriber are separate buses)


@pytest.mark.parametrize(
    ("policy", "held"),
    [("latest", [30]), ("queue(4)", [27, 28, 29, 30])],
)
def test_dropping_policies_under_a_slow_subscriber(
    broker: str, policy: str, held: list[int]
) -> None:
    with make_bus(broker, **FAST) as pub, make_bus(broker, **FAST) as sub_bus:
        sub = sub_bus.subscribe("/p", policy)
        assert pub.wait_for_subscribers("/p", 1, timeout_s=5)
        for i in range(30):
            pub.publish("/p", Instruction(text=str(i)))
            time.sleep(0.001)
        assert wait_until(lambda: sub.received == 30), sub
        assert [m.seq for m in sub.drain()] == held
        assert sub.dropped == 30 - len(held)
        assert sub.get(timeout_s=0.05) is None


def test_request_reply_timeouts_and_errors(broker: str) -> None:
    with make_bus(broker, **FAST) as server, make_bus(broker, **FAST) as client:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="no server"):
            client.request("/nobody", Instruction(text="x"), timeout_s=0.3)
        assert 0.25 < time.monotonic() - t0 < 2.0

        def slow(req: Instruction) -> Instruction:
            if req.text == "slow":
                time.sleep(0.5)
            if req.text == "boom":
                raise KeyError("no such memory")
            return Instruction(text=req.text.upper())

        server.serve("/ask", slow)
        with pytest.raises(ValueError, match="already has a server"):
            server.serve("/ask", slow)
        # the service registers asynchronously: the request waits for it within its timeout
        assert client.request("/ask", Instruction(text="hi"), timeout_s=3.0).text == "HI"
        with pytest.raises(TimeoutError, match="no answer"):
            client.request("/ask", Instruction(text="slow"), timeout_s=0.2)
        # the late reply to the timed-out request must not be taken for this one
        assert client.request("/ask", Instruction(text="next"), timeout_s=3.0).text == "NEXT"
        with pytest.raises(RuntimeError, match="KeyError"):
            client.request("/ask", Instruction(text="boom"), timeout_s=3.0)
        assert client.request("/ask", Instruction(text="alive"), timeout_s=3.0).text == "ALIVE"


# ---------------------------------------------------------------------------
# hostile bytes into a live subscriber


def _garbage(rng: random.Random, topic: bytes, valid: list[bytes]) -> list[bytes]:
    kind = rng.randrange(6)
    if kind == 0:  # random frames
        return [topic] + [rng.randbytes(rng.randrange(0, 300)) for _ in range(rng.randrange(0, 4))]
    if kind == 1:  # truncated multipart: frames missing at the end
        return [topic, *valid[: rng.randrange(0, len(valid))]]
    if kind == 2:  # a buffer cut short
        cut = list(valid)
        cut[1] = cut[1][: rng.randrange(0, len(cut[1]))]
        return [topic, *cut]
    if kind == 3:  # a flipped header byte that breaks the header
        return [topic, b"EGRM\x01" + rng.randbytes(20), *valid[1:]]
    if kind == 4:  # header claims a gigantic array
        head = msgpack.packb(
            {
                "t": "Frame",
                "v": 1,
                "s": 0,
                "q": 0,
                "f": {},
                "a": [["rgb", "|u1", [2**31, 2**31, 3]]],
            }
        )
        return [topic, b"EGRM\x01" + head, b""]
    return [topic, *valid, b"extra frame"]


def test_fuzzed_and_truncated_messages_into_a_live_subscriber(broker: str) -> None:
    topic = b"/fuzz\0" + INLINE  # frame 0: topic, NUL, tag (``runtime/shm_notify.py``)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.XPUB)  # a hostile peer announced through the real broker
    raw.sndhwm = 10_000
    raw_ep = broker + ".raw"
    raw.bind(raw_ep)
    hello = ctx.socket(zmq.DEALER)
    hello.connect(broker)
    junk = ctx.socket(zmq.DEALER)
    junk.connect(broker)
    bus = make_bus(broker, **FAST)
    try:
        sub = bus.subscribe("/fuzz", "queue(256)")
        # a peer announcing endpoints that cannot be dialled must not hurt the subscriber
        junk.send_multipart(
            [b"HELLO", msgpack.packb({"pubs": ["bogus://x", "tcp://"], "key": None})]
        )
        hello.send_multipart([b"HELLO", msgpack.packb({"pubs": [raw_ep, raw_ep], "key": None})])
        assert raw.poll(5000), "the subscriber never connected to the announced peer"
        assert raw.recv().startswith(b"\x01/fuzz\0")  # plain, or INLINE + a datagram address

        valid = [bytes(f) for f in encode(Frame(rgb=np.full((4, 4, 3), 7, np.uint8)))]
        rng = random.Random(1234)
        n_bad = 300
        for _ in range(n_bad):
            raw.send_multipart(_garbage(rng, topic, valid))
        raw.send_multipart([topic])  # nothing but the topic
        raw.send_multipart([topic, *valid])
        msg = sub.get(timeout_s=5)
        assert isinstance(msg, Frame) and int(msg.rgb[0, 0, 0]) == 7
        assert sub.decode_errors == n_bad + 1
        # the receiver thread is alive and still delivering
        raw.send_multipart([topic, *valid])
        assert isinstance(sub.get(timeout_s=5), Frame)
    finally:
        bus.close()
        hello.close(linger=0)
        junk.close(linger=0)
        raw.close(linger=0)
        ctx.term()


# ---------------------------------------------------------------------------
# smaller contracts


def test_bus_without_broker_still_talks_to_itself(ipc_url: str) -> None:
    with ZmqBus(ipc_url, startup_wait_s=0.05, **FAST) as bus:
        sub = bus.subscribe("/self", "latest")
        assert bus.wait_for_subscribers("/self", 1, timeout_s=5)
        bus.publish("/self", Instruction(text="hello"))
        assert sub.get(timeout_s=5).text == "hello"
        sub.close()
        assert wait_until(lambda: bus.subscriber_count("/self") == 0)
        with pytest.raises(TimeoutError):
            bus.request("/q", Instruction(), timeout_s=0.1)
    with pytest.raises(BusClosed):
        bus.publish("/self", Instruction())
    with pytest.raises(BusClosed):
        bus.subscribe("/self")


def test_topics_match_exactly(broker: str) -> None:
    with make_bus(broker, **FAST) as bus:
        short = bus.subscribe("/cam", "queue(4)")
        long = bus.subscribe("/cam/depth", "queue(4)")
        assert bus.wait_for_subscribers("/cam", 1) and bus.wait_for_subscribers("/cam/depth", 1)
        bus.publish("/cam/depth", Instruction(text="d"))
        bus.publish("/cam", Instruction(text="c"))
        assert long.get(timeout_s=5).text == "d"
        assert short.get(timeout_s=5).text == "c"
        assert short.get(timeout_s=0.1) is None


def test_configuration_errors_are_clear(ipc_url: str) -> None:
    with pytest.raises(TypeError, match="unknown option"):
        ZmqBus(ipc_url, no_such_option=1)
    with pytest.raises(ValueError, match="too long"):
        ZmqBus("ipc:///tmp/" + "x" * 120)
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        ZmqBus("tcp://localhost")
    with serve_broker(ipc_url), pytest.raises(RuntimeError, match="already serving"):
        serve_broker(ipc_url)
    with ZmqBus(ipc_url, startup_wait_s=0.05, **FAST) as bus:
        with pytest.raises(ValueError, match="topic"):
            bus.publish("", Instruction())
        with pytest.raises(TypeError, match="expected a Message"):
            bus.publish("/x", "not a message")  # type: ignore[arg-type]


def test_socket_files_of_a_sigkilled_process_are_swept_by_the_next_bus(broker: str) -> None:
    import signal
    import subprocess
    import sys
    from pathlib import Path

    prefix = Path(broker[len("ipc://") :])
    code = (
        "import sys, time; from engram.runtime.bus import make_bus; "
        f"b = make_bus({broker!r}, poll_s=0.02); print('up', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "up"
        theirs = sorted(prefix.parent.glob(f"{prefix.name}.{child.pid}-*"))
        assert len(theirs) == 2  # its lossy and lossless publisher sockets
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert all(p.exists() for p in theirs)  # a killed process cannot clean up
    bus = make_bus(broker, **FAST)
    try:
        assert not any(p.exists() for p in theirs)
        ours = list(prefix.parent.glob(f"{prefix.name}.{os.getpid()}-*"))
        assert len(ours) == 2 and prefix.exists()  # live sockets stay
    finally:
        bus.close()
