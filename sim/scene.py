"""Loading MJCF scenes and robots, and naming what is in them.

- ``load_model(path)``: any MJCF file (ours, or a MuJoCo Menagerie robot), with
  errors that name the file.
- ``load_scene(name, keep=...)``: one of our scenes under ``sim/assets/`` with only
  the listed optional bodies kept (the rest is deleted through ``mujoco.MjSpec``
  before compiling, so unused objects cost nothing).
- ``object_ids(model)``: the segmentation id of every body: ``-1`` for the world
  body (the static scene: floor, table, walls, furniture), else the body id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engram.sim._gl import import_mujoco

mujoco = import_mujoco()

__all__ = [
    "ASSETS_DIR",
    "SCENES",
    "body_labels",
    "load_model",
    "load_scene",
    "object_ids",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

#: scene name -> (MJCF file, bodies that may be deleted when a task does not keep them)
SCENES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tabletop": (
        "tabletop.xml",
        (
            "cube_red",
            "cube_green",
            "cube_blue",
            "prize",
            "mug_white",
            "bowl_blue",
            "plate_white",
            "cup_0",
            "cup_1",
            "cup_2",
            "cup_3",
            "button_red",
            "button_green",
            "button_blue",
            "button_yellow",
            "tray",
            "token_0",
            "token_1",
            "token_2",
            "token_3",
            "token_4",
        ),
    ),
    "apartment": ("apartment.xml", ()),
    "arm": ("arm.xml", ()),
}


def load_model(path: str | Path):  # -> mujoco.MjModel
    """Compile an MJCF (or binary MJB) file into an ``MjModel``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file and MuJoCo's message.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MuJoCo model file not found: {path}")
    try:
        if path.suffix.lower() == ".mjb":
            return mujoco.MjModel.from_binary_path(str(path))
        return mujoco.MjModel.from_xml_path(str(path))
    except Exception as exc:  # mujoco raises ValueError with the parser's message
        raise ValueError(f"cannot load MuJoCo model {path}: {exc}") from exc


def load_scene(name: str, *, keep: Iterable[str] | None = None):  # -> mujoco.MjModel
    """Compile scene ``name`` keeping only the optional bodies in ``keep`` (None = all)."""
    try:
        filename, optional = SCENES[name]
    except KeyError:
        raise KeyError(f"unknown scene {name!r}; known: {', '.join(sorted(SCENES))}") from None
    path = ASSETS_DIR / filename
    if keep is None:
        return load_model(path)
    keep = set(keep)
    unknown = keep - set(optional)
    if unknown:
        raise ValueError(f"scene {name!r} has no optional bodies {sorted(unknown)}")
    spec = mujoco.MjSpec.from_file(str(path))
    for body_name in optional:
        if body_name not in keep:
            spec.delete(spec.body(body_name))
    try:
        return spec.compile()
    except Exception as exc:
        raise ValueError(f"cannot compile scene {name!r} ({path}): {exc}") from exc


def object_ids(model) -> np.ndarray:
    """(nbody,) int32 segmentation id per body: -1 for the world body, else the body id."""
    ids = np.arange(model.nbody, dtype=np.int32)
    ids[0] = -1
    return ids


def body_labels(model) -> dict[str, str]:
    """Segmentation id (as str) -> body name, for every non-world body."""
    out = {}
    for body_id in range(1, model.nbody):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body_id)
        out[str(body_id)] = name or f"body_{body_id}"
    return out
