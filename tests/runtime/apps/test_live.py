"""``engram live`` without a browser: the hub and its HTTP / WebSocket API on a real
memory node, clear errors for missing devices and weights, and ``--rerun`` on
``engram demo`` / ``engram replay``."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import numpy as np
import pytest

from engram.runtime.apps.cli import main
from engram.runtime.bus import InProcBus
from engram.runtime.drivers.camera import list_cameras
from engram.runtime.drivers.microphone import list_microphones
from engram.runtime.messages import Frame, Heartbeat, Percept, SoundEvent, Transcript
from tests.runtime._media import write_video
from tests.runtime.bridges.test_rerun import rrd_entities

STAMP = 1_750_000_000 * 10**9


def _pose(x_m: float) -> np.ndarray:
    """A level camera at (x, 0, 1.2) looking along world +x (OpenCV axes)."""
    pose = np.eye(4)
    pose[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    pose[0, 3], pose[2, 3] = x_m, 1.2
    return pose


def _percept(i: int, rng: np.random.Generator) -> Percept:
    points = (rng.normal(size=(400, 3)) * 0.2 + [i + 2.0, 0.0, 0.5]).astype(np.float32)
    return Percept(
        stamp_ns=STAMP + i * 10**9,
        frame_seq=i + 1,
        keyframe=True,
        world_from_camera=_pose(float(i)),
        embedding=np.full(8, 8**-0.5, np.float32),
        object_ids=np.array([3], np.int32),
        object_labels=["mug"],
        object_confidences=np.array([0.9], np.float32),
        object_boxes=np.array([[5, 5, 30, 30]], np.int32),
        object_centroids=np.array([[i + 2.0, 0.1, 0.8]], np.float32),
        object_extents=np.full((1, 3), 0.1, np.float32),
        points=points,
        thumbnail=rng.integers(0, 255, (24, 32, 3), dtype=np.uint8),
    )


def _get(url: str) -> tuple[int, bytes, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read(), resp.headers


@pytest.fixture
def hub_on_memory():
    """A real MemoryNode (spatial, temporal, episodic; no text encoder) + LiveHub + server."""
    from engram.memory.embedding import Embedders
    from engram.memory.node import MemoryNode, MemoryNodeConfig
    from engram.runtime.apps.web import LiveHub, LiveHubConfig, WebServer, make_app

    bus = InProcBus("live-hub")
    memory = MemoryNode(
        MemoryNodeConfig(memories=["spatial", "temporal", "episodic"], heartbeat_hz=0.0),
        embedders=Embedders({}),
        bus=bus,
        name="memory",
    )
    hub = LiveHub(LiveHubConfig(heartbeat_hz=0.0, map_refresh_s=0.0), bus=bus, name="web")
    memory.start()
    hub.start()
    server = WebServer(make_app(hub), host="127.0.0.1", port=0)
    server.start()
    try:
        yield bus, hub, server
    finally:
        server.stop()
        hub.stop()
        memory.stop()
        bus.close()


def _feed(bus: InProcBus, hub, n: int = 4) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        stamp = STAMP + i * 10**9
        bus.publish(
            "/frames", Frame(stamp_ns=stamp, rgb=rng.integers(0, 255, (48, 64, 3), np.uint8))
        )
        bus.publish("/percepts", _percept(i, rng))
        bus.publish(
            "/transcripts",
            Transcript(
                stamp_ns=stamp,
                text=f"I left the keys on shelf {i}",
                start_ns=stamp,
                end_ns=stamp + 10**9,
            ),
        )
    bus.publish(
        "/sound_events",
        SoundEvent(stamp_ns=STAMP, label="tone", start_ns=STAMP, end_ns=STAMP + 10**8),
    )
    bus.publish(
        "/heartbeat",
        Heartbeat(
            node="camera",
            counters={"received": 0, "published": 40, "dropped": 2},
            latency_ms={"encode_p50": 10.0, "encode_p95": 20.0},
            info={"kind": "file", "fps": 9.5},
        ),
    )
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        s = hub.stats()
        if s["percepts"] == n and s["transcripts"] == n and s["sound_events"] == 1:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # the memory applies its queue


def test_hub_serves_state_frames_questions_and_map(hub_on_memory):
    bus, hub, server = hub_on_memory
    _feed(bus, hub)
    base = server.url

    status, body, _ = _get(base)
    assert status == 200 and b'id="question"' in body and b"/static/app.js" in body
    assert b"http" not in body.replace(b"http-equiv", b"")  # no external assets
    for asset in ("app.js", "style.css"):
        status, body, _ = _get(base + "static/" + asset)
        assert status == 200 and b"http://" not in body and b"https://" not in body

    status, jpeg, headers = _get(base + "api/frame.jpg")
    assert jpeg[:2] == b"\xff\xd8" and headers["X-Frame-Seq"] == "4"

    state = json.loads(_get(base + "api/state")[1])
    assert state["frame"]["width"] == 64 and state["frame"]["height"] == 48
    assert state["detections"]["objects"][0]["label"] == "mug"
    assert state["detections"]["objects"][0]["box"] == [5, 5, 30, 30]
    assert [e["text"] for e in state["transcript"]][-1] == "I left the keys on shelf 3"
    kinds = [e["kind"] for e in state["timeline"]]
    assert kinds.count("keyframe") == 4 and "sound" in kinds and "transcript" in kinds
    stats = state["stats"]
    assert stats["camera_fps"] == 9.5 and stats["dropped"] == 2
    camera_row = next(r for r in state["health"] if r["node"] == "camera")
    assert camera_row["latency_ms"] == {"encode_p50": 10.0, "encode_p95": 20.0}

    thumb = next(e["thumb"] for e in state["timeline"] if e["kind"] == "keyframe")
    assert _get(base + thumb.lstrip("/"))[1][:2] == b"\xff\xd8"

    answer = json.loads(
        _get(base + "api/ask?q=" + urllib.parse.quote("where did I leave the mug?"))[1]
    )
    assert answer["error"] == ""
    spatial = [h for h in answer["hits"] if h["memory"] == "spatial"]
    assert spatial and spatial[0]["position"] == [5.0, 0.1, 0.8]
    assert spatial[0]["thumb"].startswith("/api/thumbnails/") and spatial[0]["t_ms"] > 0
    keys = json.loads(
        _get(base + "api/ask?q=" + urllib.parse.quote("what did I say about the keys?"))[1]
    )
    assert any("keys" in h["text"] for h in keys["hits"])

    # the map: occupied cells from the points, the camera trail, and the spatial
    # memory's objects and places graph (two places 1 m+ apart, joined by an edge)
    json.loads(_get(base + "api/ask?q=mug")[1])
    m = json.loads(_get(base + "api/map")[1])
    assert len(m["cells"]) > 100 and len(m["trail"]) == 4
    assert m["objects_from"] == "spatial memory" and m["objects"][0]["label"] == "mug"
    assert len(m["places"]) >= 2 and len(m["edges"]) >= 1
    assert m["recalled"] and m["error"] == ""
    # the places graph also rides on the hub's heartbeat (a Rerun node draws it)
    places = hub.heartbeat().info["places"]
    assert len(places["positions"]) == len(m["places"]) and places["edges"] == m["edges"]

    health = json.loads(_get(base + "api/health")[1])
    assert {r["node"] for r in health["nodes"]} >= {"camera"}
    assert health["stats"]["questions"] == 3


def test_websocket_pushes_updates(hub_on_memory):
    from websockets.sync.client import connect

    bus, hub, server = hub_on_memory
    with connect(server.url.replace("http", "ws") + "ws", open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "update" and first["frame"] is None
        _feed(bus, hub, n=2)
        seen_transcript, frame = [], None
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not (len(seen_transcript) >= 2 and frame):
            u = json.loads(ws.recv(timeout=10))
            seen_transcript += u["transcript"]
            frame = u["frame"]
        assert frame is not None and frame["seq"] == 2
        # each entry is sent once, in order
        assert [e["text"] for e in seen_transcript] == [
            "I left the keys on shelf 0",
            "I left the keys on shelf 1",
        ]


def test_ask_without_a_memory_node_reports_it():
    from engram.runtime.apps.web import LiveHub, LiveHubConfig

    bus = InProcBus("live-no-memory")
    hub = LiveHub(LiveHubConfig(query_timeout_s=0.2, heartbeat_hz=0.0), bus=bus)
    answer = hub.ask("where are my keys?")
    assert answer["hits"] == [] and "did not answer on /memory/query" in answer["error"]
    assert hub.ask("  ")["error"] == "empty question"
    bus.close()


def test_live_cli_missing_camera_lists_cameras(capsys):
    rc = main(["live", "--camera", "7", "--mic", "none", "--no-browser", "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "cannot open video device 7" in err and "Available cameras:" in err
    if not list_cameras():
        assert "none found" in err


def test_live_cli_missing_microphone(tmp_path, capsys):
    video = write_video(tmp_path / "v.avi", frames=3)
    mics = list_microphones()
    mic = "no-such-mic-xyz" if mics else "default"
    rc = main(["live", "--camera", str(video), "--mic", mic, "--no-browser", "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    if mics:
        assert "Available input devices:" in err
    else:  # no audio devices on these machines: the message says so
        assert "No audio input devices found" in err and "--mic FILE.wav" in err


def test_live_cli_port_taken(tmp_path, capsys):
    import socket

    video = write_video(tmp_path / "v.avi", frames=3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        rc = main(
            ["live", "--camera", str(video), "--mic", "none", "--no-browser", "--port", str(port)]
        )
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot serve the page on 127.0.0.1:{port}" in err
    assert "choose another --port" in err


def test_live_cli_missing_weights_says_how_to_download(tmp_path, capsys):
    video = write_video(tmp_path / "v.avi", frames=3)
    rc = main(
        [
            "live", "--camera", str(video), "--mic", "none", "--no-browser", "--port", "0",
            "--clip-cache-dir", str(tmp_path / "empty-cache"),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "open_clip weights for 'ViT-B-32'" in err and "not found" in err
    assert "Download them once" in err and "--random-weights" in err


def test_rerun_flag_on_demo(tmp_path):
    rrd = tmp_path / "demo.rrd"
    assert main(["demo", "--synthetic", "--duration-s", "0.5", "--rerun", str(rrd)]) == 0
    assert "/world/camera/synthetic/image" in rrd_entities(rrd)


def test_rerun_flag_on_replay(tmp_path, capsys):
    from engram.runtime.recorder import Recorder

    bus = InProcBus("live-record")
    rec = tmp_path / "run.mcap"
    rng = np.random.default_rng(1)
    with Recorder(bus, ["/frames", "/percepts", "/transcripts"], rec):
        for i in range(3):
            stamp = STAMP + i * 10**8
            bus.publish(
                "/frames",
                Frame(
                    stamp_ns=stamp, camera="front", rgb=rng.integers(0, 255, (24, 32, 3), np.uint8)
                ),
            )
            bus.publish("/percepts", _percept(i, rng).replace(camera="front"))
        bus.publish("/transcripts", Transcript(stamp_ns=STAMP, text="the keys are on the shelf"))
        time.sleep(0.3)
    bus.close()
    rrd = tmp_path / "replay.rrd"
    rc = main(
        ["replay", str(rec), "--as-fast-as-possible", "--start-delay-s", "0", "--rerun", str(rrd)]
    )
    assert rc == 0
    assert "published 7 message(s)" in capsys.readouterr().out
    entities = rrd_entities(rrd)
    assert {"/world/camera/front/image", "/world/objects", "/transcript"} <= entities


def test_bare_rerun_flag_writes_a_file_when_headless(tmp_path, monkeypatch, capsys):
    import sys

    from engram.runtime.apps.live import rerun_config

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert rerun_config(None) is None
    assert rerun_config("x.rrd").save_path == "x.rrd"
    cfg = rerun_config("", name="engram-live")
    if sys.platform.startswith("linux"):
        assert cfg.save_path.startswith("engram-live-") and cfg.save_path.endswith(".rrd")
        assert not cfg.spawn and "no display" in capsys.readouterr().err
    else:
        assert cfg.spawn
