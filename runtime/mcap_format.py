"""How Engram messages are laid out in MCAP so that standard tools can read them.

Format ``engram-json-1`` (written by ``runtime/recorder.py``, read by ``runtime/replay.py``):

Per (topic, message type) one **main channel** on the topic itself, message_encoding
``"json"``, schema encoding ``"jsonschema"`` (schema name ``engram.<Type>``, a JSON Schema
generated from the message dataclass: ``json_schema``), channel metadata
``{"engram_type": <Type>, "engram_format": "engram-json-1"}``. Each message is one JSON
object::

    {"type": "Frame", "schema_version": 1, "stamp_ns": ..., "seq": ...,
     "fields": {name: value, ...}}

Plain fields are JSON values. An array field is
``{"dtype": "<f4", "shape": [3, 3], "data": [...]}`` (nested lists, for small finite
arrays that Foxglove can plot) or ``{"dtype", "shape", "base64"}`` (raw little-endian bytes).
A ``Frame``'s images are not inlined: the field is ``{"channel": "/camera/frames/rgb",
"encoding": "jpeg"}`` and the image is a message on that **companion channel** with the same
``log_time`` and ``sequence`` (channel metadata ``{"engram_companion_of": topic,
"engram_field": "rgb"}``), using Foxglove's well-known protobuf schemas
(``foxglove-schemas-protobuf``):

===============  ==========================================================================
rgb              ``foxglove.CompressedImage`` JPEG (default, lossy) or PNG; ``raw``:
                 ``foxglove.RawImage`` ``rgb8``
depth            ``foxglove.RawImage`` ``16UC1`` in millimetres (the ROS convention; NaN
                 and beyond 65.535 m become 0 = invalid; 1 mm steps), left to the chunk
                 compression (zstd: smaller and 5x faster than a 16-bit PNG on real depth);
                 ``raw``: ``foxglove.RawImage`` ``32FC1`` metres (lossless)
segmentation     ``foxglove.RawImage`` ``32SC1`` (lossless; the chunk compression shrinks it)
===============  ==========================================================================

**Derived channels** (metadata ``{"engram_derived": "1"}``) exist only for viewers; replay
ignores them: ``/tf`` ``foxglove.FrameTransforms`` (world -> camera from ``Frame``, world ->
``<robot>/base`` and ``<robot>/ee`` from ``RobotState``), ``<topic>/calibration``
``foxglove.CameraCalibration``, ``<topic>/points`` ``foxglove.PointCloud`` (``Percept``
points in ``world``), ``<topic>/audio`` ``foxglove.RawAudio`` (``pcm-s16``), and ``/log``
``foxglove.Log`` (transcripts, instructions, plan steps).

Older recordings (message_encoding ``"engram"``: the codec's blob) are still read.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import types
import typing
from typing import Any

import numpy as np

from engram.runtime.messages import (
    MESSAGE_TYPES,
    AudioChunk,
    Frame,
    Instruction,
    Message,
    MessageError,
    Percept,
    PlanStep,
    RobotState,
    Transcript,
)

__all__ = [
    "DERIVED_KEY",
    "FORMAT",
    "IMAGE_FORMATS",
    "ChannelSpec",
    "FormatError",
    "decode_companion",
    "decode_json",
    "encode_message",
    "json_schema",
]

FORMAT = "engram-json-1"
DERIVED_KEY = "engram_derived"
IMAGE_FORMATS = ("jpeg", "png", "raw")
_INLINE_LIST_MAX = 64  # arrays up to this many finite elements are JSON lists (plottable)
_DEPTH_MM_MAX = 65535
JPEG_QUALITY = 85  # colour JPEG quality (85: ~50 KB per real 640x480 frame)


class FormatError(ValueError):
    """A message of this format that cannot be turned back into an Engram message."""


@dataclasses.dataclass(frozen=True)
class ChannelSpec:
    """One MCAP channel a message goes to: topic, encodings, schema and metadata."""

    topic: str
    schema_name: str
    schema_encoding: str
    message_encoding: str
    metadata: tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------
# JSON schemas of Engram's own types


_NDARRAY_SCHEMA = {
    "description": "an n-dimensional array: nested lists in `data`, or raw little-endian bytes "
    "in `base64`; or a reference to a companion channel holding it as an image",
    "type": "object",
    "properties": {
        "dtype": {"type": "string", "description": "numpy dtype string, e.g. <f4"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array"},
        "base64": {"type": "string"},
        "channel": {"type": "string", "description": "companion channel topic"},
        "encoding": {"type": "string", "description": "jpeg | png | 16UC1-mm | raw"},
    },
}


def _json_type(annotation: Any) -> dict[str, Any]:
    if isinstance(annotation, str):
        text = annotation
        if text.endswith("| None") or text.startswith("None |"):
            base = _json_type(text.replace("| None", "").replace("None |", "").strip())
            return {"anyOf": [base, {"type": "null"}]} if base else {}
        if "ndarray" in text:
            return {"$ref": "#/$defs/ndarray"}
        for name, kind in (
            ("dict", "object"),
            ("list", "array"),
            ("bool", "boolean"),
            ("int", "integer"),
            ("float", "number"),
            ("str", "string"),
        ):
            if text.startswith(name):
                return {"type": kind}
        return {}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _json_type(" | ".join(str(a) for a in typing.get_args(annotation)))
    return _json_type(str(annotation).replace("<class '", "").replace("'>", ""))


def json_schema(type_name: str) -> dict[str, Any]:
    """The JSON Schema of a message type's JSON form (stored as the channel's schema)."""
    cls = MESSAGE_TYPES[type_name]
    props = {f.name: _json_type(f.type) for f in dataclasses.fields(cls)}
    for name in ("stamp_ns", "seq"):
        props.pop(name, None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"engram.{type_name}",
        "description": (cls.__doc__ or "").strip(),
        "type": "object",
        "properties": {
            "type": {"const": type_name},
            "schema_version": {"const": cls.SCHEMA},
            "stamp_ns": {"type": "integer", "description": "capture time, ns"},
            "seq": {"type": "integer", "description": "per-publisher sequence number"},
            "fields": {"type": "object", "properties": props},
        },
        "$defs": {"ndarray": _NDARRAY_SCHEMA},
    }


# ---------------------------------------------------------------------------
# arrays and plain values


def _array_json(arr: np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(arr)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    out: dict[str, Any] = {"dtype": dtype.str, "shape": list(arr.shape)}
    if arr.size <= _INLINE_LIST_MAX and (arr.dtype.kind != "f" or bool(np.isfinite(arr).all())):
        out["data"] = arr.tolist()
    else:
        out["base64"] = base64.b64encode(arr.astype(dtype, copy=False).tobytes()).decode()
    return out


_DTYPES = {"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"}


def _array_from_json(value: dict[str, Any]) -> np.ndarray:
    dtype = value.get("dtype")
    shape = value.get("shape")
    if dtype not in _DTYPES or not isinstance(shape, list):
        raise FormatError(f"bad array descriptor (dtype {dtype!r}, shape {shape!r})")
    if not all(isinstance(n, int) and 0 <= n < 2**31 for n in shape):
        raise FormatError(f"bad array shape {shape!r}")
    if "base64" in value:
        raw = base64.b64decode(value["base64"], validate=True)
        count = int(np.prod(shape, dtype=np.int64))
        if len(raw) != count * np.dtype(dtype).itemsize:
            raise FormatError(
                f"array of shape {shape} {dtype} needs {count} items, got bytes for other"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    arr = np.asarray(value.get("data"), dtype=dtype)
    if arr.size == 0 and 0 in shape:
        arr = arr.reshape(shape)
    if list(arr.shape) != shape:
        raise FormatError(f"array data has shape {list(arr.shape)}, descriptor says {shape}")
    return arr


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON-able")


# ---------------------------------------------------------------------------
# encoding a message


def _schema_spec(topic: str, cls_name: str, **metadata: str) -> dict[str, Any]:
    return {"topic": topic, "schema": cls_name, "metadata": metadata}


def _timestamp(pb: Any, stamp_ns: int) -> None:
    pb.timestamp.FromNanoseconds(int(stamp_ns))


def _quaternion(rot: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(rot, np.float64)).as_quat()  # x, y, z, w


def _transform(stamp_ns: int, parent: str, child: str, pose: np.ndarray) -> Any:
    from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform

    tf = FrameTransform(parent_frame_id=parent, child_frame_id=child)
    _timestamp(tf, stamp_ns)
    t = pose[:3, 3]
    tf.translation.x, tf.translation.y, tf.translation.z = (float(v) for v in t)
    q = _quaternion(pose[:3, :3])
    tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w = (float(v) for v in q)
    return tf


def _encode_image(
    stamp_ns: int, frame_id: str, img: np.ndarray, kind: str, image_format: str
) -> tuple[Any, str]:
    """A Foxglove image message for one image field and the encoding name stored in JSON."""
    import cv2
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from foxglove_schemas_protobuf.RawImage_pb2 import RawImage

    h, w = img.shape[:2]
    if kind == "depth" and image_format != "raw":
        mm = np.nan_to_num(img.astype(np.float64) * 1000.0, nan=0.0, posinf=0.0)
        mm = np.where(mm > _DEPTH_MM_MAX, 0.0, np.rint(mm)).astype("<u2")
        pb = RawImage(
            frame_id=frame_id, width=w, height=h, encoding="16UC1", step=2 * w, data=mm.tobytes()
        )
        _timestamp(pb, stamp_ns)
        return pb, "16UC1-mm"
    if kind == "segmentation" or image_format == "raw":
        encoding = {"rgb": "rgb8", "depth": "32FC1", "segmentation": "32SC1"}[kind]
        data = np.ascontiguousarray(img).astype(img.dtype.newbyteorder("<"), copy=False)
        pb = RawImage(
            frame_id=frame_id,
            width=w,
            height=h,
            encoding=encoding,
            step=int(data.strides[0]),
            data=data.tobytes(),
        )
        _timestamp(pb, stamp_ns)
        return pb, "raw"
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if image_format == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise FormatError(f"cannot encode the {kind} image as {image_format}")
    pb = CompressedImage(frame_id=frame_id, format=image_format, data=buf.tobytes())
    _timestamp(pb, stamp_ns)
    return pb, image_format


def _calibration(msg: Any, topic: str) -> Any:
    from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration

    h, w = msg.rgb.shape[:2]
    k = np.asarray(msg.intrinsics, np.float64)
    p = np.zeros((3, 4))
    p[:, :3] = k
    pb = CameraCalibration(
        frame_id=msg.camera,
        width=w,
        height=h,
        distortion_model="plumb_bob",
        D=[0.0] * 5,
        K=k.ravel().tolist(),
        R=np.eye(3).ravel().tolist(),
        P=p.ravel().tolist(),
    )
    _timestamp(pb, msg.stamp_ns)
    return pb


def _log(msg: Any, topic: str, text: str) -> Any:
    from foxglove_schemas_protobuf.Log_pb2 import Log

    pb = Log(level=Log.INFO, message=text, name=topic)
    _timestamp(pb, msg.stamp_ns)
    return pb


def _point_cloud(msg: Any) -> Any:
    from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
    from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud

    pts = np.ascontiguousarray(msg.points, dtype="<f4")
    ids = (
        np.full(len(pts), -1, "<i4")
        if msg.point_object_ids is None
        else np.asarray(msg.point_object_ids, "<i4")
    )
    packed = np.zeros(len(pts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("id", "<i4")])
    packed["x"], packed["y"], packed["z"], packed["id"] = pts[:, 0], pts[:, 1], pts[:, 2], ids
    pb = PointCloud(frame_id="world", point_stride=16, data=packed.tobytes())
    pb.pose.orientation.w = 1.0
    for i, name in enumerate("xyz"):
        pb.fields.append(
            PackedElementField(name=name, offset=4 * i, type=PackedElementField.FLOAT32)
        )
    pb.fields.append(PackedElementField(name="object_id", offset=12, type=PackedElementField.INT32))
    _timestamp(pb, msg.stamp_ns)
    return pb


def _raw_audio(msg: Any) -> Any:
    from foxglove_schemas_protobuf.RawAudio_pb2 import RawAudio

    pcm = np.clip(np.asarray(msg.pcm, np.float32), -1.0, 1.0)
    s16 = np.rint(pcm * 32767).astype("<i2")
    pb = RawAudio(
        format="pcm-s16",
        sample_rate=int(msg.sample_rate_hz),
        number_of_channels=int(pcm.shape[1]),
        data=s16.tobytes(),
    )
    _timestamp(pb, msg.stamp_ns)
    return pb


def encode_message(
    topic: str, msg: Message, *, image_format: str = "jpeg"
) -> list[tuple[dict[str, Any], bytes]]:
    """The channel records one message becomes: ``[(spec, data), ...]``, main record last.

    spec: ``{"topic", "schema" (a Foxglove protobuf class name or engram.<Type>),
    "metadata"}``. Companions come first so that a reader in file order has them when the
    main record arrives.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    out: list[tuple[dict[str, Any], bytes]] = []
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(msg):
        if f.name in ("stamp_ns", "seq"):
            continue
        value = getattr(msg, f.name)
        if (
            isinstance(msg, Frame)
            and f.name in ("rgb", "depth", "segmentation")
            and value is not None
        ):
            pb, encoding = _encode_image(msg.stamp_ns, msg.camera, value, f.name, image_format)
            sub = f"{topic.rstrip('/')}/{f.name}"
            spec = _schema_spec(
                sub, type(pb).DESCRIPTOR.full_name, engram_companion_of=topic, engram_field=f.name
            )
            out.append((spec, pb.SerializeToString()))
            fields[f.name] = {"channel": sub, "encoding": encoding}
        elif isinstance(value, np.ndarray):
            fields[f.name] = _array_json(value)
        else:
            fields[f.name] = value
    derived: list[tuple[str, Any]] = []
    if isinstance(msg, Frame):
        derived.append((f"{topic.rstrip('/')}/calibration", _calibration(msg, topic)))
        derived.append(
            ("/tf", _transforms(msg.stamp_ns, [("world", msg.camera, msg.world_from_camera)]))
        )
    elif isinstance(msg, RobotState):
        poses = [("world", f"{msg.robot}/base", msg.world_from_base)]
        if msg.world_from_ee is not None:
            poses.append(("world", f"{msg.robot}/ee", msg.world_from_ee))
        derived.append(("/tf", _transforms(msg.stamp_ns, poses)))
    elif isinstance(msg, Percept) and msg.points is not None and len(msg.points):
        derived.append((f"{topic.rstrip('/')}/points", _point_cloud(msg)))
    elif isinstance(msg, AudioChunk):
        derived.append((f"{topic.rstrip('/')}/audio", _raw_audio(msg)))
    elif isinstance(msg, (Transcript, Instruction)):
        derived.append(("/log", _log(msg, topic, f"{msg.TYPE.lower()}: {msg.text}")))
    elif isinstance(msg, PlanStep):
        derived.append(
            ("/log", _log(msg, topic, f"plan step {msg.skill} {msg.status} {msg.reason}".strip()))
        )
    for sub, pb in derived:
        spec = _schema_spec(sub, type(pb).DESCRIPTOR.full_name, **{DERIVED_KEY: "1"})
        out.append((spec, pb.SerializeToString()))
    doc = {
        "type": msg.TYPE,
        "schema_version": type(msg).SCHEMA,
        "stamp_ns": msg.stamp_ns,
        "seq": msg.seq,
        "fields": fields,
    }
    data = json.dumps(doc, default=_plain, allow_nan=False, separators=(",", ":")).encode()
    main = _schema_spec(topic, f"engram.{msg.TYPE}", engram_type=msg.TYPE, engram_format=FORMAT)
    out.append((main, data))
    return out


def _transforms(stamp_ns: int, poses: list[tuple[str, str, np.ndarray]]) -> Any:
    from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms

    pb = FrameTransforms()
    for parent, child, pose in poses:
        pb.transforms.append(_transform(stamp_ns, parent, child, np.asarray(pose)))
    return pb


def protobuf_class(full_name: str) -> Any:
    """The foxglove_schemas_protobuf class of a full name such as ``foxglove.RawImage``."""
    import importlib

    short = full_name.removeprefix("foxglove.")
    module = importlib.import_module(f"foxglove_schemas_protobuf.{short}_pb2")
    return getattr(module, short)


# ---------------------------------------------------------------------------
# decoding


def decode_companion(schema_name: str, data: bytes, field_name: str) -> np.ndarray:
    """The array an image companion message holds (inverse of the recorder's encoding)."""
    import cv2

    if schema_name == "foxglove.RawImage":
        from foxglove_schemas_protobuf.RawImage_pb2 import RawImage

        pb = RawImage.FromString(data)
        dtype, channels = {
            "rgb8": ("u1", 3),
            "16UC1": ("<u2", 1),
            "32FC1": ("<f4", 1),
            "32SC1": ("<i4", 1),
        }.get(pb.encoding, (None, 0))
        if dtype is None:
            raise FormatError(f"unsupported RawImage encoding {pb.encoding!r}")
        need = pb.height * pb.width * channels * np.dtype(dtype).itemsize
        if len(pb.data) != need or pb.step * pb.height != need:
            raise FormatError(
                f"RawImage {pb.width}x{pb.height} {pb.encoding}: {len(pb.data)} bytes"
            )
        arr = np.frombuffer(pb.data, dtype=dtype)
        shape = (pb.height, pb.width, 3) if channels == 3 else (pb.height, pb.width)
        if pb.encoding == "16UC1":  # depth in millimetres
            return (arr.reshape(shape).astype(np.float32) / np.float32(1000.0)).astype(np.float32)
        return arr.reshape(shape).astype(arr.dtype.newbyteorder("="))
    if schema_name == "foxglove.CompressedImage":
        from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage

        pb = CompressedImage.FromString(data)
        buf = np.frombuffer(pb.data, np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if len(buf) else None
        if img is None:
            raise FormatError(f"{field_name}: cannot decode the {pb.format or 'image'} data")
        if field_name == "depth":  # a 16-bit PNG in millimetres (written by other tools)
            if img.dtype != np.uint16 or img.ndim != 2:
                raise FormatError("depth image is not a 16-bit single-channel PNG")
            return (img.astype(np.float32) / np.float32(1000.0)).astype(np.float32)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise FormatError(f"{field_name}: expected an 8-bit colour image, got {img.shape}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    raise FormatError(f"unsupported companion schema {schema_name!r}")


def decode_json(data: bytes, companions: dict[str, np.ndarray]) -> Message:
    """An Engram message from its JSON form; ``companions`` maps field name -> array."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("fields"), dict):
        raise FormatError("not an Engram JSON message (no 'fields' object)")
    type_name = doc.get("type")
    cls = MESSAGE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise FormatError(f"unknown message type {type_name!r}")
    if doc.get("schema_version") != cls.SCHEMA:
        raise FormatError(
            f"{type_name} schema version {doc.get('schema_version')!r}, this build reads {cls.SCHEMA}"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    array_fields = {f.name for f in dataclasses.fields(cls) if "ndarray" in str(f.type)}
    kwargs: dict[str, Any] = {}
    for name, value in doc["fields"].items():
        if name not in names or name in ("stamp_ns", "seq"):
            raise FormatError(f"{type_name} has no field {name!r}")
        if name not in array_fields or value is None:
            kwargs[name] = value
        elif isinstance(value, dict) and "channel" in value:
            if name not in companions:
                raise FormatError(
                    f"{type_name}.{name}: its {value.get('channel')!r} message is missing"
                )
            kwargs[name] = companions[name]
        elif isinstance(value, dict):
            kwargs[name] = _array_from_json(value)
        else:
            raise FormatError(f"{type_name}.{name}: an array field holds {type(value).__name__}")
    for key in ("stamp_ns", "seq"):
        if not isinstance(doc.get(key), int) or isinstance(doc.get(key), bool):
            raise FormatError(f"{key} must be an integer")
    try:
        return cls(stamp_ns=doc["stamp_ns"], seq=doc["seq"], **kwargs)
    except (MessageError, TypeError, ValueError) as exc:
        raise FormatError(f"invalid {type_name}: {exc}") from None
