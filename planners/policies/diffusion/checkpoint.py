"""Action-expert checkpoint files: written atomically, checked on reading.

``<out>/checkpoint.pt`` (``CHECKPOINT_NAME``) is a ``torch.save`` dict with
``format`` = ``CHECKPOINT_FORMAT``; ``engram train`` writes it and
``ActionExpertPolicy.load`` reads it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "engram-action-expert/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so an interrupted run never leaves half a file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint file (or ``<dir>/checkpoint.pt``); ``ValueError`` if not ours."""
    import torch

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no action-expert checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # a damaged or partly written file
        raise ValueError(
            f"{path}: cannot read this action-expert checkpoint ({type(exc).__name__}: {exc}); "
            "a damaged or partly copied file? copy it again, or train anew"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an Engram action-expert checkpoint ({CHECKPOINT_FORMAT})")
    return payload
