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

__all__ = [
    "APARTMENT_KINDS",
    "BACKGROUND",
    "OBJECT_CLASSES",
    "is_kind_label",
    "kind_of",
    "names_prefix",
    "strip_track_id",
]

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
    "pink token": (
        ("token_0", "token_1", "token_2", "token_3", "token_4"),
        ("a pink token", "a pink disc", "a small pink counting token"),
    ),
    # the apartment's things (sim/assets/apartment.xml; kinds = how its tasks name them)
    "red mug": (("mug_red",), ("a red mug", "a red coffee mug", "a red cup with a handle")),
    "blue ball": (("ball_blue",), ("a blue ball", "a round blue ball", "a blue sphere")),
    "green book": (("book_green",), ("a green book", "a closed green book", "a green notebook")),
    "potted plant": (
        ("plant",),
        ("a potted plant", "a green plant in a brown pot", "a small house plant"),
    ),
    "brown teddy bear": (
        ("teddy_brown",),
        ("a brown teddy bear", "a brown stuffed toy", "a soft toy bear"),
    ),
    "yellow bottle": (
        ("bottle_yellow",),
        ("a yellow bottle", "a yellow plastic bottle", "a tall yellow bottle"),
    ),
}

#: what perception's proposals are when they are no object: a class of its own in training
#: (crops of walls, furniture, floor and table legs) and a word in camera mode's vocabulary
#: whose proposals are dropped (``ObjectsConfig.ignore_labels``)
BACKGROUND: tuple[str, tuple[str, ...]] = (
    "wall or furniture",
    ("a wall or furniture", "a plain wall", "a piece of furniture", "the floor", "a table leg"),
)

#: the kinds that live in the apartment scene (all others are on the tabletop)
APARTMENT_KINDS: tuple[str, ...] = (
    "red mug",
    "blue ball",
    "green book",
    "potted plant",
    "brown teddy bear",
    "yellow bottle",
)

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


def is_kind_label(label: str) -> bool:
    """Whether ``label`` names a kind rather than one object (camera mode's ``pink token``,
    ``cup``: several objects share it), as opposed to a body name (``token_2``, and
    ``tray``, which is both, counts as a body)."""
    label = strip_track_id(label)
    return label in OBJECT_CLASSES and label not in _BODY_KIND


def names_prefix(label: str, prefix: str) -> bool:
    """Whether ``prefix`` names ``label`` (its track id stripped): the label starts with
    it (``token`` -> ``token_2``), or the label is a kind with ``prefix`` as one of its
    words (``token`` -> ``pink token``, camera mode)."""
    label = strip_track_id(label)
    if label.startswith(prefix):
        return True
    words = prefix.replace("_", " ").strip()
    return bool(words) and label in OBJECT_CLASSES and words in label.split()
