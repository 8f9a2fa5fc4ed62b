"""Rerun logging, headless: messages go to a .rrd file that Rerun's own CLI reads back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engram.runtime.bridges.rerun import RerunConfig, RerunLogger, RerunNode
from engram.runtime.bus import InProcBus
from engram.runtime.messages import Frame, Heartbeat, Percept, Recall, RobotState, Transcript
from engram.runtime.node import load_node_class

STAMP = 1_700_000_000 * 10**9


def rrd_entities(path: Path) -> set[str]:
    """Entity paths in a .rrd file, as listed by ``rerun rrd print`` (rerun-sdk's CLI)."""
    exe = Path(sys.executable).with_name("rerun")
    out = subprocess.run(
        [str(exe), "rrd", "print", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {
        line.split(" - ")[1].strip()
        for line in out.splitlines()
        if line.startswith("Chunk(") and " - " in line
    }


def sample_frame() -> Frame:
    rng = np.random.default_rng(0)
    return Frame(
        stamp_ns=STAMP,
        camera="front",
        rgb=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        depth=np.full((48, 64), 2.0, np.float32),
        intrinsics=np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]),
    )


def sample_percept() -> Percept:
    rng = np.random.default_rng(1)
    return Percept(
        stamp_ns=STAMP,
        camera="front",
        object_ids=np.array([3, 7], np.int32),
        object_labels=["mug", "keys"],
        object_confidences=np.array([0.9, 0.8], np.float32),
        object_boxes=np.array([[2, 3, 20, 30], [30, 10, 60, 40]], np.int32),
        object_centroids=np.array([[1.0, 2.0, 0.8], [0.5, -1.0, 0.4]], np.float32),
        object_extents=np.full((2, 3), 0.1, np.float32),
        points=rng.normal(size=(500, 3)).astype(np.float32),
        point_object_ids=rng.integers(-1, 8, 500).astype(np.int32),
    )


def test_logger_writes_rrd_with_every_entity(tmp_path):
    path = tmp_path / "run.rrd"
    with RerunLogger(save_path=path, max_points=100) as logger:
        assert logger.log(sample_frame())
        assert logger.log(sample_percept())
        logger.log_places(
            np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0]]), np.array([[0, 1], [1, 2]]), stamp_ns=STAMP
        )
        recall = Recall(
            stamp_ns=STAMP,
            query_text="where is the mug?",
            hits=[
                {"memory": "spatial", "score": 0.9, "text": "mug", "position": [1.0, 2.0, 0.8]},
                {"memory": "episodic", "score": 0.4, "text": "you said keys"},
            ],
        )
        assert logger.log(recall)
        assert logger.log(Transcript(stamp_ns=STAMP, text="the keys are in the drawer"))
        assert logger.log(RobotState(stamp_ns=STAMP, robot="base"))
        assert not logger.log(Heartbeat(stamp_ns=STAMP))  # nothing to draw
        with pytest.raises(ValueError, match="edges index"):
            logger.log_places(np.zeros((2, 3)), np.array([[0, 5]]), stamp_ns=STAMP)
    assert path.stat().st_size > 20_000  # the image alone is 9 KB
    entities = rrd_entities(path)
    assert {
        "/world/camera/front",
        "/world/camera/front/image",
        "/world/camera/front/depth",
        "/world/camera/front/image/objects",
        "/world/objects",
        "/world/percepts/points",
        "/world/places",
        "/world/places/edges",
        "/world/recall",
        "/recall",
        "/transcript",
        "/world/robot/base",
    } <= entities
    assert logger.counts == {
        "frames": 1,
        "percepts": 1,
        "places": 1,
        "recalls": 1,
        "transcripts": 1,
        "robot_states": 1,
    }


def test_rerun_node_logs_bus_traffic_and_places_from_heartbeats(tmp_path):
    assert load_node_class("rerun") is RerunNode
    path = tmp_path / "node.rrd"
    bus = InProcBus("viz")
    config = RerunConfig(
        save_path=str(path), ports=["frames", "percepts", "heartbeat"], heartbeat_hz=0
    )
    node = RerunNode(config, bus=bus, name="rerun")
    assert set(node.inputs()) == {"frames", "percepts", "heartbeat"}
    with node:
        bus.publish("/frames", sample_frame())
        bus.publish("/percepts", sample_percept())
        places = {"positions": [[0, 0, 0], [2, 0, 0]], "edges": [[0, 1]]}
        bus.publish("/heartbeat", Heartbeat(stamp_ns=STAMP, node="memory", info={"places": places}))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(node.logger.counts.values()) < 3:
            time.sleep(0.02)
        assert node.logger.counts == {"frames": 1, "percepts": 1, "places": 1}
    entities = rrd_entities(path)
    assert {
        "/world/camera/front/image",
        "/world/percepts/points",
        "/world/places/edges",
    } <= entities
    with pytest.raises(ValueError, match="unknown port"):
        RerunNode(RerunConfig(ports=["video"]), bus=bus)


def test_rrd_has_sim_time_and_step_timelines_encoded_images_and_a_blueprint(tmp_path):
    """Read back with Rerun's own reader (``rerun rrd print -vv``): simulation stamps go
    on a ``sim_time`` duration timeline (not 1970 dates), seq on ``step``, images as JPEG."""
    path = tmp_path / "sim.rrd"
    rgb = np.full((48, 64, 3), 90, np.uint8)
    with RerunLogger(save_path=path) as logger:
        for i in range(3):
            logger.log(Frame(stamp_ns=i * 10**8, seq=i + 1, camera="front", rgb=rgb))
        logger.log(RobotState(stamp_ns=10**8, seq=2, robot="arm"))
    exe = Path(sys.executable).with_name("rerun")
    out = subprocess.run(
        [str(exe), "rrd", "print", "-vv", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    image_table = out[out.index("/world/camera/front/image") :]
    header = image_table[: image_table.index("is_sorted")]
    assert "sim_time" in header and "Duration(ns)" in header
    assert "step" in header and "EncodedImage:blob" in header
    assert "Image:buffer" not in header  # no raw image
    assert "capture" not in header  # sim stamps are not wall-clock dates
    assert "ViewportBlueprint" in out and "/world/robot/arm" in out


def test_memory_snapshot_draws_places_and_the_recall(tmp_path):
    """engram demo's rrd gets the places graph and the recall of the instruction, which
    travel request/reply on /memory/query where a Rerun node cannot see them."""
    from engram.runtime.bridges.rerun import log_memory_snapshot
    from engram.runtime.messages import MemoryQuery

    bus = InProcBus("snapshot")
    asked: list[MemoryQuery] = []

    def memory(query: MemoryQuery) -> Recall:
        asked.append(query)
        if query.memories == ["spatial"]:
            hits = [
                {
                    "memory": "spatial",
                    "score": 1.0,
                    "position": [float(i), 0.0, 0.0],
                    "data": {"kind": "place", "place_id": 10 + i, "neighbours": [10 + i + 1]},
                }
                for i in range(3)
            ]
            hits.append(
                {
                    "memory": "spatial",
                    "score": 1.0,
                    "position": [0, 1, 0],
                    "data": {"kind": "object", "object_id": 4},
                }
            )
            return Recall(query_seq=query.seq, hits=hits)
        return Recall(
            query_seq=query.seq,
            query_text=query.text,
            hits=[
                {
                    "memory": "episodic",
                    "score": 0.8,
                    "text": "cube under cup 2",
                    "position": [0.1, 0.2, 0.3],
                }
            ],
        )

    bus.serve("/memory/query", memory)
    path = tmp_path / "snap.rrd"
    with RerunLogger(save_path=path) as logger:
        got = log_memory_snapshot(logger, bus, question="which cup hides the cube?")
        assert got == {"places": 3, "recall_hits": 1}
        assert logger.counts == {"places": 1, "recalls": 1}
    assert asked[1].text == "which cup hides the cube?"
    assert {"/world/places", "/world/places/edges", "/recall", "/world/recall"} <= rrd_entities(
        path
    )
    bus.close()
