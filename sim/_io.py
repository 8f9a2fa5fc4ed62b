"""Small writers with no heavy dependencies: PNG images and 16-bit WAV audio."""

from __future__ import annotations

import struct
import wave
import zlib
from pathlib import Path

import numpy as np

__all__ = ["write_png", "write_wav"]


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB or (H, W) uint8 grey image as PNG."""
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"write_png: need (H, W, 3) or (H, W) uint8, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    colour = 2 if img.ndim == 3 else 0
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    return path


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate_hz: int) -> Path:
    """Write (N,) or (N, C) float audio in [-1, 1] as 16-bit PCM WAV."""
    data = np.asarray(pcm, np.float32)
    if data.ndim == 1:
        data = data[:, None]
    ints = (np.clip(data, -1.0, 1.0) * 32767).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(ints.shape[1])
        f.setsampwidth(2)
        f.setframerate(int(sample_rate_hz))
        f.writeframes(ints.tobytes())
    return path
