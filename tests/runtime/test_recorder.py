"""Record to MCAP, read back, replay onto a bus: same messages, order and topics.

Recordings open in standard tools: a test decodes one with the mcap readers for protobuf
(Foxglove schemas) and JSON, without Engram's codec. Damaged files (truncated, killed
recorder, empty) replay what is intact and say what was lost.
"""

from __future__ import annotations

import sys
import threading
import time
import types

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer

from engram.runtime.bus import InProcBus
from engram.runtime.codec import pack
from engram.runtime.messages import ActionChunk, Frame, Heartbeat, Instruction, Recall
from engram.runtime.recorder import Recorder
from engram.runtime.replay import (
    RecordingError,
    is_ros2_bag,
    iter_recording,
    read_recording,
    replay,
)


def sample_messages() -> list[tuple[str, object]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        out.append(
            (
                "/camera/frames",
                Frame(
                    stamp_ns=1_000_000_000 + i * 33_000_000,
                    seq=i + 1,
                    rgb=rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                    depth=rng.random((24, 32), dtype=np.float32),
                    segmentation=np.full((24, 32), i, np.int32),
                    labels={str(i): f"obj{i}"},
                ),
            )
        )
        out.append(("/instructions", Instruction(stamp_ns=2_000 + i, seq=i + 1, text=f"go {i}")))
    out.append(("/actions", ActionChunk(seq=1, actions=np.zeros((0, 7), np.float32))))
    out.append(
        (
            "/recall",
            Recall(
                seq=1,
                hits=[{"memory": "m", "score": 0.5, "text": "a", "position": [1.0, 2.0, 3.0]}],
            ),
        )
    )
    out.append(
        ("/instructions", Heartbeat(seq=9, node="odd", counters={"x": 1}))
    )  # 2nd type, same topic
    return out


def record(tmp_path, messages, **kwargs):
    kwargs.setdefault("image_format", "raw")  # lossless: exact round trips
    path = tmp_path / "run.mcap"
    bus = InProcBus("rec")
    topics = sorted({t for t, _ in messages})
    with Recorder(bus, topics, path, **kwargs) as rec:
        for topic, msg in messages:
            bus.publish(topic, msg)
    bus.close()
    return path, rec


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_record_then_read_gives_the_same_messages_in_order(tmp_path, compression):
    messages = sample_messages()
    path, rec = record(tmp_path, messages, compression=compression)
    assert rec.written == len(messages)
    got = list(read_recording(path))
    # Each topic keeps its publish order; all topics together are in log-time order.
    for topic in {t for t, _ in messages}:
        assert [m for t, m in got if t == topic] == [m for t, m in messages if t == topic]
    assert sorted(t for t, _ in got) == sorted(t for t, _ in messages)
    stamps = [r.log_time_ns for r in iter_recording(path)]
    assert stamps == sorted(stamps)


def test_recording_decodes_with_the_standard_mcap_readers(tmp_path):
    """Foxglove/mcap tooling reads it: protobuf via mcap_protobuf, JSON with a JSON Schema."""
    import json

    import jsonschema
    from mcap_protobuf.decoder import DecoderFactory

    messages = sample_messages()
    path, _ = record(tmp_path, messages, image_format="jpeg")
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        schemas = {s.name: s for s in summary.schemas.values()}
        assert {"engram.Frame", "engram.Instruction", "engram.Heartbeat"} <= set(schemas)
        assert {
            "foxglove.CompressedImage",
            "foxglove.RawImage",
            "foxglove.CameraCalibration",
        } <= set(schemas)
        assert "foxglove.FrameTransforms" in schemas and "foxglove.Log" in schemas
        assert {c.message_encoding for c in summary.channels.values()} == {"json", "protobuf"}
        assert "engram" not in {c.message_encoding for c in summary.channels.values()}
        decoded = {}
        for _schema, channel, message, proto in reader.iter_decoded_messages(
            topics=[
                "/camera/frames/rgb",
                "/camera/frames/depth",
                "/camera/frames/calibration",
                "/tf",
            ]
        ):
            decoded.setdefault(channel.topic, []).append((message, proto))
        f.seek(0)
        json_docs = []
        for schema, channel, message in make_reader(f).iter_messages():
            if channel.message_encoding != "json":
                continue
            assert schema.encoding == "jsonschema" and schema.name.startswith("engram.")
            doc = json.loads(message.data)
            jsonschema.validate(doc, json.loads(schema.data))  # every type, every message
            if channel.topic == "/camera/frames":
                json_docs.append(doc)
    frame0 = messages[0][1]
    rgb_msg, rgb = decoded["/camera/frames/rgb"][0]
    assert rgb.format == "jpeg" and rgb.data[:2] == b"\xff\xd8"  # a JPEG file
    assert rgb.timestamp.ToNanoseconds() == frame0.stamp_ns == rgb_msg.publish_time
    depth = decoded["/camera/frames/depth"][0][1]
    assert depth.encoding == "16UC1" and (depth.width, depth.height) == (32, 24)
    mm = np.frombuffer(depth.data, "<u2").reshape(24, 32)
    assert np.abs(mm / 1000.0 - frame0.depth).max() <= 0.0005 + 1e-6
    calib = decoded["/camera/frames/calibration"][0][1]
    assert list(calib.K) == frame0.intrinsics.ravel().tolist() and calib.frame_id == "camera"
    tf = decoded["/tf"][0][1].transforms[0]
    assert (tf.parent_frame_id, tf.child_frame_id, tf.rotation.w) == ("world", "camera", 1.0)
    assert len(json_docs) == 6 and json_docs[0]["fields"]["rgb"]["encoding"] == "jpeg"
    assert json_docs[0]["fields"]["labels"] == {"0": "obj0"}


def test_default_jpeg_recording_replays_close_to_the_original(tmp_path, rgbd_sample_dir):
    import cv2

    rng = np.random.default_rng(3)
    real = cv2.imread(str(rgbd_sample_dir / "color" / "00000.jpg"))[200:248, 300:364, ::-1]
    frame = Frame(
        seq=1,
        rgb=np.ascontiguousarray(real),
        depth=rng.uniform(0.2, 5.0, (48, 64)).astype(np.float32),
        segmentation=rng.integers(-1, 5, (48, 64)).astype(np.int32),
        world_from_camera=np.array(
            [[0, -1, 0, 1.0], [1, 0, 0, 2.0], [0, 0, 1, 0.5], [0, 0, 0, 1]], float
        ),
    )
    path, _ = record(tmp_path, [("/f", frame)], image_format="jpeg")
    [(topic, got)] = list(read_recording(path))
    assert topic == "/f" and got.seq == 1 and got.labels == frame.labels
    assert np.abs(got.rgb.astype(int) - frame.rgb).mean() < 3  # JPEG: close, not equal
    assert np.abs(got.depth - frame.depth).max() <= 0.0005 + 1e-6  # millimetre steps
    assert np.array_equal(got.segmentation, frame.segmentation)  # lossless
    assert np.array_equal(got.world_from_camera, frame.world_from_camera)


def test_replay_reproduces_payloads_with_topic_map(tmp_path):
    messages = sample_messages()
    path, _ = record(tmp_path, messages)
    bus = InProcBus("replay")
    subs = {
        t: bus.subscribe(t, "all(64)") for t in ["/cam", "/instructions", "/actions", "/recall"]
    }
    n = replay(path, bus, rate=None, topic_map={"/camera/frames": "/cam"})
    assert n == len(messages)
    got = {t: s.drain() for t, s in subs.items()}
    assert got["/cam"] == [m for t, m in messages if t == "/camera/frames"]
    assert got["/instructions"] == [m for t, m in messages if t == "/instructions"]
    assert got["/recall"][0].hits[0]["position"] == [1.0, 2.0, 3.0]
    assert [m.seq for m in got["/cam"]] == [1, 2, 3, 4, 5, 6]  # recorded seq kept
    bus.close()


def test_replay_follows_the_recorded_pace(tmp_path):
    bus = InProcBus("pace")
    path = tmp_path / "paced.mcap"
    with Recorder(bus, ["/t"], path):
        for i in range(4):
            bus.publish("/t", Instruction(text=str(i)))
            time.sleep(0.1)
    t0 = time.monotonic()
    assert replay(path, bus, rate=1.0) == 4
    assert time.monotonic() - t0 >= 0.25  # ~0.3 s of recorded spacing
    assert replay(path, bus, rate=None) == 4
    bus.close()


def test_replay_loop_until_stopped(tmp_path):
    path, _ = record(tmp_path, [("/t", Instruction(text="x"))])
    bus = InProcBus("loop")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert replay(path, bus, rate=None, loop=True, stop=stop) >= 2
    with pytest.raises(ValueError, match="stop event"):
        replay(path, bus, loop=True)
    with pytest.raises(ValueError, match="rate"):
        replay(path, bus, rate=0)
    bus.close()


def test_undecodable_messages_are_skipped_and_counted(tmp_path):
    path = tmp_path / "corrupt.mcap"
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start()
        schema = writer.register_schema("Instruction", "engram-codec", b"{}")
        channel = writer.register_channel("/t", "engram", schema)
        good = pack(Instruction(text="ok", seq=1))
        writer.add_message(channel, 1, good, 1)
        writer.add_message(channel, 2, b"EGRB garbage", 2)
        writer.add_message(channel, 3, good[: len(good) // 2], 3)
        writer.add_message(channel, 4, good, 4)
        writer.finish()
    errors: list[str] = []
    got = [r.msg.text for r in iter_recording(path, errors=errors)]
    assert got == ["ok", "ok"]
    assert len(errors) == 2 and all("'/t'" in e for e in errors)


def test_non_recordings_are_refused_with_the_reason(tmp_path):
    with pytest.raises(RecordingError, match="no such"):
        list(read_recording(tmp_path / "nope.mcap"))
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all")
    with pytest.raises(RecordingError, match="not a readable MCAP"):
        list(read_recording(junk))
    foreign = tmp_path / "json.mcap"
    with open(foreign, "wb") as f:
        writer = Writer(f)
        writer.start()
        channel = writer.register_channel("/t", "json", 0)
        writer.add_message(channel, 1, b"{}", 1)
        writer.finish()
    with pytest.raises(RecordingError, match=r"encoding\(s\) \['json'\]"):
        list(read_recording(foreign))


def _cdr_mcap(path):
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start(profile="ros2")
        schema = writer.register_schema("std_msgs/msg/String", "ros2msg", b"string data")
        channel = writer.register_channel("/chatter", "cdr", schema)
        writer.add_message(channel, 1, b"\x00\x01\x00\x00\x03\x00\x00\x00hi\x00", 1)
        writer.finish()


def test_ros2_bags_are_detected_and_delegated(tmp_path, monkeypatch):
    bag_dir = tmp_path / "bag"
    bag_dir.mkdir()
    (bag_dir / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    db3 = tmp_path / "x.db3"
    db3.write_bytes(b"")
    cdr = tmp_path / "ros.mcap"
    _cdr_mcap(cdr)
    engram_file, _ = record(tmp_path, [("/t", Instruction(text="x"))])
    assert is_ros2_bag(bag_dir) and is_ros2_bag(db3) and is_ros2_bag(cdr)
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    assert not is_ros2_bag(engram_file) and not is_ros2_bag(plain_dir)

    calls = []
    fake = types.ModuleType("engram.runtime.bridges.ros2.bag")
    fake.replay_bag = lambda path, bus, *, topic_map, rate: (
        calls.append((path, topic_map, rate)) or 7
    )
    monkeypatch.setitem(sys.modules, "engram.runtime.bridges.ros2.bag", fake)
    bus = InProcBus("bag")
    assert replay(cdr, bus, rate=2.0, topic_map={"/chatter": "/instructions"}) == 7
    assert calls == [(cdr, {"/chatter": "/instructions"}, 2.0)]

    monkeypatch.setitem(sys.modules, "engram.runtime.bridges.ros2.bag", None)  # as if not installed
    with pytest.raises(RecordingError, match=r"ROS 2 bag.*runtime\.bridges\.ros2\.bag"):
        replay(bag_dir, bus)
    bus.close()


def test_recorder_rejects_bad_arguments(tmp_path):
    bus = InProcBus("args")
    with pytest.raises(ValueError, match="at least one topic"):
        Recorder(bus, [], tmp_path / "x.mcap")
    with pytest.raises(ValueError, match="compression"):
        Recorder(bus, ["/t"], tmp_path / "x.mcap", compression="gzip")
    with pytest.raises(ValueError, match="image_format"):
        Recorder(bus, ["/t"], tmp_path / "x.mcap", image_format="bmp")
    bus.close()
