"""Perception benchmark: encoder throughput, frame-to-percept latency at 30 fps, whisper speed.

Every figure is compared, in the same run, with the naive per-frame loop:

- **encoder images/s** (640x480 frames from ../shared/data/rgbd-sample): Engram's
  ``ClipEncoder`` (batched preprocessing on the model's device, one forward pass per
  batch) at batch 1 and at the best batch size found, versus the naive loop: open_clip's
  own PIL preprocessing transform and one ``encode_image`` per frame. ViT-B-32 and the
  small ``engram-vit-small`` architecture, random weights (speed does not depend on them).
- **frame-to-percept latency** at a 30 fps input: ``PerceptionNode`` (keyframe
  selection, bounded queue with drops, batching) versus a naive loop that processes
  every frame in arrival order with the same components (batch 1, unbounded backlog).
  Latency is publish time of the frame to the time its percept is out. Two streams: a
  simulated camera sliding past boxes (segmentation given; every frame changes, so the
  node is overloaded and drops) and the real RGB-D frames played back and forth (a
  slowly turning camera; proposals + open-vocabulary labels; full run only). Also the
  keyframe ratio (percepts marked keyframe per input frame; the naive loop keeps all).
- **every frame processed** (issue 16): the node with keyframe selection off (every frame a
  candidate, a queue as long as the stream, so nothing is skipped or dropped), frames
  published at 30 fps, on the real frames and on the simulated stream: frames/s end to end
  (processed frames over the time from the first publish to the last percept), CPU seconds
  per frame (robust to other load on the machine) and per-stage p50, versus the same node with
  the previous settings (every region embedded each frame, depth back-projected at stride 2).
- **whisper real-time factor** (processing time / audio duration, tiny random dims) on
  speech synthesised with espeak-ng: VAD segments decoded in one batch versus
  ``whisper.transcribe`` called on each segment.

``--quick`` runs a shorter version (under a minute) with the same keys. Runs on the GPU
when there is one (``device="auto"``).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, percentile, result  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "rgbd-sample"
K_PRIMESENSE = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------
# data


def _load_rgbd() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rgb, depth metres, world_from_camera) of the 5 real frames (random if absent)."""
    import cv2

    if not SAMPLE.is_dir():
        rng = np.random.default_rng(0)
        return [
            (
                rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
                np.full((480, 640), 2.0, np.float32),
                np.eye(4),
            )
            for _ in range(5)
        ]
    lines = [ln for ln in (SAMPLE / "trajectory.log").read_text().splitlines() if ln.strip()]
    poses = [
        np.array([[float(v) for v in lines[i + k].split()] for k in range(1, 5)])
        for i in range(0, len(lines), 5)
    ]
    out = []
    for i, pose in enumerate(poses):
        rgb = cv2.imread(str(SAMPLE / "color" / f"{i:05d}.jpg"))[:, :, ::-1].copy()
        depth = cv2.imread(str(SAMPLE / "depth" / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        out.append((rgb, depth.astype(np.float32) / 1000.0, pose))
    return out


def _speech() -> tuple[np.ndarray, float] | None:
    """16 kHz speech of four espeak-ng utterances with pauses; None without espeak-ng."""
    import soundfile as sf

    from engram.perception.audio import to_mono_16k

    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    texts = (
        "Please bring me the red cup from the kitchen",
        "Where did you hear the bell",
        "I left my keys on the table near the window",
        "Open the door and go to the living room",
    )
    parts = [np.zeros(8000, np.float32)]
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            path = Path(tmp) / f"{i}.wav"
            subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True)
            x, sr = sf.read(str(path), dtype="float32")
            parts += [to_mono_16k(x, sr), np.zeros(12000, np.float32)]
    audio = np.concatenate(parts)
    audio += np.random.default_rng(0).normal(0, 10 ** (-65 / 20), len(audio)).astype(np.float32)
    return audio, len(audio) / 16000


# ---------------------------------------------------------------------------
# encoders


def bench_encoder(
    model_name: str, batch_sizes: list[int], min_images: int, rounds: int
) -> list[dict]:
    import open_clip
    import torch
    from PIL import Image

    from engram.perception.encoders import make_encoder

    frames = [f[0] for f in _load_rgbd()]
    enc = make_encoder("clip", model_name=model_name, batch_size=max(batch_sizes))
    enc.load()
    device = enc.device

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def engram_rate(bs: int) -> float:
        n_batches = max(2, -(-min_images // bs))
        batches = [
            np.stack([frames[(b * bs + j) % len(frames)] for j in range(bs)])
            for b in range(n_batches)
        ]
        enc.encode_images(batches[0])  # warm-up
        sync()
        t0 = time.perf_counter()
        for batch in batches:
            enc.encode_images(batch)
        sync()
        return n_batches * bs / (time.perf_counter() - t0)

    # the naive per-frame loop: open_clip's PIL preprocessing, one forward pass per frame
    model = enc._model
    preprocess = open_clip.image_transform(enc.image_size, is_train=False)
    dtype = next(model.parameters()).dtype

    def naive_rate() -> float:
        n = max(4, min_images // 2)

        def one(img: np.ndarray) -> np.ndarray:
            x = preprocess(Image.fromarray(img)).unsqueeze(0).to(device, dtype)
            with torch.no_grad():
                f = model.encode_image(x).float()
            return torch.nn.functional.normalize(f, dim=-1).cpu().numpy()

        one(frames[0])
        sync()
        t0 = time.perf_counter()
        for i in range(n):
            one(frames[i % len(frames)])
        sync()
        return n / (time.perf_counter() - t0)

    # Interleaved rounds, best of each: other processes' load hits both sides alike.
    naive = 0.0
    rates = dict.fromkeys(batch_sizes, 0.0)
    for _ in range(rounds):
        naive = max(naive, naive_rate())
        for bs in batch_sizes:
            rates[bs] = max(rates[bs], engram_rate(bs))
    best = max(rates, key=rates.get)
    peer = "naive per-frame loop (open_clip PIL preprocess, batch 1)"
    rows = [
        result(
            f"{model_name} encoder, 640x480 frames, batch 1, {device}",
            "images_per_s",
            rates[1],
            "higher",
            peer=peer,
            peer_value=naive,
        ),
        result(
            f"{model_name} encoder, 640x480 frames, best batch {best}, {device}",
            "images_per_s",
            rates[best],
            "higher",
            peer=peer,
            peer_value=naive,
            batch_rates={str(k): round(v, 2) for k, v in rates.items()},
        ),
    ]
    enc.close()
    return rows


# ---------------------------------------------------------------------------
# frame-to-percept latency at 30 fps


def _real_stream(seconds: float, fps: float):
    """Real frames played back and forth (0 1 2 3 4 3 2 1 ...) at fps: a slowly turning
    camera, no segmentation (the real-camera path: proposals + open-vocabulary labels)."""
    from engram.runtime.messages import Frame

    data = _load_rgbd()
    order = list(range(len(data))) + list(range(len(data) - 2, 0, -1))
    t0_ns = time.time_ns()
    for i in range(int(seconds * fps)):
        rgb, depth, pose = data[order[i % len(order)]]
        yield Frame(
            stamp_ns=t0_ns + int(i * 1e9 / fps),
            rgb=rgb,
            depth=depth,
            intrinsics=K_PRIMESENSE,
            world_from_camera=pose,
        )


def _moving_stream(seconds: float, fps: float):
    """A simulated 640x480 RGB-D camera sliding past three boxes (segmentation given):
    every frame changes, so every frame is a candidate and the node must drop."""
    from engram.runtime.messages import Frame

    h, w = 480, 640
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (h // 40 + 1, w // 20 + 1, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(cells, 40, axis=0), 40, axis=1)[:h, : 2 * w]
    depth = np.full((h, w), 3.0, np.float32)
    seg = np.full((h, w), -1, np.int32)
    for oid, (y0, y1, x0, x1, z) in enumerate(
        [(100, 220, 80, 240, 1.5), (300, 440, 400, 600, 2.0), (60, 160, 420, 520, 2.5)]
    ):
        depth[y0:y1, x0:x1] = z
        seg[y0:y1, x0:x1] = oid
    labels = {"0": "red_box", "1": "blue_box", "2": "green_box"}
    t0_ns = time.time_ns()
    for i in range(int(seconds * fps)):
        pose = np.eye(4)
        pose[0, 3] = 0.01 * i
        shift = (i * 9) % w
        yield Frame(
            stamp_ns=t0_ns + int(i * 1e9 / fps),
            rgb=np.ascontiguousarray(texture[:, shift : shift + w]),
            depth=depth,
            segmentation=seg,
            intrinsics=K_PRIMESENSE,
            world_from_camera=pose,
            labels=labels,
        )


STREAMS = {
    "moving sim-like 640x480 RGB-D + segmentation": _moving_stream,
    "real 640x480 RGB-D (proposals + open-vocab labels)": _real_stream,
}


def bench_latency(model_name: str, stream: str, seconds: float, fps: float = 30.0) -> list[dict]:
    from engram.perception.encoders import make_encoder
    from engram.perception.geometry import backproject, voxel_downsample
    from engram.perception.node import PerceptionConfig, PerceptionNode
    from engram.perception.objects import ObjectExtractor, ObjectsConfig
    from engram.runtime.bus import InProcBus

    # --- engram: the node --------------------------------------------------------
    bus = InProcBus("bench-perception")
    cfg = PerceptionConfig(model_name=model_name, audio_enabled=False, heartbeat_hz=0.0)
    node = PerceptionNode(cfg, bus=bus)
    sub = bus.subscribe("/percepts", "queue(100000)")
    published: dict[int, float] = {}
    arrived: list[tuple[int, float]] = []
    keyframes = 0
    stop = threading.Event()

    def collect() -> None:
        nonlocal keyframes
        while not stop.is_set():
            msg = sub.get(0.05)
            if msg is not None:
                arrived.append((msg.stamp_ns, time.monotonic()))
                keyframes += int(msg.keyframe)

    collector = threading.Thread(target=collect, daemon=True)
    n_frames = 0
    with node:
        collector.start()
        t0 = time.monotonic()
        for i, frame in enumerate(STREAMS[stream](seconds, fps)):
            delay = t0 + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            published[frame.stamp_ns] = time.monotonic()
            bus.publish("/frames", frame)
            n_frames += 1
        node.flush(timeout_s=60.0)
        time.sleep(0.1)
        hb = node.heartbeat()
    stop.set()
    collector.join()
    bus.close()
    engram_ms = [(t - published[s]) * 1000 for s, t in arrived if s in published]

    # --- naive: every frame, in order, batch 1, unbounded backlog ------------------
    enc = make_encoder("clip", model_name=model_name)
    enc.load()
    extractor = ObjectExtractor(ObjectsConfig(), encoder=enc)
    extractor.vocabulary_embeddings()
    backlog: collections.deque = collections.deque()
    naive_ms: list[float] = []
    done = threading.Event()
    cond = threading.Condition()

    def naive_worker() -> None:
        while True:
            with cond:
                while not backlog and not done.is_set():
                    cond.wait(0.05)
                if not backlog and done.is_set():
                    return
                frame, t_pub = backlog.popleft()
            emb = enc.encode_images([frame.rgb])[0]
            cloud = backproject(frame.depth, frame.intrinsics, frame.world_from_camera, stride_px=2)
            objs = extractor.extract(
                frame.rgb,
                cloud=cloud,
                world_from_camera=frame.world_from_camera,
                segmentation=frame.segmentation,
                labels=frame.labels,
                depth=frame.depth,
            )
            voxel_downsample(cloud.points, cfg.voxel_size_m, labels=cloud.sample(objs.label_image))
            assert emb.shape[0] == enc.dim
            naive_ms.append((time.monotonic() - t_pub) * 1000)

    worker = threading.Thread(target=naive_worker, daemon=True)
    worker.start()
    t0 = time.monotonic()
    for i, frame in enumerate(STREAMS[stream](seconds, fps)):
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with cond:
            backlog.append((frame, time.monotonic()))
            cond.notify()
    done.set()
    worker.join()
    enc.close()

    peer = "naive per-frame loop (every frame, batch 1, unbounded backlog)"
    case = f"{model_name}, {stream} at {fps:g} fps for {seconds:g} s"
    c = hb.counters
    return [
        result(
            f"frame-to-percept p50, {case}",
            "latency_ms",
            percentile(engram_ms, 50),
            "lower",
            peer=peer,
            peer_value=percentile(naive_ms, 50),
        ),
        result(
            f"frame-to-percept p95, {case}",
            "latency_ms",
            percentile(engram_ms, 95),
            "lower",
            peer=peer,
            peer_value=percentile(naive_ms, 95),
            frames=n_frames,
            percepts=len(engram_ms),
            skipped=c.get("frames_skipped", 0),
            queue_dropped=c.get("frames_dropped", 0),
            bus_dropped=c.get("dropped", 0),
            naive_percepts=len(naive_ms),
            stage_latency_ms=hb.latency_ms,
        ),
        result(
            f"keyframe ratio, {case}",
            "keyframes_per_frame",
            keyframes / max(1, n_frames),
            "lower",
            peer="naive per-frame loop (stores every frame)",
            peer_value=1.0,
        ),
    ]


# ---------------------------------------------------------------------------
# every frame processed (issue 16)


def _every_frame(model_name: str, stream: str, n_frames: int, previous: bool) -> dict:
    from engram.perception.node import PerceptionConfig, PerceptionNode
    from engram.perception.objects import ObjectsConfig
    from engram.runtime.bus import InProcBus

    fps = 30.0
    cfg = PerceptionConfig(
        model_name=model_name,
        audio_enabled=False,
        heartbeat_hz=0.0,
        max_queue=n_frames,  # bounded by the stream: nothing is dropped
        keyframes={"min_interval_s": 0.0, "pixel_change_threshold": 0.0},
        depth_stride_px=2 if previous else 4,
        objects=ObjectsConfig(reuse_max_frames=0) if previous else ObjectsConfig(),
    )
    bus = InProcBus("bench-every-frame")
    node = PerceptionNode(cfg, bus=bus)
    sub = bus.subscribe("/percepts", "queue(100000)")
    frames = list(STREAMS[stream](n_frames / fps, fps))
    with node:
        cpu0 = time.process_time()
        t0 = time.monotonic()
        mailbox = node._subs["frames"].mailbox
        for i, frame in enumerate(frames):
            delay = t0 + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # every frame must be processed: on a loaded machine the node's input thread
            # can fall behind its 4-frame input queue, so wait for room instead of dropping
            while len(mailbox) >= 3:
                time.sleep(0.002)
            bus.publish("/frames", frame)
        node.flush(timeout_s=1200.0)
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        hb = node.heartbeat()
        reuse = dict(node.extractor.stats) if node.extractor is not None else {}
    got = len(sub.drain())
    bus.close()
    lat = hb.latency_ms
    return {
        "fps": got / wall,
        "cpu_s_per_frame": cpu / max(1, got),
        "percepts": got,
        "frames": len(frames),
        "dropped": hb.counters.get("dropped", 0) + hb.counters.get("frames_dropped", 0),
        "stages_p50_ms": {
            k[:-4]: lat[k]
            for k in ("encode_p50", "geometry_p50", "objects_p50", "total_p50")
            if k in lat
        },
        "regions": reuse,
    }


def bench_every_frame(model_name: str, stream: str, n_frames: int, rounds: int = 2) -> list[dict]:
    # interleaved rounds, best of each (frames/s, CPU time): other load hits both alike
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(rounds):
        for previous in (True, False):
            runs[previous].append(_every_frame(model_name, stream, n_frames, previous=previous))
    prev, new = (
        dict(
            max(runs[k], key=lambda r: r["fps"]),
            cpu_s_per_frame=min(r["cpu_s_per_frame"] for r in runs[k]),
        )
        for k in (True, False)
    )
    peer = "same node, previous settings (every region embedded each frame, depth stride 2)"
    case = f"{model_name}, {stream}, every frame processed, {n_frames} frames published at 30 fps"
    return [
        result(
            f"frame-to-percept throughput, {case}", "frames_per_s", new["fps"], "higher",
            peer=peer, peer_value=prev["fps"], target_frames_per_s=10.0,
            percepts=new["percepts"], frames=new["frames"], peer_percepts=prev["percepts"],
            dropped=new["dropped"], peer_dropped=prev["dropped"],
            stage_p50_ms=new["stages_p50_ms"], peer_stage_p50_ms=prev["stages_p50_ms"],
            regions=new["regions"], peer_regions=prev["regions"],
        ),
        result(
            f"CPU time per frame, {case}", "cpu_s_per_frame", new["cpu_s_per_frame"], "lower",
            peer=peer, peer_value=prev["cpu_s_per_frame"],
        ),
    ]  # fmt: skip


# ---------------------------------------------------------------------------
# whisper


def bench_whisper(repeats: int) -> list[dict]:
    import whisper

    from engram.perception.audio import detect_segments
    from engram.perception.speech.recognizers import RecognizerConfig, make_recognizer

    speech = _speech()
    if speech is None:
        return []
    audio, duration_s = speech
    rec = make_recognizer(RecognizerConfig(model="random", batch_size=8))
    rec.load()
    segments = [s.audio for s in detect_segments(audio) if s.kind == "speech"]
    rec.transcribe(segments[:1])  # warm-up (tokenizer, mel filters)

    best_engram = best_naive = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        segs = [s.audio for s in detect_segments(audio) if s.kind == "speech"]
        rec.transcribe(segs)
        best_engram = min(best_engram, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for seg in segments:
            whisper.transcribe(
                rec.model,
                seg,
                temperature=0.0,
                condition_on_previous_text=False,
                language="en",
                fp16=rec.device.startswith("cuda"),
                verbose=None,
            )
        best_naive = min(best_naive, time.perf_counter() - t0)
    return [
        result(
            f"whisper tiny random dims, {len(segments)} VAD segments of {duration_s:.1f} s "
            f"speech, {rec.device}",
            "real_time_factor",
            best_engram / duration_s,
            "lower",
            peer="whisper.transcribe per segment (temperature 0)",
            peer_value=best_naive / duration_s,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under a minute)")
    parser.add_argument(
        "--only", choices=["every-frame"], help="run only the every-frame throughput cases"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    import logging

    logging.disable(logging.WARNING)  # random-weight warnings are expected here
    results: list[dict] = []
    moving, real = list(STREAMS)
    if args.only == "every-frame":
        n = 30 if quick else 90
        results += bench_every_frame("engram-vit-small", real, n)
        results += bench_every_frame("engram-vit-small", moving, n)
    elif quick:
        results += bench_encoder("ViT-B-32", [1, 4], min_images=4, rounds=1)
        results += bench_encoder("engram-vit-small", [1, 16], min_images=16, rounds=2)
        results += bench_latency("engram-vit-small", moving, seconds=2.0)
        results += bench_every_frame("engram-vit-small", real, 15, rounds=1)
        results += bench_whisper(repeats=2)
    else:
        results += bench_encoder("ViT-B-32", [1, 4, 8, 16, 32], min_images=32, rounds=2)
        results += bench_encoder("engram-vit-small", [1, 4, 8, 16, 32, 64], min_images=64, rounds=3)
        results += bench_latency("engram-vit-small", moving, seconds=10.0)
        results += bench_latency("engram-vit-small", real, seconds=10.0)
        results += bench_every_frame("engram-vit-small", real, 90)
        results += bench_every_frame("engram-vit-small", moving, 90)
        results += bench_whisper(repeats=3)
    # This machine may be shared: the load average says how much of it the figures had.
    emit("perception", results, load_avg_1m=round(os.getloadavg()[0], 2), quick=quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
