"""One process group of a launch graph, as a child process of the launcher:
``python -m engram.runtime.child --spec GROUP.json --group NAME --parent-pid PID``.

It joins the bus, builds and starts its nodes, and stops them cleanly on SIGTERM/SIGINT,
(a second signal, or nodes still stopping after ``ENGRAM_STOP_DEADLINE_S``, default 4 s,
end it at once: a launch is stopped within 5 s),
or when its parent dies (it polls ``os.getppid()``, so no orphan outlives a SIGKILLed
launcher). It exits 0 when told to stop or when all its nodes stopped by themselves, 1
when its nodes could not be built or started. ``engram.runtime.supervisor`` restarts it
by its group's ``RestartPolicy``.

Watchdog: when the supervisor passes a pipe (``ENGRAM_WATCHDOG_FD``), a thread of its own
writes ``ages NODE=SECONDS ...`` there every 0.5 s: how long ago each node last published
its heartbeat. It never touches the bus, so a blocked publish cannot silence it, and a
stopped or hung process or node shows as silence or a growing age.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from engram.runtime.bus import make_bus
from engram.runtime.graph import build_node, curve_from_settings, start_order

__all__ = ["child_main"]

log = logging.getLogger(__name__)


def child_main(argv: Sequence[str] | None = None) -> int:
    """Run one process group of a launch graph until SIGTERM/SIGINT or the parent dies.

    The spec file (written by the launcher) is JSON:
    ``{"graph": source, "bus": url, "group": name, "nodes": [{"name", "type",
    "params", "topics"}, ...]}``.
    """
    parser = argparse.ArgumentParser(prog="python -m engram.runtime.child")
    parser.add_argument("--spec", required=True, help="group spec JSON written by the launcher")
    parser.add_argument("--group", required=True, help="process group name")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this pid goes away")
    args = parser.parse_args(argv)
    level = os.environ.get("ENGRAM_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format=f"%(asctime)s %(levelname)s [{args.group}] %(name)s: %(message)s",
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    with open(args.spec, encoding="utf-8") as f:
        spec = json.load(f)
    bus = None
    nodes = []
    try:
        curve = curve_from_settings(spec.get("curve"))
        bus = make_bus(spec["bus"], curve=curve) if curve is not None else make_bus(spec["bus"])
        nodes = [build_node(n, bus) for n in spec["nodes"]]
        for node in start_order(nodes):
            node.start()
        _freeze_startup_heap()
    except Exception:
        log.exception("process group %r: could not start its nodes", args.group)
        for node in reversed(nodes):
            _stop_quietly(node)
        if bus is not None:
            bus.close()
        return 1
    _start_watchdog(nodes, stop)
    exit_code = 0
    while not stop.wait(0.2):
        if args.parent_pid and os.getppid() != args.parent_pid:
            log.warning("process group %r: launcher went away; shutting down", args.group)
            break
        if all(node.state in ("stopped", "stopping") for node in nodes):
            break  # every node finished by itself
    _exit_after(float(os.environ.get("ENGRAM_STOP_DEADLINE_S", "4")), args.group)
    for node in reversed(start_order(nodes)):
        if not _stop_quietly(node):
            exit_code = 1
    bus.close()
    return exit_code


def _freeze_startup_heap() -> None:
    """Move everything built so far (imported modules, models, the nodes' own state) to
    the garbage collector's permanent generation: it lives as long as the process.

    Why: a full (generation 2) collection scans every tracked object while holding the
    GIL; with torch and its kin imported that is ~300k objects and 87-102 ms here, and
    one landing in a memory recall made its p99 77-90 ms instead of 2-3 ms
    (``bench/memory.py``, round 8). Frozen objects are skipped by later collections, so
    what the nodes allocate while running is collected as before. (Cyclic garbage made
    before the freeze is collected first.)"""
    import gc

    gc.collect()
    gc.freeze()


def _exit_after(deadline_s: float, group: str) -> None:
    """Make sure the process ends: if stopping its nodes (flushing their data) takes longer
    than ``deadline_s``, or a second SIGTERM/SIGINT arrives, exit at once."""

    def now(signum: int = 0, _frame: object = None) -> None:
        log.error("process group %r: nodes did not stop within %.1f s; exiting", group, deadline_s)
        logging.shutdown()
        os._exit(1)

    signal.signal(signal.SIGTERM, now)
    signal.signal(signal.SIGINT, now)
    timer = threading.Timer(deadline_s, now)
    timer.daemon = True
    timer.start()


def _start_watchdog(nodes: list, stop: threading.Event) -> None:
    """Write each node's heartbeat age to the supervisor's pipe every 0.5 s (module doc)."""
    fd_text = os.environ.get("ENGRAM_WATCHDOG_FD", "")
    if not fd_text.isdigit():
        return
    fd = int(fd_text)
    try:
        os.set_blocking(fd, False)  # a supervisor that does not read never blocks us
    except OSError:
        return

    def run() -> None:
        while not stop.is_set():
            now = time.monotonic()
            ages = []
            for node in nodes:
                if getattr(node.config, "heartbeat_hz", 0) > 0 and node.state == "running":
                    last = node.last_heartbeat_s or node._started_at or now
                    ages.append(f"{node.name}={max(0.0, now - last):.2f}")
            try:
                os.write(fd, ("ages " + " ".join(ages) + "\n").encode())
            except BlockingIOError:
                pass
            except OSError:
                return  # the supervisor went away
            stop.wait(0.5)

    threading.Thread(target=run, name="watchdog", daemon=True).start()


def _stop_quietly(node: object) -> bool:
    try:
        node.stop()  # type: ignore[attr-defined]
        return True
    except Exception:
        log.exception("error stopping node %s", getattr(node, "name", node))
        return False


if __name__ == "__main__":
    sys.exit(child_main())
