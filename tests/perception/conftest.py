"""Shared fixtures of the perception tests: a tiny random CLIP, synthesised speech."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

UTTERANCES = (
    "Please bring me the red cup from the kitchen",
    "Where did you hear the bell",
    "hello",
    "Open the door and go to the living room",
)


@pytest.fixture(scope="session")
def tiny_clip():
    """A loaded open_clip encoder: engram-vit-tiny (64-d, 64 px), random weights, CPU."""
    from engram.perception.encoders import make_encoder

    enc = make_encoder("clip", model_name="engram-vit-tiny", device="cpu")
    enc.load()
    return enc


@pytest.fixture(scope="session")
def sim_clip():
    """The shipped simulation-trained image-text encoder (``sim_clip``), loaded once, CPU."""
    from engram.perception.encoders import make_encoder

    enc = make_encoder("sim_clip", device="cpu")
    enc.load()
    yield enc
    enc.close()


@dataclass
class Speech:
    """16 kHz mono audio of separately synthesised utterances with known silences."""

    audio: np.ndarray  # (N,) float32
    truth_s: list[tuple[float, float]]  # (start, end) of each utterance, seconds
    bell_s: tuple[float, float]  # a synthetic bell after the speech, seconds


def _espeak(text: str, path: Path) -> np.ndarray:
    import soundfile as sf

    from engram.perception.audio import to_mono_16k

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True, timeout=30)
    x, sr = sf.read(str(path), dtype="float32")
    x = to_mono_16k(x, sr)
    # The synthesiser pads with digital silence: the utterance is its non-silent span.
    loud = np.nonzero(np.abs(x) > 1e-3 * np.abs(x).max())[0]
    return x[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Speech:
    sr = 16000
    rng = np.random.default_rng(7)
    tmp = tmp_path_factory.mktemp("speech")
    parts = [np.zeros(int(0.8 * sr), np.float32)]
    n = len(parts[0])
    truth = []
    for i, text in enumerate(UTTERANCES):
        x = _espeak(text, tmp / f"u{i}.wav")
        truth.append((n / sr, (n + len(x)) / sr))
        parts.append(x)
        n += len(x)
        gap = np.zeros(int(rng.uniform(0.6, 1.0) * sr), np.float32)
        parts.append(gap)
        n += len(gap)
    t = np.arange(int(0.8 * sr)) / sr
    bell = sum(
        a * np.sin(2 * np.pi * f * t) for a, f in ((1.0, 880.0), (0.5, 1333.0), (0.3, 2210.0))
    )
    bell = (0.4 * bell * np.exp(-3.0 * t)).astype(np.float32)
    bell_s = (n / sr, (n + len(bell)) / sr)
    parts += [bell, np.zeros(int(0.8 * sr), np.float32)]
    audio = np.concatenate(parts)
    audio += rng.normal(0.0, 10 ** (-65 / 20), len(audio)).astype(np.float32)  # mic noise
    return Speech(audio=audio, truth_s=truth, bell_s=bell_s)
