"""Live sources: a camera (OpenCV) and a microphone (sounddevice / PortAudio).

``CameraSource`` (node type ``camera``) publishes ``Frame`` on ``/frames`` from

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

``MicrophoneSource`` (node type ``microphone``) publishes mono ``AudioChunk`` at
16 kHz on ``/audio`` from

- ``"default"`` or a device index / name: a sounddevice ``InputStream``; the audio
  callback hands blocks to a bounded queue (``queue_chunks``; when full the oldest
  is dropped and counted), a thread publishes them. A device that cannot record at
  16 kHz is opened at its own rate and resampled;
- a WAV (or FLAC / OGG) file: read with soundfile, mixed to mono, resampled to
  16 kHz, published in ``chunk_ms`` chunks in real time; chunk k is stamped
  ``t0 + k * chunk samples / 16 kHz`` (no gaps, no overlaps).

A source that cannot be opened raises ``SourceError`` from ``configure()`` with a
message that lists what is available (``list_cameras()``, ``list_microphones()``);
on machines without audio devices it says so. cv2, sounddevice, soundfile and
scipy are imported only when a source opens.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engram.runtime.messages import AudioChunk, Frame
from engram.runtime.node import Node, NodeConfig, Output

__all__ = [
    "AUDIO_RATE_HZ",
    "CameraSource",
    "CameraSourceConfig",
    "MicrophoneSource",
    "MicrophoneSourceConfig",
    "SourceError",
    "camera_kind",
    "intrinsics_from_hfov",
    "list_cameras",
    "list_microphones",
    "microphone_kind",
]

log = logging.getLogger(__name__)

AUDIO_RATE_HZ = 16000  # rate of every published AudioChunk
_URL_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "file://")
_AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".aiff", ".aif")


class SourceError(RuntimeError):
    """A camera or microphone cannot be opened; the message lists what is available."""


# ---------------------------------------------------------------------------
# helpers


def camera_kind(device: str | int) -> str:
    """``"index"``, ``"url"`` or ``"file"`` for a ``--camera`` value."""
    text = str(device).strip()
    if text.isdigit():
        return "index"
    if text.lower().startswith(_URL_PREFIXES):
        return "url"
    return "file"


def microphone_kind(device: str | int) -> str:
    """``"file"`` for an audio file path, else ``"device"`` (default, index or name)."""
    text = str(device).strip()
    if text.lower().endswith(_AUDIO_SUFFIXES) or (
        text not in ("", "default") and os.path.isfile(text)
    ):
        return "file"
    return "device"


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


def list_microphones() -> list[dict[str, Any]]:
    """Input devices PortAudio knows: ``[{"index", "name", "channels", "sample_rate_hz",
    "default"}, ...]``. Raises ``SourceError`` when PortAudio itself is missing."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
    except Exception as exc:  # noqa: BLE001 - PortAudio errors are plain exceptions
        raise SourceError(f"cannot list audio devices: {exc}") from None
    try:
        default_in = int(sd.default.device[0])
    except Exception:  # noqa: BLE001 - no default device
        default_in = -1
    out = []
    for i, dev in enumerate(devices):
        if int(dev.get("max_input_channels", 0)) > 0:
            out.append(
                {
                    "index": i,
                    "name": str(dev.get("name", "")),
                    "channels": int(dev["max_input_channels"]),
                    "sample_rate_hz": int(dev.get("default_samplerate", 0)),
                    "default": i == default_in,
                }
            )
    return out


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as exc:  # the PortAudio shared library is missing
        raise SourceError(
            f"microphone input needs PortAudio, which is not installed ({exc}); install it "
            "(Debian/Ubuntu: apt-get install libportaudio2) or use a WAV file: --mic FILE.wav"
        ) from None
    except ImportError as exc:
        raise SourceError(
            f"microphone input needs the sounddevice package ({exc}); pip install sounddevice, "
            "or use a WAV file: --mic FILE.wav"
        ) from None
    return sd


def _describe_microphones(*, hint: bool = True) -> str:
    try:
        mics = list_microphones()
    except SourceError as exc:
        return str(exc)
    if not mics:
        return (
            "No audio input devices found (sounddevice/PortAudio lists none on this machine)."
            + (" Use a WAV file instead: --mic FILE.wav" if hint else "")
        )
    listed = "; ".join(
        f"{m['index']}: {m['name']} ({m['channels']} ch, {m['sample_rate_hz']} Hz)"
        + (" [default]" if m["default"] else "")
        for m in mics
    )
    return f"Available input devices: {listed}."


def _resample(x: np.ndarray, rate_hz: int, target_hz: int = AUDIO_RATE_HZ) -> np.ndarray:
    """(N,) float32 at rate_hz -> (M,) float32 at target_hz (polyphase)."""
    if rate_hz == target_hz or len(x) == 0:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate_hz), int(target_hz))
    return resample_poly(x, target_hz // g, int(rate_hz) // g).astype(np.float32)


class _Rate:
    """Frames per second over a sliding window of publish times."""

    def __init__(self, window: int = 30) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=window)

    def tick(self) -> None:
        self._times.append(time.monotonic())

    @property
    def hz(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        if time.monotonic() - self._times[-1] > 2.0 or span <= 0:
            return 0.0
        return (len(self._times) - 1) / span


# ---------------------------------------------------------------------------
# camera


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


class CameraSource(Node):
    """OpenCV capture -> ``Frame`` on ``/frames``; see the module docstring."""

    OUTPUTS = {"frames": Output("Frame")}
    Config = CameraSourceConfig

    def __init__(self, config: CameraSourceConfig | dict | None = None, **kwargs: Any) -> None:
        if isinstance(config, dict):
            config = CameraSourceConfig(**config)
        super().__init__(config, **kwargs)
        cfg: CameraSourceConfig = self.config
        for name in ("rate_hz", "max_width_px", "max_frames", "camera_height_m"):
            if getattr(cfg, name) < 0:
                raise ValueError(
                    f"CameraSourceConfig.{name} must be >= 0, got {getattr(cfg, name)}"
                )
        if not 0.0 < cfg.hfov_deg < 180.0:
            raise ValueError(f"CameraSourceConfig.hfov_deg must be in (0, 180), got {cfg.hfov_deg}")
        self.kind = camera_kind(cfg.device)
        self.fps = 0.0  # the source's own rate (file: from its header)
        self.size_px: tuple[int, int] = (0, 0)  # (width, height) published
        self.frames_sent = 0
        self.finished = threading.Event()  # set when a file ended or max_frames were sent
        self._cap: Any = None
        self._cv2: Any = None
        self._thread: threading.Thread | None = None
        self._rate = _Rate()
        self._intrinsics: np.ndarray | None = None
        self._pose = _level_camera_pose(cfg.camera_height_m)
        for name in ("frames_read", "frames_skipped", "read_errors", "reopens", "loops"):
            self.counters[name] = 0

    # ---- lifecycle --------------------------------------------------------------------
    def on_configure(self) -> None:
        self._cv2 = _quiet_cv2()
        self._cap = self._open()
        fps = float(self._cap.get(self._cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0.0 < fps < 1000.0 else self.config.default_fps

    def _open(self) -> Any:
        cv2, cfg = self._cv2, self.config
        device = str(cfg.device).strip()
        if self.kind == "file":
            path = Path(device).expanduser()
            if not path.is_file():
                raise SourceError(
                    f"camera {device!r}: no such video file, and not a camera index or URL. "
                    + _describe_cameras(cfg.probe_max_index)
                )
            cap = cv2.VideoCapture(str(path))
            if not cap.isOpened():
                cap.release()
                raise SourceError(
                    f"camera {device!r}: OpenCV cannot decode this video file (unknown "
                    "container or codec; try MJPG .avi or H.264 .mp4)"
                )
            return cap
        cap = cv2.VideoCapture(int(device) if self.kind == "index" else device)
        if not cap.isOpened():
            cap.release()
            what = f"video device {device}" if self.kind == "index" else f"stream {device}"
            raise SourceError(
                f"camera {device!r}: cannot open {what}. "
                + _describe_cameras(cfg.probe_max_index)
                + " Use a video file or URL instead: --camera FILE|URL"
            )
        return cap

    def on_start(self) -> None:
        self.finished.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}:capture", daemon=True)
        self._thread.start()

    def on_stop(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

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
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                if not cfg.loop or index == 0:
                    return
                self.count("loops")
                offset_s += index * period
                index = 0
                self._cap.release()  # reopen rather than seek: works for every codec
                self._cap = self._open()
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
            ok, bgr = self._cap.read() if self._cap is not None else (False, None)
            stamp_ns = time.time_ns()
            if not ok or bgr is None:
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
            if self._cap is not None:
                self._cap.release()
            self._cap = self._open()
        except SourceError as exc:
            log.warning("%s", exc)
            self._cap = None
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


# ---------------------------------------------------------------------------
# microphone


@dataclass
class MicrophoneSourceConfig(NodeConfig):
    """Settings of ``MicrophoneSource`` (output: mono, 16 kHz)."""

    device: str = "default"  # "default", a device index or name, or an audio file path
    source: str = "mic"  # name written into AudioChunk.source
    chunk_ms: float = 100.0  # duration of each published chunk, milliseconds
    loop: bool = False  # a file starts over at its end (stamps keep increasing)
    queue_chunks: int = 50  # device: chunks held between the audio callback and the
    # publisher; when full the oldest is dropped (counted in chunks_dropped)


class MicrophoneSource(Node):
    """Microphone or audio file -> ``AudioChunk`` on ``/audio``; see the module docstring."""

    OUTPUTS = {"audio": Output("AudioChunk")}
    Config = MicrophoneSourceConfig

    def __init__(self, config: MicrophoneSourceConfig | dict | None = None, **kwargs: Any) -> None:
        if isinstance(config, dict):
            config = MicrophoneSourceConfig(**config)
        super().__init__(config, **kwargs)
        cfg: MicrophoneSourceConfig = self.config
        if not cfg.chunk_ms > 0:
            raise ValueError(f"MicrophoneSourceConfig.chunk_ms must be > 0, got {cfg.chunk_ms}")
        if cfg.queue_chunks < 1:
            raise ValueError(
                f"MicrophoneSourceConfig.queue_chunks must be >= 1, got {cfg.queue_chunks}"
            )
        self.kind = microphone_kind(cfg.device)
        self.chunk_samples = max(1, round(cfg.chunk_ms * AUDIO_RATE_HZ / 1000.0))
        self.device_rate_hz = AUDIO_RATE_HZ  # the rate the device records at
        self.device_name = ""
        self.samples_sent = 0
        self.chunks_sent = 0
        self.finished = threading.Event()  # set when a file ended
        self._audio: np.ndarray | None = None  # file: (N,) float32 16 kHz
        self._stream: Any = None
        self._queue: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._rate = _Rate()
        for name in ("chunks_dropped", "overflows"):
            self.counters[name] = 0

    # ---- lifecycle --------------------------------------------------------------------
    def on_configure(self) -> None:
        if self.kind == "file":
            self._audio = self._read_file(Path(str(self.config.device)).expanduser())
            self.device_name = str(self.config.device)
        else:
            self._stream = self._open_device()

    def _read_file(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise SourceError(
                f"microphone {str(path)!r}: no such audio file. "
                + _describe_microphones(hint=False)
            )
        import soundfile as sf

        try:
            x, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001 - libsndfile reports plain errors
            raise SourceError(f"microphone {str(path)!r}: cannot read audio file ({exc})") from None
        if len(x) == 0:
            raise SourceError(f"microphone {str(path)!r}: the audio file has no samples")
        self.device_rate_hz = int(rate)
        return _resample(x.mean(axis=1), int(rate))

    def _open_device(self) -> Any:
        sd = _sounddevice()
        device: Any = str(self.config.device).strip()
        device = (
            None if device in ("", "default") else (int(device) if device.isdigit() else device)
        )
        label = "default" if device is None else repr(self.config.device)
        mics = list_microphones()
        if not mics:
            raise SourceError(f"microphone {label}: cannot open. " + _describe_microphones())
        try:
            info = sd.query_devices(device, "input")
        except Exception as exc:  # noqa: BLE001 - ValueError / PortAudioError
            raise SourceError(
                f"microphone {label}: no such input device ({exc}). " + _describe_microphones()
            ) from None
        self.device_name = str(info.get("name", label))
        rate = AUDIO_RATE_HZ
        try:
            sd.check_input_settings(device=device, samplerate=rate, channels=1, dtype="float32")
        except Exception:  # noqa: BLE001 - the device does not do 16 kHz: resample
            rate = int(info.get("default_samplerate", AUDIO_RATE_HZ))
        self.device_rate_hz = rate
        blocksize = max(1, round(self.config.chunk_ms * rate / 1000.0))
        try:
            return sd.InputStream(
                device=device,
                samplerate=rate,
                channels=1,
                dtype="float32",
                blocksize=blocksize,
                callback=self._on_block,
            )
        except Exception as exc:  # noqa: BLE001 - PortAudioError
            raise SourceError(
                f"microphone {label}: cannot open input stream ({exc}). " + _describe_microphones()
            ) from None

    def on_start(self) -> None:
        self.finished.clear()
        target = self._run_file if self.kind == "file" else self._run_device
        self._thread = threading.Thread(target=target, name=f"{self.name}:audio", daemon=True)
        self._thread.start()
        if self._stream is not None:
            self._stream.start()

    def on_stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception:  # noqa: BLE001 - closing a dead stream
                log.debug("microphone: error closing the stream", exc_info=True)
            self._stream = None
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def health(self) -> dict[str, Any]:
        return {
            "info": {
                "source": str(self.config.device),
                "kind": self.kind,
                "device": self.device_name,
                "device_rate_hz": self.device_rate_hz,
                "chunks_per_s": round(self._rate.hz, 2),
                "finished": self.finished.is_set(),
            },
            "counters": {"chunks_sent": self.chunks_sent, "queue_len": len(self._queue)},
        }

    # ---- publishing ---------------------------------------------------------------------
    def _publish(self, pcm: np.ndarray, stamp_ns: int) -> None:
        self.publish(
            "audio",
            AudioChunk(
                stamp_ns=stamp_ns,
                source=self.config.source,
                pcm=pcm.reshape(-1, 1),
                sample_rate_hz=AUDIO_RATE_HZ,
            ),
        )
        self.samples_sent += len(pcm)
        self.chunks_sent += 1
        self._rate.tick()

    def _run_file(self) -> None:
        """Real-time playback: chunk k is due (and stamped) at t0 + k * chunk / 16 kHz."""
        audio = self._audio
        assert audio is not None
        n = self.chunk_samples
        t0_mono, t0_ns = time.monotonic(), time.time_ns()
        played = 0  # samples published since t0 (over all loops)
        try:
            while self.running:
                for start in range(0, len(audio), n):
                    due_s = played / AUDIO_RATE_HZ
                    delay = t0_mono + due_s - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    if not self.running:
                        return
                    pcm = audio[start : start + n]
                    self._publish(pcm, t0_ns + round(played * 1e9 / AUDIO_RATE_HZ))
                    played += len(pcm)
                if not self.config.loop:
                    return
        finally:
            self.finished.set()

    def _on_block(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """sounddevice callback (PortAudio's thread): queue a copy, never block."""
        stamp_ns = time.time_ns() - round(frames * 1e9 / self.device_rate_hz)
        if status:
            self.count("overflows")
        with self._cond:
            if len(self._queue) >= self.config.queue_chunks:
                self._queue.popleft()
                self.count("chunks_dropped")
            self._queue.append((stamp_ns, indata[:, 0].copy()))
            self._cond.notify_all()

    def _run_device(self) -> None:
        while self.running:
            with self._cond:
                if not self._queue:
                    self._cond.wait(self.config.poll_timeout_s)
                    continue
                stamp_ns, block = self._queue.popleft()
            pcm = _resample(block, self.device_rate_hz)
            self._publish(pcm, stamp_ns)
