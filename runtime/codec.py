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
_DTYPES: dict[str, np.dtype] = {s: np.dtype(s) for s in _WIRE_DTYPES}  # (np.dtype(str) costs)
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
    plan = _ENCODE_PLANS.get(cls)
    if plan is None:
        plan = _encode_plan(msg)
    names, head = plan
    plain: dict[str, Any] = {}
    descriptors: list[bytes] = []
    buffers: list[bytes | memoryview] = []
    for name in names:
        value = getattr(msg, name)
        if isinstance(value, np.ndarray):
            frame, desc = _array_frame(cls, name, value)
            descriptors.append(desc)
            buffers.append(frame)
        else:
            plain[name] = value
    stamp, seq = msg.stamp_ns, msg.seq
    try:
        # msgpack ships no stubs: packb's bytes are inferred as ``... | None``; the assert
        # narrows it (``typing.cast`` would be a Python call per message)
        fields = msgpack.packb(plain, use_bin_type=True, default=_to_plain)
        assert isinstance(fields, bytes)
        if type(stamp) is int and type(seq) is int and 0 <= stamp <= _U64 and 0 <= seq <= _U64:
            numbers = _STAMP_SEQ.pack(0xCF, stamp, b"\xa1q", 0xCF, seq)  # both as msgpack u64
        else:  # (set after construction to something odd: msgpack says what it is)
            numbers = _packb(stamp) + b"\xa1q" + _packb(seq)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot encode {cls.TYPE}: {exc}") from None
    n = len(descriptors)
    header = b"".join(
        [head, numbers, b"\xa1f", fields, b"\xa1a", _ARRAY_HEADS[n], *descriptors]
        if n < 16
        else [head, numbers, b"\xa1f", fields, b"\xa1a", b"\xdc" + _U16.pack(n), *descriptors]
    )
    if len(header) > MAX_HEADER_BYTES:
        raise EncodeError(
            f"cannot encode {cls.TYPE}: its non-array fields take {len(header) - len(_PREFIX)} "
            f"bytes, over the header limit of {MAX_HEADER_BYTES} (send bulk data as arrays)"
        )
    return [header, *buffers]


# Per-class encode plan (the codec was the largest Python cost of a shared-memory hop, above
# all with cold caches: one numpy / msgpack call less per array and per header counts).
# The header is the msgpack map {"t", "v", "s", "q", "f", "a"} built from parts: the
# class's constant start ("t" and "v"), stamp and seq as msgpack u64 (``struct``), the plain
# fields (one ``packb``) and one packed descriptor per array, remembered per (name, dtype,
# shape): a camera sends the same three every frame. Any msgpack reader decodes it as the
# same map a single ``packb`` of it gives.
_ENCODE_PLANS: dict[type, tuple[tuple[str, ...], bytes]] = {}
_DESCRIPTORS: dict[tuple[str, str, tuple[int, ...]], bytes] = {}  # bounded, see _array_frame
_MAX_DESCRIPTORS = 1024
_U64 = (1 << 64) - 1
_STAMP_SEQ = struct.Struct(">BQ2sBQ")  # 0xcf stamp | "q" key | 0xcf seq
_U16 = struct.Struct(">H")
_ARRAY_HEADS = [bytes([0x90 | n]) for n in range(16)]  # msgpack fixarray headers


def _packb(value: Any) -> bytes:
    return cast(bytes, msgpack.packb(value, use_bin_type=True, default=_to_plain))


def _encode_plan(msg: Any) -> tuple[tuple[str, ...], bytes]:
    """(fields but the base ones, in declaration order; the header's constant start)."""
    cls = type(msg)
    if not isinstance(msg, Message) or MESSAGE_TYPES.get(cls.TYPE) is not cls:
        raise EncodeError(
            f"cannot encode {cls.__name__}: not a registered message type "
            f"(known: {', '.join(sorted(MESSAGE_TYPES))})"
        )
    names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS)
    head = b"".join(
        [_PREFIX, b"\x86", _packb("t"), _packb(cls.TYPE), _packb("v"), _packb(cls.SCHEMA)]
    )
    plan = _ENCODE_PLANS[cls] = (names, head + _packb("s"))
    return plan


def _wire_formats() -> dict[str, str]:
    """Buffer-protocol format of a native numpy array -> its wire dtype, for the formats that
    name exactly one wire dtype (any other array takes ``_wire_array``)."""
    seen: dict[str, set[str]] = {}
    # every native integer / float / bool type by its character code (numpy 1.26 has no
    # np.long / np.ulong names; the codes are the same in every numpy)
    for t in "?bBhHiIlLqQefd":
        dtype = np.dtype(t)
        # numpy's stubs declare ndarray.__buffer__ only on Python >= 3.12
        array = np.zeros(1, dtype)
        seen.setdefault(memoryview(array).format, set()).add(dtype.str)  # pyright: ignore
    return {f: min(s) for f, s in seen.items() if len(s) == 1 and min(s) in _WIRE_DTYPES}


_FORMATS = _wire_formats()


def _array_frame(cls: type, name: str, value: np.ndarray) -> tuple[bytes | memoryview, bytes]:
    """(the array's bytes as a flat memoryview, its packed descriptor); a copy only for an
    array that is not C-contiguous or not in a wire dtype (``_wire_array``)."""
    try:
        # numpy's stubs declare ndarray.__buffer__ only on Python >= 3.12
        view = memoryview(value)  # pyright: ignore[reportArgumentType]
        wire = _FORMATS.get(view.format) if view.c_contiguous else None
    except (TypeError, ValueError, BufferError):  # e.g. datetime64 has no buffer format
        wire = None
    if wire is None:
        arr = _wire_array(cast(Any, cls).TYPE, name, value)
        view = memoryview(arr)  # pyright: ignore[reportArgumentType]
        wire = arr.dtype.str
    key = (name, wire, view.shape or ())
    desc = _DESCRIPTORS.get(key)
    if desc is None:
        if len(_DESCRIPTORS) >= _MAX_DESCRIPTORS:
            _DESCRIPTORS.clear()
        desc = _DESCRIPTORS[key] = _packb([name, wire, list(key[2])])
    return (view.cast("B") if view.nbytes else b""), desc


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
    if type(frame) is memoryview:  # (what shared memory and datagrams hand in)
        view = frame
    else:
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
    if header_view.nbytes < len(_PREFIX) or header_view[:4] != HEADER_MAGIC:
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
    # (msgpack gives exact types: ``type(x) is int`` is an int and not a bool, and so on)
    if type(header) is not dict:
        raise DecodeError(f"header must be a map, got {type(header).__name__}")
    sent_type = header.get("t")
    plan = _DECODE_PLANS.get(sent_type) if type(sent_type) is str else None
    if plan is None:
        plan = _decode_plan(sent_type)
    cls, schema, field_names, n_fields = plan
    type_name = cls.TYPE  # (== sent_type)
    version = header.get("v")
    if version != schema or type(version) is bool:
        raise DecodeError(f"{type_name}: schema version {version!r}, this build reads {schema}")
    stamp, seq = header.get("s"), header.get("q")
    for value, name in ((stamp, "stamp_ns"), (seq, "seq")):
        if type(value) is not int or value < 0:
            raise DecodeError(f"{type_name}.{name}: must be a non-negative int, got {value!r}")
    kwargs = header.get("f")  # (a fresh dict of this message's own)
    if type(kwargs) is not dict:
        raise DecodeError(f"{type_name}: header 'f' must be a map, got {type(kwargs).__name__}")
    if not field_names.issuperset(kwargs):
        unknown = next(name for name in kwargs if name not in field_names)
        raise DecodeError(f"{type_name}: unknown field {unknown!r}")
    if not rebuild:  # (a same-user publisher's constructor checked its plain values)
        for name, value in kwargs.items():
            _check_plain(type_name, name, value, 0)
    kwargs["stamp_ns"] = stamp
    kwargs["seq"] = seq
    descriptors = header.get("a")
    if type(descriptors) is not list:
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
    for i, desc in enumerate(descriptors, 1):
        name, arr = _array_from(type_name, desc, views[i])
        if name not in field_names:
            raise DecodeError(f"{type_name}: unknown array field {name!r}")
        if name in kwargs:
            raise DecodeError(f"{type_name}.{name}: sent twice")
        kwargs[name] = arr
    if rebuild and len(kwargs) == n_fields:
        # every field sent (the encoder sends all): the values the publisher's constructor
        # checked, so set them as they are (a dataclass without __slots__)
        msg = cls.__new__(cls)
        msg.__dict__.update(stamp_ns=stamp, seq=seq)  # (in the constructor's order)
        msg.__dict__.update(kwargs)
        return msg
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any validation failure is a decode error
        raise DecodeError(f"invalid {type_name}: {exc}") from None


# Per-class decode plan: type name -> (class, schema version, field names but the base
# ones, number of all fields), made once per type.
_DECODE_PLANS: dict[str, tuple[type[Message], int, frozenset[str], int]] = {}


def _decode_plan(type_name: Any) -> tuple[type[Message], int, frozenset[str], int]:
    cls = MESSAGE_TYPES.get(type_name) if type(type_name) is str else None
    if cls is None:
        raise DecodeError(
            f"unknown message type {type_name!r}; known: {', '.join(sorted(MESSAGE_TYPES))}"
        )
    names = frozenset(f.name for f in dataclasses.fields(cls)) - set(_BASE_FIELDS)
    plan = _DECODE_PLANS[type_name] = (cls, cls.SCHEMA, names, len(names) + len(_BASE_FIELDS))
    return plan


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
    """(field name, the array viewing ``view``) of one descriptor; every rule checked."""
    if type(desc) is not list or len(desc) != 3 or type(desc[0]) is not str:
        raise DecodeError(f"{type_name}: bad array descriptor {desc!r:.200}")
    name, dtype_str, shape = desc
    dtype = _DTYPES.get(dtype_str) if type(dtype_str) is str else None
    if dtype is None:
        raise DecodeError(f"{type_name}.{name}: dtype {dtype_str!r:.40} is not a wire dtype")
    if type(shape) is not list or len(shape) > _MAX_NDIM:
        raise DecodeError(f"{type_name}.{name}: bad shape {shape!r:.200}")
    need = dtype.itemsize
    for d in shape:
        if type(d) is not int or d < 0:
            raise DecodeError(f"{type_name}.{name}: bad shape {shape!r:.200}")
        need *= d
    if need != view.nbytes:
        raise DecodeError(
            f"{type_name}.{name}: shape {tuple(shape)} {dtype_str} needs {need} bytes, "
            f"frame has {view.nbytes}"
        )
    try:
        arr = np.ndarray(shape, dtype, view)  # (one call: frombuffer + reshape were two)
    except Exception as exc:  # noqa: BLE001 - e.g. absurd dims with a zero size
        raise DecodeError(
            f"{type_name}.{name}: cannot view frame as {tuple(shape)} {dtype_str}: {exc}"
        ) from None
    return name, arr
