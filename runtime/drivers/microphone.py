"""Microphones: the ``Microphone`` base, ``SoundDeviceMicrophone`` and the
``MicrophoneSource`` node.

``MicrophoneSource`` (node type ``microphone``) publishes mono ``AudioChunk`` at
16 kHz on ``/audio`` from

- ``"default"`` or a device index / name: a ``Microphone`` (by default a
  ``SoundDeviceMicrophone``, a sounddevice ``InputStream``); its audio callback hands
  blocks to a bounded queue (``queue_chunks``; when full the oldest is dropped and
  counted), a thread publishes them. A device that cannot record at 16 kHz is opened
  at its own rate and resampled;
- a WAV (or FLAC / OGG) file: read with soundfile (``read_audio_file``), mixed to mono,
  resampled to 16 kHz, published in ``chunk_ms`` chunks in real time; chunk k is
  stamped ``t0 + k * chunk samples / 16 kHz`` (no gaps, no overlaps). Without ``loop``
  the last chunk carries ``end_of_stream=True``, so listeners close what is open (the
  perception node transcribes the last utterance then, not when the program stops).

A microphone that cannot be opened raises ``SourceError`` from ``configure()`` with a
message that lists what is available (``list_microphones()``); on machines without
audio devices it says so. sounddevice, soundfile and scipy are imported only when a
source opens.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engram.runtime.drivers.base import RateMeter, SourceError
from engram.runtime.messages import AudioChunk
from engram.runtime.node import Node, NodeConfig, Output

__all__ = [
    "AUDIO_RATE_HZ",
    "Microphone",
    "MicrophoneSource",
    "MicrophoneSourceConfig",
    "SoundDeviceMicrophone",
    "list_microphones",
    "microphone_kind",
    "read_audio_file",
]

log = logging.getLogger(__name__)

AUDIO_RATE_HZ = 16000  # rate of every published AudioChunk
_AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".aiff", ".aif")

#: what a ``Microphone`` calls for each recorded block: (mono float32 samples at the
#: microphone's ``rate_hz``, wall-clock stamp of the block's first sample in ns,
#: True when the device reported an overflow)
BlockCallback = Callable[[np.ndarray, int, bool], None]


def microphone_kind(device: str | int) -> str:
    """``"file"`` for an audio file path, else ``"device"`` (default, index or name)."""
    text = str(device).strip()
    if text.lower().endswith(_AUDIO_SUFFIXES) or (
        text not in ("", "default") and os.path.isfile(text)
    ):
        return "file"
    return "device"


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


def read_audio_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """An audio file as (N,) mono float32 at 16 kHz, and the file's own rate in Hz.
    ``SourceError`` when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(
            f"microphone {str(path)!r}: no such audio file. " + _describe_microphones(hint=False)
        )
    import soundfile as sf

    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile reports plain errors
        raise SourceError(f"microphone {str(path)!r}: cannot read audio file ({exc})") from None
    if len(x) == 0:
        raise SourceError(f"microphone {str(path)!r}: the audio file has no samples")
    return _resample(x.mean(axis=1), int(rate)), int(rate)


# ---------------------------------------------------------------------------
# microphones


class Microphone(ABC):
    """An audio input device: ``open(on_block)``, ``start()``, ``stop()``.

    After ``open`` it calls ``on_block`` (``BlockCallback``) from its own thread for every
    recorded block; ``name`` and ``rate_hz`` (its recording rate) are known once open."""

    name: str = ""
    rate_hz: int = AUDIO_RATE_HZ

    @abstractmethod
    def open(self, on_block: BlockCallback, *, block_ms: float) -> None:
        """Open the device (``SourceError`` saying what is available when it cannot)."""

    @abstractmethod
    def start(self) -> None:
        """Start recording."""

    @abstractmethod
    def stop(self) -> None:
        """Stop recording and release the device (safe to call twice)."""


class SoundDeviceMicrophone(Microphone):
    """A sounddevice (PortAudio) input stream: ``"default"``, a device index or a name.
    Records at 16 kHz, or at the device's own rate when it cannot."""

    def __init__(self, device: str | int = "default") -> None:
        self.device = str(device).strip()
        self._stream: Any = None
        self._on_block: BlockCallback | None = None

    def open(self, on_block: BlockCallback, *, block_ms: float) -> None:
        sd = _sounddevice()
        text = self.device
        device: Any = None if text in ("", "default") else (int(text) if text.isdigit() else text)
        label = "default" if device is None else repr(text)
        mics = list_microphones()
        if not mics:
            raise SourceError(f"microphone {label}: cannot open. " + _describe_microphones())
        try:
            info = sd.query_devices(device, "input")
        except Exception as exc:  # noqa: BLE001 - ValueError / PortAudioError
            raise SourceError(
                f"microphone {label}: no such input device ({exc}). " + _describe_microphones()
            ) from None
        self.name = str(info.get("name", label))
        rate = AUDIO_RATE_HZ
        try:
            sd.check_input_settings(device=device, samplerate=rate, channels=1, dtype="float32")
        except Exception:  # noqa: BLE001 - the device does not do 16 kHz: resample
            rate = int(info.get("default_samplerate", AUDIO_RATE_HZ))
        self.rate_hz = rate
        self._on_block = on_block
        try:
            self._stream = sd.InputStream(
                device=device,
                samplerate=rate,
                channels=1,
                dtype="float32",
                blocksize=max(1, round(block_ms * rate / 1000.0)),
                callback=self._callback,
            )
        except Exception as exc:  # noqa: BLE001 - PortAudioError
            raise SourceError(
                f"microphone {label}: cannot open input stream ({exc}). " + _describe_microphones()
            ) from None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """sounddevice callback (PortAudio's thread): hand on a copy, never block."""
        stamp_ns = time.time_ns() - round(frames * 1e9 / self.rate_hz)
        if self._on_block is not None:
            self._on_block(indata[:, 0].copy(), stamp_ns, bool(status))

    def start(self) -> None:
        if self._stream is not None:
            self._stream.start()

    def stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop()
                self._stream.close()
            except Exception:  # noqa: BLE001 - closing a dead stream
                log.debug("microphone: error closing the stream", exc_info=True)
            self._stream = None


# ---------------------------------------------------------------------------
# the node


@dataclass
class MicrophoneSourceConfig(NodeConfig):
    """Settings of ``MicrophoneSource`` (output: mono, 16 kHz)."""

    device: str = "default"  # "default", a device index or name, or an audio file path
    source: str = "mic"  # name written into AudioChunk.source
    chunk_ms: float = 100.0  # duration of each published chunk, milliseconds
    loop: bool = False  # a file starts over at its end (stamps keep increasing)
    queue_chunks: int = 50  # device: chunks held between the audio callback and the
    # publisher; when full the oldest is dropped (counted in chunks_dropped)


class MicrophoneSource(Node[MicrophoneSourceConfig]):
    """A ``Microphone`` or an audio file -> ``AudioChunk`` on ``/audio``; see the module
    docstring. ``microphone`` replaces the default ``SoundDeviceMicrophone(config.device)``."""

    OUTPUTS = {"audio": Output("AudioChunk")}
    Config = MicrophoneSourceConfig

    def __init__(
        self,
        config: MicrophoneSourceConfig | dict | None = None,
        *,
        microphone: Microphone | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        if not cfg.chunk_ms > 0:
            raise ValueError(f"MicrophoneSourceConfig.chunk_ms must be > 0, got {cfg.chunk_ms}")
        if cfg.queue_chunks < 1:
            raise ValueError(
                f"MicrophoneSourceConfig.queue_chunks must be >= 1, got {cfg.queue_chunks}"
            )
        self.kind = "device" if microphone is not None else microphone_kind(cfg.device)
        self.microphone = microphone
        if self.microphone is None and self.kind == "device":
            self.microphone = SoundDeviceMicrophone(cfg.device)
        self.chunk_samples = max(1, round(cfg.chunk_ms * AUDIO_RATE_HZ / 1000.0))
        self.device_rate_hz = AUDIO_RATE_HZ  # the rate the device records at
        self.device_name = ""
        self.samples_sent = 0
        self.chunks_sent = 0
        self.finished = threading.Event()  # set when a file ended
        self._audio: np.ndarray | None = None  # file: (N,) float32 16 kHz
        self._open = False
        self._queue: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._rate = RateMeter()
        for name in ("chunks_dropped", "overflows"):
            self.counters[name] = 0

    # ---- lifecycle --------------------------------------------------------------------
    def on_configure(self) -> None:
        if self.kind == "file":
            path = Path(str(self.config.device)).expanduser()
            self._audio, self.device_rate_hz = read_audio_file(path)
            self.device_name = str(self.config.device)
            return
        assert self.microphone is not None
        self.microphone.open(self._on_block, block_ms=self.config.chunk_ms)
        self._open = True
        self.device_name = self.microphone.name
        self.device_rate_hz = self.microphone.rate_hz

    def on_start(self) -> None:
        self.finished.clear()
        target = self._run_file if self.kind == "file" else self._run_device
        self._thread = threading.Thread(target=target, name=f"{self.name}:audio", daemon=True)
        self._thread.start()
        if self._open and self.microphone is not None:
            self.microphone.start()

    def on_stop(self) -> None:
        if self._open and self.microphone is not None:
            self.microphone.stop()
            self._open = False
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
    def _publish(self, pcm: np.ndarray, stamp_ns: int, *, end_of_stream: bool = False) -> None:
        self.publish(
            "audio",
            AudioChunk(
                stamp_ns=stamp_ns,
                source=self.config.source,
                pcm=pcm.reshape(-1, 1),
                sample_rate_hz=AUDIO_RATE_HZ,
                end_of_stream=end_of_stream,
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
                    last = not self.config.loop and start + n >= len(audio)
                    stamp = t0_ns + round(played * 1e9 / AUDIO_RATE_HZ)
                    self._publish(pcm, stamp, end_of_stream=last)
                    played += len(pcm)
                if not self.config.loop:
                    return
        finally:
            self.finished.set()

    def _on_block(self, block: np.ndarray, stamp_ns: int, overflow: bool) -> None:
        """The microphone's callback (its own thread): queue the block, never block."""
        if overflow:
            self.count("overflows")
        with self._cond:
            if len(self._queue) >= self.config.queue_chunks:
                self._queue.popleft()
                self.count("chunks_dropped")
            self._queue.append((stamp_ns, block))
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
