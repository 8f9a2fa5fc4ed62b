"""Action-expert checkpoint files: written atomically, checked on reading.

``<out>/checkpoint.pt`` (``CHECKPOINT_NAME``) is a ``torch.save`` dict with
``format`` = ``CHECKPOINT_FORMAT``; ``engram train`` writes it and
``ActionExpertPolicy.load`` reads it (for resuming: optimiser, loss history, ...).

Shipped checkpoints (``checkpoints/<name>.safetensors`` beside this module, package
data) hold only the weights a policy samples with (the EMA, normalisation buffers
included) and, in the safetensors metadata, ``format``, ``config`` (JSON) and
``task``; ``checkpoints/<name>.json`` is its card (training command, data recipe,
seed, measured figures). ``export`` writes both from a training checkpoint;
``resolve("tabletop")`` finds one by name. ``check_config`` refuses a checkpoint
whose configuration this code does not have the same fields for (written by another
version) or whose state layout (``features``) differs from the code's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "DEFAULT_CHECKPOINT",
    "check_config",
    "expert_tasks",
    "export",
    "load_checkpoint",
    "resolve",
    "save_checkpoint",
    "shipped",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "engram-action-expert/1"
#: where the shipped checkpoints live (package data)
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
#: the shipped checkpoint every entry point uses unless told otherwise (the policy node,
#: `engram eval` / `engram demo --executor expert`, launch/sim_full.yaml, bench/policy.py).
#: round 7: tabletop_progress; under the executor guards the older `tabletop` pressed
#: nothing (button_sequence 0/20, count 2/20, put_back 1/20 on dev seeds 100-119 against
#: 18/20, 20/20, 15/20) and ties it on cups (19/20 each)
DEFAULT_CHECKPOINT = "tabletop_progress"


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

    path = resolve(path)
    if path.suffix == ".safetensors":
        return _load_safetensors(path, device)
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


def shipped() -> list[str]:
    """Names of the checkpoints shipped with the package."""
    return sorted(p.stem for p in CHECKPOINT_DIR.glob("*.safetensors"))


def resolve(name_or_path: str | Path) -> Path:
    """A checkpoint file from a path (a file, or a folder holding ``checkpoint.pt``) or
    a shipped checkpoint's name; ``FileNotFoundError`` listing the shipped names."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.is_file():
        return path
    named = CHECKPOINT_DIR / f"{name_or_path}.safetensors"
    if str(name_or_path) and "/" not in str(name_or_path) and named.is_file():
        return named
    names = ", ".join(shipped()) or "none"
    raise FileNotFoundError(
        f"no action-expert checkpoint at {str(path)!r} and no shipped checkpoint of that "
        f"name (shipped: {names})"
    )


def check_config(config: dict[str, Any], source: str | Path) -> None:
    """Refuse a checkpoint configuration this code cannot run as it was trained."""
    from dataclasses import fields

    from engram.planners.policies.diffusion.action_expert import ActionExpertConfig
    from engram.planners.policies.diffusion.features import FEATURES

    if not isinstance(config, dict):
        raise ValueError(f"{source}: checkpoint has no configuration")
    known = {f.name for f in fields(ActionExpertConfig)}
    unknown = sorted(set(config) - known)
    # fields added later, with defaults that mean what older checkpoints did: deltas,
    # no centroid offsets, the world frame and no pointer
    later = {
        "action_mode",
        "object_offsets_m",
        "frame",
        "pointer_slots",
        "pointer_skills",
        "pointer_loss_weight",
        "subgoal_progress",
    }
    missing = sorted(known - set(config) - later)
    if unknown or missing:
        raise ValueError(
            f"{source}: checkpoint configuration does not match this code "
            f"(fields unknown here: {unknown or 'none'}; fields it lacks: {missing or 'none'}); "
            "it was written by another version of Engram: train anew with `engram train`"
        )
    layout = config.get("features") or ""
    if layout and layout != FEATURES:
        raise ValueError(
            f"{source}: checkpoint state layout {layout!r} differs from this code's "
            f"{FEATURES!r}; train anew with `engram train`"
        )


def _load_safetensors(path: Path, device: str) -> dict[str, Any]:
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open API
    except Exception as exc:  # noqa: BLE001 - a damaged file
        raise ValueError(f"{path}: cannot read this safetensors checkpoint ({exc})") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an Engram action-expert checkpoint ({CHECKPOINT_FORMAT})")
    try:
        config = json.loads(meta["config"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint metadata has no readable config ({exc})") from exc
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "task": meta.get("task", ""),
        "model": state,
        "ema": None,
        "source": str(path),
    }


def export(
    checkpoint: str | Path, name: str, card: dict[str, Any], *, out_dir: str | Path | None = None
) -> Path:
    """Training checkpoint -> ``<out_dir>/<name>.safetensors`` (EMA weights, float32)
    + ``<name>.json`` (``card`` plus config, step and data); returns the safetensors
    path. ``out_dir`` defaults to ``CHECKPOINT_DIR`` (the shipped ones); ``name`` must
    be a plain file stem."""
    import json

    from safetensors.torch import save_file

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"checkpoint name must be a plain file stem, got {name!r}")
    payload = load_checkpoint(checkpoint)
    weights = payload.get("ema") or payload["model"]
    state = {k: v.detach().float().contiguous().cpu() for k, v in weights.items()}
    folder = Path(out_dir) if out_dir is not None else CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{name}.safetensors"
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(payload["config"]),
        "task": str(payload.get("task", "")),
    }
    tmp = out.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, out)
    info = {
        **card,
        "file": out.name,
        "format": CHECKPOINT_FORMAT,
        "step": payload.get("step"),
        "train_config": payload.get("train_config"),
        "data": payload.get("data"),
        "validation": payload.get("validation"),
        "config": payload["config"],
    }
    (folder / f"{name}.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return out


def expert_tasks(name_or_path: str | Path) -> list[str]:
    """The tasks a checkpoint was trained on (its config's ``tasks``; [] if unknown)."""
    payload = load_checkpoint(name_or_path)
    check_config(payload.get("config"), resolve(name_or_path))
    return list(payload["config"].get("tasks") or [])


def check_expert_task(name_or_path: str | Path, task: str) -> list[str]:
    """``expert_tasks`` of a checkpoint that is to run ``task`` ("all": any it learned).
    Raises FileNotFoundError / ValueError (missing, mismatched, or not trained on ``task``)
    with a message for the command line."""
    trained = expert_tasks(name_or_path)
    if task != "all" and trained and task not in trained:
        raise ValueError(
            f"the expert {str(name_or_path)!r} was trained on {', '.join(trained)}, not {task!r}"
        )
    return trained
