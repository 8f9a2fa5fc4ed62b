"""Engram messages: the only values that cross a node boundary.

Every message is a keyword-only dataclass of numbers, strings, JSON-able lists /
dicts and numpy arrays, with

- ``stamp_ns``: capture time in nanoseconds (``time.time_ns()`` clock unless the
  producer runs a simulated clock, then simulation time),
- ``seq``: a per-publisher sequence number (the bus fills it in when left at 0).

Conventions (Rerun-style names, SI units):

- Poses are ``world_from_<frame>``: a (4, 4) float64 rigid transform, metres.
  ``point_in_world = world_from_camera @ point_in_camera``.
- Camera frames use the OpenCV convention: +x right, +y down, +z forward
  (MuJoCo's OpenGL cameras are converted by the simulator before publishing).
- Intrinsics ``K`` are (3, 3) float64 pinhole matrices in pixels.
- Depth is float32 metres; 0 or NaN means "no measurement".
- Embeddings are float32 and L2-normalised.

Validation happens on construction (``__post_init__``): a wrong shape, dtype or a
non-finite / non-rigid pose raises ``MessageError`` naming the message and field.
Every non-array field must be plain data the codec can send (None, bool, int, float,
str, lists/tuples and str-keyed dicts of those, numpy scalars or arrays inside them),
and strings must be valid Unicode (no lone surrogates): such a value fails here,
naming the field, not later in ``encode`` on the publisher's thread.
Arrays are converted to the documented dtype only when that is lossless
(e.g. a float64 depth becomes float32, a float RGB image is rejected).

``MESSAGE_TYPES`` maps a type name to its class; the codec (``runtime/codec.py``)
uses it, and launch graphs name message types by these strings.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from engram.runtime.msg_checks import (  # validation helpers (split out for size)
    _INT_RANGE,
    MessageError,
    _array,
    _coerce_plain,
    _fail,
    _finite_number,
    _intrinsics,
    _nonneg,
    _plain_fields,
    _plain_problem,
    _pose,
    _same_len,
    pose_problem,
)
from engram.runtime.trust import scan_values  # payload scans skipped for shm (see there)

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_TOP_K",
    "MESSAGE_TYPES",
    "ActionChunk",
    "AudioChunk",
    "Frame",
    "Heartbeat",
    "Instruction",
    "MemoryQuery",
    "Message",
    "MessageError",
    "Percept",
    "PlanStep",
    "Recall",
    "RobotState",
    "SoundEvent",
    "Transcript",
    "message_type",
    "pose_problem",
]


# defaults of pose / intrinsics fields: each message gets its own copy (np.eye per message
# cost ~2x a copy, and a Frame makes two)
_EYE3 = np.eye(3)
_EYE4 = np.eye(4)

#: largest ``MemoryQuery.top_k`` (a query for more is refused, not run)
MAX_TOP_K = 1000
#: longest ``MemoryQuery.text``, in characters (the web form allows 1000)
MAX_QUERY_CHARS = 4096


# ---------------------------------------------------------------------------
# base


@dataclass(kw_only=True, eq=False)
class Message:
    """Base of every message: a capture stamp and a per-publisher sequence number."""

    TYPE: ClassVar[str] = "Message"
    #: schema version of this message type; bump when fields change meaning.
    SCHEMA: ClassVar[int] = 1

    stamp_ns: int = field(default_factory=time.time_ns)  # capture time, ns
    seq: int = 0  # per-publisher sequence number; 0 = let the bus assign

    def __post_init__(self) -> None:
        # (plain loops over cached field lists: this runs for every message built or
        # decoded, on the bus's hot path, often with caches cold from an image copy)
        values = self.__dict__
        for name in ("stamp_ns", "seq"):
            value = values[name]
            if type(value) is not int or value < 0:
                _nonneg(self, name)
        plain, declared = _plain_fields(type(self))
        for name, kind in declared:  # declared types first: validate() may rely on them
            value = values[name]
            if type(value) is not kind:
                _coerce_plain(self, name, value, kind)
        self.validate()
        for name in plain:
            value = values[name]
            if value is None:  # (an optional array left out: nothing to look at)
                continue
            if not isinstance(value, (str, int, float, np.ndarray)):
                if type(value) in (list, dict) and not value:
                    continue  # an empty list / dict (the usual labels): nothing inside
                problem = _plain_problem(value, 0)
                if problem:
                    _fail(self, name, problem)
            elif isinstance(value, str) and not value.isascii():
                problem = _plain_problem(value, 0)
                if problem:
                    _fail(self, name, problem)
            elif isinstance(value, int) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
                _fail(self, name, f"int {value} does not fit in 64 bits")

    def validate(self) -> None:
        """Subclasses check their own fields; raise ``MessageError``."""

    # Equality compares arrays by value, so round-trip tests can use ``==``.
    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (
                    isinstance(a, np.ndarray)
                    and isinstance(b, np.ndarray)
                    and a.dtype == b.dtype
                    and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
                ):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def replace(self, **changes: Any) -> Message:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------
# sensors


@dataclass(kw_only=True, eq=False)
class Frame(Message):
    """One camera image, optionally with depth and segmentation.

    rgb: (H, W, 3) uint8. depth: (H, W) float32 metres (0/NaN = invalid).
    segmentation: (H, W) int32 object ids (-1 = background/none).
    intrinsics: (3, 3) float64 K. world_from_camera: (4, 4) float64, OpenCV camera frame.
    """

    TYPE: ClassVar[str] = "Frame"

    camera: str = "camera"
    rgb: np.ndarray
    depth: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    intrinsics: np.ndarray = field(default_factory=_EYE3.copy)
    world_from_camera: np.ndarray = field(default_factory=_EYE4.copy)
    #: segmentation id -> label (body name in simulation); JSON keys are strings.
    labels: dict[str, str] = field(default_factory=dict)
    #: labels (values of ``labels``) of the robot's own parts: not objects (perception skips them)
    robot_labels: list[str] = field(default_factory=list)

    def validate(self) -> None:
        _array(self, "rgb", "uint8", (None, None, 3))
        h, w = self.rgb.shape[:2]
        if self.depth is not None:  # (optional: no call for the usual RGB-only frame)
            _array(self, "depth", "float32", (h, w))
        if self.segmentation is not None:
            _array(self, "segmentation", "int32", (h, w))
        _intrinsics(self, "intrinsics")
        _pose(self, "world_from_camera")
        if self.depth is not None and scan_values() and np.any(self.depth < 0):
            _fail(self, "depth", "negative depth values")


@dataclass(kw_only=True, eq=False)
class AudioChunk(Message):
    """A block of audio samples. ``stamp_ns`` is the time of the first sample.

    pcm: (N, C) float32 in [-1, 1]. world_from_mic: where the microphone was (optional).
    end_of_stream: True on the last chunk of a finite source (a file that ended): listeners
    close what is open (the last utterance is transcribed now, not when the program stops).
    """

    TYPE: ClassVar[str] = "AudioChunk"

    source: str = "mic"
    pcm: np.ndarray
    sample_rate_hz: int = 16000
    world_from_mic: np.ndarray | None = None
    end_of_stream: bool = False

    def validate(self) -> None:
        if isinstance(self.pcm, np.ndarray) and self.pcm.ndim == 1:
            object.__setattr__(self, "pcm", self.pcm[:, None])
        _array(self, "pcm", "float32", (None, None), finite=True)
        if self.pcm.shape[1] < 1:
            _fail(self, "pcm", "needs at least one channel")
        if not isinstance(self.sample_rate_hz, (int, np.integer)) or self.sample_rate_hz <= 0:
            _fail(self, "sample_rate_hz", f"must be a positive int, got {self.sample_rate_hz!r}")
        _pose(self, "world_from_mic", optional=True)

    @property
    def channels(self) -> int:
        return int(self.pcm.shape[1])

    @property
    def duration_s(self) -> float:
        return self.pcm.shape[0] / self.sample_rate_hz


@dataclass(kw_only=True, eq=False)
class RobotState(Message):
    """Proprioception. joint_*: (J,) float64. world_from_base: (4, 4).

    world_from_ee: end-effector pose (arms), gripper_width_m: finger opening.
    """

    TYPE: ClassVar[str] = "RobotState"

    robot: str = "robot"
    joint_positions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    joint_velocities: np.ndarray = field(default_factory=lambda: np.zeros(0))
    world_from_base: np.ndarray = field(default_factory=_EYE4.copy)
    world_from_ee: np.ndarray | None = None
    gripper_width_m: float = 0.0

    def validate(self) -> None:
        _array(self, "joint_positions", "float64", (None,), finite=True)
        _array(self, "joint_velocities", "float64", (None,), finite=True)
        _pose(self, "world_from_base")
        _pose(self, "world_from_ee", optional=True)
        _finite_number(self, "gripper_width_m")


# ---------------------------------------------------------------------------
# perception outputs


@dataclass(kw_only=True, eq=False)
class Percept(Message):
    """What perception made of one frame. ``stamp_ns`` is the frame's capture time.

    embedding: (D,) float32 whole-image embedding.
    Objects, K of them: object_ids (K,) int32, object_labels K strings,
    object_confidences (K,) float32, object_boxes (K, 4) int32 pixel xyxy,
    object_centroids (K, 3) float32 world metres, object_extents (K, 3) float32
    metres (axis-aligned size in world), object_embeddings (K, D) float32.
    points: (N, 3) float32 world points (voxel-downsampled) seen in this frame,
    point_object_ids: (N,) int32 (-1 = none). The camera origin for ray carving is
    ``world_from_camera[:3, 3]``. thumbnail: (h, w, 3) uint8, small.
    image_width_px / image_height_px: size of the frame the boxes are in (0 = unknown).
    object_depth_valid: (K,) bool, False where an object's centroid is not measured
    (no depth: placed along the camera ray through its box at a nominal range, extent 0);
    None = all measured.
    object_brightness: (K,) float32 in [0, 1], how bright each object's own pixels are
    (90th percentile of the max RGB channel over its mask in the full frame: a lamp that
    lights up raises it); None = not measured.
    """

    TYPE: ClassVar[str] = "Percept"

    camera: str = "camera"
    frame_seq: int = 0
    keyframe: bool = True
    world_from_camera: np.ndarray = field(default_factory=_EYE4.copy)
    embedding: np.ndarray | None = None
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    object_labels: list[str] = field(default_factory=list)
    object_confidences: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    object_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int32))
    object_centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    object_extents: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    object_embeddings: np.ndarray | None = None
    points: np.ndarray | None = None
    point_object_ids: np.ndarray | None = None
    thumbnail: np.ndarray | None = None
    image_width_px: int = 0
    image_height_px: int = 0
    object_depth_valid: np.ndarray | None = None
    object_brightness: np.ndarray | None = None

    def validate(self) -> None:
        _nonneg(self, "frame_seq")
        _nonneg(self, "image_width_px")
        _nonneg(self, "image_height_px")
        _pose(self, "world_from_camera")
        _array(self, "embedding", "float32", (None,), optional=True, finite=True)
        _array(self, "object_ids", "int32", (None,))
        _array(self, "object_confidences", "float32", (None,), finite=True)
        _array(self, "object_boxes", "int32", (None, 4))
        _array(self, "object_centroids", "float32", (None, 3), finite=True)
        _array(self, "object_extents", "float32", (None, 3), finite=True)
        _array(self, "object_embeddings", "float32", (None, None), optional=True, finite=True)
        if not isinstance(self.object_labels, list) or not all(
            isinstance(s, str) for s in self.object_labels
        ):
            _fail(self, "object_labels", "must be a list of str")
        _same_len(
            self,
            [
                "object_ids",
                "object_labels",
                "object_confidences",
                "object_boxes",
                "object_centroids",
                "object_extents",
                "object_embeddings",
            ],
        )
        _array(self, "object_depth_valid", "bool", (None,), optional=True)
        if self.object_depth_valid is not None and len(self.object_depth_valid) != len(
            self.object_ids
        ):
            _fail(self, "object_depth_valid", "must have one entry per object")
        _array(self, "object_brightness", "float32", (None,), optional=True, finite=True)
        if self.object_brightness is not None and len(self.object_brightness) != len(
            self.object_ids
        ):
            _fail(self, "object_brightness", "must have one entry per object")
        _array(self, "points", "float32", (None, 3), optional=True, finite=True)
        _array(self, "point_object_ids", "int32", (None,), optional=True)
        if self.point_object_ids is not None and (
            self.points is None or len(self.points) != len(self.point_object_ids)
        ):
            _fail(self, "point_object_ids", "must match points in length")
        _array(self, "thumbnail", "uint8", (None, None, 3), optional=True)

    @property
    def num_objects(self) -> int:
        return len(self.object_ids)


@dataclass(kw_only=True, eq=False)
class Transcript(Message):
    """Recognised speech. start_ns/end_ns: segment times; embedding: (D,) float32 text embedding.

    world_from_robot: where the robot was when it heard it (optional).
    final: False for a partial (the utterance is still being spoken; a final one with the
    same ``utterance_id`` replaces it), True once the utterance ended.
    words: ``[{"word": str, "start_ns": int, "end_ns": int, "probability": float}, ...]``.
    source: the AudioChunk.source it was heard on; speaker: who spoke ("" = unknown).
    """

    TYPE: ClassVar[str] = "Transcript"

    text: str = ""
    start_ns: int = 0
    end_ns: int = 0
    language: str = ""
    confidence: float = 0.0
    speaker: str = ""
    embedding: np.ndarray | None = None
    world_from_robot: np.ndarray | None = None
    final: bool = True
    utterance_id: int = 0
    source: str = ""
    words: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> None:
        _nonneg(self, "start_ns")
        _nonneg(self, "end_ns")
        if self.end_ns < self.start_ns:
            _fail(self, "end_ns", f"ends before it starts ({self.end_ns} < {self.start_ns})")
        _finite_number(self, "confidence")
        if not isinstance(self.words, list) or not all(
            isinstance(w, dict) and isinstance(w.get("word"), str) for w in self.words
        ):
            _fail(self, "words", 'must be a list of {"word": str, "start_ns", "end_ns", ...}')
        _array(self, "embedding", "float32", (None,), optional=True, finite=True)
        _pose(self, "world_from_robot", optional=True)


@dataclass(kw_only=True, eq=False)
class SoundEvent(Message):
    """A non-speech sound (a bell, a tone). embedding: (D,) float32 spectral embedding.

    world_from_robot: where the robot was when it heard it (optional).
    """

    TYPE: ClassVar[str] = "SoundEvent"

    source: str = "mic"
    label: str = ""
    start_ns: int = 0
    end_ns: int = 0
    energy_db: float = 0.0
    peak_hz: float = 0.0
    embedding: np.ndarray | None = None
    world_from_robot: np.ndarray | None = None

    def validate(self) -> None:
        _nonneg(self, "start_ns")
        _nonneg(self, "end_ns")
        if self.end_ns < self.start_ns:
            _fail(self, "end_ns", f"ends before it starts ({self.end_ns} < {self.start_ns})")
        _finite_number(self, "energy_db")
        _finite_number(self, "peak_hz")
        _array(self, "embedding", "float32", (None,), optional=True, finite=True)
        _pose(self, "world_from_robot", optional=True)


# ---------------------------------------------------------------------------
# tasks, planning, action


@dataclass(kw_only=True, eq=False)
class Instruction(Message):
    """A natural-language task instruction (from a user, a sim task, ROS 2).

    ``phase`` says whether the robot may act on it yet: ``""`` (a user's instruction,
    ROS 2): at once; ``"show"``: not yet, something is being shown first (a simulated
    task's show phase, a person demonstrating) and a policy only watches and remembers;
    ``"act"``: now. A sender re-publishes the same text and ``episode_id`` with the new
    phase when it changes; receivers treat that as the same instruction (no new plan,
    no new episode). The simulator sends ``show`` at an episode's start and ``act`` when
    its show phase ends; on a real robot a person shows something first, and the
    operator's or the app's "go" is the ``act`` (an ``Instruction`` without a phase, as
    from a ROS 2 topic, acts at once)."""

    TYPE: ClassVar[str] = "Instruction"
    PHASES: ClassVar[tuple[str, ...]] = ("", "show", "act")

    text: str = ""
    task: str = ""
    episode_id: str = ""
    phase: str = ""

    def validate(self) -> None:
        if not isinstance(self.text, str):
            _fail(self, "text", f"must be str, got {type(self.text).__name__}")
        if self.phase not in self.PHASES:
            _fail(self, "phase", f"must be one of {self.PHASES}, got {self.phase!r}")


@dataclass(kw_only=True, eq=False)
class PlanStep(Message):
    """One subgoal of a plan and its status.

    status: one of ``pending``, ``running``, ``succeeded``, ``failed``, ``aborted``.
    """

    TYPE: ClassVar[str] = "PlanStep"
    STATUSES: ClassVar[tuple[str, ...]] = ("pending", "running", "succeeded", "failed", "aborted")

    skill: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"
    attempt: int = 0
    reason: str = ""
    episode_id: str = ""

    def validate(self) -> None:
        if self.status not in self.STATUSES:
            _fail(self, "status", f"must be one of {self.STATUSES}, got {self.status!r}")
        _nonneg(self, "attempt")


@dataclass(kw_only=True, eq=False)
class ActionChunk(Message):
    """A chunk of H future actions, executed one per ``dt_s``.

    actions: (H, A) float32. action_space names the layout (see ``sim/`` controllers),
    e.g. ``arm_ee_delta`` or ``base_velocity``.
    """

    TYPE: ClassVar[str] = "ActionChunk"

    robot: str = "robot"
    action_space: str = ""
    actions: np.ndarray
    dt_s: float = 0.1
    plan_step_seq: int = 0

    def validate(self) -> None:
        _array(self, "actions", "float32", (None, None), finite=True)
        _finite_number(self, "dt_s", positive=True)
        _nonneg(self, "plan_step_seq")


# ---------------------------------------------------------------------------
# memory


@dataclass(kw_only=True, eq=False)
class MemoryQuery(Message):
    """A question to the memory system.

    memories: names of memories to ask (empty = all relevant).
    embedding: (D,) float32 query embedding (optional; the memory node embeds ``text``).
    t0_ns/t1_ns: time window (0 = open). near: (3,) float32 world point, radius_m around it.
    """

    TYPE: ClassVar[str] = "MemoryQuery"

    text: str = ""
    memories: list[str] = field(default_factory=list)
    top_k: int = 5
    embedding: np.ndarray | None = None
    t0_ns: int = 0
    t1_ns: int = 0
    near: np.ndarray | None = None
    radius_m: float = 0.0
    answer: bool = False  # also compose an answer (Recall.answer) from the memories

    def validate(self) -> None:
        if not isinstance(self.answer, bool):
            _fail(self, "answer", f"must be a bool, got {self.answer!r}")
        if (
            not isinstance(self.top_k, (int, np.integer))
            or isinstance(self.top_k, bool)
            or not 1 <= self.top_k <= MAX_TOP_K
        ):
            _fail(self, "top_k", f"must be an int from 1 to {MAX_TOP_K}, got {self.top_k!r}")
        object.__setattr__(self, "top_k", int(self.top_k))
        if not isinstance(self.text, str) or len(self.text) > MAX_QUERY_CHARS:
            size = len(self.text) if isinstance(self.text, str) else type(self.text).__name__
            _fail(
                self, "text", f"must be a str of at most {MAX_QUERY_CHARS} characters, got {size}"
            )
        _array(self, "embedding", "float32", (None,), optional=True, finite=True)
        _nonneg(self, "t0_ns")
        _nonneg(self, "t1_ns")
        _array(self, "near", "float32", (3,), optional=True, finite=True)
        _finite_number(self, "radius_m")


@dataclass(kw_only=True, eq=False)
class Recall(Message):
    """The memory system's answer to a ``MemoryQuery`` (matched by ``query_seq``).

    hits: ranked list of dicts, each with at least ``memory`` (source memory name),
    ``score`` (float, higher is better), ``text``, ``stamp_ns``, and optionally
    ``position`` ([x, y, z] metres, world), ``provenance`` (dict) and ``record_id``.
    """

    TYPE: ClassVar[str] = "Recall"

    query_seq: int = 0
    query_text: str = ""
    hits: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    # asked for (MemoryQuery.answer): engram.memory.answer.Answer.to_dict(); {} = none
    answer: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _nonneg(self, "query_seq")
        if not isinstance(self.hits, list) or not all(isinstance(h, dict) for h in self.hits):
            _fail(self, "hits", "must be a list of dicts")
        a = self.answer
        if not isinstance(a, dict) or (a and not isinstance(a.get("abstained"), bool)):
            _fail(self, "answer", "must be {} or an answer object with a bool 'abstained'")


# ---------------------------------------------------------------------------
# health


@dataclass(kw_only=True, eq=False)
class Heartbeat(Message):
    """A node's health, published periodically on ``/heartbeat``.

    state: ``starting`` | ``running`` | ``stopping`` | ``error``.
    counters: received, dropped, decode_errors, handler_errors, published, ...
    latency_ms: per-stage latency summaries, e.g. ``{"encode_p95": 12.0}``.
    """

    TYPE: ClassVar[str] = "Heartbeat"

    node: str = ""
    state: str = "running"
    uptime_s: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _finite_number(self, "uptime_s")


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Frame,
        AudioChunk,
        RobotState,
        Percept,
        Transcript,
        SoundEvent,
        Instruction,
        PlanStep,
        ActionChunk,
        MemoryQuery,
        Recall,
        Heartbeat,
    )
}


def message_type(name: str) -> type[Message]:
    """The message class for a type name; ``KeyError`` lists the known names."""
    try:
        return MESSAGE_TYPES[name]
    except KeyError:
        raise KeyError(
            f"unknown message type {name!r}; known: {', '.join(sorted(MESSAGE_TYPES))}"
        ) from None
