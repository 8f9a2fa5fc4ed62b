"""PerceptionNode: a live 30 fps stream, the drop policy, audio to transcripts."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from engram.perception.keyframes import CheapDecision
from engram.perception.node import DROP_POLICY, PerceptionConfig, PerceptionNode, WorkQueue, _Work
from engram.runtime import registry
from engram.runtime.bus import InProcBus
from engram.runtime.messages import AudioChunk, Frame, Heartbeat
from engram.runtime.node import load_node_class

K = np.array([[160.0, 0, 159.5], [0, 160.0, 119.5], [0, 0, 1]])


def _pose(x: float) -> np.ndarray:
    pose = np.eye(4)
    pose[0, 3] = x
    return pose


class _Stream:
    """A synthetic RGB-D camera: a textured wall at 3 m with two boxes, moving sideways."""

    def __init__(self, h: int = 240, w: int = 320) -> None:
        rng = np.random.default_rng(0)
        cells = rng.integers(0, 256, (h // 20 + 1, w // 10 + 1, 3), dtype=np.uint8)
        # coarse blobs, so that a few pixels of motion change the thumbnail
        self.texture = np.repeat(np.repeat(cells, 20, axis=0), 20, axis=1)[:h, : 2 * w]
        self.h, self.w = h, w
        self.depth = np.full((h, w), 3.0, np.float32)
        self.seg = np.full((h, w), -1, np.int32)
        self.depth[60:120, 40:120] = 1.5
        self.seg[60:120, 40:120] = 3
        self.depth[150:220, 200:300] = 2.0
        self.seg[150:220, 200:300] = 8

    def frame(self, i: int, stamp_ns: int) -> Frame:
        shift = (i * 7) % self.w
        rgb = np.ascontiguousarray(self.texture[:, shift : shift + self.w])
        return Frame(
            stamp_ns=stamp_ns,
            rgb=rgb,
            depth=self.depth,
            segmentation=self.seg,
            intrinsics=K,
            world_from_camera=_pose(0.01 * i),
            labels={"3": "red_box", "8": "blue_box"},
        )


def test_registered_as_perception_node():
    assert registry.REGISTRY.target("node", "perception") == "engram.perception.node:PerceptionNode"
    assert load_node_class("perception") is PerceptionNode
    assert set(PerceptionNode.INPUTS) == {"frames", "audio"}
    assert {p: o.type for p, o in PerceptionNode.OUTPUTS.items()} == {
        "percepts": "Percept",
        "transcripts": "Transcript",
        "sound_events": "SoundEvent",
    }
    cfg = PerceptionConfig(keyframes={"max_interval_s": 1.0}, vocabulary=["cup", "mug"])
    assert cfg.keyframes.max_interval_s == 1.0 and cfg.objects.vocabulary == ("cup", "mug")
    with pytest.raises(TypeError, match="unknown field"):
        PerceptionConfig(keyframes={"max_interval": 1.0})
    with pytest.raises(ValueError, match="max_queue"):
        PerceptionConfig(max_queue=0)


def _decision(likely: bool, forced: bool = False) -> CheapDecision:
    return CheapDecision(True, forced, likely or forced, 0.5, 0.0, 0.0, "pixels")


def test_work_queue_drops_oldest_non_keyframe_first():
    frame = Frame(rgb=np.zeros((4, 4, 3), np.uint8))
    q = WorkQueue(3)
    items = [_Work(frame, _decision(likely), float(i)) for i, likely in enumerate([1, 0, 0, 1, 1])]
    assert q.put(items[0]) is None and q.put(items[1]) is None and q.put(items[2]) is None
    assert q.put(items[3]) is items[1]  # oldest non-keyframe, not the older keyframe 0
    assert q.put(items[4]) is items[2]
    # only likely keyframes left: the oldest goes
    assert q.put(_Work(frame, _decision(True), 5.0)) is items[0]
    assert len(q) == 3 and q.max_len_seen == 3
    assert [w.received_s for w in q.take(8, 0.0)] == [3.0, 4.0, 5.0]
    # forced keyframes (max_interval_s elapsed) go last
    forced = _Work(frame, _decision(False, forced=True), 6.0)
    q.put(forced)
    q.put(_Work(frame, _decision(True), 7.0))
    q.put(_Work(frame, _decision(True), 8.0))
    assert q.put(_Work(frame, _decision(False), 9.0)).received_s == 7.0
    assert q.put(_Work(frame, _decision(True), 10.0)).received_s == 9.0
    assert forced in q.take(8, 0.0)


@pytest.fixture(scope="module")
def bus():
    b = InProcBus("perception-test")
    yield b
    b.close()


def test_node_keeps_up_with_30_fps_for_10_s(bus):
    cfg = PerceptionConfig(
        model_name="engram-vit-small",
        device="cpu",
        batch_size=4,
        max_queue=4,
        audio_enabled=False,
        keyframes={"min_interval_s": 0.0, "max_interval_s": 1.0},
        heartbeat_hz=2.0,
    )
    node = PerceptionNode(cfg, bus=bus, name="perception")
    percepts = bus.subscribe("/percepts", "queue(1000)")
    beats = bus.subscribe("/heartbeat", "queue(100)")
    stream = _Stream()
    fps, seconds = 30.0, 10.0
    n = int(fps * seconds)
    with node:
        t0 = time.monotonic()
        for i in range(n):  # real-time pacing, as a camera would publish
            delay = t0 + i / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            bus.publish("/frames", stream.frame(i, stamp_ns=int((t0 + i / fps) * 1e9)))
            if i % 30 == 0:
                assert len(node.work) <= cfg.max_queue
        assert node.flush(timeout_s=30.0)
        hb = node.heartbeat()
    c = hb.counters
    # every frame is accounted for: dropped by the bus subscription before the node saw it
    # ("dropped"), skipped by the selector, dropped by the work queue, or made a percept
    assert c["frames_received"] + c["dropped"] == n
    assert c["dropped"] <= 10  # the input thread only runs the cheap test: it keeps up
    assert c["frames_skipped"] + c["frames_dropped"] + c["frames_processed"] == c["frames_received"]
    assert c["frame_errors"] == 0 and c["handler_errors"] == 0
    assert c["frames_processed"] >= 20 and c["keyframes"] >= 10
    assert c["frame_queue_max"] <= cfg.max_queue  # bounded queue
    assert hb.info["drop_policy"] == DROP_POLICY
    got = percepts.drain()
    assert len(got) == c["frames_processed"]
    assert sum(p.keyframe for p in got) == c["keyframes"]
    # latency is bounded by the queue, not by the length of the stream
    lat = hb.latency_ms
    for stage in ("select", "queue_wait", "encode", "geometry", "objects", "total"):
        assert f"{stage}_p50" in lat and f"{stage}_p95" in lat
    per_frame_ms = lat["geometry_p95"] + lat["objects_p95"] + lat["publish_p95"]
    batch_ms = lat["encode_p95"] + cfg.batch_size * per_frame_ms
    bound_ms = (math.ceil(cfg.max_queue / cfg.batch_size) + 1) * batch_ms + 500.0
    assert lat["total_p95"] <= bound_ms, (lat, bound_ms)
    late = node.timer.samples("total")[-50:]
    assert np.median(late) <= bound_ms  # no growth towards the end of the stream
    # percept content
    p = got[-1]
    assert p.embedding.shape == (256,) and abs(np.linalg.norm(p.embedding) - 1) < 1e-4
    assert sorted(p.object_labels) == ["blue_box", "red_box"]
    # each object's brightness from its own pixels (the planner's lamp reading)
    assert p.object_brightness is not None and p.object_brightness.shape == (2,)
    assert np.all((p.object_brightness > 0) & (p.object_brightness <= 1))
    assert p.points.shape[1] == 3 and len(p.points) == len(p.point_object_ids)
    assert {3, 8} <= set(np.unique(p.point_object_ids).tolist())
    assert p.thumbnail.shape == (48, 64, 3)
    red = p.object_labels.index("red_box")
    cam_x = p.world_from_camera[0, 3]  # the camera (and the scene) moves along x
    want = [(79.5 - 159.5) / 160 * 1.5 + cam_x, (89.5 - 119.5) / 160 * 1.5, 1.5]
    np.testing.assert_allclose(p.object_centroids[red], want, atol=0.03)
    # heartbeats went out with the extra counters and latencies
    beat = [m for m in beats.drain() if isinstance(m, Heartbeat) and m.node == "perception"]
    assert beat and "frames_dropped" in beat[-1].counters and beat[-1].latency_ms


def test_drops_are_counted_when_the_worker_falls_behind():
    """Deterministic overload: frames arrive while the worker is not running yet."""
    cfg = PerceptionConfig(
        model_name="engram-vit-tiny",
        device="cpu",
        max_queue=3,
        audio_enabled=False,
        keyframes={"min_interval_s": 0.0, "max_interval_s": 100.0},
        heartbeat_hz=0.0,
    )
    bus = InProcBus("perception-drops")
    node = PerceptionNode(cfg, bus=bus)
    percepts = bus.subscribe("/percepts", "queue(100)")
    node.configure()
    stream = _Stream(120, 160)
    for i in range(10):
        node.on_frames(stream.frame(i, stamp_ns=(i + 1) * 33_000_000))
    assert node.counters["frames_received"] == 10
    assert node.counters["frames_dropped"] == 10 - node.counters["frames_skipped"] - 3
    assert len(node.work) == 3
    # the first frame (a likely keyframe) survived the overload
    batch = node.work.take(3, 0.0)
    assert batch[0].frame.stamp_ns == 33_000_000
    # the worker's code path, run here: one percept per queued frame
    node._process_batch(batch)
    got = percepts.drain()
    assert [p.stamp_ns for p in got] == [w.frame.stamp_ns for w in batch]
    assert got[0].keyframe and got[0].embedding.shape == (64,)
    # a webcam frame (no depth, no segmentation): proposals, no points, still a percept
    webcam = Frame(stamp_ns=10**9, rgb=stream.frame(0, 1).rgb, intrinsics=K)
    node.on_frames(webcam)
    node._process_batch(node.work.take(1, 0.0))
    (p,) = percepts.drain()
    assert p.points is None and len(p.object_ids) >= 1
    assert set(p.object_labels) <= set(cfg.objects.vocabulary)
    # placed by bearing (1 m along the ray through each box), flagged as not measured
    assert p.object_depth_valid is not None and not p.object_depth_valid.any()
    np.testing.assert_allclose(np.linalg.norm(p.object_centroids, axis=1), 1.0, rtol=1e-5)
    if len(p.object_ids) > 1:
        assert len({tuple(np.round(c, 3)) for c in p.object_centroids.tolist()}) > 1
    assert np.all(p.object_centroids[:, 2] > 0)  # in front of the camera (+z)
    assert node.counters["frame_errors"] == 0
    bus.close()


def test_audio_to_transcripts_and_sound_events(speech):
    """Real tiny.en weights: finals per utterance with words and times, partials while
    speaking, the bell as a sound event, the end-of-speech -> final latency measured."""
    bus = InProcBus("perception-audio")
    cfg = PerceptionConfig(
        model_name="engram-vit-tiny",
        device="cpu",
        heartbeat_hz=0.0,
        partial_interval_s=0.5,
    )
    node = PerceptionNode(cfg, bus=bus)
    transcripts = bus.subscribe("/transcripts", "queue(100)")
    events = bus.subscribe("/sound_events", "queue(100)")
    mic = np.eye(4)
    mic[:3, 3] = (2.0, -1.0, 0.5)
    t0 = 1_000_000_000_000
    step = 1600  # 100 ms chunks at 16 kHz
    with node:
        for i in range(0, len(speech.audio), step):
            bus.publish(
                "/audio",
                AudioChunk(
                    stamp_ns=t0 + i * 62_500,  # 1e9 / 16000 ns per sample
                    pcm=speech.audio[i : i + step],
                    sample_rate_hz=16000,
                    world_from_mic=mic,
                    source="kitchen-mic",
                ),
            )
            time.sleep(0.02)
        assert node.flush(timeout_s=60.0)
        latency = node.health()["latency_ms"]
    got = transcripts.drain()
    finals = [t for t in got if t.final]
    assert node.counters["speech_segments"] == len(speech.truth_s)
    assert len(finals) == len(speech.truth_s), [t.text for t in finals]
    assert "door" in finals[3].text.lower() and "kitchen" in finals[0].text.lower()
    for t, (start, _end) in zip(finals, speech.truth_s):
        assert abs((t.start_ns - t0) / 1e9 - start) <= 0.15
        assert t.text and t.end_ns > t.start_ns and 0.2 <= t.confidence <= 1.0
        assert t.embedding.shape == (384,) and t.source == "kitchen-mic"
        np.testing.assert_allclose(t.world_from_robot, mic)
        assert t.words and all(
            t.start_ns <= w["start_ns"] <= w["end_ns"] <= t.end_ns for w in t.words
        )
    assert len({t.utterance_id for t in finals}) == len(finals)
    # partials come before their final and carry its id
    for p in (t for t in got if not t.final):
        assert p.utterance_id in {t.utterance_id for t in finals} and p.embedding is None
    assert latency["end_to_final_p50"] > 0
    (bell,) = events.drain()
    assert bell.label == "tone" and abs((bell.start_ns - t0) / 1e9 - speech.bell_s[0]) <= 0.15
    np.testing.assert_allclose(bell.world_from_robot, mic)
    bus.close()
