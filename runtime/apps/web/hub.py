"""``LiveHub``: the web page's view of the bus (node type ``web`` in spirit: a plain node).

It subscribes to what the page shows and keeps a bounded picture of it; the web
app (``runtime/apps/web/app.py``) only reads that picture and asks questions through it.

Inputs (default topics)::

    frames        Frame       latest     the live video (JPEG-encoded on request)
    percepts      Percept     queue(16)  detections (boxes + labels), keyframes -> timeline,
                                          points / objects / camera trail -> the map
    transcripts   Transcript  queue(32)  the running transcript, timeline
    sound_events  SoundEvent  queue(32)  timeline
    heartbeat     Heartbeat   queue(64)  health of every node (/heartbeat)

Output ``recall`` (Recall): every answer the page got is published, so a Rerun
node or a recorder sees the questions too.

Questions go to the memory over the bus: ``ask(text)`` sends a ``MemoryQuery`` to
``/memory/query`` (``bus.request``) and returns the hits as JSON with a thumbnail
(the keyframe closest in time to the hit), its time and position. The map asks the
spatial memory the same way (``memories=["spatial"]``, ``near`` the camera) for
its objects and its places graph (a place hit's ``data["neighbours"]`` are its
edges), and draws the occupied cells from the percepts' points (a top-down grid).

Everything held is bounded (``*_size`` fields of ``LiveHubConfig``).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from engram.runtime.bus import BusClosed
from engram.runtime.messages import (
    AudioChunk,
    Frame,
    Heartbeat,
    MemoryQuery,
    Percept,
    Recall,
    SoundEvent,
    Transcript,
)
from engram.runtime.node import Input, Node, NodeConfig, Output

__all__ = ["LiveHub", "LiveHubConfig"]

log = logging.getLogger(__name__)

_DROP_COUNTERS = ("dropped", "frames_dropped", "memory_dropped", "chunks_dropped", "speech_dropped")
_ERROR_COUNTERS = (
    "handler_errors",
    "frame_errors",
    "audio_errors",
    "memory_errors",
    "query_errors",
    "read_errors",
    "decode_errors",
)


@dataclass
class LiveHubConfig(NodeConfig):
    """Settings of ``LiveHub`` (sizes bound everything it keeps)."""

    memory_topic: str = "/memory/query"  # request/reply topic of the memory node
    query_timeout_s: float = 10.0  # a question waits this long for the memory's answer
    top_k: int = 6  # hits asked for per question
    transcript_size: int = 200  # transcript entries kept
    timeline_size: int = 300  # timeline events kept (keyframes, speech, sounds)
    thumbnails_size: int = 300  # keyframe thumbnails kept (for the timeline and recalls)
    thumb_match_s: float = 30.0  # a recall gets the keyframe thumbnail nearest in time, within this
    jpeg_quality: int = 80  # JPEG quality of the live frame and thumbnails, 1..100
    map_cell_m: float = 0.05  # top-down grid cell of the occupied-cells layer, metres
    map_cells_size: int = 20_000  # occupied cells kept (least recently seen dropped)
    map_points_per_percept: int = 5_000  # points of one percept used for the map (subsampled)
    trail_size: int = 500  # camera positions kept for the trail
    map_radius_m: float = 100.0  # the spatial-memory query covers this radius around the camera
    map_top_k: int = 200  # objects + places asked of the spatial memory
    map_refresh_s: float = 1.0  # ask the spatial memory at most this often
    map_timeout_s: float = 2.0  # the spatial-memory query for the map waits this long
    places_in_heartbeat: bool = True  # heartbeat info["places"] = the places graph (for Rerun)
    latency_window: int = 256  # samples kept per latency figure
    #: shown as a badge on the page when not empty, e.g. "random weights: labels and
    #: transcripts are meaningless" (set by engram live --random-weights)
    model_warning: str = ""
    #: the page's microphone (``engram live --mic browser``): audio the page streams on
    #: /ws/audio is published on this topic as AudioChunk; "" = the page may not send audio
    browser_mic_topic: str = ""


class _Rate:
    """Events per second over the last ``window`` arrivals."""

    def __init__(self, window: int = 30) -> None:
        self._t: collections.deque[float] = collections.deque(maxlen=window)

    def tick(self) -> None:
        self._t.append(time.monotonic())

    def hz(self) -> float:
        if len(self._t) < 2 or time.monotonic() - self._t[-1] > 3.0:
            return 0.0
        span = self._t[-1] - self._t[0]
        return (len(self._t) - 1) / span if span > 0 else 0.0


def _percentiles(samples: collections.deque[float]) -> dict[str, float]:
    if not samples:
        return {}
    p50, p95 = np.percentile(np.asarray(samples), [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1)}


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Heartbeat info / hit data -> plain JSON (numbers, strings, lists, dicts)."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if depth > 4:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value[:200]]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return _jsonable(value.tolist(), depth + 1)
    return str(value)


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes (OpenCV)."""
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
        [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)],
    )  # fmt: skip
    if not ok:
        raise ValueError(f"cannot JPEG-encode an image of shape {rgb.shape}")
    return buf.tobytes()


class LiveHub(Node[LiveHubConfig]):
    """What the live page shows, kept bounded; questions to the memory. See module doc."""

    INPUTS = {
        "frames": Input("Frame", policy="latest"),
        "percepts": Input("Percept", policy="queue(16)"),
        "transcripts": Input("Transcript", policy="queue(32)"),
        "sound_events": Input("SoundEvent", policy="queue(32)"),
        "heartbeat": Input("Heartbeat", policy="queue(64)", topic="/heartbeat"),
    }
    OUTPUTS = {"recall": Output("Recall")}
    Config = LiveHubConfig

    def __init__(self, config: LiveHubConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        for name in ("transcript_size", "timeline_size", "thumbnails_size", "map_cells_size"):
            if int(getattr(cfg, name)) < 1:
                raise ValueError(f"LiveHubConfig.{name} must be >= 1, got {getattr(cfg, name)}")
        if not cfg.map_cell_m > 0:
            raise ValueError(f"LiveHubConfig.map_cell_m must be > 0, got {cfg.map_cell_m}")
        self._state_lock = threading.Lock()
        self._changed = threading.Condition(self._state_lock)
        self.version = 0  # bumped on every change the page may want
        self._frame: Frame | None = None
        self._frame_jpeg: tuple[int, bytes] | None = None
        self._detections: dict[str, Any] | None = None
        self._next_id = 1
        self._transcript: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=cfg.transcript_size
        )
        self._timeline: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=cfg.timeline_size
        )
        self._thumbs: collections.OrderedDict[int, tuple[int, np.ndarray]] = (
            collections.OrderedDict()
        )  # thumb id -> (stamp_ns, (h, w, 3) uint8)
        self._thumb_jpegs: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._health: dict[str, tuple[float, Heartbeat]] = {}
        self._frame_rate = _Rate()
        self._percept_rate = _Rate()
        self._percept_lag_ms: collections.deque[float] = collections.deque(
            maxlen=cfg.latency_window
        )
        self._transcript_lag_ms: collections.deque[float] = collections.deque(
            maxlen=cfg.latency_window
        )
        self._ask_ms: collections.deque[float] = collections.deque(maxlen=cfg.latency_window)
        self._cells: collections.OrderedDict[tuple[int, int], float] = collections.OrderedDict()
        self._trail: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=cfg.trail_size
        )
        self._seen_objects: dict[int, dict[str, Any]] = {}
        self._camera_position: np.ndarray | None = None
        self.map_version = 0
        self._spatial: dict[str, Any] = {"objects": [], "places": [], "edges": [], "error": ""}
        self._spatial_at = -math.inf
        self._spatial_lock = threading.Lock()
        self._last_recall: dict[str, Any] | None = None
        self.started_ns = time.time_ns()
        for name in ("frames", "percepts", "keyframes", "transcripts", "sound_events", "questions"):
            self.counters[name] = 0
        self.counters["browser_audio_chunks"] = 0

    # ---- bookkeeping ------------------------------------------------------------------
    def _bump(self) -> None:
        """Call with the state lock held."""
        self.version += 1
        self._changed.notify_all()

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def wait_for_change(self, version: int, timeout_s: float) -> int:
        """Block until ``self.version`` differs from ``version`` (or the timeout)."""
        with self._changed:
            if self.version == version:
                self._changed.wait(timeout_s)
            return self.version

    # ---- inputs -------------------------------------------------------------------------
    def on_frames(self, frame: Frame) -> None:
        with self._state_lock:
            self._frame = frame
            self._frame_rate.tick()
            self.counters["frames"] += 1
            self._bump()

    def on_percepts(self, percept: Percept) -> None:
        cfg = self.config
        now_ns = time.time_ns()
        labels = list(percept.object_labels)
        detections = {
            "frame_seq": int(percept.frame_seq),
            "stamp_ns": int(percept.stamp_ns),
            "camera": percept.camera,
            "objects": [
                {
                    "id": int(oid),
                    "label": label,
                    "confidence": round(float(conf), 3),
                    "box": [int(v) for v in box],
                }
                for oid, label, conf, box in zip(
                    percept.object_ids, labels, percept.object_confidences, percept.object_boxes
                )
            ],
        }
        position = percept.world_from_camera[:3, 3].astype(float)
        cells = None
        if percept.points is not None and len(percept.points):
            pts = percept.points
            if len(pts) > cfg.map_points_per_percept:
                pts = pts[:: math.ceil(len(pts) / cfg.map_points_per_percept)]
            cells = np.unique(np.floor(pts[:, :2] / cfg.map_cell_m).astype(np.int64), axis=0)
        with self._state_lock:
            self.counters["percepts"] += 1
            self._percept_rate.tick()
            self._percept_lag_ms.append(max(0.0, (now_ns - percept.stamp_ns) / 1e6))
            self._detections = detections
            self._camera_position = position
            if not self._trail or np.hypot(*(np.subtract(self._trail[-1], position[:2]))) > 0.02:
                self._trail.append((float(position[0]), float(position[1])))
            for oid, label, centroid in zip(percept.object_ids, labels, percept.object_centroids):
                self._seen_objects[int(oid)] = {
                    "id": int(oid),
                    "label": label,
                    "position": [round(float(v), 3) for v in centroid],
                }
            if len(self._seen_objects) > cfg.map_top_k:
                for key in list(self._seen_objects)[: len(self._seen_objects) - cfg.map_top_k]:
                    del self._seen_objects[key]
            if cells is not None:
                stamp = percept.stamp_ns / 1e9
                for ix, iy in cells.tolist():
                    self._cells[(ix, iy)] = stamp
                    self._cells.move_to_end((ix, iy))
                while len(self._cells) > cfg.map_cells_size:
                    self._cells.popitem(last=False)
                self.map_version += 1
            if percept.keyframe:
                self.counters["keyframes"] += 1
                event = {
                    "id": self._new_id(),
                    "kind": "keyframe",
                    "stamp_ns": int(percept.stamp_ns),
                    "t_ms": percept.stamp_ns // 1_000_000,
                    "frame_seq": int(percept.frame_seq),
                    "labels": sorted(set(labels)),
                    "position": [round(float(v), 3) for v in position],
                }
                if percept.thumbnail is not None:
                    thumb_id = event["id"]
                    self._thumbs[thumb_id] = (int(percept.stamp_ns), percept.thumbnail)
                    while len(self._thumbs) > cfg.thumbnails_size:
                        old, _ = self._thumbs.popitem(last=False)
                        self._thumb_jpegs.pop(old, None)
                    event["thumb"] = f"/api/thumbnails/{thumb_id}.jpg"
                self._timeline.append(event)
                self.map_version += 1
            self._bump()

    def on_transcripts(self, msg: Transcript) -> None:
        lag_ms = max(0.0, (time.time_ns() - msg.end_ns) / 1e6) if msg.end_ns else 0.0
        with self._state_lock:
            entry = {
                "id": self._new_id(),
                "kind": "transcript",
                "stamp_ns": int(msg.stamp_ns),
                "t_ms": msg.stamp_ns // 1_000_000,
                "duration_s": round(max(0, msg.end_ns - msg.start_ns) / 1e9, 2),
                "text": msg.text,
                "speaker": msg.speaker,
                "language": msg.language,
                "confidence": round(float(msg.confidence), 3),
            }
            self.counters["transcripts"] += 1
            self._transcript_lag_ms.append(lag_ms)
            self._transcript.append(entry)
            self._timeline.append(entry)
            self._bump()

    def on_sound_events(self, msg: SoundEvent) -> None:
        with self._state_lock:
            self.counters["sound_events"] += 1
            self._timeline.append(
                {
                    "id": self._new_id(),
                    "kind": "sound",
                    "stamp_ns": int(msg.stamp_ns),
                    "t_ms": msg.stamp_ns // 1_000_000,
                    "label": msg.label or "sound",
                    "duration_s": round(max(0, msg.end_ns - msg.start_ns) / 1e9, 2),
                    "energy_db": round(float(msg.energy_db), 1),
                    "peak_hz": round(float(msg.peak_hz), 1),
                }
            )
            self._bump()

    def on_heartbeat(self, beat: Heartbeat) -> None:
        with self._state_lock:
            self._health[beat.node] = (time.monotonic(), beat)
            self._bump()

    # ---- what the page reads ------------------------------------------------------------
    def frame_info(self) -> dict[str, Any] | None:
        with self._state_lock:
            f = self._frame
        if f is None:
            return None
        h, w = f.rgb.shape[:2]
        return {
            "seq": int(f.seq),
            "stamp_ns": int(f.stamp_ns),
            "t_ms": f.stamp_ns // 1_000_000,
            "camera": f.camera,
            "width": int(w),
            "height": int(h),
        }

    def frame_jpeg(self) -> tuple[int, bytes] | None:
        """(seq, JPEG bytes) of the latest frame; encoded once per frame."""
        with self._state_lock:
            f, cached = self._frame, self._frame_jpeg
        if f is None:
            return None
        if cached is not None and cached[0] == f.seq:
            return cached
        out = (int(f.seq), encode_jpeg(f.rgb, self.config.jpeg_quality))
        with self._state_lock:
            self._frame_jpeg = out
        return out

    def thumbnail_jpeg(self, thumb_id: int) -> bytes | None:
        with self._state_lock:
            cached = self._thumb_jpegs.get(thumb_id)
            item = self._thumbs.get(thumb_id)
        if cached is not None:
            return cached
        if item is None:
            return None
        data = encode_jpeg(item[1], self.config.jpeg_quality)
        with self._state_lock:
            self._thumb_jpegs[thumb_id] = data
            while len(self._thumb_jpegs) > self.config.thumbnails_size:
                self._thumb_jpegs.popitem(last=False)
        return data

    def detections(self) -> dict[str, Any] | None:
        with self._state_lock:
            return self._detections

    def transcript(self, *, after_id: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        with self._state_lock:
            items = [e for e in self._transcript if e["id"] > after_id]
        return items[-limit:]

    def timeline(self, *, after_id: int = 0, limit: int = 300) -> list[dict[str, Any]]:
        with self._state_lock:
            items = [e for e in self._timeline if e["id"] > after_id]
        return items[-limit:]

    def health(self) -> dict[str, Any]:
        """The Node heartbeat hook: the percept lag, and (``places_in_heartbeat``) the
        spatial memory's places graph as ``info["places"] = {"positions": [[x, y, z],
        ...], "edges": [[i, j], ...]}``, which a Rerun node draws."""
        out: dict[str, Any] = {
            "latency_ms": {f"percept_lag_{k}": v for k, v in self._lag_summary().items()}
        }
        if self.config.places_in_heartbeat:
            self._refresh_spatial()
            with self._spatial_lock:
                places, edges = self._spatial["places"], self._spatial["edges"]
            if places:
                out["info"] = {
                    "places": {"positions": [p["position"] for p in places], "edges": edges}
                }
        return out

    def _lag_summary(self) -> dict[str, float]:
        with self._state_lock:
            return _percentiles(self._percept_lag_ms)

    def nodes(self) -> list[dict[str, Any]]:
        """Each node's latest heartbeat, summarised for the health table."""
        now = time.monotonic()
        with self._state_lock:
            beats = list(self._health.values())
        rows = []
        for at, hb in sorted(beats, key=lambda item: item[1].node):
            c = hb.counters
            rows.append(
                {
                    "node": hb.node,
                    "state": hb.state,
                    "age_s": round(now - at, 1),
                    "uptime_s": round(hb.uptime_s, 1),
                    "received": int(c.get("received", 0)),
                    "published": int(c.get("published", 0)),
                    "dropped": int(sum(c.get(k, 0) for k in _DROP_COUNTERS)),
                    "errors": int(sum(c.get(k, 0) for k in _ERROR_COUNTERS)),
                    "latency_ms": {k: round(float(v), 1) for k, v in hb.latency_ms.items()},
                    "counters": {k: int(v) for k, v in c.items()},
                    "info": _jsonable(hb.info),
                }
            )
        return rows

    def stats(self) -> dict[str, Any]:
        """Headline figures: rates, drops, errors, latencies."""
        rows = self.nodes()
        camera_fps = next(
            (
                r["info"].get("fps")
                for r in rows
                if isinstance(r["info"], dict)
                and r["info"].get("kind") in ("file", "index", "url")
                and r["info"].get("fps") is not None
            ),
            None,
        )
        with self._state_lock:
            out = {
                "frames": self.counters["frames"],
                "percepts": self.counters["percepts"],
                "keyframes": self.counters["keyframes"],
                "transcripts": self.counters["transcripts"],
                "sound_events": self.counters["sound_events"],
                "questions": self.counters["questions"],
                "model_warning": self.config.model_warning,
                "browser_mic": bool(self.config.browser_mic_topic),
                "display_fps": round(self._frame_rate.hz(), 1),
                "percept_fps": round(self._percept_rate.hz(), 1),
                "percept_latency_ms": _percentiles(self._percept_lag_ms),
                "transcript_latency_ms": _percentiles(self._transcript_lag_ms),
                "ask_latency_ms": _percentiles(self._ask_ms),
                "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 1),
            }
        out["camera_fps"] = camera_fps if camera_fps is not None else out["display_fps"]
        out["dropped"] = sum(r["dropped"] for r in rows)
        out["errors"] = sum(r["errors"] for r in rows)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything at once (``/api/state``)."""
        return {
            "frame": self.frame_info(),
            "detections": self.detections(),
            "transcript": self.transcript(limit=50),
            "timeline": self.timeline(limit=100),
            "stats": self.stats(),
            "health": self.nodes(),
            "last_answer": self._last_recall,
            "map_version": self.map_version,
        }

    # ---- the page's microphone ---------------------------------------------------------------
    def push_audio(
        self, pcm: np.ndarray, sample_rate_hz: int, stamp_ns: int, *, end: bool = False
    ) -> None:
        """Publish a block of the page's microphone (mono float32 in [-1, 1]) on
        ``browser_mic_topic`` as an ``AudioChunk`` (source "browser"); ``end`` = the page
        stopped (perception closes the utterance being spoken)."""
        topic = self.config.browser_mic_topic
        if not topic:
            raise RuntimeError("the page's microphone is off (engram live --mic browser)")
        x = np.asarray(pcm, np.float32).reshape(-1, 1)
        if len(x) == 0:
            x = np.zeros((1, 1), np.float32)
        chunk = AudioChunk(
            stamp_ns=int(stamp_ns),
            source="browser",
            pcm=x,
            sample_rate_hz=int(sample_rate_hz),
            end_of_stream=end,
        )
        self.bus.publish(topic, chunk)
        with self._state_lock:
            self.counters["browser_audio_chunks"] += 1

    # ---- memory: questions and the map --------------------------------------------------
    def ask(self, question: str, *, top_k: int | None = None) -> dict[str, Any]:
        """A question in words -> ``MemoryQuery`` over the bus -> the recall as JSON:
        ``{"question", "hits": [{memory, score, text, stamp_ns, t_ms, position, thumb,
        kind, ...}], "error", "latency_ms"}``."""
        cfg = self.config
        question = (question or "").strip()
        if not question:
            return {"question": "", "hits": [], "error": "empty question", "latency_ms": 0.0}
        query = MemoryQuery(text=question[:1000], top_k=int(top_k or cfg.top_k), answer=True)
        t0 = time.monotonic()
        try:
            recall = self.bus.request(cfg.memory_topic, query, timeout_s=cfg.query_timeout_s)
        except TimeoutError:
            return {
                "question": question,
                "hits": [],
                "error": f"the memory did not answer on {cfg.memory_topic} within "
                f"{cfg.query_timeout_s:g} s (is the memory node running?)",
                "latency_ms": round((time.monotonic() - t0) * 1e3, 1),
            }
        except BusClosed:
            return {"question": question, "hits": [], "error": "the bus is closed"}
        except Exception as exc:  # noqa: BLE001 - shown on the page, the server keeps going
            return {"question": question, "hits": [], "error": f"{type(exc).__name__}: {exc}"}
        ms = (time.monotonic() - t0) * 1e3
        if not isinstance(recall, Recall):
            return {"question": question, "hits": [], "error": f"unexpected reply {recall.TYPE}"}
        try:
            self.publish("recall", recall)
        except BusClosed:
            pass
        hits = [self._hit_json(h) for h in recall.hits]
        answer = {
            "question": question,
            "hits": hits,
            "error": recall.error,
            "latency_ms": round(ms, 1),
            # the memory's answer (engram.memory.answer): shown first, its evidence below
            "answer": self._answer_json(recall.answer),
        }
        with self._state_lock:
            self.counters["questions"] += 1
            self._ask_ms.append(ms)
            self._last_recall = answer
            self.map_version += 1
            self._bump()
        return answer

    def _answer_json(self, ans: dict[str, Any]) -> dict[str, Any] | None:
        """``Recall.answer`` for the page: the text, abstained, confidence, kind, value,
        and the evidence as hits (with the keyframe thumbnail nearest in time)."""
        if not ans:
            return None
        evidence = [
            self._hit_json({**e, "score": ans.get("confidence", 0.0)})
            for e in ans.get("evidence", [])
            if isinstance(e, dict)
        ]
        return {
            "text": str(ans.get("answer", "")),
            "abstained": bool(ans.get("abstained", False)),
            "confidence": round(float(ans.get("confidence", 0.0)), 3),
            "kind": str(ans.get("kind", "")),
            "value": ans.get("value"),
            "evidence": evidence,
        }

    def _hit_json(self, hit: dict[str, Any]) -> dict[str, Any]:
        data = hit.get("data") if isinstance(hit.get("data"), dict) else {}
        stamp = int(hit.get("stamp_ns") or 0)
        out = {
            "memory": str(hit.get("memory", "")),
            "score": round(float(hit.get("score", 0.0)), 4),
            "text": str(hit.get("text", "")),
            "stamp_ns": stamp,
            "t_ms": stamp // 1_000_000,
            "kind": str(data.get("kind", "")),
            "record_id": str(hit.get("record_id", "")),
            "position": None,
            "thumb": None,
        }
        pos = hit.get("position")
        if pos is not None and len(pos) == 3:
            out["position"] = [round(float(v), 3) for v in pos]
        thumb = self._thumb_near(stamp)
        if thumb is not None:
            out["thumb"] = f"/api/thumbnails/{thumb}.jpg"
        return out

    def _thumb_near(self, stamp_ns: int) -> int | None:
        if stamp_ns <= 0:
            return None
        with self._state_lock:
            items = list(self._thumbs.items())
        best, best_dt = None, self.config.thumb_match_s * 1e9
        for thumb_id, (stamp, _img) in items:
            dt = abs(stamp - stamp_ns)
            if dt <= best_dt:
                best, best_dt = thumb_id, dt
        return best

    def map(self) -> dict[str, Any]:
        """The top-down map (``/api/map``): occupied cells seen in percepts, the camera
        trail, and the spatial memory's objects, places and edges (asked over the bus at
        most every ``map_refresh_s``), plus the positions of the last answer's hits."""
        cfg = self.config
        self._refresh_spatial()
        with self._state_lock:
            cells = [[ix, iy] for ix, iy in self._cells]
            trail = [list(p) for p in self._trail]
            seen = list(self._seen_objects.values())
            camera = None if self._camera_position is None else self._camera_position.tolist()
            recalled = [
                {"position": h["position"], "text": h["text"]}
                for h in (self._last_recall or {}).get("hits", [])
                if h.get("position") is not None
            ]
        with self._spatial_lock:
            spatial = dict(self._spatial)
        return {
            "cell_m": cfg.map_cell_m,
            "cells": cells,
            "trail": trail,
            "camera": camera,
            "objects": spatial["objects"] or seen,
            "objects_from": "spatial memory" if spatial["objects"] else "percepts",
            "places": spatial["places"],
            "edges": spatial["edges"],
            "recalled": recalled,
            "error": spatial["error"],
            "version": self.map_version,
        }

    def _refresh_spatial(self) -> None:
        cfg = self.config
        with self._spatial_lock:
            if time.monotonic() - self._spatial_at < cfg.map_refresh_s:
                return
            self._spatial_at = time.monotonic()
        with self._state_lock:
            near = self._camera_position
        if near is None:
            return
        query = MemoryQuery(
            memories=["spatial"],
            near=near.astype(np.float32),
            radius_m=cfg.map_radius_m,
            top_k=cfg.map_top_k,
        )
        try:
            recall = self.bus.request(cfg.memory_topic, query, timeout_s=cfg.map_timeout_s)
        except (TimeoutError, BusClosed) as exc:
            with self._spatial_lock:
                self._spatial = {**self._spatial, "error": f"spatial memory: {exc}"}
            return
        objects, places, index = [], [], {}
        for hit in getattr(recall, "hits", []):
            data = hit.get("data") or {}
            pos = hit.get("position")
            if pos is None:
                continue
            pos = [round(float(v), 3) for v in pos]
            if data.get("kind") == "object":
                objects.append(
                    {
                        "id": int(data.get("object_id", -1)),
                        "label": str(data.get("label", "")),
                        "position": pos,
                        "present": bool(data.get("present", True)),
                    }
                )
            elif data.get("kind") == "place":
                pid = int(data.get("place_id", -1))
                index[pid] = len(places)
                places.append(
                    {
                        "id": pid,
                        "position": pos,
                        "landmarks": [str(s) for s in data.get("landmark_labels", [])][:5],
                        "neighbours": [int(n) for n in data.get("neighbours", [])],
                    }
                )
        edges = sorted(
            {
                (min(index[p["id"]], index[n]), max(index[p["id"]], index[n]))
                for p in places
                for n in p["neighbours"]
                if n in index
            }
        )
        with self._spatial_lock:
            self._spatial = {
                "objects": objects,
                "places": places,
                "edges": [list(e) for e in edges],
                "error": getattr(recall, "error", "") or "",
            }
