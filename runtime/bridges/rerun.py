"""Rerun visualisation: frames, depth, percepts, the places graph and recalls.

``RerunLogger`` writes Engram messages to a Rerun recording: a viewer
(``spawn=True``), a ``.rrd`` file (``save_path``, the headless mode; open it later
with ``rerun file.rrd``), a running viewer (``connect_url``), or memory when none
is given. ``RerunNode`` subscribes to the usual topics and logs what arrives; launch
graphs name it ``rerun``. rerun-sdk is imported only when a logger is made.

Entity paths (world frame: metres, z up; cameras in the OpenCV convention, RDF):

=============================================== ======================================
``world/camera/<name>``                         Transform3D (world_from_camera), Pinhole (K)
``world/camera/<name>/image``                   EncodedImage (JPEG of the RGB frame)
``world/camera/<name>/depth``                   DepthImage (metres)
``world/camera/<name>/image/objects``           Boxes2D of the percept's objects
``world/percepts/points``                       Points3D, coloured by object id
``world/objects``                               Points3D centroids + Boxes3D extents, labels
``world/places`` / ``world/places/edges``       Points3D / LineStrips3D of the places graph
``world/robot/<name>``                          Transform3D (world_from_base)
``world/recall``                                Points3D of recalled hits that have positions
``recall``, ``transcript``                      TextLog
=============================================== ======================================

Timelines: ``step`` (a sequence: the message's ``seq``) on every message, and its
``stamp_ns`` either on ``capture`` (a wall-clock timestamp) or, for simulation stamps (which
start at 0: anything before 2001), on ``sim_time`` as a duration, so that they are not shown
as 1970 dates. A default blueprint lays out the 3-D world, the camera image, a top-down map
(places and recalls) and the text timeline of recalls and transcripts.

The ``--rerun [FILE.rrd]`` option of ``engram live``, ``demo`` and ``replay``:
``add_rerun_argument(parser)`` adds it, ``rerun_config(flag, name=...)`` turns its value
into a ``RerunConfig`` and ``start_rerun_node(flag, bus)`` starts a ``RerunNode`` with it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram.runtime.messages import (
    Frame,
    Heartbeat,
    Message,
    Percept,
    Recall,
    RobotState,
    Transcript,
)
from engram.runtime.node import Input, Node, NodeConfig

__all__ = [
    "RerunConfig",
    "RerunLogger",
    "RerunNode",
    "add_rerun_argument",
    "default_blueprint",
    "log_memory_snapshot",
    "rerun_config",
    "start_rerun_node",
]

log = logging.getLogger(__name__)

TIMELINE = "capture"  # wall-clock stamps
SIM_TIMELINE = "sim_time"  # simulation stamps (durations since the start)
STEP_TIMELINE = "step"  # message sequence numbers
_WALL_CLOCK_NS = 10**18  # stamps before 2001-09-09 are simulation time, not dates
JPEG_QUALITY = 85  # frames are logged as JPEG (EncodedImage): ~15x smaller than raw


def _palette(ids: np.ndarray) -> np.ndarray:
    """(N,) int ids -> (N, 3) uint8 colours, stable per id; -1 is grey."""
    ids = np.asarray(ids, dtype=np.int64)
    golden = (ids * 0.618033988749895) % 1.0
    hue = (golden * 6.0)[:, None]
    rgb = np.clip(np.abs(((hue + np.array([0.0, 4.0, 2.0])) % 6.0) - 3.0) - 1.0, 0.0, 1.0)
    colours = (60 + 195 * rgb).astype(np.uint8)
    colours[ids < 0] = 128
    return colours


def _encoded_image(rr: Any, rgb: np.ndarray) -> Any:
    """An RGB frame as a JPEG ``EncodedImage`` (raw ``Image`` if encoding fails)."""
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        return rr.Image(rgb)
    return rr.EncodedImage(contents=buf.tobytes(), media_type="image/jpeg")


def default_blueprint() -> Any:
    """The layout a recording opens with: 3-D world | camera over map | memory timeline."""
    import rerun.blueprint as rrb

    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Spatial3DView(name="world", origin="world"),
            rrb.Vertical(
                rrb.Spatial2DView(name="camera", origin="world/camera"),
                rrb.Spatial3DView(
                    name="map (places, recalls)",
                    origin="world",
                    contents=["world/places/**", "world/recall/**", "world/robot/**"],
                ),
                rrb.TextLogView(
                    name="memory timeline", origin="/", contents=["recall", "transcript"]
                ),
            ),
            column_shares=[3, 2],
        ),
        collapse_panels=True,
    )


class RerunLogger:
    """Logs Engram messages to a Rerun recording (see the module docstring).

    spawn: start a viewer and stream to it. save_path: write a ``.rrd`` file.
    connect_url: stream to a viewer already running (``rerun+http://host:9876/proxy``).
    With none of them the data stays in memory (``memory_recording()``).
    """

    def __init__(
        self,
        spawn: bool = False,
        save_path: str | Path | None = None,
        *,
        connect_url: str | None = None,
        application_id: str = "engram",
        max_points: int = 50_000,
    ) -> None:
        import rerun as rr

        self._rr = rr
        self.max_points = max_points
        self.rec = rr.RecordingStream(application_id)
        self.save_path = Path(save_path) if save_path else None
        self._memory = None
        sinks: list[Any] = []
        if self.save_path is not None:
            self.save_path.parent.mkdir(parents=True, exist_ok=True)
            sinks.append(rr.FileSink(str(self.save_path)))
        if spawn:
            self.rec.spawn(connect=False)
        if spawn or connect_url:
            sinks.append(rr.GrpcSink(connect_url) if connect_url else rr.GrpcSink())
        if len(sinks) == 1 and self.save_path is not None:
            self.rec.save(str(self.save_path))
        elif sinks:
            self.rec.set_sinks(*sinks)
        else:
            self._memory = self.rec.memory_recording()
        self._lock = threading.Lock()
        self._cameras: set[str] = set()
        self.counts: dict[str, int] = {}
        self.rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        self.rec.send_blueprint(default_blueprint())

    # ---- helpers ----------------------------------------------------------------------
    def _time(self, stamp_ns: int, seq: int = 0) -> None:
        if stamp_ns < _WALL_CLOCK_NS:
            self.rec.set_time(SIM_TIMELINE, duration=np.timedelta64(int(stamp_ns), "ns"))
        else:
            self.rec.set_time(TIMELINE, timestamp=np.datetime64(int(stamp_ns), "ns"))
        if seq:
            self.rec.set_time(STEP_TIMELINE, sequence=int(seq))

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _transform(self, path: str, pose: np.ndarray) -> None:
        rr = self._rr
        self.rec.log(path, rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))

    # ---- per message type -------------------------------------------------------------
    def log_frame(self, frame: Frame, *, log_depth: bool = True) -> None:
        """Camera pose, pinhole, RGB image and (optionally) depth."""
        rr = self._rr
        base = f"world/camera/{frame.camera}"
        h, w = frame.rgb.shape[:2]
        with self._lock:
            self._time(frame.stamp_ns, frame.seq)
            self._transform(base, frame.world_from_camera)
            self.rec.log(
                base,
                rr.Pinhole(
                    image_from_camera=frame.intrinsics,
                    resolution=[w, h],
                    camera_xyz=rr.ViewCoordinates.RDF,
                ),
            )
            self.rec.log(f"{base}/image", _encoded_image(rr, frame.rgb))
            if log_depth and frame.depth is not None:
                depth = np.nan_to_num(frame.depth, nan=0.0)
                self.rec.log(f"{base}/depth", rr.DepthImage(depth, meter=1.0))
            self._count("frames")

    def log_percept(self, percept: Percept, *, log_points: bool = True) -> None:
        """Object boxes on the image, object centroids/extents, and the frame's points."""
        rr = self._rr
        with self._lock:
            self._time(percept.stamp_ns, percept.seq)
            labels = [
                f"{label} ({oid})" for label, oid in zip(percept.object_labels, percept.object_ids)
            ]
            colours = _palette(percept.object_ids)
            if percept.num_objects:
                self.rec.log(
                    f"world/camera/{percept.camera}/image/objects",
                    rr.Boxes2D(
                        array=percept.object_boxes,
                        array_format=rr.Box2DFormat.XYXY,
                        labels=labels,
                        colors=colours,
                    ),
                )
                self.rec.log(
                    "world/objects",
                    rr.Points3D(
                        percept.object_centroids, labels=labels, colors=colours, radii=0.03
                    ),
                    rr.Boxes3D(
                        centers=percept.object_centroids,
                        sizes=percept.object_extents,
                        colors=colours,
                    ),
                )
            if log_points and percept.points is not None and len(percept.points):
                points = percept.points
                ids = percept.point_object_ids
                if len(points) > self.max_points:
                    keep = np.linspace(0, len(points) - 1, self.max_points).astype(np.intp)
                    points = points[keep]
                    ids = ids[keep] if ids is not None else None
                colours = _palette(ids) if ids is not None else None
                self.rec.log(
                    "world/percepts/points", rr.Points3D(points, colors=colours, radii=0.01)
                )
            self._count("percepts")

    def log_places(
        self,
        positions: np.ndarray,
        edges: np.ndarray,
        *,
        stamp_ns: int,
        labels: list[str] | None = None,
    ) -> None:
        """The places graph: positions (P, 3) metres, edges (E, 2) indices into positions."""
        rr = self._rr
        positions = np.asarray(positions, dtype=np.float32).reshape(-1, 3)
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        if len(edges) and (edges.min() < 0 or edges.max() >= len(positions)):
            raise ValueError(
                f"log_places: edges index {int(edges.min())}..{int(edges.max())}, "
                f"but there are {len(positions)} positions"
            )
        with self._lock:
            self._time(stamp_ns)
            self.rec.log(
                "world/places",
                rr.Points3D(
                    positions,
                    labels=labels or [f"place {i}" for i in range(len(positions))],
                    radii=0.08,
                    colors=[80, 160, 255],
                ),
            )
            segments = positions[edges] if len(edges) else np.zeros((0, 2, 3), np.float32)
            self.rec.log("world/places/edges", rr.LineStrips3D(segments, colors=[80, 160, 255]))
            self._count("places")

    def log_recall(self, recall: Recall) -> None:
        """A text summary of the hits, and the positions of hits that have one."""
        rr = self._rr
        with self._lock:
            self._time(recall.stamp_ns, recall.seq)
            lines = [f"Q: {recall.query_text}"]
            if recall.error:
                lines.append(f"error: {recall.error}")
            lines += [
                f"{i + 1}. [{h.get('memory', '?')}] {h.get('text', '')} "
                f"(score {float(h.get('score', 0.0)):.3f})"
                for i, h in enumerate(recall.hits)
            ]
            level = rr.TextLogLevel.ERROR if recall.error else rr.TextLogLevel.INFO
            self.rec.log("recall", rr.TextLog("\n".join(lines), level=level))
            placed = [h for h in recall.hits if h.get("position") is not None]
            positions = np.array([h["position"] for h in placed], dtype=np.float32).reshape(-1, 3)
            self.rec.log(
                "world/recall",
                rr.Points3D(
                    positions,
                    labels=[str(h.get("text", "")) for h in placed],
                    radii=0.06,
                    colors=[255, 200, 0],
                ),
            )
            self._count("recalls")

    def log_transcript(self, transcript: Transcript) -> None:
        rr = self._rr
        with self._lock:
            self._time(transcript.stamp_ns, transcript.seq)
            who = f"{transcript.speaker}: " if transcript.speaker else ""
            self.rec.log("transcript", rr.TextLog(f"{who}{transcript.text}"))
            self._count("transcripts")

    def log_robot_state(self, state: RobotState) -> None:
        with self._lock:
            self._time(state.stamp_ns, state.seq)
            self._transform(f"world/robot/{state.robot}", state.world_from_base)
            self._count("robot_states")

    def log(self, msg: Message) -> bool:
        """Log any supported message (False for types with nothing to show)."""
        if isinstance(msg, Frame):
            self.log_frame(msg)
        elif isinstance(msg, Percept):
            self.log_percept(msg)
        elif isinstance(msg, Recall):
            self.log_recall(msg)
        elif isinstance(msg, Transcript):
            self.log_transcript(msg)
        elif isinstance(msg, RobotState):
            self.log_robot_state(msg)
        elif isinstance(msg, Heartbeat) and isinstance(msg.info.get("places"), dict):
            places = msg.info["places"]
            self.log_places(
                np.asarray(places.get("positions", []), dtype=np.float32),
                np.asarray(places.get("edges", []), dtype=np.int64),
                stamp_ns=msg.stamp_ns,
            )
        else:
            return False
        return True

    def memory_recording(self) -> Any:
        """The in-memory recording (only when no sink was given)."""
        return self._memory

    def flush(self) -> None:
        self.rec.flush()

    def close(self) -> None:
        """Flush and end the recording (the ``.rrd`` file is complete after this)."""
        with self._lock:
            self.rec.flush()
            self.rec.disconnect()

    def __enter__(self) -> RerunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ALL_PORTS = ("frames", "percepts", "recall", "transcripts", "robot_state", "heartbeat")


@dataclass
class RerunConfig(NodeConfig):
    """Where a ``RerunNode`` sends its recording and what it subscribes to."""

    spawn: bool = False  # start a Rerun viewer
    save_path: str = ""  # write a .rrd file (headless); "" = none
    connect_url: str = ""  # stream to a running viewer; "" = none
    application_id: str = "engram"  # Rerun application id
    log_depth: bool = True  # log depth images of frames
    log_points: bool = True  # log the percepts' 3-D points
    max_points: int = 50_000  # points per percept logged (evenly subsampled beyond)
    #: input ports to subscribe (a subset of frames, percepts, recall, transcripts,
    #: robot_state, heartbeat); heartbeats carrying info["places"] = {"positions":
    #: [[x, y, z], ...], "edges": [[i, j], ...]} are drawn as the places graph
    ports: list[str] = field(default_factory=lambda: ["frames", "percepts", "recall"])
    #: subscribe with all(256) instead of the ports' latest/queue policies: nothing is
    #: dropped (replaying a file as fast as possible); the publisher waits instead
    lossless: bool = False


class RerunNode(Node[RerunConfig]):
    """Logs what arrives on its inputs to Rerun (see ``RerunConfig``)."""

    Config = RerunConfig
    INPUTS = {
        "frames": Input("Frame", policy="latest"),
        "percepts": Input("Percept", policy="queue(8)"),
        "recall": Input("Recall", policy="queue(8)"),
        "transcripts": Input("Transcript", policy="queue(8)"),
        "robot_state": Input("RobotState", policy="latest"),
        "heartbeat": Input("Heartbeat", policy="queue(16)", topic="/heartbeat"),
    }

    def __init__(self, config: RerunConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        unknown = sorted(set(self.config.ports) - set(_ALL_PORTS))
        if unknown:
            raise ValueError(
                f"RerunConfig.ports: unknown port(s) {unknown}; choose from {list(_ALL_PORTS)}"
            )
        self.logger: RerunLogger | None = None

    def inputs(self) -> dict[str, Input]:
        ports = {p: self.INPUTS[p] for p in self.config.ports if p in self.INPUTS}
        if self.config.lossless:
            ports = {p: dataclasses.replace(i, policy="all(256)") for p, i in ports.items()}
        return ports

    def on_configure(self) -> None:
        cfg = self.config
        self.logger = RerunLogger(
            spawn=cfg.spawn,
            save_path=cfg.save_path or None,
            connect_url=cfg.connect_url or None,
            application_id=cfg.application_id,
            max_points=cfg.max_points,
        )

    def on_stop(self) -> None:
        if self.logger is not None:
            self.logger.close()

    def health(self) -> dict[str, Any]:
        return {"counters": dict(self.logger.counts) if self.logger else {}}

    def on_frames(self, frame: Frame) -> None:
        assert self.logger is not None
        self.logger.log_frame(frame, log_depth=self.config.log_depth)

    def on_percepts(self, percept: Percept) -> None:
        assert self.logger is not None
        self.logger.log_percept(percept, log_points=self.config.log_points)

    def on_recall(self, recall: Recall) -> None:
        assert self.logger is not None
        self.logger.log_recall(recall)

    def on_transcripts(self, transcript: Transcript) -> None:
        assert self.logger is not None
        self.logger.log_transcript(transcript)

    def on_robot_state(self, state: RobotState) -> None:
        assert self.logger is not None
        self.logger.log_robot_state(state)

    def on_heartbeat(self, beat: Heartbeat) -> None:
        assert self.logger is not None
        self.logger.log(beat)


def log_memory_snapshot(
    logger: RerunLogger,
    bus: Any,
    *,
    question: str = "",
    near: Sequence[float] = (0.0, 0.0, 0.0),
    stamp_ns: int = 0,
    topic: str = "/memory/query",
    timeout_s: float = 10.0,
) -> dict[str, int]:
    """Ask the memory node (``topic``) for its places graph around ``near`` and, when
    ``question`` is given, recall it; draw both (an episode's end, e.g. ``engram demo``,
    whose recalls travel request/reply where a Rerun node cannot see them).
    -> {"places": n, "recall_hits": n}; a memory that does not answer draws nothing."""
    from engram.runtime.messages import MemoryQuery

    out = {"places": 0, "recall_hits": 0}
    spatial = MemoryQuery(
        stamp_ns=stamp_ns or time.time_ns(),
        memories=["spatial"],
        near=np.asarray(near, np.float32),
        radius_m=1000.0,
        top_k=500,
    )
    try:
        recall = bus.request(topic, spatial, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - a snapshot is a convenience
        log.warning("rerun: no places from the memory: %s", exc)
        return out
    places = [
        h for h in getattr(recall, "hits", []) if (h.get("data") or {}).get("kind") == "place"
    ]
    places = [h for h in places if h.get("position") is not None]
    if places:
        index = {int(h["data"].get("place_id", i)): i for i, h in enumerate(places)}
        edges = sorted(
            {
                (
                    min(index[int(h["data"].get("place_id", i))], index[n]),
                    max(index[int(h["data"].get("place_id", i))], index[n]),
                )
                for i, h in enumerate(places)
                for n in (int(v) for v in h["data"].get("neighbours", []))
                if n in index
            }
        )
        logger.log_places(
            np.array([h["position"] for h in places], np.float32),
            np.array(edges, np.int64).reshape(-1, 2),
            stamp_ns=spatial.stamp_ns,
        )
        out["places"] = len(places)
    if question:
        query = MemoryQuery(stamp_ns=spatial.stamp_ns, text=question, top_k=5)
        try:
            answer = bus.request(topic, query, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001
            log.warning("rerun: no recall from the memory: %s", exc)
            return out
        if isinstance(answer, Recall):
            logger.log_recall(answer)
            out["recall_hits"] = len(answer.hits)
    return out


# ---------------------------------------------------------------------------
# --rerun [FILE.rrd] (engram live, demo and replay)


def add_rerun_argument(parser: Any) -> None:
    """``--rerun [FILE.rrd]`` (shared by engram live, demo and replay)."""
    parser.add_argument(
        "--rerun",
        nargs="?",
        const="",
        default=None,
        metavar="FILE.rrd",
        help="log frames, percepts, the places graph and recalls to Rerun: a viewer, or "
        "FILE.rrd (headless: a .rrd file in the working directory)",
    )


def rerun_config(
    flag: str | None, *, name: str = "engram", ports: Sequence[str] | None = None
) -> Any:
    """A ``RerunConfig`` for a ``--rerun [FILE.rrd]`` value (None when the flag is absent).

    ``FILE.rrd`` writes that file; a bare ``--rerun`` spawns a viewer, or, with no
    display (headless), writes ``<name>-<time>.rrd`` in the working directory.
    """
    if flag is None:
        return None
    kwargs: dict[str, Any] = {"heartbeat_hz": 1.0}
    if ports is not None:
        kwargs["ports"] = list(ports)
    if flag:
        return RerunConfig(save_path=str(flag), **kwargs)
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if headless:
        path = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.rrd"
        print(
            f"{name}: no display for a Rerun viewer; writing {path} (open it with: rerun {path})",
            file=sys.stderr,
        )
        return RerunConfig(save_path=path, **kwargs)
    return RerunConfig(spawn=True, **kwargs)


def start_rerun_node(
    flag: str | None,
    bus: Any,
    *,
    name: str = "engram",
    ports: Sequence[str] | None = _ALL_PORTS,
    lossless: bool = False,
) -> Node | None:
    """A started ``RerunNode`` on ``bus`` for a ``--rerun`` value (None when absent),
    subscribed to ``ports`` (by default all: /frames, /percepts, /recall, /transcripts,
    /robot_state, /heartbeat; None = ``RerunConfig``'s default). ``lossless``: no message
    dropped (replay). Stop it to complete the recording."""
    cfg = rerun_config(flag, name=name, ports=ports)
    if cfg is None:
        return None
    cfg.lossless = lossless
    node = RerunNode(cfg, bus=bus, name="rerun")
    node.start()
    return node
