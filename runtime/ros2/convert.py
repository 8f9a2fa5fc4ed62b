"""Conversions between ROS 2 messages and Engram messages, in pure Python.

No ROS installation is needed: the functions read messages by attribute
(duck typing), so the same code handles

- the ``rosbags`` package's message objects (``get_typestore(Stores.ROS2_JAZZY)``),
  which is what bag replay and the tests use,
- rclpy's generated message classes (``sensor_msgs.msg.Image``) in the bridge
  nodes of ``runtime/ros2/nodes.py``,
- the Cyclone DDS ``IdlStruct`` types of ``runtime/ros2/dds.py``.

Building a ROS message goes through a small ``RosTypes`` provider
(``RosbagsTypes``, ``RclpyTypes`` or ``engram.runtime.ros2.dds.DdsTypes``) that knows how
that library spells a message class and a numeric array. Every builder here
passes every field, so providers whose classes have no defaults (rosbags) work.

Conventions
-----------
- Stamps: ``builtin_interfaces/Time`` (sec, nanosec) <-> ``stamp_ns``.
- Frames: Engram cameras use the OpenCV convention (+x right, +y down, +z forward),
  which is the ROS *optical* frame convention (``*_optical_frame``), so image poses
  need no axis change. ``world_from_camera`` is the transform from the optical
  frame named by the image's ``header.frame_id`` to the world frame.
- Quaternions are ROS order (x, y, z, w).
- Images: ``rgb8``/``bgr8``/``rgba8``/``bgra8``/``mono8``/``8UC3``(as bgr) -> Frame.rgb
  (H, W, 3) uint8; ``16UC1``/``mono16`` (millimetres) and ``32FC1`` (metres) ->
  depth (H, W) float32 metres. Row padding (``step``) and big-endian data are handled.
- Audio (no standard ROS 2 audio message exists in the core set), two layouts:

  * ``std_msgs/Float32MultiArray``: interleaved float32 samples in [-1, 1];
    ``layout.dim[0] = (label="samples@<rate>hz", size=N, stride=N*C)``,
    ``layout.dim[1] = (label="channels", size=C, stride=C)``, ``data_offset = 0``.
    A plain ``"samples"`` label means "the configured sample rate". No stamp
    travels: the receive (or bag) time is taken as the first sample's time.
  * ``audio_common_msgs/AudioData`` (``uint8[] data``), ``AudioDataStamped``
    (``header`` + ``audio``) and ``std_msgs/UInt8MultiArray``: signed 16-bit
    little-endian interleaved PCM, sample rate and channel count from the
    bridge's configuration (as audio_common publishes them on a separate
    ``AudioInfo`` topic).
- Commands: ``geometry_msgs/Twist`` <-> ``ActionChunk`` with action_space
  ``base_velocity``, one row ``[vx, vy, yaw_rate]`` (m/s, m/s, rad/s).
  Arm chunks travel as ``trajectory_msgs/JointTrajectory``: point i carries
  ``positions = actions[i]`` at ``time_from_start = (i + 1) * dt_s``; the
  ``joint_names`` name the action dimensions.
- Language: ``std_msgs/String`` <-> ``Instruction``; a question on a
  ``std_msgs/String`` topic -> ``MemoryQuery`` (plain text, or a JSON object with
  ``text`` and optional ``top_k``, ``memories``, ``t0_ns``, ``t1_ns``, ``near``,
  ``radius_m``); the answer is a ``std_msgs/String`` holding the ``Recall`` as JSON.
"""

from __future__ import annotations

import array
import collections
import importlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.runtime.messages import (
    ActionChunk,
    AudioChunk,
    Frame,
    Instruction,
    MemoryQuery,
    Recall,
    RobotState,
)

__all__ = [
    "AUDIO_COMMON_MSGDEFS",
    "AUDIO_TYPES",
    "COLOR_ENCODINGS",
    "DEPTH_ENCODINGS",
    "ConversionError",
    "FrameAssembler",
    "FrameAssemblerConfig",
    "RclpyTypes",
    "RosTypes",
    "RosbagsTypes",
    "TransformTree",
    "action_chunk_to_joint_trajectory",
    "action_chunk_to_twists",
    "audio_chunk_to_ros",
    "camera_info_to_intrinsics",
    "compressed_to_rgb",
    "depth_to_image",
    "frame_to_compressed",
    "frame_to_image",
    "image_to_array",
    "image_to_depth",
    "image_to_frame",
    "image_to_rgb",
    "instruction_to_string",
    "intrinsics_to_camera_info",
    "joint_trajectory_to_action_chunk",
    "make_header",
    "matrix_to_pose",
    "matrix_to_quaternion",
    "matrix_to_transform",
    "ns_to_duration",
    "ns_to_time",
    "odometry_to_robot_state",
    "pose_to_matrix",
    "poses_to_tf",
    "quaternion_to_matrix",
    "recall_to_string",
    "register_audio_types",
    "robot_state_to_odometry",
    "ros_audio_to_chunk",
    "ros_type_name",
    "split_type_name",
    "stamp_to_ns",
    "string_to_instruction",
    "string_to_memory_query",
    "string_to_recall",
    "tf_to_transforms",
    "transform_to_matrix",
    "twist_to_action_chunk",
    "velocity_to_twist",
]


class ConversionError(ValueError):
    """A ROS message cannot be converted (unknown encoding, wrong size, bad value)."""


COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
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


def _as_array(value: Any, dtype: str) -> np.ndarray:
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


def _as_bytes_u8(value: Any) -> np.ndarray:
    """A uint8 view of a ``uint8[]`` field (numpy, bytes, array.array('B') or list)."""
    return _as_array(value, "uint8").reshape(-1)


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


def _header_stamp(msg: Any, default_ns: int | None) -> int:
    """The header stamp, or ``default_ns`` when it is unset (0) and a default is given."""
    ns = stamp_to_ns(msg.header.stamp)
    if ns == 0 and default_ns is not None:
        return int(default_ns)
    return ns


# ---------------------------------------------------------------------------
# images


_COLOR_LAYOUT = {  # encoding -> (channels, order to pick R, G, B)
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "8UC3": (3, (2, 1, 0)),  # OpenCV's default channel order
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
    "8UC1": (1, (0, 0, 0)),
}


def _image_pixels(msg: Any, dtype: str, channels: int) -> np.ndarray:
    """(H, W, C) array of the image data, honouring ``step`` padding and endianness."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    enc = getattr(msg, "encoding", "?")
    if height <= 0 or width <= 0:
        raise ConversionError(f"Image ({enc}): empty image {width}x{height}")
    if step < row_bytes:
        raise ConversionError(
            f"Image ({enc}): step {step} is less than width*channels*bytes = {row_bytes}"
        )
    buf = _as_bytes_u8(msg.data)
    if buf.size < step * height:
        raise ConversionError(
            f"Image ({enc}) {width}x{height}: data has {buf.size} bytes, needs step*height = "
            f"{step * height}"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    want = np.dtype(dtype).newbyteorder(">" if int(msg.is_bigendian) else "<")
    if itemsize == 1:
        want = np.dtype(dtype)
    pixels = np.ascontiguousarray(rows).view(want).reshape(height, width, channels)
    return pixels.astype(np.dtype(dtype), copy=False)


def image_to_array(msg: Any) -> tuple[str, np.ndarray]:
    """sensor_msgs/Image -> ``("rgb", (H, W, 3) uint8)`` or ``("depth", (H, W) float32 m)``.

    Depth in ``16UC1``/``mono16`` is millimetres (0 = no measurement); ``32FC1`` is
    metres (NaN = no measurement; inf and negative values become 0).
    """
    enc = str(msg.encoding)
    if enc in _COLOR_LAYOUT:
        channels, order = _COLOR_LAYOUT[enc]
        pixels = _image_pixels(msg, "uint8", channels)
        if channels == 1:
            return "rgb", np.repeat(pixels, 3, axis=2)
        return "rgb", np.ascontiguousarray(pixels[:, :, list(order)])
    if enc in ("16UC1", "mono16"):
        mm = _image_pixels(msg, "uint16", 1)[:, :, 0]
        return "depth", mm.astype(np.float32) * np.float32(0.001)
    if enc == "32FC1":
        metres = _image_pixels(msg, "float32", 1)[:, :, 0].copy()
        bad = np.isinf(metres) | (metres < 0)
        metres[bad] = 0.0
        return "depth", metres
    raise ConversionError(
        f"Image encoding {enc!r} is not supported; use one of "
        f"{', '.join(COLOR_ENCODINGS + DEPTH_ENCODINGS)}"
    )


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (colour or mono encodings) -> (H, W, 3) uint8 RGB."""
    kind, pixels = image_to_array(msg)
    if kind != "rgb":
        raise ConversionError(f"Image encoding {msg.encoding!r} is depth, expected a colour image")
    return pixels


def image_to_depth(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (``16UC1`` mm, ``mono16`` mm, ``32FC1`` m) -> (H, W) float32 metres."""
    kind, pixels = image_to_array(msg)
    if kind != "depth":
        raise ConversionError(f"Image encoding {msg.encoding!r} is colour, expected a depth image")
    return pixels


def image_to_frame(
    msg: Any,
    *,
    depth: np.ndarray | None = None,
    intrinsics: np.ndarray | None = None,
    world_from_camera: np.ndarray | None = None,
    camera: str | None = None,
    stamp_ns: int | None = None,
) -> Frame:
    """sensor_msgs/Image or CompressedImage (colour) -> ``Frame``.

    ``depth`` (H, W) float32 m is attached when given (resized by nearest neighbour
    when its size differs). ``stamp_ns`` is used when the header stamp is unset.
    ``camera`` defaults to ``header.frame_id``.
    """
    if ros_type_name(msg).endswith("CompressedImage"):
        rgb = compressed_to_rgb(msg)
    else:
        rgb = image_to_rgb(msg)
    if depth is not None and depth.shape != rgb.shape[:2]:
        depth = _resize_nearest(depth, rgb.shape[:2])
    return Frame(
        stamp_ns=_header_stamp(msg, stamp_ns),
        camera=camera or str(msg.header.frame_id) or "camera",
        rgb=rgb,
        depth=depth,
        intrinsics=np.eye(3) if intrinsics is None else intrinsics,
        world_from_camera=np.eye(4) if world_from_camera is None else world_from_camera,
    )


def _resize_nearest(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) -> shape by nearest neighbour (depth must not be interpolated)."""
    h, w = image.shape[:2]
    rows = (np.arange(shape[0]) * h // shape[0]).astype(np.intp)
    cols = (np.arange(shape[1]) * w // shape[1]).astype(np.intp)
    return np.ascontiguousarray(image[rows][:, cols])


def frame_to_image(
    types: RosTypes, frame: Frame, *, encoding: str = "rgb8", frame_id: str | None = None
) -> Any:
    """``Frame.rgb`` -> sensor_msgs/Image (``rgb8`` or ``bgr8``)."""
    if encoding not in ("rgb8", "bgr8"):
        raise ConversionError(f"frame_to_image: encoding must be rgb8 or bgr8, got {encoding!r}")
    rgb = frame.rgb if encoding == "rgb8" else frame.rgb[:, :, ::-1]
    h, w = rgb.shape[:2]
    return types.new(
        "sensor_msgs/msg/Image",
        header=make_header(types, frame.stamp_ns, frame.camera if frame_id is None else frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * 3,
        data=types.seq(np.ascontiguousarray(rgb).reshape(-1), "uint8"),
    )


def depth_to_image(
    types: RosTypes,
    depth: np.ndarray,
    *,
    stamp_ns: int,
    frame_id: str,
    encoding: str = "32FC1",
) -> Any:
    """(H, W) float32 metres -> sensor_msgs/Image ``32FC1`` (m) or ``16UC1`` (mm, 0 = none)."""
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ConversionError(f"depth_to_image: depth must be (H, W), got shape {depth.shape}")
    if encoding == "32FC1":
        pixels, bpp = depth, 4
    elif encoding == "16UC1":
        mm = np.nan_to_num(depth, nan=0.0, posinf=0.0) * 1000.0
        pixels, bpp = np.clip(np.rint(mm), 0, 65535).astype("<u2"), 2
    else:
        raise ConversionError(f"depth_to_image: encoding must be 32FC1 or 16UC1, got {encoding!r}")
    h, w = depth.shape
    return types.new(
        "sensor_msgs/msg/Image",
        header=make_header(types, stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * bpp,
        data=types.seq(np.ascontiguousarray(pixels).view(np.uint8).reshape(-1), "uint8"),
    )


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB (OpenCV, imported lazily)."""
    import cv2

    buf = _as_bytes_u8(msg.data)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise ConversionError(
            f"CompressedImage (format {msg.format!r}): {buf.size} bytes could not be decoded"
        )
    return np.ascontiguousarray(image[:, :, ::-1])


def frame_to_compressed(
    types: RosTypes,
    frame: Frame,
    *,
    image_format: str = "jpeg",
    jpeg_quality: int = 90,
    frame_id: str | None = None,
) -> Any:
    """``Frame.rgb`` -> sensor_msgs/CompressedImage (``jpeg`` or ``png``)."""
    import cv2

    if image_format not in ("jpeg", "png"):
        raise ConversionError(
            f"frame_to_compressed: format must be jpeg or png, got {image_format!r}"
        )
    ext = ".jpg" if image_format == "jpeg" else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == "jpeg" else []
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(frame.rgb[:, :, ::-1]), params)
    if not ok:
        raise ConversionError(f"frame_to_compressed: OpenCV could not encode {image_format}")
    return types.new(
        "sensor_msgs/msg/CompressedImage",
        header=make_header(types, frame.stamp_ns, frame.camera if frame_id is None else frame_id),
        format=image_format,
        data=types.seq(encoded.reshape(-1), "uint8"),
    )


# ---------------------------------------------------------------------------
# camera info


def camera_info_to_intrinsics(msg: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """sensor_msgs/CameraInfo -> (K (3, 3) float64, (width, height))."""
    k = _as_array(msg.k, "float64").reshape(-1)
    if k.size != 9:
        raise ConversionError(f"CameraInfo.k must have 9 values, got {k.size}")
    K = k.reshape(3, 3).copy()
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"CameraInfo.k: focal lengths must be positive, got {k.tolist()}")
    return K, (int(msg.width), int(msg.height))


def intrinsics_to_camera_info(
    types: RosTypes,
    K: np.ndarray,
    *,
    width: int,
    height: int,
    stamp_ns: int,
    frame_id: str,
) -> Any:
    """K (3, 3) -> sensor_msgs/CameraInfo (plumb_bob, no distortion, P = [K | 0])."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return types.new(
        "sensor_msgs/msg/CameraInfo",
        header=make_header(types, stamp_ns, frame_id),
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=types.seq(np.zeros(5), "float64"),
        k=types.fixed(K, "float64"),
        r=types.fixed(np.eye(3), "float64"),
        p=types.fixed(P, "float64"),
        binning_x=0,
        binning_y=0,
        roi=types.new(
            "sensor_msgs/msg/RegionOfInterest",
            x_offset=0,
            y_offset=0,
            height=0,
            width=0,
            do_rectify=False,
        ),
    )


# ---------------------------------------------------------------------------
# audio


def _parse_samples_label(label: str) -> int | None:
    """``"samples@16000hz"`` -> 16000; ``"samples"`` -> None."""
    label = label.strip().lower()
    if "@" not in label:
        return None
    rate = label.split("@", 1)[1].removesuffix("hz")
    try:
        value = int(float(rate))
    except ValueError:
        raise ConversionError(f"audio layout label {label!r}: bad sample rate {rate!r}") from None
    if value <= 0:
        raise ConversionError(f"audio layout label {label!r}: sample rate must be positive")
    return value


def ros_audio_to_chunk(
    msg: Any,
    *,
    stamp_ns: int,
    sample_rate_hz: int = 16000,
    channels: int = 1,
    source: str = "mic",
) -> AudioChunk:
    """An audio message (see ``AUDIO_TYPES`` and the module docstring) -> ``AudioChunk``.

    ``stamp_ns`` is the first sample's time (receive / bag time) for layouts without
    a header; ``AudioDataStamped`` uses its header stamp when set.
    """
    kind = ros_type_name(msg)
    if kind == "std_msgs/msg/Float32MultiArray":
        data = _as_array(msg.data, "float32").reshape(-1)
        dims = list(msg.layout.dim)
        offset = int(msg.layout.data_offset)
        if dims:
            rate = _parse_samples_label(str(dims[0].label))
            if rate is not None:
                sample_rate_hz = rate
            n = int(dims[0].size)
            channels = int(dims[1].size) if len(dims) > 1 else 1
        else:
            n = (data.size - offset) // max(channels, 1)
        if channels < 1 or data.size < offset + n * channels:
            raise ConversionError(
                f"Float32MultiArray audio: layout says {n} samples x {channels} channels "
                f"(+offset {offset}), data has {data.size} values"
            )
        pcm = data[offset : offset + n * channels].reshape(n, channels).copy()
        np.clip(pcm, -1.0, 1.0, out=pcm)
    elif kind in (
        "std_msgs/msg/UInt8MultiArray",
        "audio_common_msgs/msg/AudioData",
        "audio_common_msgs/msg/AudioDataStamped",
    ):
        body = msg.audio if kind.endswith("AudioDataStamped") else msg
        if kind.endswith("AudioDataStamped"):
            stamp_ns = _header_stamp(msg, stamp_ns)
        raw = _as_bytes_u8(body.data)
        if channels < 1 or raw.size % (2 * channels):
            raise ConversionError(
                f"{kind} audio: {raw.size} bytes is not a whole number of 16-bit "
                f"{channels}-channel samples"
            )
        pcm16 = raw.view("<i2").reshape(-1, channels)
        pcm = pcm16.astype(np.float32) / np.float32(32768.0)
    else:
        raise ConversionError(f"audio message type {kind!r} is not supported; use {AUDIO_TYPES}")
    return AudioChunk(stamp_ns=int(stamp_ns), source=source, pcm=pcm, sample_rate_hz=sample_rate_hz)


def audio_chunk_to_ros(
    types: RosTypes, chunk: AudioChunk, *, msgtype: str = "std_msgs/msg/Float32MultiArray"
) -> Any:
    """``AudioChunk`` -> ``Float32MultiArray`` (rate in the layout) or an S16LE byte layout."""
    n, c = chunk.pcm.shape
    if msgtype == "std_msgs/msg/Float32MultiArray":
        return types.new(
            msgtype,
            layout=types.new(
                "std_msgs/msg/MultiArrayLayout",
                dim=[
                    types.new(
                        "std_msgs/msg/MultiArrayDimension",
                        label=f"samples@{chunk.sample_rate_hz}hz",
                        size=n,
                        stride=n * c,
                    ),
                    types.new(
                        "std_msgs/msg/MultiArrayDimension", label="channels", size=c, stride=c
                    ),
                ],
                data_offset=0,
            ),
            data=types.seq(chunk.pcm.reshape(-1), "float32"),
        )
    pcm16 = np.clip(np.rint(chunk.pcm * 32767.0), -32768, 32767).astype("<i2")
    data = types.seq(pcm16.reshape(-1).view(np.uint8), "uint8")
    if msgtype == "std_msgs/msg/UInt8MultiArray":
        layout = types.new("std_msgs/msg/MultiArrayLayout", dim=[], data_offset=0)
        return types.new(msgtype, layout=layout, data=data)
    if msgtype == "audio_common_msgs/msg/AudioData":
        return types.new(msgtype, data=data)
    if msgtype == "audio_common_msgs/msg/AudioDataStamped":
        return types.new(
            msgtype,
            header=make_header(types, chunk.stamp_ns, chunk.source),
            audio=types.new("audio_common_msgs/msg/AudioData", data=data),
        )
    raise ConversionError(f"audio message type {msgtype!r} is not supported; use {AUDIO_TYPES}")


# ---------------------------------------------------------------------------
# poses


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> (3, 3) rotation. Normalises; zero norm is an error."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ConversionError(f"quaternion {q.tolist()} has zero or non-finite norm")
    x, y, z, w = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) with w >= 0 (Shepperd's method)."""
    m = np.asarray(rotation, dtype=np.float64)[:3, :3]
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        w, x, y, z = (
            0.25 * s,
            (m[2, 1] - m[1, 2]) / s,
            (m[0, 2] - m[2, 0]) / s,
            (m[1, 0] - m[0, 1]) / s,
        )
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (
            (m[2, 1] - m[1, 2]) / s,
            0.25 * s,
            (m[0, 1] + m[1, 0]) / s,
            (m[0, 2] + m[2, 0]) / s,
        )
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (
            (m[0, 2] - m[2, 0]) / s,
            (m[0, 1] + m[1, 0]) / s,
            0.25 * s,
            (m[1, 2] + m[2, 1]) / s,
        )
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (
            (m[1, 0] - m[0, 1]) / s,
            (m[0, 2] + m[2, 0]) / s,
            (m[1, 2] + m[2, 1]) / s,
            0.25 * s,
        )
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def _rigid(rotation: np.ndarray, translation: Iterable[float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = np.asarray(list(translation), dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise ConversionError(f"pose has non-finite values: {out.tolist()}")
    return out


def pose_to_matrix(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose (position, orientation) -> (4, 4) float64."""
    p, q = pose.position, pose.orientation
    return _rigid(quaternion_to_matrix(q.x, q.y, q.z, q.w), (p.x, p.y, p.z))


def transform_to_matrix(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform (translation, rotation) -> (4, 4) float64."""
    t, q = transform.translation, transform.rotation
    return _rigid(quaternion_to_matrix(q.x, q.y, q.z, q.w), (t.x, t.y, t.z))


def _quat(types: RosTypes, matrix: np.ndarray) -> Any:
    x, y, z, w = matrix_to_quaternion(matrix[:3, :3])
    return types.new("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)


def matrix_to_pose(types: RosTypes, matrix: np.ndarray) -> Any:
    """(4, 4) -> geometry_msgs/Pose."""
    m = np.asarray(matrix, dtype=np.float64)
    t = m[:3, 3]
    return types.new(
        "geometry_msgs/msg/Pose",
        position=types.new("geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=_quat(types, m),
    )


def matrix_to_transform(types: RosTypes, matrix: np.ndarray) -> Any:
    """(4, 4) -> geometry_msgs/Transform."""
    m = np.asarray(matrix, dtype=np.float64)
    t = m[:3, 3]
    return types.new(
        "geometry_msgs/msg/Transform",
        translation=types.new(
            "geometry_msgs/msg/Vector3", x=float(t[0]), y=float(t[1]), z=float(t[2])
        ),
        rotation=_quat(types, m),
    )


def odometry_to_robot_state(
    msg: Any, *, robot: str = "robot", stamp_ns: int | None = None
) -> RobotState:
    """nav_msgs/Odometry -> ``RobotState`` with ``world_from_base`` = the odometry pose
    (``header.frame_id`` is the world, ``child_frame_id`` the base)."""
    return RobotState(
        stamp_ns=_header_stamp(msg, stamp_ns),
        robot=robot,
        world_from_base=pose_to_matrix(msg.pose.pose),
    )


def robot_state_to_odometry(
    types: RosTypes,
    state: RobotState,
    *,
    frame_id: str = "odom",
    child_frame_id: str = "base_link",
) -> Any:
    """``RobotState.world_from_base`` -> nav_msgs/Odometry (zero twist, zero covariance)."""
    zero3 = {"x": 0.0, "y": 0.0, "z": 0.0}
    return types.new(
        "nav_msgs/msg/Odometry",
        header=make_header(types, state.stamp_ns, frame_id),
        child_frame_id=child_frame_id,
        pose=types.new(
            "geometry_msgs/msg/PoseWithCovariance",
            pose=matrix_to_pose(types, state.world_from_base),
            covariance=types.fixed(np.zeros(36), "float64"),
        ),
        twist=types.new(
            "geometry_msgs/msg/TwistWithCovariance",
            twist=types.new(
                "geometry_msgs/msg/Twist",
                linear=types.new("geometry_msgs/msg/Vector3", **zero3),
                angular=types.new("geometry_msgs/msg/Vector3", **zero3),
            ),
            covariance=types.fixed(np.zeros(36), "float64"),
        ),
    )


def _frame_name(name: str) -> str:
    return str(name).lstrip("/")


def tf_to_transforms(msg: Any) -> list[tuple[str, str, int, np.ndarray]]:
    """tf2_msgs/TFMessage -> ``[(parent_frame, child_frame, stamp_ns, parent_from_child)]``."""
    out = []
    for ts in msg.transforms:
        out.append(
            (
                _frame_name(ts.header.frame_id),
                _frame_name(ts.child_frame_id),
                stamp_to_ns(ts.header.stamp),
                transform_to_matrix(ts.transform),
            )
        )
    return out


def poses_to_tf(types: RosTypes, transforms: Iterable[tuple[str, str, int, np.ndarray]]) -> Any:
    """``[(parent_frame, child_frame, stamp_ns, parent_from_child)]`` -> tf2_msgs/TFMessage."""
    items = [
        types.new(
            "geometry_msgs/msg/TransformStamped",
            header=make_header(types, stamp_ns, parent),
            child_frame_id=child,
            transform=matrix_to_transform(types, matrix),
        )
        for parent, child, stamp_ns, matrix in transforms
    ]
    return types.new("tf2_msgs/msg/TFMessage", transforms=items)


class TransformTree:
    """The latest transform per child frame from /tf and /tf_static, and chain look-ups.

    No interpolation in time: ``lookup`` composes the most recent transforms.
    ``max_frames`` bounds the number of frames held.
    """

    def __init__(self, *, max_frames: int = 1024) -> None:
        self._parent: dict[str, tuple[str, np.ndarray, int]] = {}
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self._parent)

    def set(
        self, parent: str, child: str, parent_from_child: np.ndarray, stamp_ns: int = 0
    ) -> None:
        parent, child = _frame_name(parent), _frame_name(child)
        if parent == child:
            raise ConversionError(f"transform from frame {child!r} to itself")
        if child not in self._parent and len(self._parent) >= self.max_frames:
            raise ConversionError(f"TransformTree holds {self.max_frames} frames already")
        self._parent[child] = (parent, np.asarray(parent_from_child, dtype=np.float64), stamp_ns)

    def update(self, msg: Any) -> int:
        """Add every transform of a tf2_msgs/TFMessage; returns how many."""
        items = tf_to_transforms(msg)
        for parent, child, stamp_ns, matrix in items:
            self.set(parent, child, matrix, stamp_ns)
        return len(items)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            nxt = self._parent[chain[-1]][0]
            if nxt in chain:
                raise ConversionError(f"transform cycle through frame {nxt!r}")
            chain.append(nxt)
        return chain

    def root(self, frame: str) -> str:
        """The top of ``frame``'s chain (e.g. ``map`` or ``odom``)."""
        return self._chain(_frame_name(frame))[-1]

    def _to_ancestor(self, frame: str, ancestor: str) -> np.ndarray:
        out = np.eye(4)
        while frame != ancestor:
            parent, matrix, _ = self._parent[frame]
            out = matrix @ out
            frame = parent
        return out

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """``target_from_source`` (4, 4), or None when the frames are not connected."""
        target, source = _frame_name(target), _frame_name(source)
        up_source = self._chain(source)
        up_target = self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            return None
        common_from_source = self._to_ancestor(source, common)
        common_from_target = self._to_ancestor(target, common)
        return np.linalg.inv(common_from_target) @ common_from_source


# ---------------------------------------------------------------------------
# commands


def twist_to_action_chunk(
    msg: Any, *, stamp_ns: int, robot: str = "robot", dt_s: float = 0.1
) -> ActionChunk:
    """geometry_msgs/Twist -> ``ActionChunk`` (1, 3) ``[vx, vy, yaw_rate]``, ``base_velocity``."""
    row = [float(msg.linear.x), float(msg.linear.y), float(msg.angular.z)]
    return ActionChunk(
        stamp_ns=int(stamp_ns),
        robot=robot,
        action_space="base_velocity",
        actions=np.array([row], dtype=np.float32),
        dt_s=dt_s,
    )


def velocity_to_twist(types: RosTypes, vx: float, vy: float, yaw_rate: float) -> Any:
    """One ``base_velocity`` row (m/s, m/s, rad/s) -> geometry_msgs/Twist."""
    return types.new(
        "geometry_msgs/msg/Twist",
        linear=types.new("geometry_msgs/msg/Vector3", x=float(vx), y=float(vy), z=0.0),
        angular=types.new("geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=float(yaw_rate)),
    )


def action_chunk_to_twists(types: RosTypes, chunk: ActionChunk) -> list[Any]:
    """A ``base_velocity`` chunk (H, 3) -> H geometry_msgs/Twist, one per ``dt_s``."""
    if chunk.action_space != "base_velocity":
        raise ConversionError(
            f"ActionChunk.action_space {chunk.action_space!r} cannot become a Twist "
            "(needs 'base_velocity')"
        )
    if chunk.actions.shape[1] != 3:
        raise ConversionError(
            f"ActionChunk.actions: base_velocity rows are [vx, vy, yaw_rate], got shape "
            f"{chunk.actions.shape}"
        )
    return [velocity_to_twist(types, *row) for row in chunk.actions.astype(np.float64)]


def action_chunk_to_joint_trajectory(
    types: RosTypes,
    chunk: ActionChunk,
    *,
    joint_names: list[str] | None = None,
    start_on_receipt: bool = True,
) -> Any:
    """``ActionChunk`` (H, A) -> trajectory_msgs/JointTrajectory with H points.

    ``start_on_receipt``: header stamp 0, which ROS trajectory controllers read as
    "start now"; otherwise the chunk's stamp. ``joint_names`` default to
    ``<action_space>_<i>``.
    """
    horizon, dims = chunk.actions.shape
    names = (
        list(joint_names)
        if joint_names
        else [f"{chunk.action_space or 'a'}_{i}" for i in range(dims)]
    )
    if len(names) != dims:
        raise ConversionError(
            f"joint_names has {len(names)} names, ActionChunk.actions has {dims} dims"
        )
    dt_ns = round(chunk.dt_s * 1e9)
    empty = np.zeros(0)
    points = [
        types.new(
            "trajectory_msgs/msg/JointTrajectoryPoint",
            positions=types.seq(chunk.actions[i].astype(np.float64), "float64"),
            velocities=types.seq(empty, "float64"),
            accelerations=types.seq(empty, "float64"),
            effort=types.seq(empty, "float64"),
            time_from_start=ns_to_duration(types, (i + 1) * dt_ns),
        )
        for i in range(horizon)
    ]
    return types.new(
        "trajectory_msgs/msg/JointTrajectory",
        header=make_header(types, 0 if start_on_receipt else chunk.stamp_ns, chunk.robot),
        joint_names=names,
        points=points,
    )


def joint_trajectory_to_action_chunk(
    msg: Any,
    *,
    action_space: str = "joint_position",
    robot: str = "robot",
    stamp_ns: int | None = None,
) -> ActionChunk:
    """trajectory_msgs/JointTrajectory -> ``ActionChunk`` (H, A) from the points' positions.

    ``dt_s`` is the first point's ``time_from_start`` (points assumed evenly spaced).
    """
    points = list(msg.points)
    if not points:
        raise ConversionError("JointTrajectory has no points")
    rows = [_as_array(p.positions, "float64").reshape(-1) for p in points]
    dims = {r.size for r in rows}
    if len(dims) != 1 or 0 in dims:
        raise ConversionError(f"JointTrajectory points have positions of sizes {sorted(dims)}")
    t0 = stamp_to_ns(points[0].time_from_start)
    dt_ns = (
        t0 if t0 > 0 else (stamp_to_ns(points[1].time_from_start) - t0 if len(points) > 1 else 0)
    )
    if dt_ns <= 0:
        raise ConversionError("JointTrajectory: time_from_start must increase from > 0")
    return ActionChunk(
        stamp_ns=_header_stamp(msg, stamp_ns),
        robot=robot,
        action_space=action_space,
        actions=np.stack(rows).astype(np.float32),
        dt_s=dt_ns / 1e9,
    )


# ---------------------------------------------------------------------------
# language and memory


def string_to_instruction(msg: Any, *, stamp_ns: int, task: str = "") -> Instruction:
    """std_msgs/String -> ``Instruction``."""
    return Instruction(stamp_ns=int(stamp_ns), text=str(msg.data), task=task)


def instruction_to_string(types: RosTypes, instruction: Instruction) -> Any:
    """``Instruction`` -> std_msgs/String."""
    return types.new("std_msgs/msg/String", data=instruction.text)


_QUERY_FIELDS = ("text", "memories", "top_k", "t0_ns", "t1_ns", "near", "radius_m")


def string_to_memory_query(msg: Any, *, stamp_ns: int) -> MemoryQuery:
    """std_msgs/String question -> ``MemoryQuery``.

    Plain text is the question; a JSON object may set ``text`` plus any of
    ``memories``, ``top_k``, ``t0_ns``, ``t1_ns``, ``near`` ([x, y, z]) and ``radius_m``.
    """
    text = str(msg.data)
    fields: dict[str, Any] = {"text": text}
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConversionError(f"memory question looks like JSON but is not: {exc}") from None
        unknown = set(obj) - set(_QUERY_FIELDS)
        if unknown:
            raise ConversionError(
                f"memory question JSON has unknown keys {sorted(unknown)}; allowed {_QUERY_FIELDS}"
            )
        fields = dict(obj)
        if fields.get("near") is not None:
            fields["near"] = np.asarray(fields["near"], dtype=np.float32)
    try:
        return MemoryQuery(stamp_ns=int(stamp_ns), **fields)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"memory question: {exc}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def recall_to_string(types: RosTypes, recall: Recall) -> Any:
    """``Recall`` -> std_msgs/String with JSON
    ``{"query_seq", "query_text", "stamp_ns", "hits": [...], "error"}``."""
    body = {
        "query_seq": recall.query_seq,
        "query_text": recall.query_text,
        "stamp_ns": recall.stamp_ns,
        "hits": _jsonable(recall.hits),
        "error": recall.error,
    }
    return types.new("std_msgs/msg/String", data=json.dumps(body))


def string_to_recall(msg: Any) -> Recall:
    """The inverse of ``recall_to_string`` (for clients and tests)."""
    try:
        body = json.loads(str(msg.data))
    except json.JSONDecodeError as exc:
        raise ConversionError(f"recall JSON is not valid: {exc}") from None
    return Recall(
        stamp_ns=int(body.get("stamp_ns", 0)),
        query_seq=int(body.get("query_seq", 0)),
        query_text=str(body.get("query_text", "")),
        hits=list(body.get("hits", [])),
        error=str(body.get("error", "")),
    )


# ---------------------------------------------------------------------------
# assembling frames from separate colour / depth / info / pose streams


@dataclass
class FrameAssemblerConfig:
    """How separate ROS streams are joined into ``Frame`` messages."""

    expect_depth: bool = False  # hold colour images (briefly) for a depth image of the same stamp
    max_pair_dt_s: float = 0.02  # largest |colour stamp - depth stamp| that still pairs
    max_pending: int = 4  # colour images held waiting for depth; beyond, the oldest goes alone
    max_depth_buffer: int = 8  # depth images kept for pairing (newest)
    world_frame: str = ""  # TF frame that poses are given in ("" = the root of the camera's tree)
    camera: str = ""  # Frame.camera ("" = the image's header.frame_id)
    #: (4, 4) camera pose in the odometry child (base) frame, used when TF has no path;
    #: None = identity (the odometry pose is the camera's pose)
    base_from_camera: list[list[float]] | None = None


class FrameAssembler:
    """Pairs depth with colour by stamp and attaches the latest intrinsics and pose.

    Feed it decoded ROS messages; each ``add_*`` returns the ``Frame`` messages that
    became complete (in stamp order). Pose of a frame: the TF chain
    ``world_frame <- header.frame_id`` when TF connects them, else the latest
    odometry pose times ``base_from_camera``, else identity (counted in
    ``counters["no_pose"]``). Frames before any CameraInfo get identity intrinsics
    (counted in ``counters["no_intrinsics"]``). Memory is bounded by
    ``max_pending`` and ``max_depth_buffer``.
    """

    def __init__(self, config: FrameAssemblerConfig | None = None) -> None:
        self.config = config or FrameAssemblerConfig()
        self.tf = TransformTree()
        self.intrinsics: np.ndarray | None = None
        self.world_from_base: np.ndarray | None = None
        base = self.config.base_from_camera
        self._base_from_camera = np.eye(4) if base is None else np.asarray(base, dtype=np.float64)
        if self._base_from_camera.shape != (4, 4):
            raise ConversionError(
                f"FrameAssemblerConfig.base_from_camera must be (4, 4), got "
                f"{self._base_from_camera.shape}"
            )
        self._tol_ns = round(self.config.max_pair_dt_s * 1e9)
        self._pending: collections.deque[tuple[int, np.ndarray, str]] = collections.deque()
        self._depths: collections.deque[tuple[int, np.ndarray]] = collections.deque(
            maxlen=max(1, self.config.max_depth_buffer)
        )
        self.counters = {"frames": 0, "with_depth": 0, "no_intrinsics": 0, "no_pose": 0}

    # ---- side streams ---------------------------------------------------------------
    def add_camera_info(self, msg: Any) -> None:
        self.intrinsics, _ = camera_info_to_intrinsics(msg)

    def add_tf(self, msg: Any) -> None:
        self.tf.update(msg)

    def add_pose(self, world_from_base: np.ndarray) -> None:
        self.world_from_base = np.asarray(world_from_base, dtype=np.float64)

    def add_odometry(self, msg: Any) -> RobotState:
        state = odometry_to_robot_state(msg)
        self.add_pose(state.world_from_base)
        return state

    # ---- images -----------------------------------------------------------------------
    def add_color(self, msg: Any, *, stamp_ns: int) -> list[Frame]:
        """A colour Image / CompressedImage; ``stamp_ns`` is used when the header has none."""
        if ros_type_name(msg).endswith("CompressedImage"):
            rgb = compressed_to_rgb(msg)
        else:
            rgb = image_to_rgb(msg)
        stamp = _header_stamp(msg, stamp_ns)
        item = (stamp, rgb, _frame_name(msg.header.frame_id))
        depth = self._take_depth(stamp)
        if depth is not None or not self.config.expect_depth:
            return [self._emit(item, depth)]
        self._pending.append(item)
        out = []
        while len(self._pending) > max(0, self.config.max_pending):
            out.append(self._emit(self._pending.popleft(), None))
        return out

    def add_depth(self, msg: Any, *, stamp_ns: int) -> list[Frame]:
        """A depth Image (16UC1 mm / 32FC1 m); pairs it with a held colour image."""
        self._depths.append((_header_stamp(msg, stamp_ns), image_to_depth(msg)))
        out = []
        newest = self._depths[-1][0]
        while self._pending:
            stamp = self._pending[0][0]
            depth = self._take_depth(stamp)
            if depth is not None:
                out.append(self._emit(self._pending.popleft(), depth))
            elif stamp < newest - self._tol_ns:  # its depth will not come any more
                out.append(self._emit(self._pending.popleft(), None))
            else:
                break
        return out

    def flush(self) -> list[Frame]:
        """Emit every held colour image (without depth when none paired)."""
        out = []
        while self._pending:
            item = self._pending.popleft()
            out.append(self._emit(item, self._take_depth(item[0])))
        return out

    # ---- internals ----------------------------------------------------------------------
    def _take_depth(self, stamp: int) -> np.ndarray | None:
        best, best_dt = None, None
        for i, (d_stamp, _) in enumerate(self._depths):
            dt = abs(d_stamp - stamp)
            if dt <= self._tol_ns and (best_dt is None or dt < best_dt):
                best, best_dt = i, dt
        if best is None:
            return None
        depth = self._depths[best][1]
        for _ in range(best + 1):  # this one and the older ones are used up
            self._depths.popleft()
        return depth

    def _pose(self, frame_id: str) -> np.ndarray | None:
        if frame_id and len(self.tf):
            world = self.config.world_frame or self.tf.root(frame_id)
            if world != frame_id:
                found = self.tf.lookup(world, frame_id)
                if found is not None:
                    return found
        if self.world_from_base is not None:
            return self.world_from_base @ self._base_from_camera
        return None

    def _emit(self, item: tuple[int, np.ndarray, str], depth: np.ndarray | None) -> Frame:
        stamp, rgb, frame_id = item
        pose = self._pose(frame_id)
        self.counters["frames"] += 1
        self.counters["with_depth"] += depth is not None
        self.counters["no_pose"] += pose is None
        self.counters["no_intrinsics"] += self.intrinsics is None
        if depth is not None and depth.shape != rgb.shape[:2]:
            depth = _resize_nearest(depth, rgb.shape[:2])
        return Frame(
            stamp_ns=stamp,
            camera=self.config.camera or frame_id or "camera",
            rgb=rgb,
            depth=depth,
            intrinsics=np.eye(3) if self.intrinsics is None else self.intrinsics,
            world_from_camera=np.eye(4) if pose is None else pose,
        )
