"""Replay a recording onto the bus (``engram replay``).

Engram recordings are MCAP files written by ``runtime/recorder.py``: the
``engram-json-1`` layout of ``runtime/mcap_format.py`` (JSON messages plus Foxglove image
companions), or the older layout (message_encoding ``"engram"``, data =
``engram.runtime.codec.pack(msg)``). They are published back with their original payloads, stamps and sequence numbers, at
the recorded pace scaled by ``rate`` (2.0 = twice as fast) or as fast as
possible (``rate=None``). Pacing follows the recorded ``log_time``.

ROS 2 bags (a directory with ``metadata.yaml``, a ``.db3`` file, or an MCAP whose
channels use message_encoding ``"cdr"``) are handed to the registered ``replayer``
``ros2`` (``engram.runtime.bridges.ros2.bag.replay_bag``, which converts ROS messages to
Engram ones); the core names no bridge.

Python API::

    for topic, msg in read_recording("run.mcap"): ...
    n = replay("run.mcap", bus, rate=None, topic_map={"/frames": "/camera/frames"})

A message that fails to decode is skipped, counted and logged; replay goes on.

Damaged files: the file is read record by record, without needing its summary, so a
recording cut short (a full disk, a recorder killed with SIGKILL) replays every complete
chunk; a chunk whose CRC does not match is skipped. ``RecordingReport`` (pass ``report=``)
says how many bytes were intact, how many were lost and why; ``replay`` logs it.

The ``engram replay`` command is ``engram.runtime.apps.replay``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engram.runtime import registry
from engram.runtime.bus import Bus
from engram.runtime.mcap_format import DERIVED_KEY
from engram.runtime.messages import Message

__all__ = [
    "RecordedMessage",
    "RecordingError",
    "RecordingReport",
    "is_ros2_bag",
    "iter_recording",
    "read_recording",
    "repair_recording",
    "replay",
]

log = logging.getLogger(__name__)

_ENGRAM_ENCODING = "engram"  # the legacy layout: one codec blob per message
_MAX_CHUNK_BYTES = 2**30  # a chunk claiming more uncompressed bytes is damaged
_PENDING_MAX = 512  # companion records waiting for their main record (bounded)


class RecordingError(ValueError):
    """A file is not a readable recording (names the file and the problem)."""


@dataclass(frozen=True)
class RecordedMessage:
    """One message of a recording: its topic, receive time (ns) and the message."""

    topic: str
    log_time_ns: int
    msg: Message


@dataclass
class RecordingReport:
    """What reading a recording found: sizes, losses and the problems behind them."""

    total_bytes: int = 0
    intact_bytes: int = 0  # bytes up to the end of the last complete record
    finished: bool = False  # the file ends with a footer (the recorder finished it)
    lost_chunks: int = 0  # complete chunks skipped (bad CRC, undecompressable)
    lost_messages: int = 0  # messages whose images or data were missing/undecodable
    problems: list[str] = field(default_factory=list)
    messages_by_topic: dict[str, int] = field(default_factory=dict)  # decoded, per topic
    types_by_topic: dict[str, str] = field(default_factory=dict)  # message type(s) per topic

    def reset(self) -> None:
        self.__dict__.update(RecordingReport().__dict__)

    @property
    def lost_bytes(self) -> int:
        return max(0, self.total_bytes - self.intact_bytes)

    @property
    def damaged(self) -> bool:
        return bool(self.lost_chunks or self.lost_messages or not self.finished)

    def summary(self) -> str:
        """One line for people: what was lost and why ("" for an intact file)."""
        if not self.damaged:
            return ""
        parts = []
        if not self.finished:
            parts.append(
                f"the file is truncated (no summary: the recorder did not finish it); "
                f"{self.intact_bytes} of {self.total_bytes} bytes were complete records, "
                f"{self.lost_bytes} bytes at the end were lost"
            )
        if self.lost_chunks:
            parts.append(f"{self.lost_chunks} damaged chunk(s) skipped")
        if self.lost_messages:
            parts.append(f"{self.lost_messages} message(s) incomplete or undecodable")
        why = f" ({self.problems[0]})" if self.problems else ""
        return "; ".join(parts) + why


def _records(path: Path, report: RecordingReport) -> Iterator[tuple[Any, Any, Any]]:
    """``(schema or None, channel, message)`` of every complete record, in file order.

    Reads record by record (no summary needed). A damaged chunk is skipped and counted;
    the first unreadable record ends the file, noted in ``report``.
    """
    from mcap.records import Channel, Chunk, Footer, Message, Schema
    from mcap.stream_reader import StreamReader, breakup_chunk
    from mcap.writer import MCAP0_MAGIC

    size = path.stat().st_size
    report.total_bytes = size
    if size == 0:
        raise RecordingError(f"{path}: empty file (0 bytes), not a recording")
    schemas: dict[int, Any] = {}
    channels: dict[int, Any] = {}
    with open(path, "rb") as f:
        if f.read(len(MCAP0_MAGIC)) != MCAP0_MAGIC:
            raise RecordingError(f"{path}: not a readable MCAP file (no MCAP magic at its start)")
        f.seek(0)
        reader = StreamReader(f, emit_chunks=True, record_size_limit=size)
        records = reader.records
        started = True  # the magic is there: any later failure is damage, not a wrong file

        def handle(record: Any) -> Iterator[tuple[Any, Any, Any]]:
            if isinstance(record, Schema):
                schemas[record.id] = record
            elif isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, Message):
                channel = channels.get(record.channel_id)
                if channel is None:
                    report.lost_messages += 1
                    return
                yield schemas.get(channel.schema_id), channel, record

        while True:
            try:
                record = next(records)
            except StopIteration:
                report.intact_bytes = size
                report.finished = True
                return
            except Exception as exc:  # noqa: BLE001 - mcap raises many types on damage
                if not started:
                    raise RecordingError(
                        f"{path}: not a readable MCAP file ({type(exc).__name__}: {exc})"
                    ) from None
                report.problems.append(f"{type(exc).__name__} {exc}".strip())
                return
            started = True
            if isinstance(record, Chunk):
                try:
                    # A damaged size field must not make decompression allocate gigabytes.
                    if record.uncompressed_size > _MAX_CHUNK_BYTES:
                        raise ValueError(
                            f"chunk claims {record.uncompressed_size} bytes uncompressed "
                            f"from {len(record.data)}"
                        )
                    inner = breakup_chunk(record, validate_crc=True)
                except Exception as exc:  # noqa: BLE001 - a damaged chunk costs only itself
                    report.lost_chunks += 1
                    report.problems.append(f"chunk: {type(exc).__name__} {exc}".strip())
                    report.intact_bytes = f.tell()
                    continue
                for r in inner:
                    yield from handle(r)
            else:
                yield from handle(record)
                if isinstance(record, Footer):
                    report.finished = True
            report.intact_bytes = f.tell()


def repair_recording(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> RecordingReport:
    """Copy every complete record of a damaged recording (cut short, killed recorder) to
    ``out``, a finished MCAP file whose summary and index are rebuilt, so that any MCAP
    tool (Foxglove, ``mcap`` CLI) opens it; returns what was intact and lost."""
    from mcap.writer import CompressionType, Writer

    path, out = Path(path), Path(out)
    if path.resolve() == out.resolve():
        raise RecordingError(f"{path}: repair writes a new file; give another output path")
    report = RecordingReport()
    schema_ids: dict[int, int] = {}
    channel_ids: dict[int, int] = {}
    with open(out, "wb") as f:
        writer = Writer(f, compression=CompressionType.ZSTD)
        writer.start(profile="", library="engram (repaired)")
        for schema, channel, message in _records(path, report):
            if channel.id not in channel_ids:
                sid = 0
                if schema is not None:
                    if schema.id not in schema_ids:
                        schema_ids[schema.id] = writer.register_schema(
                            schema.name, schema.encoding, schema.data
                        )
                    sid = schema_ids[schema.id]
                channel_ids[channel.id] = writer.register_channel(
                    channel.topic, channel.message_encoding, sid, dict(channel.metadata)
                )
            writer.add_message(
                channel_ids[channel.id],
                message.log_time,
                message.data,
                message.publish_time,
                message.sequence,
            )
        writer.finish()
    return report


def _mcap_encodings(path: Path) -> set[str]:
    """The message encodings of an MCAP file's channels (summary, else a scan)."""
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as f:
            summary = make_reader(f).get_summary()
            if summary is not None:
                return {c.message_encoding for c in summary.channels.values()}
    except Exception:  # noqa: BLE001 - no readable summary: scan below
        pass
    return {channel.message_encoding for _s, channel, _m in _records(path, RecordingReport())}


def is_ros2_bag(path: str | os.PathLike[str]) -> bool:
    """A ROS 2 bag: a directory with metadata.yaml, a .db3 file, or a CDR-encoded MCAP."""
    path = Path(path)
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or any(path.glob("*.db3"))
    if path.suffix == ".db3":
        return True
    if path.suffix == ".mcap" and path.is_file():
        return "cdr" in _mcap_encodings(path)
    return False


def iter_recording(
    path: str | os.PathLike[str],
    *,
    errors: list[str] | None = None,
    report: RecordingReport | None = None,
) -> Iterator[RecordedMessage]:
    """Every message of an Engram MCAP recording (either layout), in file order.

    File order is the order the recorder wrote (receive order). Messages that fail to
    decode are skipped; their descriptions are appended to ``errors`` when given (and
    logged). ``report`` (a ``RecordingReport``) is filled with what was intact and lost.
    """
    from engram.runtime.codec import DecodeError, unpack
    from engram.runtime.mcap_format import decode_companion, decode_json

    path = Path(path)
    if path.is_dir():
        raise RecordingError(f"{path}: is a directory, not a recording file")
    if not path.is_file():
        raise RecordingError(f"{path}: no such recording file")
    report = report if report is not None else RecordingReport()
    pending: dict[tuple[str, int, int], dict[str, tuple[str, bytes]]] = {}
    foreign: set[str] = set()
    engram_channels = 0

    def skip(channel: Any, message: Any, problem: str) -> None:
        text = f"{path}: message on {channel.topic!r} at log_time {message.log_time}: {problem}"
        log.warning("skipping undecodable message: %s", text)
        report.lost_messages += 1
        if errors is not None:
            errors.append(text)

    for schema, channel, message in _records(path, report):
        meta = channel.metadata or {}
        if channel.message_encoding == _ENGRAM_ENCODING:
            engram_channels += 1
            try:
                msg = unpack(message.data)
            except DecodeError as exc:
                skip(channel, message, str(exc))
                continue
        elif "engram_companion_of" in meta:
            key = (meta["engram_companion_of"], message.sequence, message.log_time)
            if len(pending) >= _PENDING_MAX:  # the main records of the oldest never came
                pending.pop(next(iter(pending)))
                report.lost_messages += 1
            schema_name = schema.name if schema is not None else ""
            pending.setdefault(key, {})[meta.get("engram_field", "")] = (schema_name, message.data)
            continue
        elif "engram_type" in meta and channel.message_encoding == "json":
            engram_channels += 1
            parts = pending.pop((channel.topic, message.sequence, message.log_time), {})
            try:
                arrays = {
                    name: decode_companion(schema_name, data, name)
                    for name, (schema_name, data) in parts.items()
                }
                msg = decode_json(message.data, arrays)
            except Exception as exc:  # noqa: BLE001 - protobuf/cv2/JSON errors on bad data
                skip(channel, message, f"{type(exc).__name__}: {exc}")
                continue
        else:
            if DERIVED_KEY not in meta:
                foreign.add(channel.message_encoding)
            continue
        report.messages_by_topic[channel.topic] = report.messages_by_topic.get(channel.topic, 0) + 1
        report.types_by_topic.setdefault(channel.topic, msg.TYPE)
        yield RecordedMessage(channel.topic, message.log_time, msg)
    if not engram_channels and foreign:
        raise RecordingError(
            f"{path}: channels use message encoding(s) {sorted(foreign)}; Engram recordings "
            f"use 'json' with engram_type metadata or {_ENGRAM_ENCODING!r} (ROS 2 bags with "
            "'cdr' replay through engram.runtime.bridges.ros2.bag)"
        )
    if report.damaged:
        log.warning("%s: %s", path, report.summary())


def read_recording(path: str | os.PathLike[str]) -> Iterator[tuple[str, Message]]:
    """``(topic, message)`` pairs of an Engram MCAP recording, in log-time order."""
    for record in iter_recording(path):
        yield record.topic, record.msg


def replay(
    path: str | os.PathLike[str],
    bus: Bus,
    *,
    rate: float | None = 1.0,
    topic_map: dict[str, str] | None = None,
    loop: bool = False,
    stop: threading.Event | None = None,
    report: RecordingReport | None = None,
) -> int:
    """Publish a recording on ``bus``; returns the number of messages published.

        rate: speed factor on the recorded pace (1.0 = real time); None = as fast as
        possible. topic_map: ``{recorded topic: topic to publish on}``. loop: start
        over at the end until ``stop`` is set. report: filled with what was intact or lost
    (the last pass). A ROS 2 bag goes to the registered
        ``replayer`` ``ros2`` (``engram.runtime.bridges.ros2.bag.replay_bag``).
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 (or None for as fast as possible), got {rate}")
    if loop and stop is None:
        raise ValueError("replay(loop=True) needs a stop event to end")
    stop = stop or threading.Event()
    topic_map = dict(topic_map or {})
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file or directory")
    if is_ros2_bag(path):
        replay_bag = _ros2_replay_bag(path)
        total = 0
        while True:
            total += int(replay_bag(path, bus, topic_map=topic_map, rate=rate))
            if not loop or stop.is_set():
                return total
    total = 0
    while True:
        if report is not None:
            report.reset()  # each pass reports afresh
        total += _replay_once(path, bus, rate=rate, topic_map=topic_map, stop=stop, report=report)
        if not loop or stop.is_set():
            return total


def _ros2_replay_bag(path: Path) -> Any:
    """The registered ROS 2 bag replayer (kind ``"replayer"``, name ``"ros2"``: by
    default ``engram.runtime.bridges.ros2.bag.replay_bag``)."""
    try:
        return registry.get("replayer", "ros2")
    except registry.RegistryError as exc:
        raise RecordingError(
            f"{path} is a ROS 2 bag, but ROS 2 bag replay is not available in this build: {exc}"
        ) from None


def _replay_once(
    path: Path,
    bus: Bus,
    *,
    rate: float | None,
    topic_map: dict[str, str],
    stop: threading.Event,
    report: RecordingReport | None = None,
) -> int:
    count = 0
    first_log = None
    t0 = time.monotonic()
    for record in iter_recording(path, report=report):
        if stop.is_set():
            break
        if rate is not None:
            if first_log is None:
                first_log = record.log_time_ns
            due = t0 + (record.log_time_ns - first_log) / 1e9 / rate
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
        bus.publish(topic_map.get(record.topic, record.topic), record.msg)
        count += 1
    return count
