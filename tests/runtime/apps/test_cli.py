"""The engram command line, run as real processes: help, imports, launch --check, record/replay, demo."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engram.runtime.apps import cli
from engram.runtime.bus import make_bus
from engram.runtime.messages import Frame, Instruction
from engram.runtime.replay import read_recording

REPO = Path(__file__).resolve().parents[3]
GRAPHS = Path(__file__).parents[1] / "graphs"
ENGRAM = [sys.executable, "-m", "engram.runtime.apps.cli"]


def engram(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENGRAM, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def test_help_and_launch_help():
    script = Path(sys.executable).parent / "engram"
    top = subprocess.run(
        [
            str(script) if script.exists() else sys.executable,
            *([] if script.exists() else ["-m", "engram.runtime.apps.cli"]),
            "--help",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert top.returncode == 0, top.stderr
    for command in ["demo", "launch", "record", "replay"]:
        assert command in top.stdout
    launch = engram("launch", "--help")
    assert launch.returncode == 0, launch.stderr
    assert "--check" in launch.stdout and "graph" in launch.stdout


def test_cli_and_runtime_import_no_heavy_modules():
    code = (
        "import engram.runtime.apps.cli, engram.runtime.launcher, engram.runtime.node, engram.runtime.bus; "
        "import engram.runtime.supervisor, engram.runtime.recorder, engram.runtime.replay, engram.runtime.testing; "
        "import engram.runtime.apps.demo, engram.runtime.demo_nodes, engram.runtime.zmq_bus, engram.runtime.codec; import sys; "
        "assert not {'torch','open_clip','whisper','open3d','mujoco'} & set(sys.modules), "
        "sorted({'torch','open_clip','whisper','open3d','mujoco'} & set(sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_launch_check_exit_codes():
    ok = engram("launch", "--check", "launch/demo_multiprocess.yaml")
    assert ok.returncode == 0, ok.stderr
    assert "OK (2 node(s), 1 process group(s))" in ok.stdout
    bad = engram("launch", "--check", str(GRAPHS / "invalid.yaml"))
    assert bad.returncode == 2
    assert "4 problem(s)" in bad.stderr
    assert (
        "unknown node type 'velodyne'" in bad.stderr and "duplicate node name 'stats'" in bad.stderr
    )
    # in-process for the rest (same code path, no interpreter start-up)
    assert cli.main(["launch", "--check", "launch/demo.yaml"]) == 0
    assert cli.main(["launch", "--check", str(GRAPHS / "missing.yaml")]) == 2


def test_launch_runs_for_a_duration_and_exits_cleanly():
    result = engram("launch", "launch/demo.yaml", "--duration-s", "0.5")
    assert result.returncode == 0, result.stderr
    assert "bus inproc://demo" in result.stderr and "stopped" in result.stderr


def test_record_and_replay_commands_across_processes(tmp_path):
    from engram.runtime.zmq_broker import serve_broker

    url = f"ipc://{tmp_path}/bus"
    out = tmp_path / "run.mcap"
    broker = serve_broker(url)
    bus = make_bus(url)
    recorder = replayer = None
    try:
        recorder = subprocess.Popen(
            [*ENGRAM, "record", "--bus", url, "-o", str(out), "/t", "/frames"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert bus.wait_for_subscribers("/t", timeout_s=30), "recorder never subscribed"
        assert bus.wait_for_subscribers("/frames", timeout_s=10)
        sent = []
        for i in range(20):
            msg = Instruction(text=f"step {i}", seq=i + 1)
            bus.publish("/t", msg)
            sent.append(("/t", msg))
            if i % 5 == 0:
                frame = Frame(seq=i + 1, rgb=np.full((48, 64, 3), i, np.uint8))
                bus.publish("/frames", frame)
                sent.append(("/frames", frame))
        time.sleep(0.3)
        recorder.send_signal(signal.SIGINT)
        rec_out, rec_err = recorder.communicate(timeout=20)
        assert recorder.returncode == 0, rec_err
        assert "wrote 24 message(s)" in rec_out
        got = list(read_recording(out))
        for topic in ("/t", "/frames"):
            assert [m for t, m in got if t == topic] == [m for t, m in sent if t == topic]

        sub = bus.subscribe("/replayed", "all(64)")
        replayer = subprocess.run(
            [
                *ENGRAM,
                "replay",
                str(out),
                "--bus",
                url,
                "--as-fast-as-possible",
                "--topic-map",
                "/t=/replayed",
                "--start-delay-s",
                "1.0",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert replayer.returncode == 0, replayer.stderr
        assert "published 24 message(s)" in replayer.stdout
        received = []
        while len(received) < 20:
            msg = sub.get(5.0)
            assert msg is not None, f"only {len(received)} of 20 replayed messages arrived"
            received.append(msg)
        assert received == [m for t, m in sent if t == "/t"]
    finally:
        for proc in (recorder,):
            if proc is not None and proc.poll() is None:
                proc.kill()
        bus.close()
        broker.close()


def test_record_and_replay_need_a_bus(monkeypatch, capsys):
    monkeypatch.delenv("ENGRAM_BUS", raising=False)
    with pytest.raises(SystemExit, match="no bus given"):
        cli.main(["record", "/t"])
    with pytest.raises(SystemExit, match="--topic-map wants OLD=NEW"):
        cli.main(["replay", "x.mcap", "--bus", "inproc://cli", "--topic-map", "oops"])


def _report_number(text: str, label: str) -> int:
    return int(text.split(label)[1].split()[0])


def test_demo_synthetic_multiprocess_reports_frames():
    result = engram("demo", "--synthetic", "--multiprocess", "--duration-s", "1")
    assert result.returncode == 0, result.stderr
    assert "several processes" in result.stdout and "latency" in result.stdout
    assert _report_number(result.stdout, "frames sent") == 30  # 30 Hz x 1 s
    assert _report_number(result.stdout, "frames received") > 0


def test_demo_synthetic_in_process_loses_nothing(capsys):
    from engram.runtime.apps.demo import SYNTHETIC_GRAPH, run_synthetic

    assert run_synthetic(SYNTHETIC_GRAPH, duration_s=0.5) == 0
    out = capsys.readouterr().out
    assert _report_number(out, "frames sent") == 15
    assert _report_number(out, "frames received") == 15
    assert _report_number(out, "lost") == 0


def test_demo_refuses_an_unknown_expert_checkpoint_before_starting(capsys, tmp_path):
    out = tmp_path / "demo"
    code = cli.main(
        ["demo", "--executor", "expert", "--checkpoint", "no-such-ckpt", "--out", str(out)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no-such-ckpt" in err and "tabletop" in err  # names the shipped ones
    assert not out.exists()  # nothing started, nothing written
