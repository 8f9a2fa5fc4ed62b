"""A household stream with its ground truth, and the harder questions asked about it.

``make_stream(seed, minutes)`` scripts what a robot living in a four-room flat
perceives, hears and is told over ``minutes`` of simulated time, as the messages the
perception and speech nodes publish (``Percept``, ``SoundEvent``, ``Transcript``), one
percept per second, and keeps the ground truth: where every object was at every
moment, when it was first seen, what stood on what, when each sound rang, what was
said. The stream is scripted at the level of messages (no rendering): what is under
test is memory and answering, not segmentation; ``engram eval memory-qa`` (without
``--hard``) runs the rendered MuJoCo streams.

The flat: kitchen, living room, bedroom, study (4 m x 4 m each; the robot walks from
room to room, a few seconds to a minute in each, and sees what is on the furniture of
the room it is in). Objects carry internal labels as perception gives them
(``cube_red``, ``mug_white``, ``cup_1``, ``prize``: the yellow cube hidden under a
cup). Over the stream people move objects between pieces of furniture, tokens
appear (counting), sounds ring (doorbell, kettle, phone) and people say where
things are ("the keys are in the bedroom drawer").

``make_questions(stream, rng)`` asks, in several natural wordings each (paraphrases,
synonyms, colours, pronouns): where is X, where was X at the start, when did you
first see X, which cup hid the cube, what was on F before X was moved (multi-hop),
where was X before it was moved (multi-hop), how many tokens, when did you hear S,
where are my keys (told); and unanswerable ones: objects never seen (and colour
variants of seen ones), sounds never heard, times before the stream began, places
never visited. Each question has its truth and tags (``paraphrase``,
``unanswerable``, ``multi_hop``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.runtime.messages import Message, Percept, SoundEvent, Transcript

__all__ = ["Question", "Stream", "make_questions", "make_stream"]

S = 1_000_000_000
ROOMS = {  # room -> (x0, y0) of its 4 m x 4 m square
    "kitchen": (0.0, 0.0),
    "living": (4.0, 0.0),
    "bedroom": (0.0, 4.0),
    "study": (4.0, 4.0),
}
#: furniture label -> (room, centre offset in the room (x, y), size (x, y, z) metres)
FURNITURE: dict[str, tuple[str, tuple[float, float], tuple[float, float, float]]] = {
    "table_kitchen": ("kitchen", (1.2, 1.0), (1.2, 0.8, 0.75)),
    "counter_kitchen": ("kitchen", (3.2, 3.0), (1.4, 0.6, 0.9)),
    "shelf_living": ("living", (1.0, 3.2), (1.0, 0.4, 1.2)),
    "table_living": ("living", (2.5, 1.5), (1.0, 1.0, 0.5)),
    "drawer_bedroom": ("bedroom", (3.0, 1.0), (0.8, 0.5, 0.8)),
    "bed_bedroom": ("bedroom", (1.2, 2.5), (1.6, 2.0, 0.5)),
    "desk_study": ("study", (1.5, 1.0), (1.4, 0.7, 0.75)),
    "shelf_study": ("study", (3.0, 3.0), (1.0, 0.4, 1.5)),
}
#: small objects (internal labels) placed at the start
OBJECTS = (
    "cube_red",
    "cube_blue",
    "mug_white",
    "mug_green",
    "bowl_blue",
    "plate_white",
    "book_red",
    "bottle_green",
    "plant",
)
SIZE = (0.08, 0.08, 0.1)
SOUNDS = {"doorbell": 620.0, "kettle": 2200.0, "phone": 1250.0}
TOLD = (  # (thing, furniture, sentence): told, never seen
    ("keys", "drawer_bedroom", "the keys are in the bedroom drawer"),
    ("glasses", "desk_study", "my glasses are on the study desk"),
)


@dataclass
class Stream:
    """The messages in time order and the ground truth of one stream."""

    seed: int
    minutes: float
    messages: list[Message] = field(default_factory=list)
    # label -> list of (t_from_s, position (3,), furniture) in time order
    history: dict[str, list[tuple[float, np.ndarray, str]]] = field(default_factory=dict)
    first_seen_s: dict[str, float] = field(default_factory=dict)
    last_seen_s: dict[str, float] = field(default_factory=dict)
    moves: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, label, from, to
    sounds: list[tuple[float, str, np.ndarray]] = field(default_factory=list)  # t, name, robot
    told: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, thing, furn, text
    views: list[tuple[float, str]] = field(default_factory=list)  # (t, room) of each percept
    hidden_under: str = ""  # the cup that hid the prize
    end_s: float = 0.0

    def position_at(self, label: str, t_s: float) -> tuple[np.ndarray, str] | None:
        out = None
        for t0, pos, furn in self.history.get(label, []):
            if t0 <= t_s:
                out = (pos, furn)
        return out

    def seen_on_at(self, furniture: str, t_s: float) -> set[str]:
        """What the robot last saw on ``furniture`` before ``t_s`` (its last look at the
        room; the prize under its cup stays where it was seen)."""
        room = FURNITURE[furniture][0]
        looks = [tv for tv, r in self.views if r == room and tv < t_s]
        if not looks:
            return set()
        tv = looks[-1]
        return {
            lb
            for lb in self.history
            if (p := self.position_at(lb, tv)) is not None
            and p[1] == furniture
            and self.first_seen_s.get(lb, np.inf) <= tv
        }


def _furniture_pose(name: str) -> tuple[np.ndarray, np.ndarray]:
    room, (ox, oy), size = FURNITURE[name]
    x0, y0 = ROOMS[room]
    centre = np.array([x0 + ox, y0 + oy, size[2] / 2])
    return centre, np.asarray(size, np.float64)


def _spot(name: str, rng: np.random.Generator, taken: list[np.ndarray]) -> np.ndarray:
    c, size = _furniture_pose(name)
    for _ in range(50):
        p = np.array(
            [
                c[0] + rng.uniform(-0.35, 0.35) * size[0],
                c[1] + rng.uniform(-0.35, 0.35) * size[1],
                size[2] + SIZE[2] / 2,
            ]
        )
        if all(np.linalg.norm(p[:2] - q[:2]) > 0.18 for q in taken):
            return p
    return p


def make_stream(seed: int, minutes: float) -> Stream:
    """The scripted stream of ``minutes`` of simulated time (see the module docstring)."""
    if minutes <= 0:
        raise ValueError(f"make_stream: minutes must be > 0, got {minutes}")
    rng = np.random.default_rng(seed)
    end = float(round(minutes * 60))
    st = Stream(seed, minutes, end_s=end)
    furn = list(FURNITURE)
    where: dict[str, tuple[np.ndarray, str]] = {}
    taken: dict[str, list[np.ndarray]] = {f: [] for f in furn}

    def place(label: str, f: str, t: float) -> None:
        p = _spot(f, rng, taken[f])
        if label in where:
            old = where[label]
            taken[old[1]] = [q for q in taken[old[1]] if q is not old[0]]
        taken[f].append(p)
        where[label] = (p, f)
        st.history.setdefault(label, []).append((t, p, f))

    # the cups scene on the kitchen table: the prize shown, then covered by cup k
    cups = ["cup_0", "cup_1", "cup_2"]
    for c in cups:
        place(c, "table_kitchen", 0.0)
    k = int(rng.integers(3))
    st.hidden_under = cups[k]
    prize_pos = where[cups[k]][0].copy()
    prize_pos[2] = 0.75 + 0.02
    st.history["prize"] = [(0.0, prize_pos, "table_kitchen")]
    for label in OBJECTS:
        place(label, furn[int(rng.integers(len(furn)))], 0.0)
    # events, scaled to the stream
    n_moves = max(2, int(minutes * 1.2))
    movable = [o for o in OBJECTS]
    rng.shuffle(movable)
    move_times = np.sort(rng.uniform(0.25 * end, 0.9 * end, n_moves))
    moved_once = movable[: min(n_moves, len(movable))]
    events: list[tuple[float, str, Any]] = []
    for t, label in zip(move_times, moved_once):
        events.append((float(round(t)), "move", label))
    n_tokens = int(rng.integers(2, 4)) + int(minutes // 5)
    for i in range(n_tokens):
        events.append((float(round(rng.uniform(0.1 * end, 0.85 * end))), "token", f"token_{i}"))
    for name in ("doorbell", "kettle"):
        events.append((float(round(rng.uniform(0.15 * end, 0.85 * end))), "sound", name))
    for thing, f, text in TOLD:
        events.append((float(round(rng.uniform(0.1 * end, 0.7 * end))), "told", (thing, f, text)))
    events.sort(key=lambda e: e[0])
    # the robot's route: the kitchen first (the cups scene), then rooms in turn
    rooms = list(ROOMS)
    t = 0.0
    room = "kitchen"
    leave = 12.0
    ei = 0
    seq = 0
    speakers = ("ann", "ben")
    while t < end:
        while ei < len(events) and events[ei][0] <= t:
            te, kind, what = events[ei]
            ei += 1
            if kind == "move":
                old = where[what][1]
                choices = [f for f in furn if f != old]
                new = choices[int(rng.integers(len(choices)))]
                place(what, new, te)
                st.moves.append((te, what, old, new))
            elif kind == "token":
                place(what, furn[int(rng.integers(len(furn)))], te)
            elif kind == "sound":
                robot = _robot_pos(room, t, rng)
                st.sounds.append((te, what, robot))
                st.messages.append(_sound(te, what, robot, seq))
                seq += 1
            elif kind == "told":
                thing, f, text = what
                who = speakers[len(st.told) % 2]
                st.told.append((te, thing, f, text))
                st.messages.append(
                    Transcript(
                        stamp_ns=int(te * S),
                        seq=seq,
                        text=text,
                        start_ns=int(te * S),
                        end_ns=int((te + 2) * S),
                        confidence=0.9,
                        speaker=who,
                        world_from_robot=_pose(_robot_pos(room, t, rng)),
                    )
                )
                seq += 1
        # what is in view: the furniture of this room and what is on it
        labels, cents, exts = [], [], []
        for f in furn:
            if FURNITURE[f][0] != room:
                continue
            c, size = _furniture_pose(f)
            labels.append(f)
            cents.append(c)
            exts.append(size)
        for label, (p, f) in where.items():
            if FURNITURE[f][0] == room:
                labels.append(label)
                cents.append(p + rng.normal(0, 0.005, 3))
                exts.append(np.asarray(SIZE))
        if room == "kitchen" and t < 3.0:  # the prize, before the cups come down
            labels.append("prize")
            cents.append(prize_pos + rng.normal(0, 0.003, 3))
            exts.append(np.array([0.03, 0.03, 0.03]))
        for lb in labels:
            st.first_seen_s.setdefault(lb, t)
            st.last_seen_s[lb] = t
        st.views.append((t, room))
        st.messages.append(_percept(t, labels, cents, exts, _robot_pos(room, t, rng), seq))
        seq += 1
        t += 1.0
        if t >= leave:
            others = [r for r in rooms if r != room]
            room = others[int(rng.integers(len(others)))]
            leave = t + float(rng.integers(8, 40))
    return st


def _robot_pos(room: str, t: float, rng: np.random.Generator) -> np.ndarray:
    x0, y0 = ROOMS[room]
    return np.array([x0 + 2.0 + rng.uniform(-0.3, 0.3), y0 + 2.0 + rng.uniform(-0.3, 0.3), 1.2])


def _pose(pos: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = pos
    return m


def _sound(t: float, name: str, robot: np.ndarray, seq: int) -> SoundEvent:
    return SoundEvent(
        stamp_ns=int(t * S),
        seq=seq,
        label="tone",
        start_ns=int(t * S),
        end_ns=int((t + 1.5) * S),
        energy_db=-18.0,
        peak_hz=SOUNDS[name],
        world_from_robot=_pose(robot),
    )


def _percept(
    t: float, labels: list[str], cents: list, exts: list, robot: np.ndarray, seq: int
) -> Percept:
    k = len(labels)
    return Percept(
        stamp_ns=int(t * S),
        seq=seq,
        keyframe=True,
        world_from_camera=_pose(robot),
        object_ids=np.array([_track_id(lb) for lb in labels], np.int32),
        object_labels=list(labels),
        object_confidences=np.ones(k, np.float32),
        object_boxes=np.tile(np.array([[10, 10, 50, 50]], np.int32), (k, 1)),
        object_centroids=np.asarray(cents, np.float32).reshape(k, 3),
        object_extents=np.asarray(exts, np.float32).reshape(k, 3),
    )


def _track_id(label: str) -> int:
    import zlib

    return zlib.crc32(label.encode()) & 0x7FFFFFFF


# ---------------------------------------------------------------------------------------
# questions


@dataclass
class Question:
    """One question: type, wording, truth (a position, time, label(s), count or words)."""

    qtype: str
    text: str
    truth: Any
    tags: tuple[str, ...] = ()
    check: str = "position"  # position | time | label | labels | count | words | abstain

    @property
    def answerable(self) -> bool:
        return "unanswerable" not in self.tags


_NAMES = {  # internal label -> natural references (colour + noun synonyms)
    "cube_red": ["red cube", "red block", "crimson cube", "red box"],
    "cube_blue": ["blue cube", "blue block", "navy cube", "blue brick"],
    "mug_white": ["white mug", "white cup", "white mug"],
    "mug_green": ["green mug", "green cup", "green mug"],
    "bowl_blue": ["blue bowl", "blue dish"],
    "plate_white": ["white plate", "white saucer"],
    "book_red": ["red book", "red novel"],
    "bottle_green": ["green bottle", "green flask"],
    "plant": ["plant", "houseplant", "potted plant"],
}
_FURN_NAMES = {
    "table_kitchen": ["kitchen table"],
    "counter_kitchen": ["kitchen counter"],
    "shelf_living": ["living room shelf", "shelf in the living room"],
    "table_living": ["living room table"],
    "drawer_bedroom": ["bedroom drawer"],
    "bed_bedroom": ["bed"],
    "desk_study": ["study desk", "desk"],
    "shelf_study": ["study shelf", "bookshelf in the study"],
}
_WHERE = [
    "where is the {x}?",
    "where's the {x}?",
    "can you tell me where the {x} is?",
    "where did I leave the {x}?",
    "do you know where the {x} is?",
    "have you seen the {x}?",
    "where can I find the {x}?",
]
_WHERE_WAS = [
    "where was the {x} at the start?",
    "where did you first see the {x}?",
    "where was the {x} originally?",
    "where was the {x} in the beginning?",
]
_WHEN = [
    "when did you first see the {x}?",
    "when was the {x} first seen?",
    "when did you first notice the {x}?",
    "at what time did you first spot the {x}?",
]
_NEVER = [  # never seen at all, or a colour the object does not have
    "purple vase",
    "orange cube",
    "yellow bowl",
    "black mug",
    "green cube",
    "red plate",
    "toaster",
    "umbrella",
]


def make_questions(st: Stream, rng: np.random.Generator) -> list[Question]:
    """The questions about ``st`` (see the module docstring)."""
    qs: list[Question] = []
    seen = [o for o in OBJECTS if o in st.first_seen_s]

    def pick(seq: list[str]) -> str:
        return seq[int(rng.integers(len(seq)))]

    for lb in seen:
        x = pick(_NAMES[lb])
        para = ("paraphrase",)
        # it may have moved since, unseen: the truth is where it was last seen
        pos = st.position_at(lb, st.last_seen_s[lb])
        assert pos is not None
        qs.append(Question("where_is", pick(_WHERE).format(x=x), pos[0], para))
        qs.append(Question("when_seen", pick(_WHEN).format(x=x), st.first_seen_s[lb], para, "time"))
        if len(st.history[lb]) > 1:  # it moved: where was it when first seen
            first = st.position_at(lb, st.first_seen_s[lb])
            assert first is not None
            qs.append(Question("where_was", pick(_WHERE_WAS).format(x=x), first[0], para))
    # multi-hop
    qs.append(
        Question(
            "which",
            pick(
                [
                    "which cup hid the cube?",
                    "under which cup was the yellow block?",
                    "which cup was the yellow cube under?",
                    "which cup covered the prize?",
                ]
            ),
            st.hidden_under,
            ("multi_hop", "paraphrase"),
            "label",
        )
    )
    for t, lb, old, new in st.moves:
        if lb not in st.first_seen_s or st.first_seen_s[lb] >= t:
            continue  # not seen before it was moved
        if not any(r == FURNITURE[new][0] and tv >= t for tv, r in st.views):
            continue  # never seen where it went: the robot cannot know it moved
        seen_before = st.seen_on_at(old, t - 0.5)
        if lb in seen_before:
            qs.append(
                Question(
                    "what_before",
                    f"what was on the {pick(_FURN_NAMES[old])} before the "
                    f"{pick(_NAMES[lb])} was moved?",
                    sorted(seen_before),
                    ("multi_hop", "paraphrase"),
                    "labels",
                )
            )
        qs.append(
            Question(
                "where_before_move",
                f"where was the {pick(_NAMES[lb])} before it was moved?",
                st.history[lb][0][1],
                ("multi_hop", "paraphrase"),
            )
        )
    tokens = [lb for lb in st.first_seen_s if lb.startswith("token_")]
    if tokens:
        qs.append(
            Question(
                "how_many",
                pick(
                    [
                        "how many tokens did you see?",
                        "how many different tokens have you seen?",
                        "how many coins did you see?",
                    ]
                ),
                len(tokens),
                ("paraphrase",),
                "count",
            )
        )
    qs.append(Question("how_many", "how many cups did you see?", 3, (), "count"))
    for t, name, robot in st.sounds:
        qs.append(
            Question(
                "when_heard",
                pick([f"when did you hear the {name}?", f"at what time did you hear the {name}?"]),
                t,
                ("paraphrase",),
                "time",
            )
        )
        qs.append(
            Question(
                "where_heard",
                f"where were you when you heard the {name}?",
                robot,
                ("paraphrase",),
            )
        )
    for _t, thing, f, _text in st.told:
        words = _FURN_NAMES[f][0].split()
        q = pick([f"where are my {thing}?", f"where did I put my {thing}?"])
        qs.append(Question("told", q, words, ("paraphrase",), "words"))
    # unanswerable
    un = ("unanswerable",)
    for x in rng.permutation(_NEVER)[:5]:
        qs.append(Question("never_seen", pick(_WHERE).format(x=x), None, un, "abstain"))
    qs.append(
        Question("never_seen", f"when did you first see the {pick(_NEVER)}?", None, un, "abstain")
    )
    qs.append(Question("never_heard", "when did you hear the fire alarm?", None, un, "abstain"))
    ago = pick(["two hours ago", "three hours ago"]) if st.minutes > 30 else "an hour ago"
    if st.minutes >= 30:
        ago = "five hours ago"
    lb = seen[int(rng.integers(len(seen)))]
    qs.append(
        Question("before_stream", f"where was the {_NAMES[lb][0]} {ago}?", None, un, "abstain")
    )
    qs.append(
        Question("before_stream", f"what was on the kitchen table {ago}?", None, un, "abstain")
    )
    for place in rng.permutation(["garage shelf", "attic", "garden table", "cellar"])[:2]:
        qs.append(Question("never_visited", f"what is on the {place}?", None, un, "abstain"))
    return qs
