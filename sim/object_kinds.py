"""What the simulation's objects are called: each tabletop body's *kind* (the words a
camera-mode perception, or a person, uses for it) and a lookup from a body name to it.

In ground-truth mode the simulator's segmentation names objects by body (``cup_2``,
``prize``, ``button_blue_cap``); in camera mode perception names them by what they look
like (``cup``, ``yellow cube``, ``blue button``). ``kind_of`` maps both to the same
kind, so the planner's recipes can ask for an object by either name and find it in
either mode. Light on purpose (no MuJoCo import): the planner imports it.
"""

from __future__ import annotations

import re

__all__ = ["OBJECT_CLASSES", "kind_of", "strip_track_id"]

#: object kind -> (body names of the tabletop scene, descriptions people use)
OBJECT_CLASSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "red cube": (("cube_red",), ("a red cube", "a red block", "a small red box")),
    "green cube": (("cube_green",), ("a green cube", "a green block", "a small green box")),
    "blue cube": (("cube_blue",), ("a blue cube", "a blue block", "a small blue box")),
    "yellow cube": (("prize",), ("a yellow cube", "a yellow block", "a small golden cube")),
    "white mug": (("mug_white",), ("a white mug", "a coffee mug", "a white cup with a handle")),
    "blue bowl": (("bowl_blue",), ("a blue bowl", "a blue dish", "a shallow blue bowl")),
    "white plate": (("plate_white",), ("a white plate", "a flat white dish", "a dinner plate")),
    "cup": (
        ("cup_0", "cup_1", "cup_2", "cup_3"),
        ("an upside-down cup", "a brown cup", "an opaque cup turned over"),
    ),
    "red button": (("button_red",), ("a red button", "a red push button", "a red switch")),
    "green button": (
        ("button_green",),
        ("a green button", "a green push button", "a green switch"),
    ),
    "blue button": (("button_blue",), ("a blue button", "a blue push button", "a blue switch")),
    "yellow button": (
        ("button_yellow",),
        ("a yellow button", "a yellow push button", "a yellow switch"),
    ),
    "tray": (("tray",), ("a wooden tray", "a brown tray", "a flat serving tray")),
}

_BODY_KIND = {body: kind for kind, (bodies, _) in OBJECT_CLASSES.items() for body in bodies}
_PART_SUFFIX = re.compile(r"_(cap|light)$")  # a button's moving cap and lamp are the button
_TRACK_ID = re.compile(r"#-?\d+$")


def strip_track_id(key: str) -> str:
    """``"cup#1020778705"`` -> ``"cup"`` (the planner's key of one of several objects
    sharing a label); other names unchanged."""
    return _TRACK_ID.sub("", key).strip()


def kind_of(name: str) -> str | None:
    """The kind of a body name (``prize`` -> ``yellow cube``, ``button_blue_cap`` ->
    ``blue button``), of a kind itself (``yellow cube`` -> ``yellow cube``) or of a
    planner key (``cup#17`` -> ``cup``); None for a name of no known kind."""
    name = strip_track_id(name)
    if name in OBJECT_CLASSES:
        return name
    body = _PART_SUFFIX.sub("", name)
    return _BODY_KIND.get(body)
