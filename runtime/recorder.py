"""Record bus topics to an MCAP file (``engram record``) that Foxglove can open.

MCAP (https://mcap.dev) is the container Foxglove and ROS 2 use. Each message is written
in the ``engram-json-1`` layout of ``runtime/mcap_format.py``: a JSON message (with a JSON
Schema) on its own topic, its images as Foxglove ``CompressedImage``/``RawImage`` messages
on companion channels (JPEG colour and 16-bit PNG depth by default; ``image_format="raw"``
for lossless), and Foxglove transforms (``/tf``), camera calibration, point clouds, audio
and log channels for viewers. ``log_time`` is the time the message was written (wall
clock, ns; within milliseconds of its receipt, and in file order), ``publish_time`` the
message's ``stamp_ns`` and ``sequence`` its ``seq`` (mod 2**32), on every record of it.

``runtime/replay.py`` reads these files back (``read_recording``, ``replay``), and the
older ``engram``-encoded ones.

Python API::

    with Recorder(bus, ["/camera/frames", "/heartbeat"], "run.mcap"):
        ...                             # every message on those topics is written

Subscriptions use the ``all`` policy by default, so a slow disk applies
backpressure rather than losing messages (``queue(n)`` to drop instead, counted
in ``dropped``). ``stop()`` drains what was received and finishes the file, so a
clean stop loses nothing. A killed recorder leaves a readable file: the chunk in
progress is written out every ``flush_interval_s`` (and when it reaches
``chunk_size_bytes``), so a SIGKILL loses at most that much; replay reads such a file
without its summary and says how many bytes were cut off.

CLI: ``engram record [-o out.mcap] [--bus URL] [--duration-s S] TOPIC...``; the
bus defaults to ``$ENGRAM_BUS`` (``engram launch`` prints the URL it uses).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engram.runtime.bus import Bus, BusClosed, Subscription
from engram.runtime.messages import MESSAGE_TYPES, Message

__all__ = [
    "LEGACY_MESSAGE_ENCODING",
    "LEGACY_SCHEMA_ENCODING",
    "Recorder",
    "add_arguments",
    "run",
    "schema_description",
]

# The first recording format (one codec blob per message); replay still reads it.
LEGACY_SCHEMA_ENCODING = "engram-codec"
LEGACY_MESSAGE_ENCODING = "engram"
_COMPRESSIONS = ("none", "lz4", "zstd")
_IMAGE_FORMATS = ("jpeg", "png", "raw")


def schema_description(type_name: str) -> bytes:
    """The legacy schema data of a message type: JSON with its fields and versions."""
    from engram.runtime.codec import WIRE_VERSION

    cls = MESSAGE_TYPES[type_name]
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    doc = {
        "type": type_name,
        "schema_version": cls.SCHEMA,
        "wire_version": WIRE_VERSION,
        "fields": fields,
    }
    return json.dumps(doc, sort_keys=True).encode()


class Recorder:
    """Writes every message on ``topics`` of ``bus`` to an MCAP file at ``path``.

    counts: messages written per topic. dropped: per topic, messages the
    subscription dropped (only with a ``queue(n)``/``latest`` policy).
    """

    def __init__(
        self,
        bus: Bus,
        topics: Sequence[str],
        path: str | os.PathLike[str],
        *,
        policy: str = "all(256)",
        compression: str = "zstd",
        image_format: str = "jpeg",
        flush_interval_s: float = 1.0,
        chunk_size_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if not topics:
            raise ValueError("Recorder needs at least one topic")
        if len(set(topics)) != len(topics):
            raise ValueError(f"Recorder: duplicate topics in {list(topics)}")
        if compression not in _COMPRESSIONS:
            raise ValueError(f"compression must be one of {_COMPRESSIONS}, got {compression!r}")
        if image_format not in _IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {_IMAGE_FORMATS}, got {image_format!r}")
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        self.bus = bus
        self.topics = list(topics)
        self.path = Path(path)
        self.policy = policy
        self.compression = compression
        self.image_format = image_format
        self.flush_interval_s = flush_interval_s
        self.chunk_size_bytes = chunk_size_bytes
        self.counts: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.errors = 0
        self._subs: dict[str, Subscription] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._writer: Any = None
        self._file: Any = None
        self._schemas: dict[str, int] = {}
        self._channels: dict[tuple[str, str], int] = {}
        self._stop_flusher = threading.Event()

    @property
    def written(self) -> int:
        return sum(self.counts.values())

    @property
    def dropped(self) -> dict[str, int]:
        return {topic: sub.dropped for topic, sub in self._subs.items()}

    def start(self) -> Recorder:
        from mcap.writer import CompressionType, Writer

        if self._writer is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in stop()
        self._writer = Writer(
            self._file,
            compression=CompressionType[self.compression.upper()],
            chunk_size=self.chunk_size_bytes,
        )
        self._writer.start(profile="", library="engram")
        self._writer.add_metadata("engram", {"format": "engram-json-1"})
        self._writer.flush()  # header on disk at once: a killed recorder leaves a valid start
        self._stop_flusher.clear()
        flusher = threading.Thread(target=self._flush_loop, name="record:flush", daemon=True)
        self._threads.append(flusher)
        for topic in self.topics:
            self._subs[topic] = self.bus.subscribe(topic, self.policy)
        flusher.start()
        for topic, sub in self._subs.items():
            t = threading.Thread(
                target=self._drain, args=(sub,), name=f"record:{topic}", daemon=True
            )
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> None:
        """Stop receiving, write what was received, finish and close the file."""
        if self._writer is None:
            return
        for sub in self._subs.values():
            sub.close()  # the drain threads write what is left, then exit
        self._stop_flusher.set()
        for t in self._threads:
            t.join()
        self._threads.clear()
        with self._lock:
            self._writer.finish()
            self._file.close()
            self._writer = None
            self._file = None

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _drain(self, sub: Subscription) -> None:
        while True:
            try:
                msg = sub.get(0.5)
            except BusClosed:
                return
            if msg is not None:
                self.write(sub.topic, msg)  # log_time: taken under the lock, so in file order

    def _flush_loop(self) -> None:
        """Write the chunk in progress out every flush_interval_s (survives a SIGKILL)."""
        while not self._stop_flusher.wait(self.flush_interval_s):
            with self._lock:
                if self._writer is None:
                    return
                self._writer.flush()

    def write(self, topic: str, msg: Message, *, log_time_ns: int | None = None) -> None:
        """Append one message (also usable without subscribing, e.g. to convert data)."""
        from engram.runtime.mcap_format import encode_message

        try:
            records = encode_message(topic, msg, image_format=self.image_format)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop recording
            self.errors += 1
            print(f"engram record: cannot encode a {msg.TYPE} on {topic!r}: {exc}", file=sys.stderr)
            return
        with self._lock:
            if self._writer is None:
                raise RuntimeError("Recorder is not started")
            log_time = time.time_ns() if log_time_ns is None else log_time_ns
            for spec, data in records:
                self._writer.add_message(
                    channel_id=self._channel(spec),
                    log_time=log_time,
                    data=data,
                    publish_time=msg.stamp_ns,
                    sequence=msg.seq & 0xFFFFFFFF,
                )
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def _schema(self, name: str) -> int:
        schema_id = self._schemas.get(name)
        if schema_id is None:
            if name.startswith("engram."):
                from engram.runtime.mcap_format import json_schema

                data = json.dumps(json_schema(name.removeprefix("engram.")), indent=1).encode()
                schema_id = self._writer.register_schema(
                    name=name, encoding="jsonschema", data=data
                )
            else:
                from mcap_protobuf.schema import build_file_descriptor_set

                from engram.runtime.mcap_format import protobuf_class

                fds = build_file_descriptor_set(protobuf_class(name))
                schema_id = self._writer.register_schema(
                    name=name, encoding="protobuf", data=fds.SerializeToString()
                )
            self._schemas[name] = schema_id
        return schema_id

    def _channel(self, spec: dict[str, Any]) -> int:
        key = (spec["topic"], spec["schema"])
        channel_id = self._channels.get(key)
        if channel_id is None:
            name = spec["schema"]
            channel_id = self._writer.register_channel(
                topic=spec["topic"],
                message_encoding="json" if name.startswith("engram.") else "protobuf",
                schema_id=self._schema(name),
                metadata=spec["metadata"],
            )
            self._channels[key] = channel_id
        return channel_id


# ---------------------------------------------------------------------------
# CLI: engram record


def add_arguments(parser: Any) -> None:
    parser.add_argument("topics", nargs="+", metavar="TOPIC", help="topics to record")
    parser.add_argument(
        "-o", "--output", default=None, help="MCAP file to write (default: recording-<time>.mcap)"
    )
    parser.add_argument(
        "--bus", default=None, help="bus URL (default: $ENGRAM_BUS, printed by engram launch)"
    )
    parser.add_argument(
        "--duration-s", type=float, default=None, help="stop after this many seconds"
    )
    parser.add_argument(
        "--compression", choices=_COMPRESSIONS, default="zstd", help="MCAP chunk compression"
    )
    parser.add_argument(
        "--image-format",
        choices=_IMAGE_FORMATS,
        default="jpeg",
        help="colour images as JPEG (small, lossy), PNG (lossless) or raw; depth is stored in "
        "16-bit millimetres unless raw (float32 metres); segmentation is always lossless",
    )


def bus_url_from(args_bus: str | None, command: str) -> str:
    """``--bus`` or ``$ENGRAM_BUS``; a clear error naming both when neither is set."""
    url = args_bus or os.environ.get("ENGRAM_BUS")
    if not url:
        raise SystemExit(
            f"engram {command}: no bus given: pass --bus URL (ipc://... or tcp://..., "
            "as printed by engram launch) or set ENGRAM_BUS"
        )
    return url


def run(args: Any) -> int:
    from engram.runtime.bus import make_bus

    url = bus_url_from(args.bus, "record")
    output = args.output or time.strftime("recording-%Y%m%d-%H%M%S.mcap")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with make_bus(url) as bus:
            recorder = Recorder(
                bus,
                args.topics,
                output,
                compression=args.compression,
                image_format=args.image_format,
            )
            with recorder:
                until = "" if args.duration_s is None else f" for {args.duration_s:g} s"
                print(
                    f"engram record: recording {', '.join(args.topics)} from {url} to "
                    f"{output}{until} (Ctrl-C to stop)",
                    file=sys.stderr,
                    flush=True,
                )
                stop.wait(args.duration_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    per_topic = ", ".join(f"{t} {n}" for t, n in recorder.counts.items())
    print(f"engram record: wrote {recorder.written} message(s) ({per_topic}) to {output}")
    return 0
