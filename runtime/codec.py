"""Wire codec: ``Message`` <-> a list of frames (ZeroMQ multipart) or one blob.

Wire format (version 1)
=======================

A message is one **header frame** followed by **one raw buffer per array field**::

    frame 0   b"EGRM" | u8 wire version (1) | msgpack map (the header)
    frame 1   raw bytes of the first array  (C order, little-endian)
    ...
    frame N   raw bytes of the N-th array

The header map (msgpack, str keys) holds:

    "t": str               message type name, a key of ``engram.runtime.messages.MESSAGE_TYPES``
    "v": int               schema version of that type (``cls.SCHEMA``); must match
    "s": int               stamp_ns
    "q": int               seq
    "f": {name: value}     every non-array field: str, int, float, bool, None, list, dict
                           (an optional array field that is None is sent here as nil)
    "a": [[name, dtype, shape], ...]
                           one descriptor per array frame, in frame order. ``dtype`` is a
                           numpy dtype string from a fixed whitelist of little-endian numeric
                           types (``|b1 |i1 |u1 <i2 <u2 <i4 <u4 <i8 <u8 <f2 <f4 <f8``);
                           ``shape`` a list of non-negative ints. The frame must hold exactly
                           ``prod(shape) * itemsize`` bytes.

Inside non-array fields, numpy scalars become Python numbers and nested numpy arrays become
lists when encoding (e.g. a ``score`` of type ``np.float32`` in ``Recall.hits``).

``encode`` returns the header as ``bytes`` and each array as a zero-copy ``memoryview`` of
the message's own array (a copy is made only when the array is not C-contiguous or not
little-endian), ready for ``socket.send_multipart(frames, copy=False)``. Do not mutate an
array after publishing it.

``decode`` accepts ``bytes``, ``memoryview`` or ``zmq.Frame`` objects and wraps the buffers
with ``np.frombuffer``: **decoded arrays share memory with the frames and may be
read-only**; copy one (``arr.copy()``) before writing into it. The message is rebuilt through
its constructor, so every validation rule of ``runtime/messages.py`` applies.

Untrusted input: any malformed input (random bytes, a truncated multipart message, wrong
frame counts or sizes, unknown type or field, a dtype outside the whitelist, a header that is
not a map, a validation failure) raises exactly one exception type, ``DecodeError`` (a
``ValueError``), with a message naming the problem. Sizes are checked before anything is
allocated, so a lying header cannot trigger a huge allocation.

Size limits: a header frame holds at most ``MAX_HEADER_BYTES`` (4 MiB; arrays travel in
their own frames, so only text and small lists live there), and inside it no string or
byte string is longer than ``MAX_FIELD_BYTES`` (1 MiB) and no list or map has more than
``MAX_FIELD_ITEMS`` (100,000) entries. A larger header is refused before msgpack parses
it (``DecodeError``); ``encode`` refuses to produce one (``EncodeError``), so the
publisher, not every subscriber, learns of it.

Blob form (``pack`` / ``unpack``), for files such as MCAP, is self-delimiting::

    b"EGRB" | u32 frame count n | n x u64 frame length | frames, each zero-padded to 8 bytes

(all integers little-endian; frame offsets are 8-byte aligned from the blob start).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Sequence
from typing import Any, cast

import msgpack
import numpy as np

from engram.runtime.messages import MESSAGE_TYPES, Message
from engram.runtime.trust import set_trusted

__all__ = [
    "HEADER_MAGIC",
    "MAX_FIELD_BYTES",
    "MAX_FIELD_ITEMS",
    "MAX_HEADER_BYTES",
    "WIRE_VERSION",
    "DecodeError",
    "EncodeError",
    "decode",
    "encode",
    "pack",
    "unpack",
]

HEADER_MAGIC = b"EGRM"
WIRE_VERSION = 1
_BLOB_MAGIC = b"EGRB"
_PREFIX = HEADER_MAGIC + bytes([WIRE_VERSION])

#: dtypes allowed on the wire (numpy ``dtype.str``); anything else is refused.
_WIRE_DTYPES = frozenset(
    ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"]
)
_DTYPES: dict[str, np.dtype] = {}  # wire dtype string -> np.dtype (np.dtype(str) per call costs)
_MAX_ARRAYS = 64  # more array frames than any message type has
_MAX_NDIM = 32  # numpy's own limit is 64
_MAX_NESTING = 64  # depth of lists/dicts inside non-array fields
MAX_HEADER_BYTES = 4 << 20  # largest header frame (text fields, small lists), see Size limits
MAX_FIELD_BYTES = 1 << 20  # longest str / bytes inside the header
MAX_FIELD_ITEMS = 100_000  # most entries in one list or map inside the header
_BASE_FIELDS = ("stamp_ns", "seq")


class DecodeError(ValueError):
    """Bytes that are not a valid encoded message (the only error ``decode`` raises)."""


class EncodeError(ValueError):
    """A message that cannot be encoded (a field value msgpack cannot represent)."""


# ---------------------------------------------------------------------------
# encode


def encode(msg: Message) -> list[bytes | memoryview]:
    """Frames for ``msg``: ``[header, array buffer, ...]`` (see the module docstring).

    Array buffers are zero-copy views of the message's arrays.
    """
    cls = type(msg)
    if not isinstance(msg, Message) or MESSAGE_TYPES.get(cls.TYPE) is not cls:
        raise EncodeError(
            f"cannot encode {cls.__name__}: not a registered message type "
            f"(known: {', '.join(sorted(MESSAGE_TYPES))})"
        )
    plain: dict[str, Any] = {}
    descriptors: list[list[Any]] = []
    buffers: list[bytes | memoryview] = []
    for name in _encoded_fields(cls):
        value = getattr(msg, name)
        if isinstance(value, np.ndarray):
            arr = _wire_array(cls.TYPE, name, value)
            descriptors.append([name, arr.dtype.str, list(arr.shape)])
            if arr.size:
                flat = arr.reshape(-1).view(np.uint8)
                # numpy's stubs declare ndarray.__buffer__ only on Python >= 3.12
                buffers.append(memoryview(flat))  # pyright: ignore[reportArgumentType]
            else:
                buffers.append(b"")
        else:
            plain[name] = value
    header = {
        "t": cls.TYPE,
        "v": cls.SCHEMA,
        "s": msg.stamp_ns,
        "q": msg.seq,
        "f": plain,
        "a": descriptors,
    }
    try:
        # msgpack ships no stubs; packb always returns bytes (inferred as ``... | None``)
        body = cast(bytes, msgpack.packb(header, use_bin_type=True, default=_to_plain))
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode {cls.TYPE}: {exc}") from None
    if len(body) + len(_PREFIX) > MAX_HEADER_BYTES:
        raise EncodeError(
            f"cannot encode {cls.TYPE}: its non-array fields take {len(body)} bytes, over the "
            f"header limit of {MAX_HEADER_BYTES} (send bulk data as arrays)"
        )
    return [_PREFIX + body, *buffers]


_ENCODED_FIELDS: dict[type, tuple[str, ...]] = {}


def _encoded_fields(cls: type) -> tuple[str, ...]:
    """A message class's fields but the base ones, in declaration order (cached)."""
    names = _ENCODED_FIELDS.get(cls)
    if names is None:
        names = _ENCODED_FIELDS[cls] = tuple(
            f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS
        )
    return names


def _wire_array(type_name: str, name: str, arr: np.ndarray) -> np.ndarray:
    dtype = arr.dtype
    if dtype.str in _WIRE_DTYPES and arr.flags.c_contiguous:
        return arr  # the common case: nothing to convert
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and np.little_endian is False):
        dtype = dtype.newbyteorder("<")
    if dtype.str not in _WIRE_DTYPES:
        raise EncodeError(
            f"cannot encode {type_name}.{name}: dtype {arr.dtype} is not a wire dtype "
            f"({', '.join(sorted(_WIRE_DTYPES))})"
        )
    if dtype != arr.dtype:
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


def _to_plain(value: Any) -> Any:
    """msgpack ``default`` hook: numpy scalars/arrays inside non-array fields."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON/msgpack-able")


def pack(msg: Message) -> bytes:
    """One self-delimiting blob holding ``encode(msg)`` (for files such as MCAP)."""
    frames = encode(msg)
    lengths = [len(f) if isinstance(f, bytes) else f.nbytes for f in frames]
    prefix = _BLOB_MAGIC + struct.pack(f"<I{len(frames)}Q", len(frames), *lengths)
    parts: list[bytes | memoryview] = [prefix, _pad(len(prefix))]
    offset = len(prefix) + len(parts[1])
    for frame, length in zip(frames, lengths):
        parts.append(frame)
        parts.append(_pad(offset + length))
        offset += length + len(parts[-1])
    return b"".join(parts)


def _pad(offset: int) -> bytes:
    return b"\0" * (-offset % 8)


# ---------------------------------------------------------------------------
# decode


def decode(frames: Sequence[Any], *, trusted: bool = False, validated: bool = False) -> Message:
    """Rebuild a message from ``[header, array buffer, ...]``.

    Frames may be ``bytes``, ``memoryview`` or ``zmq.Frame``. Arrays are zero-copy views of
    the frames (possibly read-only). Raises ``DecodeError`` for any malformed input.
    ``trusted``: the arrays' values were validated where the message was built (same-host
    shared memory): checks that scan whole arrays are skipped (``runtime/trust.py``).
    ``validated``: the whole message was built (so validated) by a process of our own user
    and its bytes come from our own shared memory (``runtime/zmq_receiver.py``): it is
    rebuilt without running its constructor's checks again (the wire checks here, header
    limits, dtypes, sizes, fields, still apply); ~3x cheaper for a ``Frame``.
    """
    try:
        n = len(frames)
    except TypeError:
        raise DecodeError(f"expected a sequence of frames, got {type(frames).__name__}") from None
    if n == 0:
        raise DecodeError("no frames (empty multipart message)")
    try:
        views = [_view(f) for f in frames]
    except TypeError as exc:
        raise DecodeError(str(exc)) from None
    if validated:
        return _decode_views(views, rebuild=True)
    if not trusted:
        return _decode_views(views)
    set_trusted(True)
    try:
        return _decode_views(views)
    finally:
        set_trusted(False)


def unpack(data: bytes | memoryview) -> Message:
    """Inverse of ``pack``. Raises ``DecodeError`` for any malformed blob."""
    try:
        view = _view(data)
    except TypeError as exc:
        raise DecodeError(str(exc)) from None
    size = view.nbytes
    if size < 8 or bytes(view[:4]) != _BLOB_MAGIC:
        raise DecodeError(f"not an Engram blob (bad magic {bytes(view[:4])!r})")
    (count,) = struct.unpack_from("<I", view, 4)
    if count == 0 or count > 1 + _MAX_ARRAYS:
        raise DecodeError(f"blob frame count {count} out of range 1..{1 + _MAX_ARRAYS}")
    head = 8 + 8 * count
    if size < head:
        raise DecodeError(f"blob truncated: {size} bytes, the frame table alone needs {head}")
    lengths = struct.unpack_from(f"<{count}Q", view, 8)
    offset = head + (-head % 8)
    frames: list[memoryview] = []
    for i, length in enumerate(lengths):
        end = offset + length
        if end > size:
            raise DecodeError(
                f"blob truncated: frame {i} needs bytes {offset}..{end}, blob has {size}"
            )
        frames.append(view[offset:end])
        offset = end + (-end % 8)
    if offset > size:
        raise DecodeError(f"blob truncated: {size} bytes, its frame table says {offset}")
    if offset < size:
        raise DecodeError(f"blob has {size - offset} trailing bytes after its last frame")
    return _decode_views(frames)


def _view(frame: Any) -> memoryview:
    """A flat byte memoryview of bytes / memoryview / zmq.Frame / any buffer."""
    buf = getattr(frame, "buffer", frame)  # zmq.Frame -> its memoryview
    try:
        view = memoryview(buf)
    except TypeError:
        raise TypeError(f"frame of type {type(frame).__name__} is not a byte buffer") from None
    if view.ndim != 1 or view.itemsize != 1:
        try:
            view = view.cast("B")
        except TypeError:
            raise TypeError("frame buffer is not contiguous bytes") from None
    return view


def _decode_views(views: list[memoryview], rebuild: bool = False) -> Message:
    header_view = views[0]
    if header_view.nbytes < len(_PREFIX) or bytes(header_view[:4]) != HEADER_MAGIC:
        raise DecodeError(f"header frame has bad magic {bytes(header_view[:4])!r}")
    if header_view[4] != WIRE_VERSION:
        raise DecodeError(f"wire version {header_view[4]} (this build reads {WIRE_VERSION})")
    if header_view.nbytes > MAX_HEADER_BYTES:
        raise DecodeError(
            f"header frame of {header_view.nbytes} bytes is over the limit of {MAX_HEADER_BYTES}"
        )
    try:
        header = msgpack.unpackb(
            header_view[len(_PREFIX) :],
            raw=False,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_str_len=MAX_FIELD_BYTES,
            max_bin_len=MAX_FIELD_BYTES,
            max_array_len=MAX_FIELD_ITEMS,
            max_map_len=MAX_FIELD_ITEMS,
        )
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on garbage
        raise DecodeError(f"header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise DecodeError(f"header must be a map, got {type(header).__name__}")
    type_name = header.get("t")
    if not isinstance(type_name, str) or (cls := MESSAGE_TYPES.get(type_name)) is None:
        raise DecodeError(
            f"unknown message type {type_name!r}; known: {', '.join(sorted(MESSAGE_TYPES))}"
        )
    version = header.get("v")
    if version != cls.SCHEMA or isinstance(version, bool):
        raise DecodeError(f"{type_name}: schema version {version!r}, this build reads {cls.SCHEMA}")
    kwargs: dict[str, Any] = {}
    for key, name in (("s", "stamp_ns"), ("q", "seq")):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DecodeError(f"{type_name}.{name}: must be a non-negative int, got {value!r}")
        kwargs[name] = value
    field_names = _field_names(cls)
    plain = header.get("f")
    if not isinstance(plain, dict):
        raise DecodeError(f"{type_name}: header 'f' must be a map, got {type(plain).__name__}")
    for name, value in plain.items():
        if name not in field_names:
            raise DecodeError(f"{type_name}: unknown field {name!r}")
        if not rebuild:  # (a same-user publisher's constructor checked its plain values)
            _check_plain(type_name, name, value, 0)
        kwargs[name] = value
    descriptors = header.get("a")
    if not isinstance(descriptors, list):
        raise DecodeError(
            f"{type_name}: header 'a' must be a list, got {type(descriptors).__name__}"
        )
    if len(descriptors) > _MAX_ARRAYS:
        raise DecodeError(f"{type_name}: {len(descriptors)} array descriptors (max {_MAX_ARRAYS})")
    if len(views) != 1 + len(descriptors):
        raise DecodeError(
            f"{type_name}: header describes {len(descriptors)} arrays but "
            f"{len(views) - 1} array frames arrived (truncated or extra frames)"
        )
    for desc, view in zip(descriptors, views[1:]):
        name, arr = _array_from(type_name, desc, view)
        if name not in field_names:
            raise DecodeError(f"{type_name}: unknown array field {name!r}")
        if name in kwargs:
            raise DecodeError(f"{type_name}.{name}: sent twice")
        kwargs[name] = arr
    if rebuild and len(kwargs) == len(field_names) + len(_BASE_FIELDS):
        # every field sent (the encoder sends all): the values the publisher's constructor
        # checked, so set them as they are (a dataclass without __slots__)
        msg = cls.__new__(cls)
        msg.__dict__.update(kwargs)
        return msg
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any validation failure is a decode error
        raise DecodeError(f"invalid {type_name}: {exc}") from None


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    """A message class's field names but the base ones (cached: ``dataclasses.fields`` on
    every decode was a measurable share of it)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls)) - set(
            _BASE_FIELDS
        )
    return names


def _no_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"header contains a msgpack extension type ({code}); not allowed")


def _check_plain(type_name: str, name: str, value: Any, depth: int) -> None:
    if depth > _MAX_NESTING:
        raise DecodeError(f"{type_name}.{name}: nested deeper than {_MAX_NESTING}")
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, list):
        for item in value:
            _check_plain(type_name, name, item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError(f"{type_name}.{name}: map key {key!r:.40} is not a str")
            _check_plain(type_name, name, item, depth + 1)
        return
    raise DecodeError(f"{type_name}.{name}: unsupported value of type {type(value).__name__}")


def _array_from(type_name: str, desc: Any, view: memoryview) -> tuple[str, np.ndarray]:
    if not (isinstance(desc, list) and len(desc) == 3 and isinstance(desc[0], str)):
        raise DecodeError(f"{type_name}: bad array descriptor {desc!r:.200}")
    name, dtype_str, shape = desc
    where = f"{type_name}.{name}"
    if not isinstance(dtype_str, str) or dtype_str not in _WIRE_DTYPES:
        raise DecodeError(f"{where}: dtype {dtype_str!r:.40} is not a wire dtype")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise DecodeError(f"{where}: bad shape {shape!r:.200}")
    dtype = _DTYPES.get(dtype_str) or _DTYPES.setdefault(dtype_str, np.dtype(dtype_str))
    count = 1
    for d in shape:
        count *= d
    need = count * dtype.itemsize
    if need != view.nbytes:
        raise DecodeError(
            f"{where}: shape {tuple(shape)} {dtype_str} needs {need} bytes, frame has {view.nbytes}"
        )
    try:
        arr = np.frombuffer(view, dtype=dtype, count=count).reshape(shape)
    except Exception as exc:  # noqa: BLE001 - e.g. absurd dims with a zero size
        raise DecodeError(
            f"{where}: cannot view frame as {tuple(shape)} {dtype_str}: {exc}"
        ) from None
    return name, arr
