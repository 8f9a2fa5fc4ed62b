"""Declarative launch graphs: validate, start, supervise (``engram launch``).

A launch graph is YAML data (never code)::

    name: demo                      # optional; used in the default bus name
    bus: inproc://demo              # optional; see "bus" below
    shutdown_grace_s: 5.0           # optional; SIGTERM -> SIGKILL delay for children
    external_topics:                # optional; topics fed from outside the graph
      /camera/frames: Frame         #   (engram replay, a ROS 2 bridge): topic -> type
    curve:                          # optional; encrypt + authenticate the ZeroMQ bus
      secret_key: keys/robot.key_secret   # this launch's key pair (``engram keys robot``)
      server_public_key: keys/broker.key  # optional; default: the pair above (the launcher
                                          #   serves the broker with it)
      allowed_keys_dir: keys/peers        # optional; other machines' public keys let in
    nodes:
      - name: camera                # unique within the graph
        type: synthetic_camera      # a registered node type (engram.runtime.registry, kind 'node')
        params: {rate_hz: 15}       # fields of the node class's Config dataclass
        topics: {frames: /frames}   # port -> topic remaps (default topic: /<port>)
        process: sensors            # optional: nodes of one group share an OS process
        restart:                    # optional, only with process: (or a bare policy string)
          policy: on-failure        #   always | on-failure | never
          max_restarts: 5           #   -1 = no limit
          backoff_s: 0.5            #   first delay, doubles per consecutive crash
      - name: stats
        type: frame_stats           # reads /frames; no process: -> a thread of the launcher

bus: without ``process:`` groups everything runs as threads of one process on an
in-process bus (default ``inproc://<name>``). With groups, the bus must be
``ipc://`` or ``tcp://`` (default: ``ipc://`` under a fresh temp dir); the
launcher serves the ZeroMQ broker, starts one child process per group
(``engram.runtime.child``, supervised by ``engram.runtime.supervisor``), and runs
group-less nodes as its own threads.

curve: the broker, the launcher and every process group use the graph's key pair
(``engram.runtime.zmq_curve.CurveConfig``), so a peer without an allowed key (the pair itself,
or one in ``allowed_keys_dir``) can neither read the bus nor join it. Relative paths
are relative to the graph file. Needs an ``ipc://`` or ``tcp://`` bus.

Validation happens before anything starts and reports every problem at once,
each naming the node, port or topic: unknown top-level or node keys, unknown
node types, modules that fail to import, unknown params (and params of the wrong
type), remaps of ports a node does not have, inputs no node (or
``external_topics``) produces, type mismatches between an output and an input on
the same topic, two outputs of different types on one topic, a service topic
served twice, duplicate names, bad restart policies, ``inproc://`` with groups.

Reading, overriding, validating and building graphs is ``engram.runtime.graph``
(``load_graph``, ``build_nodes``, ``GraphError``, ... are re-exported here).

Python API::

    with Launch.from_yaml("launch/demo.yaml") as launch:   # validates, starts
        launch.wait(5.0)                                   # run a while
    Launch.from_yaml("g.yaml").validate()                  # -> list of problems

CLI: ``engram launch GRAPH [--check] [--bus URL] [--duration-s S]``; exit code 0
on a clean run or a valid ``--check``, 2 for an invalid graph, 1 when a process
group failed for good. Status lines go to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engram.runtime.bus import Bus, make_bus
from engram.runtime.graph import (
    GraphError,
    NodeSpec,
    build_node,
    build_nodes,
    curve_from_settings,
    graph_path,
    group_policy,
    load_graph,
    parse_graph,
    read_graph,
    start_order,
    validate_graph,
)
from engram.runtime.node import Node
from engram.runtime.supervisor import ManagedProcess, Supervisor

__all__ = [
    "GraphError",
    "Launch",
    "NodeSpec",
    "add_arguments",
    "build_node",
    "build_nodes",
    "graph_path",
    "load_graph",
    "run",
    "start_order",
]

# ---------------------------------------------------------------------------
# the launch


def _print_status(line: str) -> None:
    print(f"engram launch: {line}", file=sys.stderr, flush=True)


class Launch:
    """A launch graph: ``validate()``, ``start()``, ``wait()``, ``stop()``; a context manager.

    After ``start()``: ``bus`` is this process's bus (join it to observe or inject
    traffic), ``url`` its URL, ``nodes`` the node instances running as threads here,
    ``processes`` the supervised child processes by group name.
    """

    def __init__(
        self,
        graph: dict[str, Any],
        *,
        source: str = "<graph>",
        bus: str | None = None,
        status: Callable[[str], None] | None = _print_status,
    ) -> None:
        self.source = source
        if bus is not None and isinstance(graph, dict):
            graph = {**graph, "bus": bus}
        self._settings, self.specs, self._parse_problems = parse_graph(graph, source)
        self._status = status or (lambda line: None)
        self._problems: list[str] | None = None
        self.bus: Bus | None = None
        self.url = ""
        self.nodes: dict[str, Node] = {}
        self.processes: dict[str, ManagedProcess] = {}
        self._supervisor: Supervisor | None = None
        self._broker: Any = None
        self._tmpdir: str | None = None
        self._running = False
        self._lock = threading.Lock()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **kwargs: Any) -> Launch:
        """Read a graph file; ``GraphError`` if it cannot be read or is not valid YAML."""
        return cls(read_graph(path), source=str(path), **kwargs)

    @property
    def name(self) -> str:
        return self._settings.get("name", "graph")

    @property
    def groups(self) -> dict[str, list[NodeSpec]]:
        out: dict[str, list[NodeSpec]] = {}
        for spec in self.specs:
            if spec.process:
                out.setdefault(spec.process, []).append(spec)
        return out

    def validate(self) -> list[str]:
        """Every problem of the graph (empty when it can start)."""
        if self._problems is None:
            self._problems = list(self._parse_problems) + validate_graph(self._settings, self.specs)
        return list(self._problems)

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> Launch:
        """Validate, then start the bus, child processes and in-process nodes."""
        problems = self.validate()
        if problems:
            raise GraphError(self.source, problems)
        with self._lock:
            if self._running:
                return self
            try:
                self._start()
            except BaseException:
                self._stop(grace_s=1.0)
                raise
            self._running = True
        return self

    def _start(self) -> None:
        groups = self.groups
        url = self._settings["bus"]
        if groups:
            self._tmpdir = tempfile.mkdtemp(prefix="engram-launch-")
            if not url:
                url = f"ipc://{self._tmpdir}/bus"
        elif not url:
            url = f"inproc://{self.name}"
        self.url = url
        curve = curve_from_settings(self._settings.get("curve"))
        if groups:
            from engram.runtime.zmq_broker import serve_broker

            self._broker = serve_broker(url, curve=curve)
        self._status(f"{self.source}: bus {url}")
        if curve is not None:
            self._status(f"bus secured with CURVE (key {self._settings['curve']['secret_key']})")
        self.bus = make_bus(url, curve=curve) if curve is not None else make_bus(url)
        if groups:
            self._start_processes(groups)
        local = [build_node(spec, self.bus) for spec in self.specs if not spec.process]
        for node in start_order(local):
            node.start()
            self.nodes[node.name] = node
        if local:
            names = ", ".join(n.name for n in local)
            self._status(f"started {len(local)} node(s) in this process: {names}")

    def _start_processes(self, groups: dict[str, list[NodeSpec]]) -> None:
        assert self._tmpdir is not None
        repo_root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["ENGRAM_BUS"] = self.url
        env.setdefault(
            "ENGRAM_LOG_LEVEL", logging.getLevelName(logging.getLogger().getEffectiveLevel())
        )
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
        procs = []
        for group, members in groups.items():
            spec_path = Path(self._tmpdir) / f"{group}.json"
            spec_path.write_text(
                json.dumps(
                    {
                        "graph": self.source,
                        "bus": self.url,
                        "curve": self._settings.get("curve"),  # key paths, not keys
                        "group": group,
                        "nodes": [m.child_spec() for m in members],
                    }
                ),
                encoding="utf-8",
            )
            argv = [
                sys.executable,
                "-m",
                "engram.runtime.child",
                "--spec",
                str(spec_path),
                "--group",
                group,
                "--parent-pid",
                str(os.getpid()),
            ]
            procs.append(
                ManagedProcess(
                    name=group,
                    argv=argv,
                    restart=group_policy(members),
                    env=env,
                    nodes=tuple(m.name for m in members),
                )
            )
        self._supervisor = Supervisor(procs, status=self._status)
        self.processes = dict(self._supervisor.processes)
        self._supervisor.start()

    def stop(self, *, grace_s: float | None = None) -> None:
        """Stop in-process nodes and child processes (SIGTERM, then SIGKILL after grace)."""
        with self._lock:
            self._stop(grace_s=grace_s)

    def _stop(self, *, grace_s: float | None) -> None:
        if grace_s is None:
            grace_s = float(self._settings.get("shutdown_grace_s", 5.0))
        for node in reversed(start_order(list(self.nodes.values()))):
            try:
                node.stop()
            except Exception as exc:  # noqa: BLE001 - keep shutting the rest down
                self._status(f"error stopping node {node.name!r}: {exc}")
        if self._supervisor is not None:
            self._supervisor.stop(grace_s)
        if self.bus is not None:
            self.bus.close()
        if self._broker is not None:
            self._broker.close()
            self._broker = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if self._running:
            self._status("stopped")
        self._running = False

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the graph has finished by itself (or ``timeout_s``); True if finished.

        A graph is finished when no in-process node is running and every process
        group has ended (exited without restart, or failed).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._running:
            local_running = any(n.state == "running" for n in self.nodes.values())
            procs_done = self._supervisor is None or all(
                p.finished for p in self._supervisor.processes.values()
            )
            if not local_running and procs_done:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(0.05 if left is None else min(0.05, left))
        return True

    @property
    def failed(self) -> list[str]:
        """Process groups that were given up on (crashed more than max_restarts)."""
        return self._supervisor.failed if self._supervisor else []

    def status(self) -> dict[str, dict[str, object]]:
        """Per node: where it runs and its state (``pid``/``restarts`` for process groups)."""
        out: dict[str, dict[str, object]] = {}
        for name, node in self.nodes.items():
            out[name] = {"process": None, "state": node.state}
        if self._supervisor is not None:
            for group, info in self._supervisor.status().items():
                for node_name in info["nodes"]:  # type: ignore[union-attr]
                    out[node_name] = {"process": group, **info}
        return out

    def __enter__(self) -> Launch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# CLI: engram launch


def add_arguments(parser: Any) -> None:
    parser.add_argument("graph", help="launch graph YAML, e.g. launch/demo.yaml")
    parser.add_argument(
        "--check", action="store_true", help="only validate the graph (exit 0 valid, 2 invalid)"
    )
    parser.add_argument("--bus", default=None, help="override the graph's bus URL")
    parser.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C / SIGTERM)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest="launch_verbose",
        action="count",
        default=0,
        help="print each node's heartbeat summary (state, counters, latency) periodically",
    )
    parser.add_argument(
        "--status-every-s",
        type=float,
        default=5.0,
        help="with -v: seconds between heartbeat summaries",
    )


def run(args: Any) -> int:
    try:
        launch = Launch.from_yaml(args.graph, bus=args.bus)
    except GraphError as exc:
        print(exc, file=sys.stderr)
        return 2
    problems = launch.validate()
    if problems:
        print(GraphError(launch.source, problems), file=sys.stderr)
        return 2
    if args.check:
        groups = launch.groups
        where = f", {len(groups)} process group(s)" if groups else ", one process"
        print(f"{launch.source}: OK ({len(launch.specs)} node(s){where})")
        return 0
    verbose = getattr(args, "launch_verbose", 0) or getattr(args, "verbose", 0)
    every_s = getattr(args, "status_every_s", 5.0) if verbose else None
    return _run_until_signal(launch, duration_s=args.duration_s, status_every_s=every_s)


def heartbeat_line(hb: Any) -> str:
    """One line for people from a node's ``Heartbeat``: state, uptime, counters, latency."""
    counters = " ".join(f"{k} {v}" for k, v in sorted(hb.counters.items()))
    latency = " ".join(f"{k} {v:.1f}ms" for k, v in sorted(hb.latency_ms.items()))
    parts = [f"{hb.node}: {hb.state}, up {hb.uptime_s:.0f} s"]
    if counters:
        parts.append(counters)
    if latency:
        parts.append(latency)
    return " | ".join(parts)


def _heartbeat_printer(launch: Launch, every_s: float, stop: threading.Event) -> None:
    """Print the latest heartbeat of every node each ``every_s`` seconds until ``stop``."""
    from engram.runtime.bus import BusClosed
    from engram.runtime.messages import Heartbeat
    from engram.runtime.node import HEARTBEAT_TOPIC

    while launch.bus is None and not stop.wait(0.05):
        pass
    if launch.bus is None:
        return
    sub = launch.bus.subscribe(HEARTBEAT_TOPIC, "queue(256)")
    latest: dict[str, Any] = {}
    next_print = time.monotonic() + every_s
    try:
        while not stop.is_set():
            try:
                hb = sub.get(0.1)
            except BusClosed:
                return
            if isinstance(hb, Heartbeat) and hb.node:
                latest[hb.node] = hb
            if time.monotonic() >= next_print:
                next_print += every_s
                for name in sorted(latest):
                    _print_status(heartbeat_line(latest[name]))
                if not latest:
                    _print_status("no heartbeats yet")
    finally:
        sub.close()


def _run_until_signal(
    launch: Launch, *, duration_s: float | None, status_every_s: float | None = None
) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stop.is_set():
            _print_status(f"got {signal.Signals(signum).name}; shutting down")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        launch.start()
        if status_every_s:  # engram launch -v: heartbeat summaries
            threading.Thread(
                target=_heartbeat_printer,
                args=(launch, status_every_s, stop),
                daemon=True,
                name="launch:status",
            ).start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set():
            if launch.wait(0.2):
                _print_status("all nodes finished")
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
    except GraphError as exc:
        print(exc, file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. the bus URL is already served
        _print_status(f"cannot start {launch.source}: {exc}")
        return 1
    finally:
        stop.set()
        launch.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if launch.failed:
        _print_status(f"process group(s) failed: {', '.join(launch.failed)}")
        return 1
    return 0
