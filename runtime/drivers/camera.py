"""Cameras: the ``Camera`` base, ``OpenCVCamera`` and the ``CameraSource`` node.

``CameraSource`` (node type ``camera``) publishes ``Frame`` on ``/frames`` from a
``Camera``; by default an ``OpenCVCamera`` for its ``device``:

- a device index (``"0"``): ``cv2.VideoCapture(0)``; stamps are the wall clock at
  capture; the device sets the pace (``rate_hz`` caps it);
- a video file (``"clip.avi"``): decoded and published in real time at the file's
  frame rate (``rate_hz`` subsamples); frame i is stamped ``t0 + i / fps`` on the
  wall clock, ``t0`` being when streaming started (the file's own clock);
  ``loop`` starts it over, stamps keep increasing;
- a URL (``rtsp://...``, ``http://...``): like a device; a broken stream is reopened.

Frames are RGB (H, W, 3) uint8 (OpenCV's BGR converted), with pinhole intrinsics
from ``hfov_deg`` and a fixed ``world_from_camera``: ``camera_height_m`` above the
world origin, looking along world +x, level (a handheld webcam has no pose).

A camera that cannot be opened raises ``SourceError`` from ``configure()`` with a
message that lists what is available (``list_cameras()``). cv2 is imported only when
a camera opens.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engram.runtime.drivers.base import RateMeter, SourceError
from engram.runtime.messages import Frame
from engram.runtime.node import Node, NodeConfig, Output

__all__ = [
    "Camera",
    "CameraSource",
    "CameraSourceConfig",
    "OpenCVCamera",
    "camera_kind",
    "intrinsics_from_hfov",
    "list_cameras",
]

log = logging.getLogger(__name__)

_URL_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "file://")


def camera_kind(device: str | int) -> str:
    """``"index"``, ``"url"`` or ``"file"`` for a ``--camera`` value."""
    text = str(device).strip()
    if text.isdigit():
        return "index"
    if text.lower().startswith(_URL_PREFIXES):
        return "url"
    return "file"


def intrinsics_from_hfov(width_px: int, height_px: int, hfov_deg: float) -> np.ndarray:
    """(3, 3) pinhole K with square pixels for a horizontal field of view, centred."""
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    f = (width_px / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width_px - 1) / 2.0], [0.0, f, (height_px - 1) / 2.0], [0, 0, 1.0]])


def _level_camera_pose(height_m: float) -> np.ndarray:
    """(4, 4) world_from_camera: OpenCV camera (x right, y down, z forward) looking along
    world +x in a z-up world, ``height_m`` above the origin."""
    pose = np.eye(4)
    pose[:3, 0] = (0.0, -1.0, 0.0)  # camera x (right) -> world -y
    pose[:3, 1] = (0.0, 0.0, -1.0)  # camera y (down) -> world -z
    pose[:3, 2] = (1.0, 0.0, 0.0)  # camera z (forward) -> world +x
    pose[2, 3] = height_m
    return pose


def _quiet_cv2() -> Any:
    """Import cv2 with its capture warnings silenced (probing prints many)."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the logging module
        pass
    return cv2


def list_cameras(*, max_index: int = 8) -> list[dict[str, Any]]:
    """Cameras OpenCV can open: ``[{"index": i, "width_px": w, "height_px": h}, ...]``.

    On Linux only the ``/dev/video<i>`` nodes present are tried; elsewhere indices
    0 .. max_index - 1.
    """
    cv2 = _quiet_cv2()
    if os.path.isdir("/dev") and os.name == "posix" and os.uname().sysname == "Linux":
        indices = sorted(
            int(p.name[5:]) for p in Path("/dev").glob("video*") if p.name[5:].isdigit()
        )
    else:
        indices = list(range(max_index))
    found = []
    for i in indices:
        cap = cv2.VideoCapture(i)
        try:
            if cap.isOpened():
                ok, img = cap.read()
                if ok and img is not None:
                    found.append({"index": i, "width_px": img.shape[1], "height_px": img.shape[0]})
        finally:
            cap.release()
    return found


def _describe_cameras(max_index: int) -> str:
    try:
        cams = list_cameras(max_index=max_index)
    except Exception as exc:  # noqa: BLE001 - the listing is advice, not the error
        return f"Available cameras: unknown (probing failed: {exc})."
    if not cams:
        where = "/dev/video*" if os.name == "posix" else f"indices 0-{max_index - 1}"
        return f"Available cameras: none found (probed {where} with OpenCV)."
    listed = ", ".join(f"{c['index']} ({c['width_px']}x{c['height_px']})" for c in cams)
    return f"Available cameras: {listed}."


# ---------------------------------------------------------------------------
# cameras


class Camera(ABC):
    """A source of images: ``open()``, ``read()`` until it ends, ``close()``.

    ``kind`` is ``"index"`` (a device), ``"url"`` (a stream) or ``"file"`` (a video
    file: played on its own clock at ``fps``, ended when ``read()`` returns None).
    """

    kind: str = "index"

    @abstractmethod
    def open(self) -> None:
        """Open (or reopen) the source; ``SourceError`` saying what is available if it cannot."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next image, BGR (H, W, 3), BGRA or grey uint8; None when no image came
        (a failed read; for a file: its end)."""

    @abstractmethod
    def close(self) -> None:
        """Release the source (safe to call twice)."""

    @property
    def fps(self) -> float:
        """The source's own rate, frames per second; 0 when it does not say."""
        return 0.0


class OpenCVCamera(Camera):
    """``cv2.VideoCapture`` of a device index, a video file or a stream URL."""

    def __init__(self, device: str | int = "0", *, probe_max_index: int = 8) -> None:
        self.device = str(device).strip()
        self.kind = camera_kind(self.device)
        self.probe_max_index = probe_max_index  # indices probed for the error message
        self._cap: Any = None
        self._first: np.ndarray | None = None  # a file's first frame, decoded by open()

    def open(self) -> None:
        self.close()
        cv2, device = _quiet_cv2(), self.device
        if self.kind == "file":
            path = Path(device).expanduser()
            if path.is_dir():
                raise SourceError(
                    f"camera {device!r}: is a directory, not a video or image file "
                    "(give a file such as clip.mp4, a camera index or a stream URL)"
                )
            if not path.is_file():
                raise SourceError(
                    f"camera {device!r}: no such video file, and not a camera index or URL. "
                    + _describe_cameras(self.probe_max_index)
                )
            cap = cv2.VideoCapture(str(path))
            if not cap.isOpened():
                cap.release()
                raise SourceError(
                    f"camera {device!r}: OpenCV cannot decode this video file (unknown "
                    "container or codec; try MJPG .avi or H.264 .mp4)"
                )
            # Decode one frame now: a corrupt or empty file (a damaged JPEG) opens fine
            # and then yields nothing, which looked like a clean run of 0 frames.
            ok, first = cap.read()
            if not ok or first is None:
                cap.release()
                raise SourceError(
                    f"camera {device!r}: no frame could be decoded from this file "
                    "(corrupt, truncated or empty)"
                )
            self._cap, self._first = cap, first
            return
        cap = cv2.VideoCapture(int(device) if self.kind == "index" else device)
        if not cap.isOpened():
            cap.release()
            what = f"video device {device}" if self.kind == "index" else f"stream {device}"
            raise SourceError(
                f"camera {device!r}: cannot open {what}. "
                + _describe_cameras(self.probe_max_index)
                + " Use a video file or URL instead: --camera FILE|URL"
            )
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        if self._first is not None:
            bgr, self._first = self._first, None
            return bgr
        ok, bgr = self._cap.read()
        return bgr if ok and bgr is not None else None

    def close(self) -> None:
        self._first = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    @property
    def fps(self) -> float:
        if self._cap is None:
            return 0.0
        import cv2

        return float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)


# ---------------------------------------------------------------------------
# the node


@dataclass
class CameraSourceConfig(NodeConfig):
    """Settings of ``CameraSource``."""

    device: str = "0"  # camera index ("0"), a video file path, or a stream URL
    camera: str = "camera"  # name written into Frame.camera
    rate_hz: float = 0.0  # publish at most this often; 0 = the source's own rate
    max_width_px: int = 0  # scale wider frames down to this width, px; 0 = as captured
    hfov_deg: float = 60.0  # horizontal field of view, for the intrinsics, degrees
    camera_height_m: float = 1.2  # the fixed pose: this high, looking along world +x
    loop: bool = False  # a file starts over at its end (stamps keep increasing)
    max_frames: int = 0  # stop publishing after this many frames; 0 = no limit
    default_fps: float = 30.0  # a file's rate when it does not say, frames per second
    probe_max_index: int = 8  # camera indices probed for the error message (non-Linux)
    reopen_after_failures: int = 30  # device / URL: consecutive failed reads before reopening


class CameraSource(Node[CameraSourceConfig]):
    """A ``Camera`` -> ``Frame`` on ``/frames``; see the module docstring.

    ``camera`` replaces the default ``OpenCVCamera(config.device)``."""

    OUTPUTS = {"frames": Output("Frame")}
    Config = CameraSourceConfig

    def __init__(
        self,
        config: CameraSourceConfig | dict | None = None,
        *,
        camera: Camera | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        for name in ("rate_hz", "max_width_px", "max_frames", "camera_height_m"):
            if getattr(cfg, name) < 0:
                raise ValueError(
                    f"CameraSourceConfig.{name} must be >= 0, got {getattr(cfg, name)}"
                )
        if not 0.0 < cfg.hfov_deg < 180.0:
            raise ValueError(f"CameraSourceConfig.hfov_deg must be in (0, 180), got {cfg.hfov_deg}")
        self.camera = camera or OpenCVCamera(cfg.device, probe_max_index=cfg.probe_max_index)
        self.kind = self.camera.kind
        self.fps = 0.0  # the source's own rate (file: from its header)
        self.size_px: tuple[int, int] = (0, 0)  # (width, height) published
        self.frames_sent = 0
        self.finished = threading.Event()  # set when a file ended or max_frames were sent
        self._opened = False
        self._cv2: Any = None
        self._thread: threading.Thread | None = None
        self._rate = RateMeter()
        self._intrinsics: np.ndarray | None = None
        self._pose = _level_camera_pose(cfg.camera_height_m)
        for name in ("frames_read", "frames_skipped", "read_errors", "reopens", "loops"):
            self.counters[name] = 0

    # ---- lifecycle --------------------------------------------------------------------
    def on_configure(self) -> None:
        self._cv2 = _quiet_cv2()
        self.camera.open()
        self._opened = True
        fps = self.camera.fps
        self.fps = fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else self.config.default_fps

    def on_start(self) -> None:
        self.finished.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}:capture", daemon=True)
        self._thread.start()

    def on_stop(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.camera.close()
        self._opened = False

    def health(self) -> dict[str, Any]:
        return {
            "info": {
                "source": str(self.config.device),
                "kind": self.kind,
                "fps": round(self._rate.hz, 2),
                "source_fps": round(self.fps, 2),
                "width_px": self.size_px[0],
                "height_px": self.size_px[1],
                "finished": self.finished.is_set(),
            },
            "counters": {"frames_sent": self.frames_sent},
        }

    # ---- capture loop -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.kind == "file":
                self._run_file()
            else:
                self._run_live()
        except Exception:  # noqa: BLE001 - logged; the node's heartbeat shows it stopped
            self.count("read_errors")
            log.exception("camera %s: capture loop failed", self.config.device)
        finally:
            self.finished.set()

    def _limit_reached(self) -> bool:
        cfg = self.config
        return bool(cfg.max_frames) and self.frames_sent >= cfg.max_frames

    def _run_file(self) -> None:
        """Real-time playback on the file's clock: frame i is due at t0 + i / fps."""
        cfg = self.config
        period = 1.0 / self.fps
        step = 1.0 / cfg.rate_hz if cfg.rate_hz else 0.0
        t0_mono, t0_ns = time.monotonic(), time.time_ns()
        offset_s = 0.0  # media time where the current pass of the file starts
        index = 0  # frame index within the current pass
        next_pub_s = 0.0
        while self.running and not self._limit_reached():
            bgr = self.camera.read()
            if bgr is None:
                if not cfg.loop or index == 0:
                    return
                self.count("loops")
                offset_s += index * period
                index = 0
                self.camera.open()  # reopen rather than seek: works for every codec
                continue
            self.count("frames_read")
            media_s = offset_s + index * period
            index += 1
            if step and media_s + 1e-9 < next_pub_s:
                self.count("frames_skipped")
                continue
            next_pub_s = (next_pub_s + step) if step else media_s
            delay = t0_mono + media_s - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            self._publish(bgr, t0_ns + round(media_s * 1e9))

    def _run_live(self) -> None:
        cfg = self.config
        step = 1.0 / cfg.rate_hz if cfg.rate_hz else 0.0
        last_pub = -math.inf
        failures = 0
        while self.running and not self._limit_reached():
            bgr = self.camera.read() if self._opened else None
            stamp_ns = time.time_ns()
            if bgr is None:
                self.count("read_errors")
                failures += 1
                if failures >= cfg.reopen_after_failures:
                    failures = 0
                    self._reopen()
                if self._stop.wait(0.05):
                    return
                continue
            failures = 0
            self.count("frames_read")
            now = time.monotonic()
            if step and now - last_pub < step:
                self.count("frames_skipped")
                continue
            last_pub = now
            self._publish(bgr, stamp_ns)

    def _reopen(self) -> None:
        log.warning("camera %s: no frames, reopening", self.config.device)
        self.count("reopens")
        try:
            self.camera.open()
            self._opened = True
        except SourceError as exc:
            log.warning("%s", exc)
            self._opened = False
            self._stop.wait(2.0)

    def _publish(self, bgr: np.ndarray, stamp_ns: int) -> None:
        cv2, cfg = self._cv2, self.config
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        elif bgr.shape[2] == 4:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_BGRA2BGR)
        if cfg.max_width_px and bgr.shape[1] > cfg.max_width_px:
            h = max(1, round(bgr.shape[0] * cfg.max_width_px / bgr.shape[1]))
            bgr = cv2.resize(bgr, (cfg.max_width_px, h), interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        if self._intrinsics is None or self.size_px != (w, h):
            self._intrinsics = intrinsics_from_hfov(w, h, cfg.hfov_deg)
            self.size_px = (w, h)
        self.publish(
            "frames",
            Frame(
                stamp_ns=stamp_ns,
                camera=cfg.camera,
                rgb=rgb,
                intrinsics=self._intrinsics,
                world_from_camera=self._pose,
            ),
        )
        self.frames_sent += 1
        self._rate.tick()
        if self._limit_reached():
            self.finished.set()
