"""ROS 2 message types as Engram's bridge sees them: ``RosTypes`` providers that build
messages (``RosbagsTypes``, ``RclpyTypes``; ``engram.runtime.bridges.ros2.dds.DdsTypes``),
type names, the audio_common message definitions, stamps and headers, ``ConversionError``.

Conventions are in ``engram.runtime.bridges.ros2.convert``'s docstring.
"""

from __future__ import annotations

import array
import importlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = [
    "AUDIO_COMMON_MSGDEFS",
    "AUDIO_TYPES",
    "ConversionError",
    "RclpyTypes",
    "RosTypes",
    "RosbagsTypes",
    "as_array",
    "as_bytes_u8",
    "header_stamp",
    "make_header",
    "ns_to_duration",
    "ns_to_time",
    "register_audio_types",
    "ros_type_name",
    "split_type_name",
    "stamp_to_ns",
]


class ConversionError(ValueError):
    """A ROS message cannot be converted (unknown encoding, wrong size, bad value)."""


AUDIO_TYPES = (
    "std_msgs/msg/Float32MultiArray",
    "std_msgs/msg/UInt8MultiArray",
    "audio_common_msgs/msg/AudioData",
    "audio_common_msgs/msg/AudioDataStamped",
)

#: message definitions of the audio_common audio types (not in the core ROS 2 set),
#: for type stores that lack them (``register_audio_types``)
AUDIO_COMMON_MSGDEFS = {
    "audio_common_msgs/msg/AudioData": "uint8[] data",
    "audio_common_msgs/msg/AudioDataStamped": (
        "std_msgs/Header header\naudio_common_msgs/AudioData audio"
    ),
}


def register_audio_types(typestore: Any) -> Any:
    """Add the audio_common message types to a rosbags type store (idempotent)."""
    from rosbags.typesys import get_types_from_msg

    missing = {}
    for name, text in AUDIO_COMMON_MSGDEFS.items():
        if name not in typestore.types:
            missing.update(get_types_from_msg(text, name))
    if missing:
        typestore.register(missing)
    return typestore


# ---------------------------------------------------------------------------
# type providers


class RosTypes(ABC):
    """How one library builds ROS messages: classes by name and numeric arrays."""

    @abstractmethod
    def new(self, msgtype: str, **fields: Any) -> Any:
        """An instance of ``msgtype`` (``"sensor_msgs/msg/Image"``) with all ``fields``."""

    @abstractmethod
    def seq(self, values: np.ndarray, dtype: str) -> Any:
        """A variable-length numeric array field (``uint8[]``, ``float32[]``, ``float64[]``)."""

    def fixed(self, values: np.ndarray, dtype: str) -> Any:
        """A fixed-length numeric array field (``float64[9]``); numpy by default."""
        return np.ascontiguousarray(values, dtype=dtype).ravel()


class RosbagsTypes(RosTypes):
    """Message classes of a ``rosbags`` type store (default: ROS 2 Jazzy)."""

    def __init__(self, typestore: Any = None) -> None:
        if typestore is None:
            from rosbags.typesys import Stores, get_typestore

            typestore = get_typestore(Stores.ROS2_JAZZY)
        self.typestore = typestore

    def new(self, msgtype: str, **fields: Any) -> Any:
        try:
            cls = self.typestore.types[msgtype]
        except KeyError:
            raise ConversionError(f"type store has no message type {msgtype!r}") from None
        return cls(**fields)

    def seq(self, values: np.ndarray, dtype: str) -> Any:
        return np.ascontiguousarray(values, dtype=dtype).ravel()


_ARRAY_CODES = {"uint8": "B", "int8": "b", "float32": "f", "float64": "d", "int32": "i"}


class RclpyTypes(RosTypes):
    """rclpy's generated classes (``from sensor_msgs.msg import Image``), imported lazily.

    Variable-length numeric arrays are ``array.array`` (what rclpy's setters accept
    without checking every element); fixed-length ones are numpy arrays.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def cls(self, msgtype: str) -> type:
        cls = self._classes.get(msgtype)
        if cls is None:
            pkg, kind, name = split_type_name(msgtype)
            module = importlib.import_module(f"{pkg}.{kind}")
            cls = self._classes[msgtype] = getattr(module, name)
        return cls

    def new(self, msgtype: str, **fields: Any) -> Any:
        return self.cls(msgtype)(**fields)

    def seq(self, values: np.ndarray, dtype: str) -> Any:
        data = np.ascontiguousarray(values, dtype=dtype).ravel()
        out = array.array(_ARRAY_CODES[dtype])
        out.frombytes(data.tobytes())
        return out


def split_type_name(msgtype: str) -> tuple[str, str, str]:
    """``"sensor_msgs/msg/Image"`` (or ``"sensor_msgs/Image"``) -> (package, kind, name)."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ConversionError(f"bad ROS type name {msgtype!r}: use pkg/msg/Name")
    return parts[0], parts[1], parts[2]


def ros_type_name(msg: Any) -> str:
    """``"sensor_msgs/msg/Image"`` for a rosbags, rclpy or DDS (``..::dds_::Image_``) message."""
    name = getattr(msg, "__msgtype__", None)
    if isinstance(name, str):
        return name
    cls = type(msg)
    idl = getattr(cls, "__idl_typename__", None)
    if isinstance(idl, str) and "::dds_::" in idl:
        pkg_kind, _, short = idl.partition("::dds_::")
        return pkg_kind.replace("::", "/") + "/" + short.rstrip("_")
    module = cls.__module__.split(".")
    if len(module) >= 2 and module[1] in ("msg", "srv", "action"):
        return f"{module[0]}/{module[1]}/{cls.__name__}"
    return cls.__name__


# ---------------------------------------------------------------------------
# small helpers


def as_array(value: Any, dtype: str) -> np.ndarray:
    """A numpy view (or copy) of a numeric field: numpy, bytes, array.array or list."""
    if isinstance(value, np.ndarray):
        return value if value.dtype == np.dtype(dtype) else value.astype(dtype)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(value, dtype=dtype)
    if isinstance(value, array.array):
        if value.itemsize == np.dtype(dtype).itemsize:
            return np.frombuffer(value, dtype=dtype)
        return np.asarray(value.tolist(), dtype=dtype)
    return np.asarray(list(value), dtype=dtype)


def as_bytes_u8(value: Any) -> np.ndarray:
    """A uint8 view of a ``uint8[]`` field (numpy, bytes, array.array('B') or list)."""
    return as_array(value, "uint8").reshape(-1)


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (sec, nanosec) -> int nanoseconds (0 for an unset stamp)."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if sec < 0 or nanosec < 0 or nanosec >= 1_000_000_000:
        raise ConversionError(f"stamp: sec={sec} nanosec={nanosec} is not a valid time")
    return sec * 1_000_000_000 + nanosec


def ns_to_time(types: RosTypes, stamp_ns: int) -> Any:
    """int nanoseconds -> builtin_interfaces/Time."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types.new("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def ns_to_duration(types: RosTypes, duration_ns: int) -> Any:
    """int nanoseconds -> builtin_interfaces/Duration."""
    sec, nanosec = divmod(int(duration_ns), 1_000_000_000)
    return types.new("builtin_interfaces/msg/Duration", sec=sec, nanosec=nanosec)


def make_header(types: RosTypes, stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/Header with a stamp in nanoseconds."""
    return types.new("std_msgs/msg/Header", stamp=ns_to_time(types, stamp_ns), frame_id=frame_id)


def header_stamp(msg: Any, default_ns: int | None) -> int:
    """The header stamp, or ``default_ns`` when it is unset (0) and a default is given."""
    ns = stamp_to_ns(msg.header.stamp)
    if ns == 0 and default_ns is not None:
        return int(default_ns)
    return ns
