"""Shared test setup: offline model hubs, headless rendering, markers, shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports transformers / huggingface_hub / mujoco.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Tests render with mujoco.Renderer directly too: load triton before Mesa's libLLVM
# (see engram.sim._gl.preload_triton; the other order segfaults when torch imports triton).
from engram.sim._gl import preload_triton  # noqa: E402

preload_triton()

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "tests" / "data"  # small real samples shipped with the repository


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [i for i in items if "gpu" in i.keywords]
    if gpu_items and not _has_cuda():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)
    skip_hw = pytest.mark.skip(reason="needs physical hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip_hw)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def rgbd_sample_dir() -> Path:
    """Real RGB-D frames with camera poses (tests/data/rgbd-sample, Open3D's public test
    data; see its README): 640x480, depth uint16 mm, fx=fy=525, cx=319.5, cy=239.5,
    trajectory.log = world_from_camera."""
    return DATA_DIR / "rgbd-sample"


@pytest.fixture(scope="session")
def speech_sample_dir() -> Path:
    """Real recorded speech (tests/data/speech-sample; sources and licences in its README):
    ldc93s1.wav (2.9 s, known transcript), lecture-60s.wav (60 s lecture, natural pauses)."""
    return DATA_DIR / "speech-sample"
