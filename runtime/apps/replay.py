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
from typing import Any

from engram.runtime.bridges.rerun import add_rerun_argument, start_rerun_node
from engram.runtime.replay import RecordingError, replay

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
        help="publish recorded topic OLD on NEW",
    )
    parser.add_argument("--loop", action="store_true", help="start over at the end (Ctrl-C stops)")
    parser.add_argument(
        "--start-delay-s",
        type=float,
        default=0.5,
        help="wait this long after joining the bus before publishing (subscribers connect)",
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
