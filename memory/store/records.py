"""Records (MemOS): ``collection``, ``record_id``, ``version`` (1, 2, ... per
record; each put of an existing id adds a version and keeps the older ones as
history unless told not to), ``kind``, ``stamp_ns``, provenance (source topic,
sequence, producer), a msgpack payload (dicts of numbers, strings, lists, bytes)
and named numpy arrays. Deletion writes a tombstone version.

Also: the store's errors, the payload encoding (msgpack; JSON for export) and
``message_to_record`` / ``record_to_message`` encode any runtime message as a
record (the memory system's journal uses them).
"""

from __future__ import annotations

import base64
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
import numpy as np

from engram.memory.base import Provenance
from engram.runtime.messages import Message, message_type

__all__ = [
    "Record",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "check_name",
    "from_jsonable",
    "jsonable",
    "message_to_record",
    "pack",
    "record_to_message",
    "unpack",
]


class StoreError(RuntimeError):
    """The store on disk is unusable (corrupt, newer schema, bad name)."""


class StoreLocked(StoreError):
    """Another process holds the store's writer lock."""


class StoreCorrupt(StoreError):
    """The store's files are damaged (not a database, malformed, arrays cut short)."""


@dataclass
class Record:
    """One version of one stored record."""

    collection: str
    record_id: str
    payload: dict[str, Any] = field(default_factory=dict)  # msgpack-able values
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # named numpy arrays
    kind: str = ""  # record type within the collection ("chunk", "fact", ...)
    stamp_ns: int = 0  # when the remembered thing happened
    provenance: Provenance = field(default_factory=Provenance)
    version: int = 0  # 0 on put: the store assigns previous + 1
    deleted: bool = False  # a tombstone
    written_ns: int = 0  # when this version was committed (set by the store)


_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r}: use 1-100 of [A-Za-z0-9_.-]")


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Provenance):
        return obj.to_dict()
    raise TypeError(f"cannot store a {type(obj).__name__} in a record payload")


def pack(obj: Any) -> bytes:
    return cast(bytes, msgpack.packb(obj, default=_pack_default, use_bin_type=True))


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"$b64": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"$b64"}:
            return base64.b64decode(obj["$b64"])
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    return obj


def message_to_record(
    msg: Message, *, collection: str, record_id: str, topic: str = "", producer: str = ""
) -> Record:
    """Any runtime message as a record: scalar fields -> payload, arrays -> arrays."""
    payload: dict[str, Any] = {"type": msg.TYPE, "schema": msg.SCHEMA, "topic": topic}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        else:
            payload[f.name] = value
    return Record(
        collection=collection,
        record_id=record_id,
        payload=payload,
        arrays=arrays,
        kind=msg.TYPE,
        stamp_ns=msg.stamp_ns,
        provenance=Provenance(
            source_topic=topic, stamp_ns=msg.stamp_ns, seq=msg.seq, producer=producer
        ),
    )


def record_to_message(record: Record, *, trusted: bool = False) -> tuple[Message, str]:
    """Inverse of ``message_to_record``: -> (message, topic).

    ``trusted``: the record holds a message that passed validation when it was stored,
    with checksummed arrays (the memory system's journal on replay): it is rebuilt without
    validating it again (validation was most of the replay's time, issue 18)."""
    payload = dict(record.payload)
    cls = message_type(payload.pop("type"))
    payload.pop("schema", None)
    topic = payload.pop("topic", "")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    kwargs = {k: v for k, v in payload.items() if k in names}
    kwargs.update({k: v for k, v in record.arrays.items() if k in names})
    if not trusted:
        return cls(**kwargs), topic
    msg = object.__new__(cls)
    for f in fields:
        if f.name in kwargs:
            value = kwargs[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise ValueError(f"{cls.TYPE}: stored record lacks the required field {f.name!r}")
        object.__setattr__(msg, f.name, value)
    return msg, topic
