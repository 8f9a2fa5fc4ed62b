"""Replay a recording onto the bus (``engram replay``).

Engram recordings are MCAP files written by ``runtime/recorder.py`` (channels
with message_encoding ``"engram"``, data = ``engram.runtime.codec.pack(msg)``). They are
published back with their original payloads, stamps and sequence numbers, at
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

The ``engram replay`` command is ``engram.runtime.apps.replay``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engram.runtime import registry
from engram.runtime.bus import Bus
from engram.runtime.messages import Message

__all__ = [
    "RecordedMessage",
    "RecordingError",
    "is_ros2_bag",
    "iter_recording",
    "read_recording",
    "replay",
]

log = logging.getLogger(__name__)

_ENGRAM_ENCODING = "engram"


class RecordingError(ValueError):
    """A file is not a readable recording (names the file and the problem)."""


@dataclass(frozen=True)
class RecordedMessage:
    """One message of a recording: its topic, receive time (ns) and the message."""

    topic: str
    log_time_ns: int
    msg: Message


def _mcap_encodings(path: Path) -> set[str]:
    """The message encodings of an MCAP file's channels."""
    from mcap.reader import make_reader

    try:
        with open(path, "rb") as f:
            summary = make_reader(f).get_summary()
            if summary is not None:
                return {c.message_encoding for c in summary.channels.values()}
            f.seek(0)
            encodings = set()
            for _schema, channel, _message in make_reader(f).iter_messages(log_time_order=False):
                encodings.add(channel.message_encoding)
            return encodings
    except Exception as exc:  # noqa: BLE001 - mcap raises several types
        raise RecordingError(f"{path}: not a readable MCAP file ({exc})") from None


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
    path: str | os.PathLike[str], *, errors: list[str] | None = None
) -> Iterator[RecordedMessage]:
    """Every message of an Engram MCAP recording, in log-time order.

    Messages that fail to decode are skipped; their descriptions are appended to
    ``errors`` when given (and logged).
    """
    from mcap.reader import make_reader

    from engram.runtime.codec import DecodeError, unpack

    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such recording file")
    encodings = _mcap_encodings(path)
    foreign = encodings - {_ENGRAM_ENCODING}
    if foreign:
        raise RecordingError(
            f"{path}: channels use message encoding(s) {sorted(foreign)}; Engram recordings "
            f"use {_ENGRAM_ENCODING!r} (ROS 2 bags with 'cdr' replay through engram.runtime.bridges.ros2.bag)"
        )
    with open(path, "rb") as f:
        try:
            for _schema, channel, message in make_reader(f).iter_messages(log_time_order=True):
                try:
                    msg = unpack(message.data)
                except DecodeError as exc:
                    problem = f"{path}: message on {channel.topic!r} at log_time {message.log_time}: {exc}"
                    log.warning("skipping undecodable message: %s", problem)
                    if errors is not None:
                        errors.append(problem)
                    continue
                yield RecordedMessage(channel.topic, message.log_time, msg)
        except RecordingError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated/corrupt file
            raise RecordingError(f"{path}: cannot read the recording ({exc})") from None


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
) -> int:
    """Publish a recording on ``bus``; returns the number of messages published.

    rate: speed factor on the recorded pace (1.0 = real time); None = as fast as
    possible. topic_map: ``{recorded topic: topic to publish on}``. loop: start
    over at the end until ``stop`` is set. A ROS 2 bag goes to the registered
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
        total += _replay_once(path, bus, rate=rate, topic_map=topic_map, stop=stop)
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
    path: Path, bus: Bus, *, rate: float | None, topic_map: dict[str, str], stop: threading.Event
) -> int:
    count = 0
    first_log = None
    t0 = time.monotonic()
    for record in iter_recording(path):
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
