"""Transport benchmark: cross-process pub/sub of camera frames over the Engram ZeroMQ bus.

Cases: 640x480x3 and 1920x1080x3 uint8 ``Frame`` messages, published by one OS process
and received by another, over ipc:// and tcp:// (loopback). Measured in the same run:

- **engram**: ``ZmqBus`` (codec frames sent and received without copies), subscription
  policy ``all(8)`` so nothing is dropped;
- **peer: pickle over pyzmq**: the naive way, ``send_pyobj(frame)`` / ``recv_pyobj()`` on a
  plain PUB/SUB pair (HWM 16 so a fast sender cannot eat the memory);
- **floor: in-process memcpy** of the same bytes (``np.copyto``).

Metrics: one-way latency p50/p99 in ms (publisher stamps ``time.monotonic_ns()`` just before
publishing, the subscriber reads the clock when its ``get``/``recv`` returns; paced sends, so
no queueing), and throughput in frames/s and GB/s (sender flat out; frames *delivered* per
second at the receiver).

Usage: ``python bench/transport.py [--quick]``; prints one JSON object (../shared/BENCH.md).
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


@dataclass
class Plan:
    """How many frames each phase sends."""

    n_latency: int  # paced frames for the latency phase
    pace_s: float  # gap between paced frames
    n_throughput: int  # frames sent flat out for the throughput phase


def _plans(quick: bool) -> dict[str, Plan]:
    if quick:
        return {"640x480": Plan(150, 0.004, 150), "1920x1080": Plan(40, 0.012, 40)}
    return {"640x480": Plan(1000, 0.004, 1000), "1920x1080": Plan(300, 0.012, 200)}


# ---------------------------------------------------------------------------
# publisher process


def _publisher(kind: str, url: str, shape: tuple[int, int], plan: Plan, go: mp.Event) -> None:  # type: ignore[valid-type]
    import zmq

    from engram.runtime.messages import Frame

    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    if kind == "engram":
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

    # Messages are built before the clock starts: construction is the producer's work, the
    # same for both transports; what is timed is publish -> delivered.
    frames = {c: Frame(rgb=rgb, camera=c) for c in ("warmup", "latency", "throughput", "end")}
    while not go.is_set():  # until the subscriber has seen us (slow-joiner safe)
        send(frames["warmup"])
        time.sleep(0.02)
    time.sleep(0.1)
    for _ in range(plan.n_latency):
        send(frames["latency"])
        time.sleep(plan.pace_s)
    time.sleep(0.2)
    for _ in range(plan.n_throughput):
        send(frames["throughput"])
    for _ in range(10):  # the end marker (repeated: the naive PUB may drop)
        time.sleep(0.02)
        send(frames["end"])
    close()


# ---------------------------------------------------------------------------
# subscriber (this process)


def _measure(kind: str, transport: str, size: str, plan: Plan, workdir: str) -> dict[str, float]:
    import zmq

    from engram.runtime.zmq_broker import serve_broker
    from engram.runtime.zmq_bus import ZmqBus

    shape = SIZES[size]
    if transport == "ipc":
        url = f"ipc://{workdir}/{kind}-{size}"
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    cleanup = []
    if kind == "engram":
        broker = serve_broker(url)
        bus = ZmqBus(url)
        sub = bus.subscribe("/frames", "all(8)")

        def receive():  # noqa: ANN202
            return sub.get(timeout_s=10)

        def receive_quick() -> None:
            sub.get(timeout_s=0.05)

        cleanup += [bus.close, broker.close]
    child = ctx.Process(target=_publisher, args=(kind, url, shape, plan, go), daemon=True)
    child.start()
    if kind != "engram":
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
    args = parser.parse_args(argv)
    plans = _plans(args.quick)
    load_before = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="egb", dir="/tmp")
    rows = []
    try:
        for size, plan in plans.items():
            for transport in args.transports.split(","):
                ours = _measure("engram", transport, size, plan, workdir)
                naive = _measure("naive", transport, size, plan, workdir)
                case = f"{size} rgb, {transport}, 2 processes"
                for metric, key, better in (
                    ("p50_latency_ms", "p50", "lower"),
                    ("p99_latency_ms", "p99", "lower"),
                    ("throughput_fps", "fps", "higher"),
                    ("throughput_gbps", "gbps", "higher"),
                ):
                    rows.append(
                        result(case, metric, ours[key], better, peer=PEER, peer_value=naive[key])
                    )
                rows.append(
                    result(
                        case,
                        "peer_delivered_fraction",
                        naive["delivered"],
                        "higher",
                    )
                )
            floor = _memcpy_floor(size, plan)
            case = f"{size} rgb, in-process memcpy (floor)"
            rows += [
                result(case, "p50_latency_ms", floor["p50"], "lower"),
                result(case, "p99_latency_ms", floor["p99"], "lower"),
                result(case, "throughput_fps", floor["fps"], "higher"),
                result(case, "throughput_gbps", floor["gbps"], "higher"),
            ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()[0]
    # The machine is shared: the 1-minute load average says how contended the CPUs were.
    emit(
        "transport",
        rows,
        quick=args.quick,
        load_avg_1m=[round(load_before, 2), round(load_after, 2)],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
