"""``engram replay FILE [--rate R | --as-fast-as-possible] [--bus URL] [--topic-map OLD=NEW ...]
[--loop] [--rerun [FILE.rrd]]``: a recording or a ROS 2 bag published onto the bus
(``engram.runtime.replay``).

The bus defaults to ``$ENGRAM_BUS``. ``--rerun`` also logs what is published (and what the
graph makes of it) to Rerun; with no bus given it replays onto an in-process bus just for that.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from engram.runtime.bridges.rerun import add_rerun_argument, start_rerun_node
from engram.runtime.replay import RecordingError, RecordingReport, replay

__all__ = ["add_arguments", "run"]


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
        help="publish recorded topic OLD on NEW, e.g. /camera/frames=/frames when the "
        "recording came from a graph whose topics differ from the one listening (the "
        "recording's topics are listed at the end; --rerun listens on /frames, /percepts, "
        "/recall, /transcripts, /robot_state, /heartbeat)",
    )
    parser.add_argument("--loop", action="store_true", help="start over at the end (Ctrl-C stops)")
    parser.add_argument(
        "--start-delay-s",
        type=float,
        default=0.5,
        help="wait this long after joining the bus before publishing (subscribers connect)",
    )
    parser.add_argument(
        "--repair",
        default=None,
        metavar="OUT.mcap",
        help="do not publish: copy what is intact of a damaged recording (cut short, "
        "recorder killed) to OUT.mcap, a finished file with its summary rebuilt",
    )
    add_rerun_argument(parser)  # --rerun [FILE.rrd]; without --bus / $ENGRAM_BUS: in-process


def _parse_topic_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise SystemExit(f"engram replay: --topic-map wants OLD=NEW, got {item!r}")
        out[old] = new
    return out


#: the topic the Rerun view listens on, per message type it draws
_RERUN_TOPICS = {
    "Frame": "/frames",
    "Percept": "/percepts",
    "Recall": "/recall",
    "Transcript": "/transcripts",
    "RobotState": "/robot_state",
    "Heartbeat": "/heartbeat",
}


def topic_warnings(report: RecordingReport, topic_map: dict[str, str], *, rerun: bool) -> list[str]:
    """What a replay was asked to show but did not: --topic-map entries naming topics the
    file lacks, and (with --rerun) recorded topics the Rerun view does not listen on."""
    have = report.messages_by_topic
    out = [
        f"--topic-map {old}={new}: the recording has no messages on {old} "
        f"(it has {', '.join(sorted(have)) or 'none'})"
        for old, new in topic_map.items()
        if old not in have
    ]
    if rerun:
        for topic, type_name in report.types_by_topic.items():
            want = _RERUN_TOPICS.get(type_name)
            published = topic_map.get(topic, topic)
            if want and published != want:
                out.append(
                    f"{topic} carries {have[topic]} {type_name} message(s), but the Rerun view "
                    f"listens on {want}: add --topic-map {topic}={want}"
                )
    return out


def _wait_for_rerun(node: Any, report: RecordingReport, topic_map: dict[str, str]) -> None:
    """Until the Rerun node has drawn every replayed message it listens to (its queue is
    lossless), or it makes no progress for 5 s."""
    expected = sum(
        n
        for topic, n in report.messages_by_topic.items()
        if report.types_by_topic.get(topic) in _RERUN_TOPICS
        and report.types_by_topic.get(topic) != "Heartbeat"
        and topic_map.get(topic, topic) == _RERUN_TOPICS[report.types_by_topic[topic]]
    )
    logger = getattr(node, "logger", None)
    if logger is None:
        return
    last, since = -1, time.monotonic()
    while time.monotonic() - since < 5.0:
        drawn = sum(v for k, v in logger.counts.items() if k != "places")
        if drawn >= expected:
            return
        if drawn != last:
            last, since = drawn, time.monotonic()
        time.sleep(0.05)


def _repair(path: str, out: str) -> int:
    from engram.runtime.replay import repair_recording

    try:
        report = repair_recording(path, out)
    except RecordingError as exc:
        print(f"engram replay: {exc}", file=sys.stderr)
        return 2
    kept = sum(1 for _ in _count_messages(out))
    lost = report.summary() or "nothing was lost"
    print(f"engram replay: wrote {out} ({kept} message record(s) kept; {lost})")
    return 0


def _count_messages(path: str) -> Any:
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        yield from make_reader(f).iter_messages()


def _bag_error() -> type[Exception]:
    """``BagError`` of the ROS 2 bag replayer (a garbage or incomplete bag: a clean CLI
    error, not a traceback); ``RecordingError`` stands in when bag support is absent."""
    try:
        from engram.runtime.bridges.ros2.bag import BagError
    except ImportError:
        return RecordingError
    return BagError


def run(args: Any) -> int:
    from engram.runtime.bus import make_bus
    from engram.runtime.recorder import bus_url_from

    if getattr(args, "repair", None):
        return _repair(args.file, args.repair)

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
    report = RecordingReport()
    n = 0
    try:
        with make_bus(url) as bus:
            # lossless: every frame of the file reaches the .rrd, even as fast as possible
            rerun = start_rerun_node(rerun_flag, bus, name="engram-replay", lossless=True)
            try:
                if args.start_delay_s > 0:
                    stop.wait(args.start_delay_s)
                pace = "as fast as possible" if rate is None else f"at {rate:g}x"
                print(f"engram replay: {args.file} -> {url} {pace}", file=sys.stderr, flush=True)
                n = replay(
                    args.file,
                    bus,
                    rate=rate,
                    topic_map=topic_map,
                    loop=args.loop,
                    stop=stop,
                    report=report,
                )
            finally:
                if rerun is not None:
                    _wait_for_rerun(rerun, report, topic_map)  # what is queued gets drawn
                    rerun.stop()  # completes the .rrd file
    except (RecordingError, _bag_error()) as exc:
        print(f"engram replay: {exc}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if report.damaged:
        print(f"engram replay: warning: {args.file}: {report.summary()}", file=sys.stderr)
    for line in topic_warnings(report, topic_map, rerun=rerun is not None):
        print(f"engram replay: warning: {line}", file=sys.stderr)
    print(f"engram replay: published {n} message(s) from {args.file}")
    for topic, count in report.messages_by_topic.items():
        mapped = topic_map.get(topic, topic)
        where = f" -> {mapped}" if mapped != topic else ""
        print(f"  {topic}{where}: {count} {report.types_by_topic.get(topic, '')}")
    return 0
