"""Recording size: ``engram record``'s Foxglove layout vs the legacy codec-blob layout.

Two sources of distinct 640x480 RGB-D frames: the real RGB-D sample of tests/data
(five real frames, each shown at a slowly growing zoom so that every frame differs, as a
moving camera's do) and MuJoCo renders of the cups scene (flat-shaded, so they compress
far better). Each is recorded both ways in the same run; sizes are per 8 s at 30 fps (the
issue measured 285 MB before). Distinct frames matter: repeating a frame would let chunk
compression find the repeat and flatter either side. Prints one
JSON object in the shape of bench/README.md. ``--quick``: fewer frames.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, result  # noqa: E402

from engram.runtime.command import HelpFormatter  # noqa: E402


def render_frames(n: int) -> list:
    """n distinct 640x480 RGB-D frames of the cups scene from a moving viewpoint."""
    from engram.runtime.messages import Frame
    from engram.sim.tasks.spec import make_env

    env = make_env("cups", width_px=640, height_px=480)
    env.reset(seed=0)
    frames = []
    for i in range(n):
        env.step(env.action_space.sample() * 0.5)
        r = env.render_frame()
        frames.append(
            Frame(
                stamp_ns=i * 33_333_333,
                seq=i + 1,
                camera=r.camera,
                rgb=r.rgb,
                depth=r.depth,
                segmentation=r.segmentation,
                intrinsics=r.intrinsics,
                world_from_camera=r.world_from_camera,
                labels=r.labels,
            )
        )
    env.close()
    return frames


def real_frames(n: int) -> list:
    """n distinct frames from the real RGB-D sample (zoom 1.0 -> 1.0 + 0.004 n, centre crop)."""
    import cv2

    from engram.runtime.messages import Frame

    root = Path(__file__).resolve().parents[1] / "tests" / "data" / "rgbd-sample"
    colors = sorted((root / "color").glob("*.jpg"))
    depths = sorted((root / "depth").glob("*.png"))
    k = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    frames = []
    for i in range(n):
        rgb = cv2.cvtColor(cv2.imread(str(colors[i % len(colors)])), cv2.COLOR_BGR2RGB)
        depth = cv2.imread(str(depths[i % len(depths)]), cv2.IMREAD_UNCHANGED)
        zoom = 1.0 + 0.004 * i
        size = (round(640 * zoom), round(480 * zoom))
        y0, x0 = (size[1] - 480) // 2, (size[0] - 640) // 2
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)[y0 : y0 + 480, x0 : x0 + 640]
        depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)[
            y0 : y0 + 480, x0 : x0 + 640
        ]
        frames.append(
            Frame(
                stamp_ns=i * 33_333_333,
                seq=i + 1,
                rgb=np.ascontiguousarray(rgb),
                depth=(depth.astype(np.float32) / 1000.0),
                intrinsics=k,
            )
        )
    return frames


def legacy_write(path: Path, frames: list) -> None:
    """The layout engram record wrote before: one codec blob per message, lz4 chunks."""
    from mcap.writer import CompressionType, Writer

    from engram.runtime.codec import pack
    from engram.runtime.recorder import schema_description

    with open(path, "wb") as f:
        w = Writer(f, compression=CompressionType.LZ4)
        w.start(profile="", library="engram")
        schema = w.register_schema("Frame", "engram-codec", schema_description("Frame"))
        ch = w.register_channel("/camera/frames", "engram", schema, {"engram_type": "Frame"})
        for m in frames:
            w.add_message(ch, m.stamp_ns, pack(m), m.stamp_ns, m.seq)
        w.finish()


def new_write(path: Path, frames: list, image_format: str) -> float:
    from engram.runtime.bus import InProcBus
    from engram.runtime.recorder import Recorder

    bus = InProcBus("bench-recording")
    t0 = time.perf_counter()
    rec = Recorder(bus, ["/camera/frames"], path, image_format=image_format)
    with rec:
        for m in frames:
            rec.write("/camera/frames", m, log_time_ns=m.stamp_ns)
    bus.close()
    return (time.perf_counter() - t0) / len(frames) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 frames instead of 60")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    n = 20 if args.quick else 60
    per_8s = 8 * 30 / n
    results = []
    real = real_frames(n)
    colour_only = [f.replace(depth=None) for f in real]
    sources = (
        ("real RGB-D", real),
        ("real RGB only", colour_only),
        ("MuJoCo render", render_frames(n)),
    )
    for source, frames in sources:
        results += measure(source, frames, per_8s)
    with tempfile.TemporaryDirectory() as tmp:
        old_rrd, new_rrd = rrd_sizes(real, Path(tmp))
    results.append(
        result(
            "real RGB: 2 min of 640x480 at 30 fps in a Rerun .rrd (frames only)",
            "size_mb",
            new_rrd * 120 * 30 / n / 1e6,
            "lower",
            peer="rr.Image (raw), as before",
            peer_value=old_rrd * 120 * 30 / n / 1e6,
            frames_measured=n,
        )
    )
    emit("recording", results)
    return 0


def rrd_sizes(frames: list, tmp: Path) -> tuple[int, int]:
    """Bytes of a .rrd of the frames: raw ``Image`` as before, then ``RerunLogger`` now."""
    import rerun as rr

    from engram.runtime.bridges.rerun import RerunLogger

    old = tmp / "old.rrd"
    rec = rr.RecordingStream("bench-old")
    rec.save(str(old))
    for f in frames:
        rec.set_time("capture", timestamp=np.datetime64(int(f.stamp_ns), "ns"))
        rec.log("world/camera/camera/image", rr.Image(f.rgb))
    rec.flush()
    rec.disconnect()
    new = tmp / "new.rrd"
    with RerunLogger(save_path=new) as logger:
        for f in frames:
            logger.log_frame(f, log_depth=False)
    return old.stat().st_size, new.stat().st_size


def measure(source: str, frames: list, per_8s: float) -> list:
    results = []
    n = len(frames)
    with tempfile.TemporaryDirectory() as tmp:
        legacy = Path(tmp) / "legacy.mcap"
        legacy_write(legacy, frames)
        legacy_mb = legacy.stat().st_size * per_8s / 1e6
        for image_format in ("jpeg", "png", "raw") if source != "real RGB only" else ("jpeg",):
            path = Path(tmp) / f"{image_format}.mcap"
            ms = new_write(path, frames, image_format)
            mb = path.stat().st_size * per_8s / 1e6
            results.append(
                result(
                    f"{source}: 8 s of 640x480 frames at 30 fps, image format {image_format}",
                    "size_mb",
                    mb,
                    "lower",
                    peer="legacy engram-codec blobs, lz4",
                    peer_value=legacy_mb,
                    write_ms_per_frame=round(ms, 2),
                    frames_measured=n,
                )
            )
    return results


if __name__ == "__main__":
    raise SystemExit(main())
