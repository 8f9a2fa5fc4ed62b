"""Damaged recordings (issue 18, defect 4): a truncated file or one left by a recorder
killed with SIGKILL replays what is intact and says how much was lost; an empty file and a
directory get clear messages; random damage never raises anything but RecordingError."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engram.runtime.bus import InProcBus
from engram.runtime.messages import Frame, Instruction
from engram.runtime.recorder import Recorder
from engram.runtime.replay import (
    RecordingError,
    RecordingReport,
    iter_recording,
    read_recording,
    replay,
)

REPO = Path(__file__).resolve().parents[2]


def _messages(n: int = 40) -> list[tuple[str, object]]:
    rng = np.random.default_rng(0)
    out: list[tuple[str, object]] = []
    for i in range(n):
        out.append(("/t", Instruction(seq=i + 1, stamp_ns=10**9 + i, text=f"step {i}")))
        out.append(
            (
                "/frames",
                Frame(
                    seq=i + 1,
                    stamp_ns=10**9 + i,
                    rgb=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                    depth=np.full((16, 16), 1.0 + i, np.float32),
                ),
            )
        )
    return out


def _record(path: Path, messages, *, chunk_size_bytes: int = 4096) -> None:
    bus = InProcBus("damage")
    rec = Recorder(
        bus, ["/t", "/frames"], path, image_format="raw", chunk_size_bytes=chunk_size_bytes
    )
    with rec:
        for topic, msg in messages:
            rec.write(topic, msg)
    bus.close()


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, list]:
    path = tmp_path_factory.mktemp("rec") / "run.mcap"
    messages = _messages()
    _record(path, messages)
    return path, messages


def test_truncated_file_replays_the_intact_chunks_and_says_what_was_lost(recording, tmp_path):
    path, messages = recording
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 6 // 10])  # cut inside the data section
    report = RecordingReport()
    got = [(r.topic, r.msg) for r in iter_recording(cut, report=report)]
    assert 10 < len(got) < len(messages)
    assert got == messages[: len(got)]  # an intact prefix, in order, exact
    assert not report.finished and report.damaged
    assert report.lost_bytes == cut.stat().st_size - report.intact_bytes > 0
    assert "truncated" in report.summary() and f"{report.lost_bytes} bytes" in report.summary()

    bus = InProcBus("cut")
    sub = bus.subscribe("/t", "all(256)")
    replay_report = RecordingReport()
    assert replay(cut, bus, rate=None, report=replay_report) == len(got)
    assert len(sub.drain()) == sum(1 for t, _ in got if t == "/t")
    assert replay_report.lost_bytes == report.lost_bytes
    bus.close()


def test_replay_command_reports_the_loss(recording, tmp_path, capsys):
    from engram.runtime.apps.cli import main

    path, _ = recording
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(path.read_bytes()[:-700])  # the summary and the last chunk
    rc = main(
        ["replay", str(cut), "--as-fast-as-possible", "--start-delay-s", "0", "--bus", "inproc://x"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "published" in captured.out
    assert "truncated" in captured.err and "bytes at the end were lost" in captured.err


def test_damaged_chunk_is_skipped_and_counted(recording, tmp_path):
    path, messages = recording
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # one flipped byte inside a chunk's compressed data
    bad = tmp_path / "flipped.mcap"
    bad.write_bytes(bytes(data))
    report = RecordingReport()
    got = [r.msg for r in iter_recording(bad, report=report)]
    assert len(messages) // 2 < len(got) < len(messages)
    assert report.lost_chunks + report.lost_messages >= 1 and report.damaged


def test_empty_file_and_directory_get_clear_messages(tmp_path):
    empty = tmp_path / "empty.mcap"
    empty.write_bytes(b"")
    with pytest.raises(RecordingError, match=r"empty file \(0 bytes\)"):
        list(read_recording(empty))
    with pytest.raises(RecordingError, match="is a directory"):
        list(read_recording(tmp_path))
    header_only = tmp_path / "header.mcap"
    header_only.write_bytes(b"\x89MCAP0\r\n")
    report = RecordingReport()
    assert list(iter_recording(header_only, report=report)) == []
    assert not report.finished


_KILLED_RECORDER = textwrap.dedent(
    """
    import sys, time
    from engram.runtime.bus import InProcBus
    from engram.runtime.messages import Instruction
    from engram.runtime.recorder import Recorder

    bus = InProcBus("killed")
    rec = Recorder(bus, ["/t"], sys.argv[1], flush_interval_s=0.1).start()
    i = 0
    while True:
        i += 1
        bus.publish("/t", Instruction(seq=i, text=f"m{i}"))
        if i == 50:
            time.sleep(0.5)  # at least one flush after message 50
            print("50", flush=True)
        time.sleep(0.005)
    """
)


def test_recording_of_a_killed_recorder_survives(tmp_path):
    """SIGKILL leaves no chance to finish the file: the periodic flush makes it readable."""
    path = tmp_path / "killed.mcap"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RECORDER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "50"
        time.sleep(0.2)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    report = RecordingReport()
    texts = [r.msg.text for r in iter_recording(path, report=report)]
    assert len(texts) >= 50
    assert texts == [f"m{i}" for i in range(1, len(texts) + 1)]
    assert not report.finished


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=st.data())
def test_fuzzed_recordings_yield_messages_or_a_recording_error(recording, tmp_path, data):
    """Truncations, flipped bytes, inserted and overwritten runs: only RecordingError."""
    path, messages = recording
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["truncate", "flip", "overwrite", "insert"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "truncate":
        raw = raw[:pos]
    elif kind == "flip":
        for p in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[p] ^= data.draw(st.integers(1, 255))
    elif kind == "overwrite":
        junk = data.draw(st.binary(min_size=1, max_size=64))
        raw[pos : pos + len(junk)] = junk
    else:
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=64))
    fuzzed = tmp_path / "fuzzed.mcap"
    fuzzed.write_bytes(bytes(raw))
    try:
        got = list(iter_recording(fuzzed))
    except RecordingError:
        return
    assert len(got) <= len(messages)
    if kind == "truncate":
        assert [(r.topic, r.msg) for r in got] == messages[: len(got)]


def test_repair_rebuilds_a_finished_file_that_standard_readers_open(recording, tmp_path, capsys):
    from mcap.reader import make_reader

    from engram.runtime.apps.cli import main

    path, messages = recording
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 7 // 10])
    fixed = tmp_path / "fixed.mcap"
    assert main(["replay", str(cut), "--repair", str(fixed)]) == 0
    assert "truncated" in capsys.readouterr().out
    with open(fixed, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary is not None and summary.statistics.message_count > 0
    report = RecordingReport()
    got = [(r.topic, r.msg) for r in iter_recording(fixed, report=report)]
    assert report.finished and not report.damaged
    assert 0 < len(got) < len(messages) and got == messages[: len(got)]
