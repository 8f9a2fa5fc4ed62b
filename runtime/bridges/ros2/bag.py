"""Read a ROS 2 bag (sqlite3 ``.db3`` or MCAP) as Engram messages, or replay it onto a bus.

``read_bag(path)`` yields ``(engram_topic, message)``; ``replay_bag(path, bus)``
publishes them paced by the bag's timestamps (``rate`` x real time; ``rate`` None
or <= 0: as fast as possible) and returns how many it published. ``engram replay BAG``
(``runtime/replay.py``) calls ``replay_bag``.

What is read (roles; a ``topic_map`` names the ROS topic of each, else they are
found by message type and name):

========== ======================================================== ==================
role       ROS 2 message types                                      Engram output
========== ======================================================== ==================
rgb        sensor_msgs/Image (colour), sensor_msgs/CompressedImage  Frame on /frames
depth      sensor_msgs/Image 16UC1 (mm) / 32FC1 (m)                 Frame.depth
camera_info sensor_msgs/CameraInfo                                  Frame.intrinsics
odom       nav_msgs/Odometry                                        RobotState on /robot_state,
                                                                    Frame.world_from_camera
tf         tf2_msgs/TFMessage (/tf, /tf_static)                     Frame.world_from_camera
audio      std_msgs/Float32MultiArray, UInt8MultiArray,             AudioChunk on /audio
           audio_common_msgs/AudioData(Stamped)
instruction std_msgs/String                                         Instruction on /instruction
========== ======================================================== ==================

Auto-detection: Image/CompressedImage topics whose name contains ``depth`` are
depth, the others colour (preferring ``color``/``rgb`` names and raw over
compressed); the CameraInfo topic sharing the longest prefix with the colour
topic; any Odometry topic (preferring ``odom`` names); every TFMessage topic;
audio_common types, or a multi-array topic with ``audio`` in its name; a String
topic with ``instruction`` in its name. A colour image is paired with the depth
image nearest in stamp (within ``max_pair_dt_s``) and gets the latest camera
info and pose (see ``engram.runtime.bridges.ros2.assembler.FrameAssembler``). A message that fails
to convert is logged and counted, never fatal.

``topic_map`` may be a ``BagTopicMap``, a dict, or a string of comma-separated
``KEY=VALUE`` items (``engram replay --topic-map`` passes a dict). Each item is one of

- ``role=/ros/topic`` (``rgb=/cam/color/image_raw``): the ROS topic of a role;
  ``role=`` (empty) switches the role off;
- ``/ros/topic=role`` (``/cam/color/image_raw=rgb``): the same, written the other way;
- ``/engram/topic=/new/topic`` (``/frames=/camera/frames``): publish what would go
  to an Engram output topic (``BagReplayConfig``: /frames, /audio, /robot_state,
  /instruction) on another topic instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engram.runtime.bridges.ros2 import assembler, rostypes
from engram.runtime.bridges.ros2 import convert as cv
from engram.runtime.bus import Bus
from engram.runtime.messages import Message

__all__ = [
    "BagError",
    "BagReplayConfig",
    "BagTopicMap",
    "bag_topics",
    "read_bag",
    "replay_bag",
    "resolve_topic_map",
    "split_topic_map",
]

log = logging.getLogger(__name__)

_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED = "sensor_msgs/msg/CompressedImage"
_INFO = "sensor_msgs/msg/CameraInfo"
_ODOM = "nav_msgs/msg/Odometry"
_TF = "tf2_msgs/msg/TFMessage"
_STRING = "std_msgs/msg/String"

#: role -> ROS message types it accepts
ROLE_TYPES: dict[str, tuple[str, ...]] = {
    "rgb": (_IMAGE, _COMPRESSED),
    "depth": (_IMAGE,),
    "camera_info": (_INFO,),
    "odom": (_ODOM,),
    "tf": (_TF,),
    "audio": rostypes.AUDIO_TYPES,
    "instruction": (_STRING,),
}


class BagError(ValueError):
    """The bag cannot be opened, or the topic map does not fit it."""


@dataclass
class BagTopicMap:
    """Which ROS topic plays which role. None = auto-detect; "" = do not read that role."""

    rgb: str | None = None  # colour images (Image or CompressedImage)
    depth: str | None = None  # depth images (16UC1 mm or 32FC1 m)
    camera_info: str | None = None  # CameraInfo of the colour camera
    odom: str | None = None  # nav_msgs/Odometry: robot pose
    tf: str | None = None  # TFMessage topics, comma-separated (None = every TFMessage topic)
    audio: str | None = None  # an audio topic (see engram.runtime.bridges.ros2.convert)
    instruction: str | None = None  # std_msgs/String task instructions

    @classmethod
    def parse(cls, value: BagTopicMap | dict[str, str] | str | None) -> BagTopicMap:
        """From a ``BagTopicMap``, a dict, ``"role=/topic,role=/topic"`` or None."""
        if value is None:
            return cls()
        if isinstance(value, BagTopicMap):
            return value
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                role, sep, topic = item.partition("=")
                if not sep:
                    raise BagError(f"topic map item {item!r}: use role=/topic")
                pairs[role.strip()] = topic.strip()
            value = pairs
        if not isinstance(value, dict):
            raise BagError(f"topic map must be a dict or 'role=/topic,...', got {value!r}")
        roles = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(roles))
        if unknown:
            raise BagError(f"topic map: unknown role(s) {unknown}; roles are {roles}")
        return cls(**{k: (v if v is None else str(v)) for k, v in value.items()})


@dataclass
class BagReplayConfig:
    """Where bag contents go on the Engram bus and how streams are joined."""

    frames_topic: str = "/frames"  # Frame messages
    audio_topic: str = "/audio"  # AudioChunk messages
    robot_state_topic: str = "/robot_state"  # RobotState from odometry
    instruction_topic: str = "/instruction"  # Instruction from a String topic
    robot: str = "robot"  # RobotState.robot
    audio_source: str = "mic"  # AudioChunk.source
    audio_sample_rate_hz: int = 16000  # for audio layouts that do not carry the rate
    audio_channels: int = 1  # for S16LE byte layouts
    max_pair_dt_s: float = 0.02  # largest colour/depth stamp difference that pairs
    world_frame: str = ""  # TF frame of world poses ("" = root of the camera's TF tree)
    camera: str = ""  # Frame.camera ("" = the image's frame_id)
    #: (4, 4) camera pose in the odometry child frame when TF has no camera chain;
    #: None = identity (the odometry pose is the camera pose)
    base_from_camera: list[list[float]] | None = None


TopicMapLike = BagTopicMap | dict[str, str] | str | None


def split_topic_map(
    value: TopicMapLike, config: BagReplayConfig | None = None
) -> tuple[BagTopicMap, dict[str, str]]:
    """``(roles, output remaps)`` from any accepted topic-map form (module docstring)."""
    config = config or BagReplayConfig()
    if value is None or isinstance(value, BagTopicMap):
        return BagTopicMap.parse(value), {}
    if isinstance(value, str):
        items: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in value.split(","))):
            key, sep, val = item.partition("=")
            if not sep:
                raise BagError(
                    f"topic map item {item!r}: use role=/topic, /topic=role or /old=/new"
                )
            items[key.strip()] = val.strip()
        value = items
    if not isinstance(value, dict):
        raise BagError(f"topic map must be a dict or 'KEY=VALUE,...', got {value!r}")
    roles_available = [f.name for f in dataclasses.fields(BagTopicMap)]
    outputs = {
        config.frames_topic,
        config.audio_topic,
        config.robot_state_topic,
        config.instruction_topic,
    }
    roles: dict[str, str] = {}
    remap: dict[str, str] = {}
    for key, val in value.items():
        key, val = str(key), "" if val is None else str(val)
        if key in roles_available:
            roles[key] = val
        elif val in roles_available:
            roles[val] = key
        elif key in outputs:
            remap[key] = val
        else:
            raise BagError(
                f"topic map item {key}={val}: neither side is a role ({', '.join(roles_available)}) "
                f"nor is {key} an Engram output topic ({', '.join(sorted(outputs))})"
            )
    return BagTopicMap.parse(roles), remap


def _typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return rostypes.register_audio_types(get_typestore(Stores.ROS2_JAZZY))


def _open(path: str | Path) -> Any:
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise BagError(f"ROS 2 bag {str(path)!r} does not exist")
    try:
        reader = AnyReader([path], default_typestore=_typestore())
        reader.open()
    except Exception as exc:  # noqa: BLE001 - reported with the path
        raise BagError(f"cannot open ROS 2 bag {str(path)!r}: {exc}") from None
    return reader


def bag_topics(path: str | Path) -> dict[str, str]:
    """``{topic: message type}`` of a bag."""
    reader = _open(path)
    try:
        return {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()


def _score_rgb(topic: str, msgtype: str) -> tuple[int, str]:
    name = topic.lower()
    score = 0
    score += 4 if ("color" in name or "rgb" in name) else 0
    score += 2 if msgtype == _IMAGE else 0
    score += 1 if "raw" in name or "rect" in name else 0
    return (-score, topic)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/")):
        if x != y:
            break
        n += 1
    return n


def resolve_topic_map(
    topics: dict[str, str], topic_map: TopicMapLike = None
) -> dict[str, list[str]]:
    """``{role: [ros topics]}`` for a bag's ``{topic: type}``; explicit entries are checked."""
    tmap, _ = split_topic_map(topic_map)
    listing = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
    out: dict[str, list[str]] = {}
    for role, accepted in ROLE_TYPES.items():
        wanted = getattr(tmap, role)
        if wanted is None:
            continue
        chosen = [t.strip() for t in wanted.split(",") if t.strip()]
        for topic in chosen:
            if topic not in topics:
                raise BagError(f"topic map: {role}={topic} is not in the bag; topics: {listing}")
            if topics[topic] not in accepted:
                raise BagError(
                    f"topic map: {role}={topic} has type {topics[topic]}, expected one of "
                    f"{', '.join(accepted)}"
                )
        out[role] = chosen
    images = sorted(t for t, m in topics.items() if m in (_IMAGE, _COMPRESSED))
    if "depth" not in out:
        depth = [t for t in images if "depth" in t.lower() and topics[t] == _IMAGE]
        out["depth"] = depth[:1]
    if "rgb" not in out:
        colour = [t for t in images if "depth" not in t.lower() and t not in out["depth"]]
        colour.sort(key=lambda t: _score_rgb(t, topics[t]))
        if len(colour) > 1:
            log.info("bag has several colour topics %s; using %s", colour, colour[0])
        out["rgb"] = colour[:1]
    if "camera_info" not in out:
        infos = sorted(t for t, m in topics.items() if m == _INFO)
        if out["rgb"] and infos:
            rgb = out["rgb"][0]
            infos.sort(key=lambda t: (-_common_prefix(t, rgb), "depth" in t.lower(), t))
        out["camera_info"] = infos[:1]
    if "odom" not in out:
        odom = sorted(
            (t for t, m in topics.items() if m == _ODOM), key=lambda t: ("odom" not in t, t)
        )
        out["odom"] = odom[:1]
    if "tf" not in out:
        out["tf"] = sorted(t for t, m in topics.items() if m == _TF)
    if "audio" not in out:
        audio = sorted(
            t
            for t, m in topics.items()
            if m.startswith("audio_common_msgs/")
            or (m in rostypes.AUDIO_TYPES and "audio" in t.lower())
        )
        out["audio"] = audio[:1]
    if "instruction" not in out:
        out["instruction"] = sorted(
            t for t, m in topics.items() if m == _STRING and "instruction" in t.lower()
        )[:1]
    return {role: ts for role, ts in out.items() if ts}


class _BagConverter:
    """Turns one bag's messages, in log-time order, into Engram messages."""

    def __init__(self, roles: dict[str, list[str]], config: BagReplayConfig) -> None:
        self.config = config
        self.role_of = {t: role for role, ts in roles.items() for t in ts}
        asm = assembler.FrameAssemblerConfig(
            expect_depth=bool(roles.get("depth")),
            max_pair_dt_s=config.max_pair_dt_s,
            world_frame=config.world_frame,
            camera=config.camera,
            base_from_camera=config.base_from_camera,
        )
        self.frames = assembler.FrameAssembler(asm)
        self.errors: dict[str, int] = {}

    def convert(self, topic: str, msg: Any, log_time_ns: int) -> list[tuple[str, Message]]:
        role = self.role_of.get(topic)
        cfg = self.config
        try:
            if role == "rgb":
                return [
                    (cfg.frames_topic, f) for f in self.frames.add_color(msg, stamp_ns=log_time_ns)
                ]
            if role == "depth":
                return [
                    (cfg.frames_topic, f) for f in self.frames.add_depth(msg, stamp_ns=log_time_ns)
                ]
            if role == "camera_info":
                self.frames.add_camera_info(msg)
            elif role == "tf":
                self.frames.add_tf(msg)
            elif role == "odom":
                state = self.frames.add_odometry(msg)
                state = state.replace(robot=cfg.robot)
                if state.stamp_ns == 0:
                    state = state.replace(stamp_ns=log_time_ns)
                return [(cfg.robot_state_topic, state)]
            elif role == "audio":
                chunk = cv.ros_audio_to_chunk(
                    msg,
                    stamp_ns=log_time_ns,
                    sample_rate_hz=cfg.audio_sample_rate_hz,
                    channels=cfg.audio_channels,
                    source=cfg.audio_source,
                )
                return [(cfg.audio_topic, chunk)]
            elif role == "instruction":
                return [
                    (cfg.instruction_topic, cv.string_to_instruction(msg, stamp_ns=log_time_ns))
                ]
        except (rostypes.ConversionError, ValueError) as exc:
            self.errors[topic] = self.errors.get(topic, 0) + 1
            if self.errors[topic] <= 3:
                log.warning("bag topic %s at %d ns: %s (message skipped)", topic, log_time_ns, exc)
        return []

    def flush(self) -> list[tuple[str, Message]]:
        return [(self.config.frames_topic, f) for f in self.frames.flush()]


def _iter_bag(
    path: str | Path,
    topic_map: TopicMapLike,
    config: BagReplayConfig | None,
) -> Iterator[tuple[int, str, Message]]:
    """``(log_time_ns, engram_topic, message)`` in log-time order."""
    config = config or BagReplayConfig()
    role_map, remap = split_topic_map(topic_map, config)
    reader = _open(path)
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        roles = resolve_topic_map(topics, role_map)
        if not roles:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
            raise BagError(f"bag {str(path)!r} has no topic Engram can read; topics: {listing}")
        log.info("bag %s: roles %s", path, roles)
        wanted = {t for ts in roles.values() for t in ts}
        connections = [c for c in reader.connections if c.topic in wanted]
        conv = _BagConverter(roles, config)
        last_ns = 0
        for connection, log_time_ns, raw in _checked(
            reader.messages(connections=connections), path
        ):
            last_ns = log_time_ns
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except Exception as exc:  # noqa: BLE001 - a corrupt record must not stop a replay
                conv.errors[connection.topic] = conv.errors.get(connection.topic, 0) + 1
                log.warning("bag topic %s: cannot deserialize (%s)", connection.topic, exc)
                continue
            for topic, out in conv.convert(connection.topic, msg, log_time_ns):
                yield log_time_ns, remap.get(topic, topic), out
        for topic, out in conv.flush():
            yield last_ns, remap.get(topic, topic), out
        if conv.errors:
            log.warning("bag %s: messages skipped per topic: %s", path, conv.errors)
    finally:
        reader.close()


def _checked(records: Iterator[Any], path: str | Path) -> Iterator[Any]:
    """The reader's records; a damaged or incomplete bag (rosbags raises its own errors,
    sqlite3's, struct's, ... part-way) ends in one ``BagError`` saying how far it got."""
    n = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - any reader failure is a damaged bag
            raise BagError(
                f"ROS 2 bag {str(path)!r} is damaged or incomplete: reading stopped after "
                f"{n} message(s) ({type(exc).__name__}: {exc})"
            ) from None
        n += 1
        yield record


def read_bag(
    path: str | Path,
    *,
    topic_map: TopicMapLike = None,
    config: BagReplayConfig | None = None,
) -> Iterator[tuple[str, Message]]:
    """``(engram_topic, message)`` for every Engram message a bag yields, in time order."""
    for _, topic, msg in _iter_bag(path, topic_map, config):
        yield topic, msg


def replay_bag(
    path: str | Path,
    bus: Bus,
    *,
    topic_map: TopicMapLike = None,
    rate: float | None = 1.0,
    config: BagReplayConfig | None = None,
) -> int:
    """Publish a bag's messages on ``bus`` at ``rate`` x recorded speed (None or <= 0:
    as fast as possible).

    Returns the number of messages published.
    """
    published = 0
    start_wall = time.monotonic()
    first_ns: int | None = None
    for log_time_ns, topic, msg in _iter_bag(path, topic_map, config):
        if rate is not None and rate > 0:
            if first_ns is None:
                first_ns = log_time_ns
            due = start_wall + (log_time_ns - first_ns) / 1e9 / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        bus.publish(topic, msg)
        published += 1
    return published
