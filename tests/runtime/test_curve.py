"""CURVE: keys from ``engram keys``, an allowed peer receives, an unknown key gets nothing."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest
import zmq

from engram.runtime.apps.cli import main as engram_main
from engram.runtime.bus import make_bus
from engram.runtime.keys import make_keys
from engram.runtime.messages import Instruction
from engram.runtime.zmq_broker import serve_broker
from engram.runtime.zmq_curve import CurveConfig

FAST = {"poll_s": 0.02}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_engram_keys_writes_a_loadable_key_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert engram_main(["keys", "robot", "--dir", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    public, secret = tmp_path / "k" / "robot.key", tmp_path / "k" / "robot.key_secret"
    assert str(public) in out and str(secret) in out
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    curve = CurveConfig.from_files(secret, server_public_key_file=public)
    assert curve.public_key in public.read_bytes()
    assert curve.allows(curve.public_key)  # a node always accepts itself
    # refuses to overwrite without --force, then overwrites with a new key
    assert engram_main(["keys", "robot", "--dir", str(tmp_path / "k")]) == 1
    assert engram_main(["keys", "robot", "--dir", str(tmp_path / "k"), "--force"]) == 0
    assert (
        CurveConfig.from_files(secret, server_public_key_file=public).public_key != curve.public_key
    )


def test_curve_config_validation(tmp_path: Path) -> None:
    pub, sec = zmq.curve_keypair()
    with pytest.raises(ValueError, match="secret_key"):
        CurveConfig(pub, b"short", pub)
    with pytest.raises(ValueError, match=r"allowed_client_keys\[0\]"):
        CurveConfig(pub, sec, pub, (b"~" * 40,))
    public_file, _ = make_keys(tmp_path, "a")
    with pytest.raises(ValueError, match="no secret key"):
        CurveConfig.from_files(public_file, server_public_key_file=public_file)
    with pytest.raises(ValueError, match="not a directory"):
        CurveConfig.from_files(
            tmp_path / "a.key_secret",
            server_public_key_file=public_file,
            allowed_keys_dir=tmp_path / "missing",
        )


def test_allowed_peer_receives_unknown_key_gets_nothing(tmp_path: Path) -> None:
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    for name in ("broker", "camera", "planner"):
        public, _ = make_keys(keys, name)
        allowed.mkdir(exist_ok=True)
        (allowed / public.name).write_bytes(public.read_bytes())
    make_keys(keys, "intruder")  # a valid key pair that nobody allowed

    def curve(name: str) -> CurveConfig:
        return CurveConfig.from_files(
            keys / f"{name}.key_secret",
            server_public_key_file=keys / "broker.key",
            allowed_keys_dir=allowed,
        )

    url = f"tcp://127.0.0.1:{_free_port()}"
    broker = serve_broker(url, curve=curve("broker"))
    camera = make_bus(url, curve=curve("camera"), **FAST)
    planner = make_bus(url, curve=curve("planner"), **FAST)
    intruder = make_bus(url, curve=curve("intruder"), startup_wait_s=0.3, **FAST)
    plain = make_bus(url, startup_wait_s=0.3, **FAST)  # no CURVE at all
    ctx = zmq.Context()
    sniffer = ctx.socket(zmq.SUB)  # knows the camera's endpoint and public key
    try:
        planner_sub = planner.subscribe("/secret", "queue(64)")
        intruder_sub = intruder.subscribe("/secret", "queue(64)")
        plain_sub = plain.subscribe("/secret", "queue(64)")
        intruder_key = intruder.curve.public_key
        sniffer.curve_publickey, sniffer.curve_secretkey = intruder_key, intruder.curve.secret_key
        sniffer.curve_serverkey = camera.curve.public_key
        sniffer.subscribe(b"")
        sniffer.connect(camera._lossy_ep)
        camera.serve("/ask", lambda m: Instruction(text="answer"))

        assert camera.wait_for_subscribers("/secret", 1, timeout_s=10)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            camera.publish("/secret", Instruction(text="the code is 1234"))
            time.sleep(0.01)
        assert planner_sub.received > 0
        assert planner_sub.get(timeout_s=1).text == "the code is 1234"
        assert planner.request("/ask", Instruction(), timeout_s=5).text == "answer"

        assert intruder_sub.received == 0 and plain_sub.received == 0
        assert sniffer.poll(100) == 0
        assert camera.subscriber_count("/secret") == 1  # only the planner got through
        assert len(intruder._peers) == 1 and len(plain._peers) == 1  # no peer list either
        with pytest.raises(TimeoutError):
            intruder.request("/ask", Instruction(), timeout_s=0.3)
    finally:
        sniffer.close(linger=0)
        ctx.term()
        for bus in (camera, planner, intruder, plain):
            bus.close()
        broker.close()


def _curve_graph(tmp_path: Path, curve: dict, bus: str | None = None) -> Path:
    import yaml

    graph = {
        "name": "curve_test",
        "shutdown_grace_s": 3.0,
        "curve": curve,
        "nodes": [
            {
                "name": "camera",
                "type": "synthetic_camera",
                "params": {"rate_hz": 50, "width_px": 32, "height_px": 24},
                "topics": {"frames": "/cam/frames"},
                "process": "cam",
            },
            {"name": "stats", "type": "frame_stats", "topics": {"frames": "/cam/frames"}},
        ],
    }
    if bus is not None:
        graph["bus"] = bus
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph), encoding="utf-8")
    return path


def test_launch_graph_with_curve_keys_runs_and_shuts_out_other_keys(tmp_path: Path) -> None:
    from engram.runtime.launcher import Launch

    make_keys(tmp_path / "keys", "robot")
    make_keys(tmp_path / "keys", "intruder")
    # key paths relative to the graph file, as a user writes them
    path = _curve_graph(tmp_path, {"secret_key": "keys/robot.key_secret"})
    lines: list[str] = []
    with Launch.from_yaml(path, status=lines.append) as launch:
        assert launch.bus.curve is not None
        stats = launch.nodes["stats"]
        deadline = time.monotonic() + 30
        while stats.frames < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stats.frames >= 5, "no frames from the camera process over the CURVE bus"
        intruder = make_bus(
            launch.url,
            curve=CurveConfig.from_files(
                tmp_path / "keys" / "intruder.key_secret",
                server_public_key_file=tmp_path / "keys" / "robot.key",
            ),
            startup_wait_s=0.3,
            **FAST,
        )
        plain = make_bus(launch.url, startup_wait_s=0.3, **FAST)
        try:
            subs = [b.subscribe("/cam/frames", "queue(8)") for b in (intruder, plain)]
            time.sleep(1.0)
            before = stats.frames
            time.sleep(0.3)
            assert stats.frames > before  # the camera kept publishing meanwhile
            assert [s.received for s in subs] == [0, 0]
        finally:
            intruder.close()
            plain.close()
    assert any("secured with CURVE" in line for line in lines)


def test_launch_graph_curve_problems_are_named(tmp_path: Path) -> None:
    from engram.runtime.launcher import Launch

    make_keys(tmp_path / "keys", "robot")
    missing = Launch.from_yaml(
        _curve_graph(tmp_path, {"secret_key": "keys/nobody.key_secret", "colour": 1}),
        status=None,
    ).validate()
    assert any("curve.secret_key" in p and "nobody.key_secret" in p for p in missing)
    assert any("unknown key(s) 'colour'" in p for p in missing)
    inproc = Launch.from_yaml(
        _curve_graph(tmp_path, {"secret_key": "keys/robot.key_secret"}, bus="inproc://x"),
        status=None,
    ).validate()
    assert any("curve secures a ZeroMQ bus" in p for p in inproc)
