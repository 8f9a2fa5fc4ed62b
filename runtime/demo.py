"""``engram demo``: the main job.

For now this runs the synthetic graph (``launch/demo.yaml``: a synthetic camera
streaming frames to a statistics node) for a few seconds with a progress bar,
then prints a short report: frames sent and received, drops, latency. The
camera is told to send exactly ``rate_hz * duration_s`` frames, so the report
compares exact counts. ``--multiprocess`` runs ``launch/demo_multiprocess.yaml``
instead (the camera in its own supervised process, frames over ZeroMQ).
``--synthetic`` selects this graph explicitly; the MuJoCo run will become the
default.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "SYNTHETIC_GRAPH",
    "SYNTHETIC_MULTIPROCESS_GRAPH",
    "add_arguments",
    "run",
    "run_synthetic",
]

_LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"
SYNTHETIC_GRAPH = _LAUNCH_DIR / "demo.yaml"
SYNTHETIC_MULTIPROCESS_GRAPH = _LAUNCH_DIR / "demo_multiprocess.yaml"


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--synthetic", action="store_true", help="run the synthetic camera graph (no simulator)"
    )
    parser.add_argument(
        "--multiprocess", action="store_true", help="synthetic graph across OS processes (ZeroMQ)"
    )
    parser.add_argument(
        "--graph", default=None, help="another graph with a 'camera' and a 'stats' node"
    )
    parser.add_argument("--duration-s", type=float, default=5.0, help="how long to stream")
    from runtime.live import add_rerun_argument

    add_rerun_argument(parser)


def run(args: Any) -> int:
    graph = args.graph or (SYNTHETIC_MULTIPROCESS_GRAPH if args.multiprocess else SYNTHETIC_GRAPH)
    return run_synthetic(graph, duration_s=args.duration_s, rerun=getattr(args, "rerun", None))


def run_synthetic(
    graph: str | Path = SYNTHETIC_GRAPH,
    *,
    duration_s: float = 5.0,
    camera: str = "camera",
    stats: str = "stats",
    rerun: str | None = None,
) -> int:
    """Stream ``duration_s`` worth of frames from ``camera`` to ``stats`` and print a report.

    ``rerun``: a ``--rerun`` value (``"FILE.rrd"``, ``""`` = a viewer) adds a Rerun node
    logging the camera's frames. Returns 0 when frames arrived, 1 when none did, 2 for
    an unusable graph.
    """
    import yaml
    from tqdm import tqdm

    from runtime.demo_nodes import SyntheticCameraConfig
    from runtime.launcher import GraphError, Launch

    try:
        data = yaml.safe_load(Path(graph).read_text(encoding="utf-8"))
        cam_spec = next(n for n in data["nodes"] if n.get("name") == camera)
        params = cam_spec.setdefault("params", {})
        rate_hz = float(params.get("rate_hz", SyntheticCameraConfig.rate_hz))
        params["max_frames"] = expected = max(1, round(rate_hz * duration_s))
        if rerun is not None:
            data["nodes"].append(_rerun_spec(rerun, cam_spec))
        launch = Launch(data, source=str(graph), status=None)
        launch.start()
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration, GraphError) as exc:
        print(f"engram demo: cannot run {graph}: {exc!r}", file=sys.stderr)
        return 2
    beats = _Heartbeats(launch)
    t0 = time.monotonic()
    try:
        with tqdm(
            total=expected, desc="engram demo", unit="frame", file=sys.stderr, leave=False
        ) as bar:
            deadline = t0 + duration_s + 5.0  # slack for start-up and the last frames
            received = 0
            while time.monotonic() < deadline:
                hb = beats.latest(stats)
                now_received = hb.counters.get("frames", 0) if hb else 0
                bar.update(now_received - received)
                received = now_received
                if received >= expected:
                    break
                if _camera_done(launch, camera) and time.monotonic() > t0 + duration_s + 1.0:
                    break  # the camera finished; what has not arrived by now is lost
                time.sleep(0.1)
        elapsed = time.monotonic() - t0
        settle = time.monotonic() + 2.0  # let the camera finish and report
        while not _camera_done(launch, camera) and time.monotonic() < settle:
            time.sleep(0.05)
        stats_hb = beats.latest(stats)
        cam_hb = beats.latest(camera)
    finally:
        beats.close()
        launch.stop()
    sent = _frames_sent(launch, camera, cam_hb, expected)
    counters = stats_hb.counters if stats_hb else {}
    received = counters.get("frames", 0)
    dropped, gaps = counters.get("dropped", 0), counters.get("seq_gaps", 0)
    latency = stats_hb.latency_ms if stats_hb else {}
    where = "threads of one process" if not launch.groups else "several processes (ZeroMQ)"
    print(f"engram demo (synthetic): {graph}, {where}, bus {launch.url}")
    print(f"  frames sent      {sent} at {rate_hz:g} Hz, done in {elapsed:.1f} s")
    print(f"  frames received  {received}")
    print(f"  lost             {max(sent - received, 0)} (queue drops {dropped}, seq gaps {gaps})")
    if latency:
        print(
            f"  latency          p50 {latency.get('p50', 0):.2f} ms, "
            f"p95 {latency.get('p95', 0):.2f} ms, max {latency.get('max', 0):.2f} ms"
        )
    return 0 if received > 0 else 1


class _Heartbeats:
    """The latest heartbeat per node: asked directly of in-process nodes, else from the bus."""

    def __init__(self, launch: Any) -> None:
        from runtime.node import HEARTBEAT_TOPIC

        self._launch = launch
        self._last: dict[str, Any] = {}
        self._sub = launch.bus.subscribe(HEARTBEAT_TOPIC, "queue(64)")
        self._thread = threading.Thread(target=self._run, daemon=True, name="demo:heartbeats")
        self._thread.start()

    def _run(self) -> None:
        from runtime.bus import BusClosed

        while True:
            try:
                hb = self._sub.get(0.1)
            except BusClosed:
                return
            if hb is not None:
                self._last[hb.node] = hb

    def latest(self, name: str) -> Any:
        node = self._launch.nodes.get(name)
        if node is not None:
            return node.heartbeat()
        return self._last.get(name)

    def close(self) -> None:
        self._sub.close()
        self._thread.join(1.0)


def _rerun_spec(flag: str, cam_spec: dict[str, Any]) -> dict[str, Any]:
    """A launch-graph node logging the camera's frames to Rerun (``--rerun``)."""
    from runtime.live import rerun_config

    cfg = rerun_config(flag, name="engram-demo", ports=["frames"])
    frames = (cam_spec.get("topics") or {}).get("frames", "/frames")
    params = {"save_path": cfg.save_path, "spawn": cfg.spawn, "ports": ["frames"]}
    return {"name": "rerun", "type": "rerun", "params": params, "topics": {"frames": frames}}


def _camera_done(launch: Any, camera: str) -> bool:
    node = launch.nodes.get(camera)
    if node is not None:
        return node.state == "stopped"
    info = launch.status().get(camera, {})
    return info.get("state") in ("exited", "failed", "stopped")


def _frames_sent(launch: Any, camera: str, cam_hb: Any, expected: int) -> int:
    node = launch.nodes.get(camera)
    if node is not None:
        return int(node.frames_sent)
    info = launch.status().get(camera, {})
    if info.get("state") == "exited" and info.get("last_exit") == "exited with code 0":
        return expected  # it sent all its frames and stopped by itself
    return int(cam_hb.counters.get("frames", 0)) if cam_hb else 0
