"""Transport benchmark: cross-process pub/sub of camera frames over the Engram ZeroMQ bus.

Cases: 640x480x3 and 1920x1080x3 uint8 ``Frame`` messages, published by one OS process
and received by another, over ipc:// and tcp:// (loopback). Measured in the same run:

- **engram shared memory** (ipc only): ``ZmqBus`` as ``engram launch`` process groups get it
  without configuration: the payload goes through a shared-memory ring, the publisher's
  thread sends the descriptor as a unix datagram straight to the subscription's receiver
  thread (``runtime/shm_notify.py``), or to the consumer itself while it waits in ``get``
  (``runtime/zmq_receiver.py``: no thread hand-off), which hands out a view of the slot
  (``runtime/shm.py``); subscription ``queue(8)``;
- **engram shared memory with a loan** (ipc only): the publisher gets the frame's array from
  ``ZmqBus.loan`` (a writable view of a ring slot), writes the image into it and publishes:
  no copy at all (the write is the camera's own work, outside the timed span, as building
  the frame is for the other cases); ``queue(8)``;
- **the same loan with an ``all(8)`` subscription**: lossless subscriptions keep the
  descriptor on ZeroMQ's lossless socket (backpressure, order): the previous notification
  path (two ZeroMQ I/O threads), a peer for the datagram;
- **engram ZeroMQ** (the path before shared memory, ``ENGRAM_SHM=0``): ``ZmqBus`` with codec
  frames sent and received without copies, ``queue(8)``; on tcp:// the only engram path;
- **peer: pickle over pyzmq**: the naive way, ``send_pyobj(frame)`` / ``recv_pyobj()`` on a
  plain PUB/SUB pair (HWM 16 so a fast sender cannot eat the memory);
- **floor: in-process memcpy** of the same bytes (``np.copyto``);
- with ``--iceoryx2``: raw iceoryx2 0.10 pub/sub of the same bytes, the subscriber either
  polling every 50 us or woken by iceoryx2's event service (a notifier/listener pair).

Metrics: one-way latency p50/p99 in ms (publisher stamps ``time.monotonic_ns()`` just before
publishing, the subscriber reads the clock when its ``get``/``recv`` returns; paced sends, so
no queueing), and throughput in frames/s and GB/s (sender flat out, making a new frame per
message as a camera does, the same work for every kind: it writes the image into memory it
owns, a loaned slot or its own buffer, and builds the ``Frame``; also, for 640x480, the
transport alone as the issue first measured it (``<kind>:transport``: the frames are built
around that memory but their pixels are not written, loan vs pickle); frames *delivered* per
second at the receiver; lossy subscriptions, ``queue(8)`` and pickle's PUB, drop when the
reader lags: ``delivered_fraction`` per kind; ``all(8)`` is the lossless comparison; a
datagram subscription whose kernel queue is full gets the newest frames over ZeroMQ
instead, and the older queued ones are then dropped as stale: ``runtime/shm_notify.py``).

Also, on ipc: an ``engram launch`` graph with no bus settings (640x480 synthetic camera at
30 Hz in a process group, ``frame_stats`` in the launcher), arrival latency p50/p95 with
shared memory vs ``ENGRAM_SHM=0``. The 1-minute load average before and after is printed:
the machine may be shared.

Usage: ``python bench/transport.py [--quick]``; prints one JSON object (bench/README.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, percentile, result  # noqa: E402

SIZES = {"640x480": (480, 640), "1920x1080": (1080, 1920)}
PEER = "pickle over pyzmq"
PEER_ZMQ = "engram ZeroMQ inline (ENGRAM_SHM=0)"


@dataclass
class Plan:
    """How many frames each phase sends."""

    n_latency: int  # paced frames for the latency phase
    pace_s: float  # gap between paced frames
    n_throughput: int  # frames sent flat out for the throughput phase


def _plans(quick: bool) -> dict[str, Plan]:
    # throughput phases long enough for the steady state (a flat-out 640x480 loan stream
    # takes ~0.1 s to settle: its consumer switches from sleeping on its socket to napping;
    # 600-frame phases of round 8 read 5.7-6.3k fps where 4,000-frame ones read 8.4-8.5k)
    if quick:
        return {"640x480": Plan(150, 0.004, 3000), "1920x1080": Plan(40, 0.012, 200)}
    return {"640x480": Plan(1000, 0.004, 6000), "1920x1080": Plan(300, 0.012, 600)}


# ---------------------------------------------------------------------------
# publisher process


def _publisher(kind: str, url: str, shape: tuple[int, int], plan: Plan, go: mp.Event) -> None:  # type: ignore[valid-type]
    import zmq

    kind, _, variant = kind.partition(":")  # "<kind>:transport": no pixel writes (below)
    fill = variant != "transport"

    from engram.runtime.messages import Frame

    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    if kind != "naive":
        from engram.runtime.bus import make_bus

        bus = make_bus(url)
        if not bus.wait_for_subscribers("/frames", 1, timeout_s=20):
            raise SystemExit("no subscriber")

        def send(frame: Frame) -> None:
            frame.stamp_ns = time.monotonic_ns()
            bus.publish("/frames", frame)

        close = bus.close
    else:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        sock.sndhwm = 16
        sock.bind(url)

        def send(frame: Frame) -> None:
            frame.stamp_ns = time.monotonic_ns()
            sock.send_pyobj(frame)

        def close() -> None:
            sock.close(linger=2000)
            ctx.term()

    # Latency phase: messages are built before the clock starts (construction is the
    # producer's work, the same for every transport); what is timed is publish -> delivered.
    frames = {c: Frame(rgb=rgb, camera=c) for c in ("warmup", "latency", "end")}
    # Throughput phase: every kind does a camera's work per message, the same for all: the
    # driver writes a new image (``np.copyto`` of the 0.9 / 6.2 MB) into memory the producer
    # owns and builds ``Frame(rgb=...)`` (with its checks) around it, then sends it. "loan"
    # owns a shared-memory slot (``bus.loan``: the publish then copies nothing); the others
    # own a buffer of their own, reused, as a driver would: one for the kinds whose send
    # copies before it returns (pickle, shared-memory "shm"), a pool for ZeroMQ inline
    # (``copy=False``: a buffer may still be queued after ``publish`` returns).
    own = [np.empty_like(rgb) for _ in range(32 if kind == "zmq" else 1)]
    produced = 0

    def produce() -> Frame:
        nonlocal produced
        if kind.startswith("loan"):
            (buf,) = bus.loan("/frames", (rgb.shape, np.uint8))  # type: ignore[attr-defined]
        else:
            buf = own[produced % len(own)]
            produced += 1
        if fill:  # (":transport" kinds: the transport's own throughput, as the issue
            np.copyto(buf, rgb)  # measured it: frames built, not their pixels written)
        return Frame(rgb=buf, camera="throughput")

    def make(camera: str) -> Frame:
        if not kind.startswith("loan"):
            return frames[camera]
        # "loan": the frame is written straight into a shared-memory slot (as a camera
        # driver would decode into it), then published: the publish copies nothing
        (buf,) = bus.loan("/frames", (rgb.shape, np.uint8))  # type: ignore[attr-defined]
        np.copyto(buf, rgb)
        return Frame(rgb=buf, camera=camera)

    while not go.is_set():  # until the subscriber has seen us (slow-joiner safe)
        send(make("warmup"))
        time.sleep(0.02)
    time.sleep(0.1)
    for _ in range(plan.n_latency):
        send(make("latency"))  # the clock starts inside send, after the frame is made
        time.sleep(plan.pace_s)
    time.sleep(0.2)
    for _ in range(plan.n_throughput):  # every kind makes a new frame per message here
        send(produce())
    for _ in range(10):  # the end marker (repeated: the naive PUB may drop)
        time.sleep(0.02)
        send(make("end"))
    close()


# ---------------------------------------------------------------------------
# subscriber (this process)


def _measure(kind: str, transport: str, size: str, plan: Plan, workdir: str) -> dict[str, float]:
    import zmq

    from engram.runtime.zmq_broker import serve_broker
    from engram.runtime.zmq_bus import ZmqBus

    shape = SIZES[size]
    base = kind.partition(":")[0]  # (the publisher reads the variant)
    if transport == "ipc":
        url = f"ipc://{workdir}/{base}-{kind.partition(':')[2]}-{size}"
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    cleanup = []
    if base != "naive":
        broker = serve_broker(url)
        bus = ZmqBus(url)
        sub = bus.subscribe("/frames", "all(8)" if base.endswith("-all") else "queue(8)")

        def receive():  # noqa: ANN202
            return sub.get(timeout_s=10)

        def receive_quick() -> None:
            sub.get(timeout_s=0.05)

        cleanup += [bus.close, broker.close]
    child = ctx.Process(target=_publisher, args=(kind, url, shape, plan, go), daemon=True)
    child.start()
    if base == "naive":
        zctx = zmq.Context()
        sock = zctx.socket(zmq.SUB)
        sock.rcvhwm = 16
        sock.subscribe(b"")
        sock.connect(url)

        def receive():  # noqa: ANN202
            return sock.recv_pyobj() if sock.poll(10_000) else None

        def receive_quick() -> None:
            if sock.poll(50):
                sock.recv()

        cleanup += [lambda: sock.close(linger=0), zctx.term]
    latencies_ms: list[float] = []
    tp_first = tp_last = 0.0
    tp_count = 0
    try:
        while True:
            msg = receive()
            now_ns = time.monotonic_ns()
            if msg is None:
                raise RuntimeError(f"{kind}/{transport}/{size}: publisher went silent")
            if msg.rgb.shape[:2] != shape:
                raise RuntimeError("wrong frame shape")
            if msg.camera == "warmup":
                go.set()
            elif msg.camera == "latency":
                latencies_ms.append((now_ns - msg.stamp_ns) / 1e6)
            elif msg.camera == "throughput":
                t = now_ns / 1e9
                tp_first = tp_first or t
                tp_last = t
                tp_count += 1
            elif msg.camera == "end":
                break
        while child.is_alive():  # keep reading so the publisher can finish and flush
            receive_quick()
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
        for fn in cleanup:
            fn()
    nbytes = shape[0] * shape[1] * 3
    fps = (tp_count - 1) / (tp_last - tp_first) if tp_count > 1 and tp_last > tp_first else 0.0
    return {
        "p50": percentile(latencies_ms, 50),
        "p99": percentile(latencies_ms, 99),
        "fps": fps,
        "gbps": fps * nbytes / 1e9,
        "delivered": tp_count / plan.n_throughput,
    }


def _measure_env(kind: str, transport: str, size: str, plan: Plan, workdir: str) -> dict:
    """``_measure`` with shared memory on ("shm") or off ("zmq") in both processes."""
    before = os.environ.get("ENGRAM_SHM")
    if kind == "zmq":
        os.environ["ENGRAM_SHM"] = "0"  # read by each bus at construction; spawn inherits it
    try:
        return _measure(kind, transport, size, plan, workdir)
    finally:
        if before is None:
            os.environ.pop("ENGRAM_SHM", None)
        else:
            os.environ["ENGRAM_SHM"] = before


_METRICS = (
    ("p50_latency_ms", "p50", "lower"),
    ("p99_latency_ms", "p99", "lower"),
    ("throughput_fps", "fps", "higher"),
    ("throughput_gbps", "gbps", "higher"),
)


# ---------------------------------------------------------------------------
# reference engine (``--iceoryx2``): what the shared-memory engine itself can do


def _iox_service(node, name: str):  # noqa: ANN001, ANN202 - iceoryx2 objects
    import ctypes

    import iceoryx2 as iox2

    return (
        node.service_builder(iox2.ServiceName.new(name))
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .subscriber_max_buffer_size(8)
        .history_size(0)
        .enable_safe_overflow(True)
        .open_or_create()
    )


def _iox_publisher(name: str, nbytes: int, plan: Plan, go: mp.Event, event: bool) -> None:  # type: ignore[valid-type]
    import ctypes

    import iceoryx2 as iox2

    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    pub = _iox_service(node, name).publisher_builder().initial_max_slice_len(nbytes).create()
    notifier = (
        node.service_builder(iox2.ServiceName.new(name + "-ev"))
        .event()
        .open_or_create()
        .notifier_builder()
        .create()
        if event
        else None
    )
    src = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
    go.wait(30)
    time.sleep(0.2)

    def send(phase: int) -> None:
        stamp = time.monotonic_ns()  # before the copy, as engram's publish includes its copy
        sample = pub.loan_slice_uninit(nbytes)
        ctypes.memmove(sample.payload_ptr, src.ctypes.data, nbytes)  # the frame, as we copy
        head = (ctypes.c_uint64 * 2).from_address(sample.payload_ptr)
        head[0], head[1] = stamp, phase
        sample.assume_init().send()
        if notifier is not None:
            notifier.notify()

    for _ in range(plan.n_latency):
        send(1)
        time.sleep(plan.pace_s)
    time.sleep(0.2)
    for _ in range(plan.n_throughput):
        send(2)
    for _ in range(10):
        time.sleep(0.02)
        send(3)


def _measure_iceoryx2(size: str, plan: Plan, event: bool) -> dict[str, float]:
    """Raw iceoryx2 0.10 pub/sub of the same bytes: loan, memmove, send; the subscriber
    polls every 50 us, or (``event``) sleeps in an event-service listener that the
    publisher notifies after each send (no Message, no freshness policies, no ZeroMQ)."""
    import iceoryx2 as iox2

    shape = SIZES[size]
    nbytes = shape[0] * shape[1] * 3
    name = f"engram-bench-{os.getpid()}-{size}-{int(event)}"
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    sub = _iox_service(node, name).subscriber_builder().create()
    listener = (
        node.service_builder(iox2.ServiceName.new(name + "-ev"))
        .event()
        .open_or_create()
        .listener_builder()
        .create()
        if event
        else None
    )
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    args = (name, nbytes, plan, go, event)
    child = ctx.Process(target=_iox_publisher, args=args, daemon=True)
    child.start()
    go.set()
    lat: list[float] = []
    tp: list[float] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            sample = sub.receive()
            if sample is None:
                if listener is not None:
                    listener.timed_wait(iox2.Duration.from_millis(100))
                else:
                    time.sleep(50e-6)
                continue
            now = time.monotonic_ns()
            stamp, phase = np.frombuffer(sample.payload().as_memory_view(), np.uint64, 2)
            sample.delete()
            if phase == 1:
                lat.append((now - int(stamp)) / 1e6)
            elif phase == 2:
                tp.append(now / 1e9)
            elif phase == 3:
                break
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    fps = (len(tp) - 1) / (tp[-1] - tp[0]) if len(tp) > 1 and tp[-1] > tp[0] else 0.0
    return {
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "fps": fps,
        "gbps": fps * nbytes / 1e9,
    }


def _launch_latency(kind: str, seconds: float) -> dict[str, float]:
    """``engram launch`` with no bus or transport settings: a 640x480 synthetic camera at
    30 Hz in its own process group, ``frame_stats`` in the launcher; arrival latency."""
    from engram.runtime.launcher import Launch

    window = max(10, int(30 * seconds * 0.7))  # the last 70%: ring set-up is not steady state
    graph = {
        "name": "bench_transport",
        "shutdown_grace_s": 3.0,
        "nodes": [
            {
                "name": "camera",
                "type": "synthetic_camera",
                "params": {"rate_hz": 30, "width_px": 640, "height_px": 480, "with_depth": False},
                "process": "cam",
            },
            {"name": "stats", "type": "frame_stats", "params": {"latency_window": window}},
        ],
    }
    before = os.environ.get("ENGRAM_SHM")
    if kind == "zmq":
        os.environ["ENGRAM_SHM"] = "0"
    try:
        with Launch(graph, status=None) as launch:
            stats = launch.nodes["stats"]
            deadline = time.monotonic() + 30
            while getattr(stats, "frames", 0) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(seconds)
            pct = stats.latency_percentiles_ms()  # type: ignore[attr-defined]
            frames = stats.frames  # type: ignore[attr-defined]
    finally:
        if before is None:
            os.environ.pop("ENGRAM_SHM", None)
        else:
            os.environ["ENGRAM_SHM"] = before
    if frames < 3:
        raise RuntimeError(f"launch graph ({kind}): only {frames} frames arrived")
    return {"p50": pct["p50"], "p95": pct["p95"]}


def _stages(size: str, n: int) -> dict[str, float]:
    """CPU time (us, median, this thread) of each in-process stage of a shared-memory hop,
    paced like the latency phase (caches as cold as there): codec encode; ``wrap`` (ring
    slot + the copy + descriptor); ``wrap`` of a frame built in a loaned slot (no copy);
    the subscriber's ``resolve`` + codec decode (zero-copy views, message validation),
    and the same as the datagram path does it (``validated``: a same-user publisher's
    message from our own ring, rebuilt without re-running its constructor's checks);
    decode of the same frame with a depth image, inline (every depth value checked) and
    from shared memory (``trusted``: values were checked where the frame was built); and the
    producer's own per-frame work: ``loan`` (a free slot; loan case only), ``fill`` (the
    camera's write of the image, into the slot here) and ``frame`` (``Frame(rgb=...)`` with
    its checks), outside the timed hop but inside throughput, where every kind does the
    fill and the ``Frame`` (pickle's and the copying kinds' into a buffer of their own).
    The rest of a hop's latency is the notification and the thread wake-ups."""
    from engram.runtime.codec import decode, encode
    from engram.runtime.messages import Frame
    from engram.runtime.shm import ShmReader, ShmWriter

    shape = (*SIZES[size], 3)
    rgb = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    writer, reader = ShmWriter(), ShmReader(False)
    out: dict[str, list[int]] = {
        k: [] for k in ("encode", "wrap_copy", "wrap_loaned", "decode", "decode_depth_inline")
    }
    out["decode_depth_shm"] = []
    out["decode_validated"] = []
    out["loan"] = []  # a free slot's writable array (the publisher's per-frame ask)
    out["frame"] = []  # Frame(rgb=...) construction, with its checks (the producer's)
    out["fill"] = []  # the camera's write of the image into the loaned slot (the producer's)
    depth = np.random.default_rng(1).uniform(0.3, 4.0, shape[:2]).astype(np.float32)
    with_depth = [bytes(f) for f in encode(Frame(rgb=rgb, depth=depth))]
    clock = time.thread_time_ns
    try:
        for _ in range(n):
            frame = Frame(rgb=rgb)
            t0 = clock()
            frames = [b"/f\0", *encode(frame)]
            t1 = clock()
            desc = writer.wrap("/f", frames)
            t2 = clock()
            msg = decode(reader.frames(desc[1:]), trusted=True)  # type: ignore[index]
            t3 = clock()
            del msg
            # the datagram path: a same-user publisher's message, rebuilt unchecked
            t3a = clock()
            msg = decode(reader.frames(desc[1:]), trusted=True, validated=True)  # type: ignore[index]
            t3b = clock()
            del msg
            t3c = clock()
            (buf,) = writer.loan("/g", [(shape, np.uint8)])  # type: ignore[misc]
            t3d = clock()
            np.copyto(buf, rgb)
            t3e = clock()
            built = Frame(rgb=buf)
            t3f = clock()
            loaned = [b"/g\0", *encode(built)]
            t4 = clock()
            writer.wrap("/g", loaned)
            t5 = clock()
            decode(with_depth)
            t6 = clock()
            decode(with_depth, trusted=True)
            t7 = clock()
            for key, dt in (
                ("encode", t1 - t0),
                ("wrap_copy", t2 - t1),
                ("decode", t3 - t2),
                ("decode_validated", t3b - t3a),
                ("wrap_loaned", t5 - t4),
                ("loan", t3d - t3c),
                ("fill", t3e - t3d),
                ("frame", t3f - t3e),
                ("decode_depth_inline", t6 - t5),
                ("decode_depth_shm", t7 - t6),
            ):
                out[key].append(dt)
            time.sleep(0.004)
    finally:
        reader.close()
        writer.close()
    return {k: float(np.median(v)) / 1e3 for k, v in out.items()}


def _memcpy_floor(size: str, plan: Plan) -> dict[str, float]:
    shape = SIZES[size]
    src = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(max(plan.n_latency, 50)):
        t = time.perf_counter_ns()
        np.copyto(dst, src)
        times.append((time.perf_counter_ns() - t) / 1e6)
    n = max(plan.n_throughput, 50)
    t = time.perf_counter()
    for _ in range(n):
        np.copyto(dst, src)
    fps = n / (time.perf_counter() - t)
    return {
        "p50": percentile(times, 50),
        "p99": percentile(times, 99),
        "fps": fps,
        "gbps": fps * src.nbytes / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (under a minute)")
    parser.add_argument("--transports", default="ipc,tcp", help="comma-separated subset of ipc,tcp")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="measure each transport this many times, interleaved; medians (default 1 quick, 3 full)",
    )
    parser.add_argument(
        "--iceoryx2",
        action="store_true",
        help="also measure raw iceoryx2 pub/sub of the same bytes (reference engine; "
        "iceoryx2 leaves its global files in /dev/shm and /tmp/iceoryx2)",
    )
    args = parser.parse_args(argv)
    plans = _plans(args.quick)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    load_before = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="egb", dir="/tmp")
    rows = []
    try:
        for size, plan in plans.items():
            for transport in args.transports.split(","):
                # shared memory is a same-host path: ipc:// only (tcp:// may cross hosts)
                kinds = ["shm", "loan", "loan-all", "zmq", "naive"]
                if size == "640x480":  # the transport alone: no pixel writes per frame
                    kinds += ["loan:transport", "naive:transport"]
                if transport != "ipc":
                    kinds = ["zmq", "naive"]
                runs: dict[str, list[dict]] = {k: [] for k in kinds}
                for r in range(args.repeats):  # interleaved, rotated: load hits all alike
                    for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                        runs[kind].append(_measure_env(kind, transport, size, plan, workdir))
                med = {
                    k: {m: float(np.median([v[m] for v in vs])) for m in vs[0]}
                    for k, vs in runs.items()
                }
                shm, inline, naive = med.get("shm"), med["zmq"], med["naive"]
                loan, loan_all = med.get("loan"), med.get("loan-all")
                case = f"{size} rgb, {transport}, 2 processes"
                for metric, key, better in _METRICS:
                    if loan is not None and loan_all is not None:
                        rows.append(
                            result(
                                f"{case}, loan, datagram notification vs ZeroMQ notification (all(8))",
                                metric,
                                loan[key],
                                better,
                                peer="loan, all(8): descriptor over ZeroMQ",
                                peer_value=loan_all[key],
                            )
                        )
                        rows.append(
                            result(
                                f"{case}, shared memory with a loan (frame built in the slot)",
                                metric,
                                loan[key],
                                better,
                                peer=PEER,
                                peer_value=naive[key],
                            )
                        )
                    if shm is not None:
                        rows.append(
                            result(
                                f"{case}, shared memory",
                                metric,
                                shm[key],
                                better,
                                peer=PEER,
                                peer_value=naive[key],
                            )
                        )
                        rows.append(
                            result(
                                f"{case}, shared memory vs ZeroMQ inline",
                                metric,
                                shm[key],
                                better,
                                peer=PEER_ZMQ,
                                peer_value=inline[key],
                            )
                        )
                    rows.append(
                        result(
                            f"{case}, ZeroMQ inline",
                            metric,
                            inline[key],
                            better,
                            peer=PEER,
                            peer_value=naive[key],
                        )
                    )
                bare, bare_naive = med.get("loan:transport"), med.get("naive:transport")
                if bare is not None and bare_naive is not None:
                    for metric, key, better in _METRICS:
                        if key in ("fps", "gbps"):
                            rows.append(
                                result(
                                    f"{case}, shared memory with a loan, transport only "
                                    "(frames built, no pixel writes)",
                                    metric,
                                    bare[key],
                                    better,
                                    peer=f"{PEER}, no pixel writes",
                                    peer_value=bare_naive[key],
                                )
                            )
                for kind, v in med.items():  # lossy policies may drop when the reader lags
                    rows.append(
                        result(f"{case}, {kind}", "delivered_fraction", v["delivered"], "higher")
                    )
            if args.iceoryx2:
                for event in (False, True):
                    iox = _measure_iceoryx2(size, plan, event)
                    how = "event-service wake-up" if event else "50 us polling"
                    case = f"{size} rgb, iceoryx2 0.10 raw bytes, 2 processes, {how} (reference engine)"
                    rows += [result(case, m, iox[k], better) for m, k, better in _METRICS]
            if "ipc" in args.transports.split(","):
                stages = _stages(size, 60 if args.quick else 300)
                case = f"{size} rgb, stage CPU time (in-process, paced)"
                rows += [result(f"{case}: {k}", "cpu_us", v, "lower") for k, v in stages.items()]
            floor = _memcpy_floor(size, plan)
            case = f"{size} rgb, in-process memcpy (floor)"
            rows += [
                result(case, "p50_latency_ms", floor["p50"], "lower"),
                result(case, "p99_latency_ms", floor["p99"], "lower"),
                result(case, "throughput_fps", floor["fps"], "higher"),
                result(case, "throughput_gbps", floor["gbps"], "higher"),
            ]
        if "ipc" in args.transports.split(","):
            seconds = 3.0 if args.quick else 10.0
            shm = _launch_latency("shm", seconds)
            inline = _launch_latency("zmq", seconds)
            case = "640x480 rgb @ 30 Hz, engram launch graph (camera process -> launcher)"
            for metric, key in (("p50_latency_ms", "p50"), ("p95_latency_ms", "p95")):
                rows.append(
                    result(
                        f"{case}, shared memory (no configuration)",
                        metric,
                        shm[key],
                        "lower",
                        peer=PEER_ZMQ,
                        peer_value=inline[key],
                    )
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()[0]
    # The machine is shared: the 1-minute load average says how contended the CPUs were.
    emit(
        "transport",
        rows,
        quick=args.quick,
        repeats=args.repeats,
        load_avg_1m=[round(load_before, 2), round(load_after, 2)],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
