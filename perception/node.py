"""``PerceptionNode``: Frame + AudioChunk -> Percept, Transcript, SoundEvent.

Ports (default topics ``/<port>``)::

    inputs   frames  Frame       queue(4)   the input thread only runs the cheap keyframe test
             audio   AudioChunk  queue(64)  VAD + sound events on the input thread
    outputs  percepts      Percept
             transcripts   Transcript
             sound_events  SoundEvent

Frames, in stages (each timed; p50/p95 in the heartbeat's ``latency_ms``):

1. ``select`` (input thread): ``KeyframeSelector.check`` on a thumbnail and the pose.
   Frames with nothing new are skipped (``frames_skipped``); candidates enter a
   bounded work queue of ``max_queue`` frames. **Drop policy**: when the queue is
   full, the oldest frame of the lowest priority is dropped (``frames_dropped``):
   plain candidates first, then likely keyframes (a strong change), then forced
   keyframes (``max_interval_s`` elapsed).
   Latency therefore stays bounded (at most ``max_queue`` frames wait) whatever the
   input rate.
2. worker thread: takes up to ``batch_size`` queued frames, ``encode``\\ s them in one
   batch (image encoder), then per frame ``keyframe`` (segment test on the
   embedding), ``geometry`` (back-projection, voxel downsampling), ``objects``
   (segmentation or proposals + region embeddings; proposals then get persistent
   track ids, see below), ``publish``. ``total`` is
   receipt to publish, ``queue_wait`` receipt to batch start.

Object ids: the simulator's segmentation ids are stable and pass through. Real-camera
proposals (no segmentation) go through an ``ObjectTracker`` (``engram.perception.tracking``,
settings in ``tracker``), one per ``Frame.camera`` (at most ``MAX_TRACKED_CAMERAS``,
the least recently used forgotten), all drawing ids from one counter, so a
Percept's ``object_ids`` and ``point_object_ids`` name the same physical object
across frames and never collide between cameras. A camera's tracker restarts
(tracks dropped, ids still counting up) when its stamps go backwards or its
``seq`` does (a replay or publisher restart). ``tracker.enabled=False`` keeps the
frame-local ids 0..K-1.

Audio: chunks are mixed to mono 16 kHz and segmented (``AudioSegmenter``); sound
events are published at once; closed speech segments go to a bounded queue
(``max_speech_queue``, oldest dropped) served by a second worker running whisper
in batches and the MiniLM text encoder (``asr`` stage). Each output's
``world_from_robot`` is the microphone pose of the chunk where it started (else the
latest camera pose seen).

Models load in ``configure()``. Defaults run offline with random weights (a small
open_clip architecture and a tiny whisper); for real use set
``model_name="ViT-B-32", pretrained="laion2b_s34b_b79k"`` and ``whisper_model="tiny.en"``
after downloading their weights once.

Bad input (a wrong-size depth, an invalid pose arriving as a raw array, ...) is
counted in ``frame_errors`` / ``audio_errors`` and logged; the node keeps running.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from engram.perception.audio import (
    AudioSegment,
    AudioSegmenter,
    SegmenterConfig,
    SpeechRecognizer,
    WhisperConfig,
    to_mono_16k,
)
from engram.perception.encoders import Encoder, make_encoder
from engram.perception.geometry import backproject, voxel_downsample
from engram.perception.keyframes import CheapDecision, KeyframeConfig, KeyframeSelector, thumbnail
from engram.perception.objects import ObjectExtractor, Objects, ObjectsConfig
from engram.perception.tracking import ObjectTracker, TrackerConfig, track_id_source
from engram.runtime.messages import AudioChunk, Frame, Percept, SoundEvent, Transcript
from engram.runtime.node import Input, Node, NodeConfig, Output

__all__ = [
    "DROP_POLICY",
    "MAX_TRACKED_CAMERAS",
    "PerceptionConfig",
    "PerceptionNode",
    "StageTimer",
    "WorkQueue",
]

log = logging.getLogger(__name__)

DROP_POLICY = "oldest non-keyframe first: other candidates, then likely keyframes, then forced"
#: most cameras with a live object tracker; the least recently seen camera's is dropped
MAX_TRACKED_CAMERAS = 16


@dataclass
class PerceptionConfig(NodeConfig):
    """Settings of ``PerceptionNode``. Nested configs accept dicts (launch YAML)."""

    # image encoder: a registry name (kind "encoder"; needs image + text for labels)
    encoder: str = "clip"
    # open_clip architecture (ViT-B-32, engram-vit-small, engram-vit-tiny, ...)
    model_name: str = "engram-vit-small"
    # open_clip weights tag (e.g. laion2b_s34b_b79k); None = random weights
    pretrained: str | None = None
    # directory with downloaded open_clip weights; None = open_clip's default caches
    cache_dir: str | None = None
    # explicit open_clip weights file; wins over pretrained
    checkpoint_path: str | None = None
    # "auto" (cuda when present), "cpu", "cuda"; used by every model of the node
    device: str = "auto"
    # most frames per encoder batch
    batch_size: int = 4
    # frames waiting for the encoder; beyond it frames are dropped (DROP_POLICY)
    max_queue: int = 4
    # edge of the voxels that Percept.points is downsampled to, metres
    voxel_size_m: float = 0.02
    # back-project every n-th pixel in each direction, pixels
    depth_stride_px: int = 2
    # depth beyond this is ignored, metres
    max_depth_m: float = 10.0
    # width of Percept.thumbnail, pixels
    thumbnail_width_px: int = 64
    # open-vocabulary labels for proposals on real cameras; None = ObjectsConfig's default
    vocabulary: tuple[str, ...] | None = None
    # keyframe thresholds (units in the field names)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    # object extraction settings
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    # persistent ids for real-camera proposals (enabled=False: frame-local ids)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # run the audio pipeline (VAD, whisper, sound events)
    audio_enabled: bool = True
    # whisper model: official name from whisper_cache_dir, or "random" (tiny random weights)
    whisper_model: str = "random"
    # where downloaded whisper checkpoints live
    whisper_cache_dir: str = "~/.cache/whisper"
    # explicit whisper checkpoint file; wins over whisper_model
    whisper_checkpoint_path: str | None = None
    # spoken language code for whisper ("" = detect)
    language: str = "en"
    # sentence encoder for Transcript.embedding; "" = no embedding
    text_encoder: str = "minilm"
    # voice activity / sound event segmentation settings
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    # closed speech segments waiting for whisper; beyond it the oldest is dropped
    max_speech_queue: int = 8
    # latency samples kept per stage for the p50 / p95 in the heartbeat
    latency_window: int = 512

    def __post_init__(self) -> None:
        for name, cls in (
            ("keyframes", KeyframeConfig),
            ("objects", ObjectsConfig),
            ("tracker", TrackerConfig),
            ("segmenter", SegmenterConfig),
        ):
            value = getattr(self, name)
            if isinstance(value, dict):
                known = {f.name for f in dataclasses.fields(cls)}
                unknown = set(value) - known
                if unknown:
                    raise TypeError(
                        f"PerceptionConfig.{name}: unknown field(s) {sorted(unknown)}; "
                        f"fields are {sorted(known)}"
                    )
                setattr(self, name, cls(**value))
        for name in ("batch_size", "max_queue", "max_speech_queue", "depth_stride_px"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PerceptionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.voxel_size_m > 0:
            raise ValueError(f"PerceptionConfig.voxel_size_m must be > 0, got {self.voxel_size_m}")
        if self.vocabulary is not None:
            self.vocabulary = tuple(self.vocabulary)
            self.objects = dataclasses.replace(self.objects, vocabulary=self.vocabulary)


class StageTimer:
    """Rolling latency samples per stage -> ``{"<stage>_p50": ms, "<stage>_p95": ms}``."""

    def __init__(self, window: int = 512) -> None:
        self._samples: dict[str, collections.deque[float]] = {}
        self._window = window
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            q = self._samples.get(stage)
            if q is None:
                q = self._samples[stage] = collections.deque(maxlen=self._window)
            q.append(seconds * 1000.0)

    def summary(self) -> dict[str, float]:
        with self._lock:
            snap = {k: np.asarray(v) for k, v in self._samples.items() if v}
        out: dict[str, float] = {}
        for stage, ms in snap.items():
            p50, p95 = np.percentile(ms, [50, 95])
            out[f"{stage}_p50"] = round(float(p50), 3)
            out[f"{stage}_p95"] = round(float(p95), 3)
        return out

    def samples(self, stage: str) -> list[float]:
        """The kept samples of one stage, milliseconds."""
        with self._lock:
            return list(self._samples.get(stage, ()))


@dataclass
class _Work:
    frame: Frame
    decision: CheapDecision
    received_s: float  # time.monotonic() at receipt


def _priority(decision: CheapDecision) -> int:
    """Drop priority: 2 forced keyframe, 1 likely keyframe, 0 other candidate."""
    return 2 if decision.forced else (1 if decision.likely_keyframe else 0)


class WorkQueue:
    """Bounded FIFO of frames with the node's drop policy (``DROP_POLICY``): when full,
    the oldest item of the lowest ``_priority`` makes room.

    ``put`` returns the dropped item (or None); ``take(n)`` waits up to ``timeout_s``
    and returns up to n oldest items.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: collections.deque[_Work] = collections.deque()
        self._cond = threading.Condition()
        self.max_len_seen = 0
        self._busy = 0

    def put(self, item: _Work) -> _Work | None:
        with self._cond:
            dropped = None
            if len(self._items) >= self.capacity:
                ranks = [_priority(w.decision) for w in self._items]
                victim = ranks.index(min(ranks))  # the oldest of the lowest priority
                dropped = self._items[victim]
                del self._items[victim]
            self._items.append(item)
            self.max_len_seen = max(self.max_len_seen, len(self._items))
            self._cond.notify_all()
            return dropped

    def take(self, n: int, timeout_s: float) -> list[_Work]:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout_s)
            batch = [self._items.popleft() for _ in range(min(n, len(self._items)))]
            self._busy += len(batch)
            return batch

    def done(self, n: int) -> None:
        with self._cond:
            self._busy -= n
            self._cond.notify_all()

    def wait_empty(self, timeout_s: float) -> bool:
        """Block until nothing is queued or being processed; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._items or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def __len__(self) -> int:
        return len(self._items)


class PerceptionNode(Node[PerceptionConfig]):
    """Frames and audio in; percepts, transcripts and sound events out. See module doc."""

    INPUTS: ClassVar[dict[str, Input]] = {
        "frames": Input("Frame", policy="queue(4)"),
        "audio": Input("AudioChunk", policy="queue(64)"),
    }
    OUTPUTS: ClassVar[dict[str, Output]] = {
        "percepts": Output("Percept"),
        "transcripts": Output("Transcript"),
        "sound_events": Output("SoundEvent"),
    }
    Config: ClassVar[type] = PerceptionConfig

    def __init__(self, config: PerceptionConfig | dict | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        self.timer = StageTimer(cfg.latency_window)
        self.selector = KeyframeSelector(cfg.keyframes)
        self.work = WorkQueue(cfg.max_queue)
        self.encoder: Encoder | None = None
        self.text_encoder: Encoder | None = None
        self.extractor: ObjectExtractor | None = None
        self.recognizer: SpeechRecognizer | None = None
        self.segmenter = AudioSegmenter(cfg.segmenter)
        self._speech: collections.deque[tuple[AudioSegment, np.ndarray | None]] = (
            collections.deque()
        )
        self._speech_cond = threading.Condition()
        self._speech_busy = 0
        self._audio_lock = threading.Lock()
        self._mic_poses: collections.deque[tuple[int, np.ndarray | None]] = collections.deque(
            maxlen=512
        )
        self._last_camera_pose: np.ndarray | None = None
        # camera -> (tracker, last seq); worker thread only
        self._trackers: collections.OrderedDict[str, tuple[ObjectTracker, int]] = (
            collections.OrderedDict()
        )
        self._track_ids = track_id_source(cfg.tracker)  # shared by all cameras
        self._tracks_live = 0
        self._audio_source = "mic"
        self._workers: list[threading.Thread] = []
        self._workers_stop = threading.Event()
        for name in (
            "frames_received",
            "frames_skipped",
            "frames_dropped",
            "frames_processed",
            "frame_errors",
            "keyframes",
            "batches",
            "audio_chunks",
            "audio_errors",
            "speech_segments",
            "speech_dropped",
            "transcripts",
            "transcripts_empty",
            "sound_events",
            "inputs_handled",
            "tracker_resets",
        ):
            self.counters[name] = 0

    # ---- lifecycle -----------------------------------------------------------------
    def on_configure(self) -> None:
        cfg: PerceptionConfig = self.config
        enc_cfg = {
            "model_name": cfg.model_name,
            "pretrained": cfg.pretrained,
            "cache_dir": cfg.cache_dir,
            "checkpoint_path": cfg.checkpoint_path,
            "device": cfg.device,
            "batch_size": max(cfg.batch_size, 8),
        }
        self.encoder = make_encoder(cfg.encoder, enc_cfg)
        self.encoder.load()
        if cfg.pretrained is None and cfg.checkpoint_path is None:
            log.warning(
                "perception: image encoder %s has random weights (set pretrained / "
                "checkpoint_path for meaningful embeddings)",
                cfg.model_name,
            )
        self.extractor = ObjectExtractor(cfg.objects, encoder=self.encoder)
        if "text" in self.encoder.modalities and cfg.objects.vocabulary:
            self.extractor.vocabulary_embeddings()  # warm: computed once
        if cfg.audio_enabled:
            self.recognizer = SpeechRecognizer(
                WhisperConfig(
                    model_name=cfg.whisper_model,
                    cache_dir=cfg.whisper_cache_dir,
                    checkpoint_path=cfg.whisper_checkpoint_path,
                    device=cfg.device,
                    language=cfg.language,
                )
            )
            self.recognizer.load()
            if cfg.text_encoder:
                self.text_encoder = make_encoder(cfg.text_encoder, {"device": cfg.device})
                self.text_encoder.load()

    def on_start(self) -> None:
        self._workers_stop.clear()
        self._workers = [
            threading.Thread(target=self._frame_worker, name=f"{self.name}:encode", daemon=True)
        ]
        if self.config.audio_enabled:
            self._workers.append(
                threading.Thread(target=self._speech_worker, name=f"{self.name}:asr", daemon=True)
            )
        for t in self._workers:
            t.start()

    def on_stop(self) -> None:
        self.flush(timeout_s=10.0)
        self._workers_stop.set()
        with self._speech_cond:
            self._speech_cond.notify_all()
        for t in self._workers:
            t.join(timeout=10.0)
        self._workers = []

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Close the open audio segment and wait until queued frames and speech are
        published (workers must be running). False if that took longer than timeout_s."""
        deadline = time.monotonic() + timeout_s
        # inputs already on the bus are handled first
        while any(len(sub.mailbox) for sub in self._subs.values()) or (
            self.counters["received"] > self.counters["inputs_handled"]
        ):
            if time.monotonic() > deadline or not self.running:
                break
            time.sleep(0.005)
        if self.config.audio_enabled:
            with self._audio_lock:
                segments = self.segmenter.flush()
            for seg in segments:
                self._handle_segment(seg)
        if not self._workers:
            return len(self.work) == 0 and not self._speech
        ok = self.work.wait_empty(max(0.0, deadline - time.monotonic()))
        with self._speech_cond:
            while self._speech or self._speech_busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._speech_cond.wait(left)
        return ok

    def health(self) -> dict[str, Any]:
        enc = self.encoder
        return {
            "counters": {
                "frame_queue_len": len(self.work),
                "frame_queue_max": self.work.max_len_seen,
                "speech_queue_len": len(self._speech),
                "tracks_live": self._tracks_live,
            },
            "latency_ms": self.timer.summary(),
            "info": {
                "drop_policy": DROP_POLICY,
                "max_queue": self.config.max_queue,
                "encoder": f"{self.config.encoder}:{self.config.model_name}",
                "device": enc.device if enc is not None else "",
                "embedding_dim": enc.dim if enc is not None else 0,
            },
        }

    # ---- frames --------------------------------------------------------------------
    def on_frames(self, frame: Frame) -> None:
        try:
            self._on_frame(frame)
        finally:
            self.count("inputs_handled")

    def _on_frame(self, frame: Frame) -> None:
        received = time.monotonic()
        self.count("frames_received")
        try:
            decision = self.selector.check(frame.rgb, frame.world_from_camera, frame.stamp_ns / 1e9)
        except Exception:  # noqa: BLE001 - counted, logged, node keeps running
            self.count("frame_errors")
            log.error("perception: bad frame %s:\n%s", frame.seq, traceback.format_exc())
            return
        self._last_camera_pose = frame.world_from_camera
        self.timer.add("select", time.monotonic() - received)
        if not decision.candidate:
            self.count("frames_skipped")
            return
        dropped = self.work.put(_Work(frame, decision, received))
        if dropped is not None:
            self.count("frames_dropped")

    def _frame_worker(self) -> None:
        cfg: PerceptionConfig = self.config
        while not self._workers_stop.is_set():
            batch = self.work.take(cfg.batch_size, timeout_s=cfg.poll_timeout_s)
            if not batch:
                continue
            try:
                self._process_batch(batch)
            except Exception:  # noqa: BLE001 - a bad batch must not kill the worker
                self.count("frame_errors", len(batch))
                log.error("perception: batch failed:\n%s", traceback.format_exc())
            finally:
                self.work.done(len(batch))

    def _process_batch(self, batch: list[_Work]) -> None:
        assert self.encoder is not None
        start = time.monotonic()
        for w in batch:
            self.timer.add("queue_wait", start - w.received_s)
        embeddings = self.encoder.encode_images([w.frame.rgb for w in batch])
        self.timer.add("encode", time.monotonic() - start)
        self.count("batches")
        for w, emb in zip(batch, embeddings):
            try:
                percept = self._percept(w, emb)
            except Exception:  # noqa: BLE001 - one bad frame must not stop the stream
                self.count("frame_errors")
                log.error("perception: frame %s failed:\n%s", w.frame.seq, traceback.format_exc())
                continue
            t0 = time.monotonic()
            self.publish("percepts", percept)
            now = time.monotonic()
            self.timer.add("publish", now - t0)
            self.timer.add("total", now - w.received_s)
            self.count("frames_processed")
            if percept.keyframe:
                self.count("keyframes")

    def _percept(self, w: _Work, embedding: np.ndarray) -> Percept:
        cfg: PerceptionConfig = self.config
        frame = w.frame
        keyframe = self.selector.observe(embedding, frame.stamp_ns / 1e9, forced=w.decision.forced)
        t0 = time.monotonic()
        cloud = None
        if frame.depth is not None:
            cloud = backproject(
                frame.depth,
                frame.intrinsics,
                frame.world_from_camera,
                stride_px=cfg.depth_stride_px,
                max_depth_m=cfg.max_depth_m,
            )
        t1 = time.monotonic()
        assert self.extractor is not None
        objs = self.extractor.extract(
            frame.rgb,
            cloud=cloud,
            world_from_camera=frame.world_from_camera,
            segmentation=frame.segmentation,
            labels=frame.labels,
            depth=frame.depth,
            robot_labels=frame.robot_labels,
        )
        if frame.segmentation is None and cfg.tracker.enabled:
            objs = self._track(frame, objs)
        t2 = time.monotonic()
        points = point_ids = None
        if cloud is not None:
            labels = (
                cloud.sample(objs.label_image)
                if objs.label_image is not None
                else np.full(len(cloud), -1, np.int32)
            )
            if len(objs):  # ids that were not kept as objects do not label points
                labels = np.where(np.isin(labels, objs.ids), labels, -1)
            else:
                labels = np.full(len(cloud), -1, np.int32)
            points, point_ids = voxel_downsample(cloud.points, cfg.voxel_size_m, labels=labels)
        t3 = time.monotonic()
        self.timer.add("geometry", (t1 - t0) + (t3 - t2))
        self.timer.add("objects", t2 - t1)
        return Percept(
            stamp_ns=frame.stamp_ns,
            camera=frame.camera,
            frame_seq=frame.seq,
            keyframe=bool(keyframe),
            world_from_camera=frame.world_from_camera,
            embedding=embedding.astype(np.float32),
            object_ids=objs.ids,
            object_labels=list(objs.labels),
            object_confidences=objs.confidences,
            object_boxes=objs.boxes,
            object_centroids=objs.centroids,
            object_extents=objs.extents,
            object_embeddings=objs.embeddings,
            points=points,
            point_object_ids=point_ids,
            thumbnail=thumbnail(frame.rgb, cfg.thumbnail_width_px),
            image_width_px=int(frame.rgb.shape[1]),
            image_height_px=int(frame.rgb.shape[0]),
        )

    def _track(self, frame: Frame, objs: Objects) -> Objects:
        """Proposals of one frame -> the same with persistent ids (the camera's tracker)."""
        entry = self._trackers.get(frame.camera)
        if entry is None:
            tracker = ObjectTracker(self.config.tracker, id_source=self._track_ids)
            last_seq = 0
            while len(self._trackers) >= MAX_TRACKED_CAMERAS:
                self._trackers.popitem(last=False)
        else:
            tracker, last_seq = entry
        resets = tracker.stats["resets"]
        if 0 < frame.seq < last_seq:  # the publisher restarted
            tracker.reset()
        out = tracker.update(objs, stamp_ns=frame.stamp_ns)  # resets itself if time went back
        if tracker.stats["resets"] > resets:
            self.count("tracker_resets")
        self._trackers[frame.camera] = (tracker, frame.seq or last_seq)
        self._trackers.move_to_end(frame.camera)
        self._tracks_live = sum(len(t) for t, _ in self._trackers.values())
        return out

    # ---- audio ---------------------------------------------------------------------
    def on_audio(self, chunk: AudioChunk) -> None:
        try:
            self._on_audio(chunk)
        finally:
            self.count("inputs_handled")

    def _on_audio(self, chunk: AudioChunk) -> None:
        if not self.config.audio_enabled:
            return
        self.count("audio_chunks")
        t0 = time.monotonic()
        try:
            mono = to_mono_16k(chunk.pcm, chunk.sample_rate_hz)
            with self._audio_lock:
                self._mic_poses.append((chunk.stamp_ns, chunk.world_from_mic))
                self._audio_source = chunk.source
                segments = self.segmenter.push(mono, chunk.stamp_ns)
        except Exception:  # noqa: BLE001 - counted, logged, node keeps running
            self.count("audio_errors")
            log.error("perception: bad audio chunk %s:\n%s", chunk.seq, traceback.format_exc())
            return
        self.timer.add("vad", time.monotonic() - t0)
        for seg in segments:
            self._handle_segment(seg)

    def _pose_at(self, stamp_ns: int) -> np.ndarray | None:
        with self._audio_lock:
            poses = list(self._mic_poses)
        best = None
        for t, pose in poses:
            if t <= stamp_ns and pose is not None:
                best = pose
        if best is None:
            best = next((p for _, p in poses if p is not None), None)
        return best if best is not None else self._last_camera_pose

    def _handle_segment(self, seg: AudioSegment) -> None:
        pose = self._pose_at(seg.start_ns)
        if seg.kind == "sound":
            self.publish(
                "sound_events",
                SoundEvent(
                    stamp_ns=seg.start_ns,
                    source=self._audio_source,
                    label=seg.label,
                    start_ns=seg.start_ns,
                    end_ns=seg.end_ns,
                    energy_db=seg.energy_db,
                    peak_hz=seg.peak_hz,
                    embedding=seg.embedding,
                    world_from_robot=pose,
                ),
            )
            self.count("sound_events")
            return
        self.count("speech_segments")
        with self._speech_cond:
            if len(self._speech) >= self.config.max_speech_queue:
                self._speech.popleft()
                self.count("speech_dropped")
            self._speech.append((seg, pose))
            self._speech_cond.notify_all()

    def _speech_worker(self) -> None:
        while not self._workers_stop.is_set():
            with self._speech_cond:
                if not self._speech:
                    self._speech_cond.wait(self.config.poll_timeout_s)
                    continue
                n = self.recognizer.config.batch_size if self.recognizer else 1
                batch = [self._speech.popleft() for _ in range(min(n, len(self._speech)))]
                self._speech_busy += len(batch)
            try:
                self._transcribe(batch)
            except Exception:  # noqa: BLE001 - counted, logged, worker keeps running
                self.count("audio_errors", len(batch))
                log.error("perception: speech recognition failed:\n%s", traceback.format_exc())
            finally:
                with self._speech_cond:
                    self._speech_busy -= len(batch)
                    self._speech_cond.notify_all()

    def _transcribe(self, batch: list[tuple[AudioSegment, np.ndarray | None]]) -> None:
        assert self.recognizer is not None
        t0 = time.monotonic()
        results = self.recognizer.transcribe([seg.audio for seg, _ in batch])
        texts = [r.text for r in results]
        embeddings: list[np.ndarray | None] = [None] * len(texts)
        nonempty = [i for i, t in enumerate(texts) if t]
        if self.text_encoder is not None and nonempty:
            embs = self.text_encoder.encode_texts([texts[i] for i in nonempty])
            for i, e in zip(nonempty, embs):
                embeddings[i] = e
        self.timer.add("asr", time.monotonic() - t0)
        for (seg, pose), result, emb in zip(batch, results, embeddings):
            if not result.text:
                self.count("transcripts_empty")
                continue
            self.publish(
                "transcripts",
                Transcript(
                    stamp_ns=seg.start_ns,
                    text=result.text,
                    start_ns=seg.start_ns,
                    end_ns=seg.end_ns,
                    language=result.language,
                    confidence=result.confidence,
                    embedding=emb,
                    world_from_robot=pose,
                ),
            )
            self.count("transcripts")
