"""Replay a recording onto the bus (``engram replay``).

Engram recordings are MCAP files written by ``runtime/recorder.py`` (channels
with message_encoding ``"engram"``, data = ``engram.runtime.codec.pack(msg)``). They are
published back with their original payloads, stamps and sequence numbers, at
the recorded pace scaled by ``rate`` (2.0 = twice as fast) or as fast as
possible (``rate=None``). Pacing follows the recorded ``log_time``.

ROS 2 bags (a directory with ``metadata.yaml``, a ``.db3`` file, or an MCAP whose
channels use message_encoding ``"cdr"``) are handed to
``engram.runtime.ros2.bag.replay_bag``, which converts ROS messages to Engram ones.

Python API::

    for topic, msg in read_recording("run.mcap"): ...
    n = replay("run.mcap", bus, rate=None, topic_map={"/frames": "/camera/frames"})

A message that fails to decode is skipped, counted and logged; replay goes on.

CLI: ``engram replay FILE [--rate R | --as-fast-as-possible] [--bus URL]
[--topic-map OLD=NEW ...] [--loop] [--rerun [FILE.rrd]]``; the bus defaults to
``$ENGRAM_BUS``. ``--rerun`` also logs what is published (and what the graph makes of
it) to Rerun; with no bus given it replays onto an in-process bus just for that.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engram.runtime.bus import Bus
from engram.runtime.messages import Message

__all__ = [
    "RecordedMessage",
    "RecordingError",
    "add_arguments",
    "is_ros2_bag",
    "iter_recording",
    "read_recording",
    "replay",
    "run",
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
            f"use {_ENGRAM_ENCODING!r} (ROS 2 bags with 'cdr' replay through engram.runtime.ros2.bag)"
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
    over at the end until ``stop`` is set. A ROS 2 bag goes to
    ``engram.runtime.ros2.bag.replay_bag``.
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
    try:
        from engram.runtime.ros2.bag import replay_bag
    except ImportError as exc:
        raise RecordingError(
            f"{path} is a ROS 2 bag, but ROS 2 bag replay (engram.runtime.ros2.bag) is not available "
            f"in this build: {exc}"
        ) from None
    return replay_bag


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


# ---------------------------------------------------------------------------
# CLI: engram replay


def add_arguments(parser: Any) -> None:
    parser.add_argument("file", help="an Engram MCAP recording or a ROS 2 bag")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument(
        "--rate", type=float, default=1.0, help="speed factor on the recorded pace (default 1.0)"
    )
    speed.add_argument("--as-fast-as-possible", action="store_true", help="publish without pacing")
    parser.add_argument(
        "--bus", default=None, help="bus URL (default: $ENGRAM_BUS, printed by engram launch)"
    )
    parser.add_argument(
        "--topic-map",
        nargs="+",
        default=[],
        metavar="OLD=NEW",
        help="publish recorded topic OLD on NEW",
    )
    parser.add_argument("--loop", action="store_true", help="start over at the end (Ctrl-C stops)")
    parser.add_argument(
        "--start-delay-s",
        type=float,
        default=0.5,
        help="wait this long after joining the bus before publishing (subscribers connect)",
    )
    from engram.runtime.live import add_rerun_argument

    add_rerun_argument(parser)  # --rerun [FILE.rrd]; without --bus / $ENGRAM_BUS: in-process


def _parse_topic_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise SystemExit(f"engram replay: --topic-map wants OLD=NEW, got {item!r}")
        out[old] = new
    return out


def run(args: Any) -> int:
    from engram.runtime.bus import make_bus
    from engram.runtime.recorder import bus_url_from

    rerun_flag = getattr(args, "rerun", None)
    if rerun_flag is not None and not (args.bus or os.environ.get("ENGRAM_BUS")):
        url = "inproc://replay"  # only the Rerun node listens
    else:
        url = bus_url_from(args.bus, "replay")
    topic_map = _parse_topic_map(args.topic_map)
    if args.rate is not None and not args.rate > 0:
        raise SystemExit(f"engram replay: --rate must be > 0, got {args.rate}")
    rate = None if args.as_fast_as_possible else args.rate
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with make_bus(url) as bus:
            from engram.runtime.live import start_rerun_node

            rerun = start_rerun_node(rerun_flag, bus, name="engram-replay")
            try:
                if args.start_delay_s > 0:
                    stop.wait(args.start_delay_s)
                pace = "as fast as possible" if rate is None else f"at {rate:g}x"
                print(f"engram replay: {args.file} -> {url} {pace}", file=sys.stderr, flush=True)
                n = replay(
                    args.file, bus, rate=rate, topic_map=topic_map, loop=args.loop, stop=stop
                )
            finally:
                if rerun is not None:
                    rerun.stop()  # completes the .rrd file
    except RecordingError as exc:
        print(f"engram replay: {exc}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"engram replay: published {n} message(s) from {args.file}")
    return 0
