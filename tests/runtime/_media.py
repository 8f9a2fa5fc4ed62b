"""Media files for the live-source tests: a small MJPG video and synthesised speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SPEECH_RATE_HZ = 16000


def write_video(path: Path, *, frames: int = 30, fps: float = 10.0, size=(160, 120)) -> Path:
    """An MJPG .avi: a red square sliding right over a grey/blue background, a green
    disc bobbing; frame i has a white bar i pixels wide at the top (to check order)."""
    import cv2

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        pytest.fail(f"OpenCV cannot write MJPG video to {path}")
    ys, xs = np.mgrid[0:h, 0:w]
    for i in range(frames):
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0] = (120 + 80 * np.sin(xs / 17.0 + i / 5.0)).astype(np.uint8)  # blue wave
        bgr[..., 1] = 90
        bgr[..., 2] = 90
        x0 = int((w - 40) * i / max(frames - 1, 1))
        bgr[40:80, x0 : x0 + 40] = (0, 0, 230)  # red square (BGR)
        cy = int(h * 0.7 + 10 * np.sin(i / 3.0))
        disc = (xs - w * 0.75) ** 2 + (ys - cy) ** 2 < 12**2
        bgr[disc] = (40, 220, 40)  # green disc
        bgr[0:6, : 3 * i] = 255
        writer.write(bgr)
    writer.release()
    return path


def espeak(text: str, path: Path) -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True, timeout=30)
    return path


def write_speech(path: Path, texts: tuple[str, ...], *, gap_s: float = 0.8) -> Path:
    """16 kHz mono WAV: the utterances (espeak-ng) separated and followed by ``gap_s`` of
    quiet room noise (-65 dBFS), so every utterance closes as a speech segment."""
    import soundfile as sf
    from scipy.signal import resample_poly

    rng = np.random.default_rng(3)
    parts = [np.zeros(int(0.5 * SPEECH_RATE_HZ), np.float32)]
    for i, text in enumerate(texts):
        raw = espeak(text, path.with_name(f"{path.stem}-u{i}.wav"))
        x, sr = sf.read(str(raw), dtype="float32")
        if x.ndim == 2:
            x = x.mean(axis=1)
        g = np.gcd(int(sr), SPEECH_RATE_HZ)
        x = resample_poly(x, SPEECH_RATE_HZ // g, int(sr) // g).astype(np.float32)
        parts += [x, np.zeros(int(gap_s * SPEECH_RATE_HZ), np.float32)]
    audio = np.concatenate(parts)
    audio += rng.normal(0.0, 10 ** (-65 / 20), len(audio)).astype(np.float32)
    sf.write(str(path), audio, SPEECH_RATE_HZ, subtype="PCM_16")
    return path
