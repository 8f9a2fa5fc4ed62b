"""engram replay --rerun: every frame reaches the .rrd even as fast as possible, and a
recording whose topics the Rerun view does not listen on gets a warning naming the
--topic-map that fixes it (before: a silently empty .rrd)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from engram.runtime.apps.cli import main
from engram.runtime.bus import InProcBus
from engram.runtime.messages import Frame
from engram.runtime.recorder import Recorder

N = 40


def _recording(path: Path) -> Path:
    bus = InProcBus("rec-rerun")
    rec = Recorder(bus, ["/camera/frames"], path)
    rng = np.random.default_rng(0)
    with rec:
        for i in range(N):
            frame = Frame(
                stamp_ns=i * 33_000_000,
                seq=i + 1,
                camera="front",
                rgb=rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
            )
            rec.write("/camera/frames", frame)
    bus.close()
    return path


def _image_rows(rrd: Path) -> int:
    exe = Path(sys.executable).with_name("rerun")
    out = subprocess.run(
        [str(exe), "rrd", "print", str(rrd)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return sum(
        int(m.group(1))
        for m in re.finditer(
            r"with (\d+) rows .* - /world/camera/front/image - .*EncodedImage", out
        )
    )


def test_replay_to_rerun_warns_about_unmapped_topics_then_keeps_every_frame(tmp_path, capsys):
    rec = _recording(tmp_path / "multi.mcap")
    rrd = tmp_path / "empty.rrd"
    argv = ["replay", str(rec), "--as-fast-as-possible", "--start-delay-s", "0", "--rerun"]
    assert main([*argv, str(rrd)]) == 0
    err = capsys.readouterr().err
    assert "/camera/frames carries 40 Frame message(s)" in err
    assert "--topic-map /camera/frames=/frames" in err
    assert _image_rows(rrd) == 0

    rrd = tmp_path / "full.rrd"
    assert main([*argv, str(rrd), "--topic-map", "/camera/frames=/frames", "/nope=/x"]) == 0
    captured = capsys.readouterr()
    assert "carries" not in captured.err
    assert "--topic-map /nope=/x: the recording has no messages on /nope" in captured.err
    assert "/camera/frames -> /frames: 40 Frame" in captured.out
    assert _image_rows(rrd) == N  # lossless: none dropped at full speed
