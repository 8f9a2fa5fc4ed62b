"""Conversions between ROS 2 messages and Engram messages, in pure Python.

No ROS installation is needed: the functions read messages by attribute
(duck typing), so the same code handles

- the ``rosbags`` package's message objects (``get_typestore(Stores.ROS2_JAZZY)``),
  which is what bag replay and the tests use,
- rclpy's generated message classes (``sensor_msgs.msg.Image``) in the bridge
  nodes of ``runtime/bridges/ros2/nodes.py``,
- the Cyclone DDS ``IdlStruct`` types of ``runtime/bridges/ros2/dds.py``.

Building a ROS message goes through a small ``RosTypes`` provider
(``engram.runtime.bridges.ros2.rostypes``: ``RosbagsTypes``, ``RclpyTypes`` or ``engram.runtime.bridges.ros2.dds.DdsTypes``) that knows how
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

import json
from typing import Any

import numpy as np

from engram.runtime.bridges.ros2.rostypes import (
    AUDIO_TYPES,
    ConversionError,
    RosTypes,
    as_array,
    as_bytes_u8,
    header_stamp,
    make_header,
    ns_to_duration,
    ros_type_name,
    stamp_to_ns,
)
from engram.runtime.messages import (
    ActionChunk,
    AudioChunk,
    Frame,
    Instruction,
    MemoryQuery,
    Recall,
)

__all__ = [
    "COLOR_ENCODINGS",
    "DEPTH_ENCODINGS",
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
    "recall_to_string",
    "resize_nearest",
    "ros_audio_to_chunk",
    "string_to_instruction",
    "string_to_memory_query",
    "string_to_recall",
    "twist_to_action_chunk",
    "velocity_to_twist",
]


COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


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
    buf = as_bytes_u8(msg.data)
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
        depth = resize_nearest(depth, rgb.shape[:2])
    return Frame(
        stamp_ns=header_stamp(msg, stamp_ns),
        camera=camera or str(msg.header.frame_id) or "camera",
        rgb=rgb,
        depth=depth,
        intrinsics=np.eye(3) if intrinsics is None else intrinsics,
        world_from_camera=np.eye(4) if world_from_camera is None else world_from_camera,
    )


def resize_nearest(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
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

    buf = as_bytes_u8(msg.data)
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
    k = as_array(msg.k, "float64").reshape(-1)
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
        data = as_array(msg.data, "float32").reshape(-1)
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
            stamp_ns = header_stamp(msg, stamp_ns)
        raw = as_bytes_u8(body.data)
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
    rows = [as_array(p.positions, "float64").reshape(-1) for p in points]
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
        stamp_ns=header_stamp(msg, stamp_ns),
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
