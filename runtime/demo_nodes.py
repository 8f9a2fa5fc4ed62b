"""Demo nodes for the synthetic graph (``launch/demo.yaml``, ``engram demo --synthetic``).

- ``SyntheticCamera`` publishes ``Frame``s at ``rate_hz``: a moving colour pattern
  (H, W, 3) uint8, a depth image (H, W) float32 metres (a tilted plane with a
  moving bump), pinhole intrinsics and a ``world_from_camera`` pose orbiting the
  origin and looking at it. Sequence numbers count from 1 per (re)start.
- ``FrameStats`` counts the frames it receives, the gaps in their sequence
  numbers and their age on arrival (now - ``stamp_ns``); it publishes nothing
  and reports through its heartbeat (counters ``frames``, ``seq_gaps``,
  ``seq_resets``; latency_ms ``p50``, ``p95``, ``max``).

Both are registered (``engram.runtime.registry``, kind ``node``) as ``synthetic_camera`` and
``frame_stats``.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.runtime.messages import Frame
from engram.runtime.node import Input, Node, NodeConfig, Output

__all__ = ["FrameStats", "FrameStatsConfig", "SyntheticCamera", "SyntheticCameraConfig"]


@dataclass
class SyntheticCameraConfig(NodeConfig):
    """Settings of ``SyntheticCamera``."""

    rate_hz: float = 15.0  # frames published per second
    width_px: int = 320  # image width W
    height_px: int = 240  # image height H
    camera: str = "synthetic"  # camera name written into each Frame
    with_depth: bool = True  # also publish a (H, W) float32 depth image in metres
    max_frames: int = 0  # stop by itself after this many frames; 0 = until stopped
    orbit_radius_m: float = 1.5  # the camera circles the origin at this distance
    orbit_height_m: float = 0.5  # height of the camera above the ground plane
    orbit_period_s: float = 20.0  # seconds per full circle
    wait_for_subscriber_s: float = 0.0  # before the first frame, wait up to this long for a
    # subscriber to connect (ZeroMQ buses; a PUB/SUB late joiner would miss the first frames)


class SyntheticCamera(Node[SyntheticCameraConfig]):
    """A camera without hardware: moving pattern, depth and an orbiting pose."""

    OUTPUTS = {"frames": Output("Frame")}
    Config = SyntheticCameraConfig

    def __init__(self, config: SyntheticCameraConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        if cfg.rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {cfg.rate_hz}")
        if cfg.width_px < 1 or cfg.height_px < 1:
            raise ValueError(f"width_px/height_px must be >= 1, got {cfg.width_px}x{cfg.height_px}")
        if cfg.max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {cfg.max_frames}")
        self.frames_sent = 0  # frames published by this instance

    def on_configure(self) -> None:
        cfg = self.config
        h, w = cfg.height_px, cfg.width_px
        self._ys, self._xs = np.mgrid[0:h, 0:w].astype(np.int32)
        f = 0.8 * w
        self._intrinsics = np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])
        # Depth: a plane tilting away towards the top of the image, 1.5..3 m.
        self._depth_base = (1.5 + 1.5 * (1.0 - self._ys / max(h - 1, 1))).astype(np.float32)
        self.add_timer(cfg.rate_hz, self._tick)

    def make_frame(self, index: int) -> Frame:
        """Frame number ``index`` (0-based) of the synthetic sequence."""
        cfg = self.config
        t = index / cfg.rate_hz
        shift = int(index * 4)
        # built straight in the bus's shared memory where it has some (no copy to publish)
        shape = (cfg.height_px, cfg.width_px)
        specs = [((*shape, 3), np.uint8)] + ([(shape, np.float32)] if cfg.with_depth else [])
        arrays = self.loan("frames", *specs)
        rgb = arrays[0]
        rgb[..., 0] = (self._xs + shift) & 0xFF
        rgb[..., 1] = (self._ys + shift // 2) & 0xFF
        square = ((self._xs + shift) // 32 + self._ys // 32) & 1
        rgb[..., 2] = square.astype(np.uint8) * 200
        depth = None
        if cfg.with_depth:
            cx = (cfg.width_px / 2) * (1 + 0.5 * math.sin(t))
            cy = cfg.height_px / 2
            r2 = ((self._xs - cx) ** 2 + (self._ys - cy) ** 2).astype(np.float32)
            bump = 0.5 * np.exp(-r2 / (2 * (0.1 * cfg.width_px) ** 2), dtype=np.float32)
            depth = np.subtract(self._depth_base, bump, out=arrays[1])
        return Frame(
            stamp_ns=time.time_ns(),
            seq=index + 1,
            camera=cfg.camera,
            rgb=rgb,
            depth=depth,
            intrinsics=self._intrinsics,
            world_from_camera=self._pose(t),
        )

    def _pose(self, t: float) -> np.ndarray:
        """(4, 4) world_from_camera on the orbit, OpenCV axes, looking at the origin."""
        cfg = self.config
        angle = 2 * math.pi * t / cfg.orbit_period_s
        position = np.array(
            [cfg.orbit_radius_m * math.cos(angle), cfg.orbit_radius_m * math.sin(angle), 0.0]
        )
        position[2] = cfg.orbit_height_m
        forward = -position.copy()
        forward[2] = 0.0
        norm = np.linalg.norm(forward)
        forward = forward / norm if norm > 1e-9 else np.array([1.0, 0.0, 0.0])
        down = np.array([0.0, 0.0, -1.0])
        right = np.cross(down, forward)
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, position
        return pose

    def _tick(self) -> None:
        cfg = self.config
        if cfg.max_frames and self.frames_sent >= cfg.max_frames:
            return
        if self.frames_sent == 0 and cfg.wait_for_subscriber_s > 0:
            wait = getattr(self.bus, "wait_for_subscribers", None)
            if wait is not None:
                wait(self.topic("frames"), 1, timeout_s=cfg.wait_for_subscriber_s)
        self.publish("frames", self.make_frame(self.frames_sent))
        self.frames_sent += 1
        if cfg.max_frames and self.frames_sent >= cfg.max_frames:
            # Done: stop from a helper thread (stop() joins this timer thread).
            threading.Thread(target=self.stop, name=f"{self.name}:done", daemon=True).start()

    def health(self) -> dict[str, Any]:
        return {"counters": {"frames": self.frames_sent}}


@dataclass
class FrameStatsConfig(NodeConfig):
    """Settings of ``FrameStats``."""

    latency_window: int = 1000  # latency percentiles over the last N frames


class FrameStats(Node[FrameStatsConfig]):
    """Counts received frames, sequence gaps and arrival latency; publishes nothing."""

    INPUTS = {"frames": Input("Frame", policy="queue(16)")}
    Config = FrameStatsConfig

    def __init__(self, config: FrameStatsConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if self.config.latency_window < 1:
            raise ValueError(f"latency_window must be >= 1, got {self.config.latency_window}")
        self.frames = 0
        self.seq_gaps = 0
        self.seq_resets = 0
        self.last_shape: tuple[int, ...] = ()
        self._last_seq: dict[str, int] = {}
        self._latency_ms: collections.deque[float] = collections.deque(
            maxlen=self.config.latency_window
        )

    def on_frames(self, frame: Frame) -> None:
        latency_ms = (time.time_ns() - frame.stamp_ns) / 1e6
        with self._lock:
            self.frames += 1
            self._latency_ms.append(latency_ms)
            self.last_shape = tuple(frame.rgb.shape)
            last = self._last_seq.get(frame.camera)
            if last is not None:
                if frame.seq > last + 1:
                    self.seq_gaps += frame.seq - last - 1
                elif frame.seq <= last:
                    self.seq_resets += 1  # the producer restarted
            self._last_seq[frame.camera] = frame.seq

    def latency_percentiles_ms(self) -> dict[str, float]:
        with self._lock:
            values = np.array(self._latency_ms, dtype=np.float64)
        if values.size == 0:
            return {}
        return {
            "p50": float(np.percentile(values, 50)),
            "p95": float(np.percentile(values, 95)),
            "max": float(values.max()),
        }

    def health(self) -> dict[str, Any]:
        with self._lock:
            counters = {
                "frames": self.frames,
                "seq_gaps": self.seq_gaps,
                "seq_resets": self.seq_resets,
            }
            info = {"cameras": sorted(self._last_seq), "last_shape": list(self.last_shape)}
        return {"counters": counters, "latency_ms": self.latency_percentiles_ms(), "info": info}
