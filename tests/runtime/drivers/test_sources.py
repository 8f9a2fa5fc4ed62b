"""Camera and microphone source nodes on real files (OpenCV video, espeak-ng speech)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from engram.runtime.bus import InProcBus
from engram.runtime.drivers.base import SourceError
from engram.runtime.drivers.camera import (
    CameraSource,
    CameraSourceConfig,
    camera_kind,
    list_cameras,
)
from engram.runtime.drivers.microphone import (
    AUDIO_RATE_HZ,
    MicrophoneSource,
    MicrophoneSourceConfig,
    list_microphones,
    microphone_kind,
)
from engram.runtime.node import load_node_class
from tests.runtime._media import espeak, write_video


def _run_until_finished(node, timeout_s: float = 15.0) -> None:
    with node:
        assert node.finished.wait(timeout_s), f"{node.name} did not finish in {timeout_s} s"


def test_camera_streams_a_video_file_on_its_own_clock(tmp_path):
    path = write_video(tmp_path / "room.avi", frames=20, fps=20.0, size=(64, 48))
    bus = InProcBus("sources-video")
    sub = bus.subscribe("/frames", "queue(100)")
    cam = CameraSource(CameraSourceConfig(device=str(path), camera="room", hfov_deg=90.0), bus=bus)
    _run_until_finished(cam)
    frames = sub.drain()
    assert cam.kind == "file" and cam.fps == pytest.approx(20.0)
    assert len(frames) == 20 == cam.frames_sent
    for f in frames:
        assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
        assert f.camera == "room"
    # the file's clock: exactly 1 / fps apart, in order
    assert set(np.diff([f.stamp_ns for f in frames]).tolist()) == {50_000_000}
    assert [f.seq for f in frames] == list(range(1, 21))
    # BGR -> RGB: the red square is red; the white bar at the top grows by 3 px per frame
    first, last = frames[0], frames[-1]
    r, g, b = first.rgb[44, 5].astype(int)  # inside the square (rows 40.., x 0..40)
    assert r > 150 and b < 80 and g < 80
    bar = [f.rgb[2].mean(axis=-1) for f in (first, last)]  # (W,) grey level of row 2
    assert (bar[0] < 200).all() and (bar[1][:50] > 200).all() and bar[1][62] < 200
    # intrinsics from the field of view (90 deg: fx = W / 2), a level pose 1.2 m up
    assert first.intrinsics[0, 0] == pytest.approx(32.0)
    assert first.intrinsics[0, 2] == pytest.approx(31.5)
    np.testing.assert_allclose(first.world_from_camera[:3, 2], [1.0, 0.0, 0.0])  # looks along +x
    assert first.world_from_camera[2, 3] == pytest.approx(1.2)
    hb = cam.heartbeat()
    assert hb.info["finished"] and hb.info["source_fps"] == 20.0
    bus.close()


def test_camera_rate_cap_loop_and_downscale(tmp_path):
    path = write_video(tmp_path / "clip.avi", frames=10, fps=20.0, size=(64, 48))
    bus = InProcBus("sources-loop")
    sub = bus.subscribe("/frames", "queue(100)")
    cfg = CameraSourceConfig(
        device=str(path), rate_hz=10.0, loop=True, max_frames=8, max_width_px=32
    )
    cam = CameraSource(cfg, bus=bus)
    _run_until_finished(cam)
    frames = sub.drain()
    assert len(frames) == 8
    assert frames[0].rgb.shape == (24, 32, 3)
    # every other frame of a 20 fps file, and the clock runs on across the loops
    assert set(np.diff([f.stamp_ns for f in frames]).tolist()) == {100_000_000}
    assert cam.counters["loops"] >= 1 and cam.counters["frames_skipped"] >= 7
    bus.close()


def test_microphone_streams_a_wav_file_at_16khz(tmp_path):
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = espeak("Where did I leave my keys", tmp_path / "keys.wav")
    raw, rate = sf.read(str(wav), dtype="float32")
    assert rate != AUDIO_RATE_HZ  # espeak-ng writes 22050 Hz: the source must resample
    bus = InProcBus("sources-wav")
    sub = bus.subscribe("/audio", "queue(500)")
    mic = MicrophoneSource(MicrophoneSourceConfig(device=str(wav), chunk_ms=100.0), bus=bus)
    _run_until_finished(mic)
    chunks = sub.drain()
    assert mic.kind == "file" and mic.device_rate_hz == rate
    g = math.gcd(rate, AUDIO_RATE_HZ)
    expected = resample_poly(raw, AUDIO_RATE_HZ // g, rate // g).astype(np.float32)
    assert len(chunks) == math.ceil(len(expected) / 1600)
    for c in chunks[:-1]:
        assert c.pcm.shape == (1600, 1) and c.pcm.dtype == np.float32
    assert all(c.sample_rate_hz == AUDIO_RATE_HZ and c.source == "mic" for c in chunks)
    # stamps: the first sample of each chunk on the file's clock, no gaps, no overlaps
    assert set(np.diff([c.stamp_ns for c in chunks]).tolist()) == {100_000_000}
    pcm = np.concatenate([c.pcm[:, 0] for c in chunks])
    np.testing.assert_allclose(pcm, expected, atol=1e-6)
    assert np.abs(pcm).max() > 0.05  # speech, not silence
    bus.close()


def test_missing_camera_lists_the_available_ones(tmp_path):
    bus = InProcBus("sources-missing-camera")
    with pytest.raises(SourceError) as err:
        CameraSource(CameraSourceConfig(device="7"), bus=bus).configure()
    msg = str(err.value)
    assert "cannot open video device 7" in msg and "Available cameras:" in msg
    assert "--camera FILE|URL" in msg
    cams = list_cameras()
    if cams:
        assert f"{cams[0]['index']} ({cams[0]['width_px']}x" in msg
    else:  # these machines have no camera
        assert "none found" in msg
    with pytest.raises(SourceError, match="no such video file"):
        CameraSource(CameraSourceConfig(device=str(tmp_path / "nope.mp4")), bus=bus).configure()
    bad = tmp_path / "not-a-video.avi"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(SourceError, match="cannot decode"):
        CameraSource(CameraSourceConfig(device=str(bad)), bus=bus).configure()
    bus.close()


def test_a_corrupt_jpeg_or_a_directory_is_an_error_not_an_empty_run(tmp_path):
    """Issue 18, defect 7: a corrupt JPEG ran as "frames 0 ... errors 0"; a directory was
    "no such video file"."""
    import cv2

    bus = InProcBus("sources-corrupt-camera")
    ok, good = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))
    assert ok
    corrupt = tmp_path / "photo.jpg"
    corrupt.write_bytes(good.tobytes()[:20] + b"\x00" * 200)  # a JPEG header, then junk
    with pytest.raises(SourceError, match="no frame could be decoded"):
        CameraSource(CameraSourceConfig(device=str(corrupt)), bus=bus).configure()
    with pytest.raises(SourceError, match="is a directory"):
        CameraSource(CameraSourceConfig(device=str(tmp_path)), bus=bus).configure()
    fine = tmp_path / "fine.jpg"
    fine.write_bytes(good.tobytes())
    node = CameraSource(CameraSourceConfig(device=str(fine), heartbeat_hz=0), bus=bus)
    sub = bus.subscribe(node.topic("frames"), "queue(4)")
    with node:
        _run_until_finished(node)
    assert node.frames_sent == 1  # the frame decoded by open() is not lost
    assert sub.get(timeout_s=1).rgb.shape == (48, 64, 3)
    bus.close()


def test_missing_microphone_says_what_is_available(tmp_path):
    bus = InProcBus("sources-missing-mic")
    mics = list_microphones()
    if mics:  # a machine with audio input: name one that does not exist
        with pytest.raises(SourceError) as err:
            MicrophoneSource(MicrophoneSourceConfig(device="no-such-mic-xyz"), bus=bus).configure()
        assert "Available input devices:" in str(err.value)
        assert mics[0]["name"] in str(err.value)
    else:  # these machines: PortAudio lists no device at all
        with pytest.raises(SourceError) as err:
            MicrophoneSource(MicrophoneSourceConfig(device="default"), bus=bus).configure()
        msg = str(err.value)
        assert "No audio input devices found" in msg and "--mic FILE.wav" in msg
    with pytest.raises(SourceError, match="no such audio file"):
        MicrophoneSource(
            MicrophoneSourceConfig(device=str(tmp_path / "x.wav")), bus=bus
        ).configure()
    bus.close()


def test_microphone_listing_names_each_input_device(monkeypatch):
    """The listing format, with PortAudio's device table stood in for (no audio
    hardware exists on these machines)."""
    import sounddevice as sd

    table = [
        {"name": "HDMI out", "max_input_channels": 0, "default_samplerate": 48000.0},
        {"name": "USB Mic", "max_input_channels": 1, "default_samplerate": 48000.0},
        {"name": "Webcam Mic", "max_input_channels": 2, "default_samplerate": 16000.0},
    ]

    def query_devices(device=None, kind=None):
        if device is None:
            return table
        raise ValueError(f"No input device matching {device!r}")

    monkeypatch.setattr(sd, "query_devices", query_devices)
    monkeypatch.setattr(sd.default, "device", [1, 0])
    assert [m["name"] for m in list_microphones()] == ["USB Mic", "Webcam Mic"]
    bus = InProcBus("sources-listing")
    with pytest.raises(SourceError) as err:
        MicrophoneSource(MicrophoneSourceConfig(device="Studio"), bus=bus).configure()
    msg = str(err.value)
    assert "microphone 'Studio': no such input device" in msg
    assert "1: USB Mic (1 ch, 48000 Hz) [default]; 2: Webcam Mic (2 ch, 16000 Hz)" in msg
    bus.close()


def test_source_kinds_and_registry():
    assert camera_kind("0") == "index" and camera_kind("rtsp://cam/1") == "url"
    assert camera_kind("clip.mp4") == "file"
    assert microphone_kind("default") == "device" and microphone_kind("2") == "device"
    assert microphone_kind("talk.wav") == "file"
    assert load_node_class("camera") is CameraSource
    assert load_node_class("microphone") is MicrophoneSource
    with pytest.raises(ValueError, match="hfov_deg"):
        CameraSource(CameraSourceConfig(hfov_deg=0.0), bus=InProcBus("sources-bad"))


def test_sources_in_a_launch_graph(tmp_path):
    """Node types ``camera`` and ``microphone`` in a declarative graph, validated and run."""
    from engram.runtime.launcher import Launch

    video = write_video(tmp_path / "g.avi", frames=10, fps=20.0, size=(64, 48))
    wav = espeak("hello", tmp_path / "hello.wav")
    graph = {
        "name": "sources",
        "nodes": [
            {
                "name": "camera",
                "type": "camera",
                "params": {"device": str(video)},
                "topics": {"frames": "/camera/frames"},
            },
            {"name": "microphone", "type": "microphone", "params": {"device": str(wav)}},
            {"name": "stats", "type": "frame_stats", "topics": {"frames": "/camera/frames"}},
        ],
    }
    launch = Launch(graph, source="test", status=None)
    assert launch.validate() == []
    audio = None
    launch.start()
    try:
        audio = launch.bus.subscribe("/audio", "queue(100)")
        cam, mic = launch.nodes["camera"], launch.nodes["microphone"]
        assert cam.finished.wait(10.0) and mic.finished.wait(10.0)
        stats = launch.nodes["stats"]
        deadline = time.monotonic() + 5.0
        while stats.heartbeat().counters.get("frames", 0) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stats.heartbeat().counters["frames"] == 10
        assert len(audio.drain()) >= 1
    finally:
        launch.stop()


class _FakeCapture:
    """Stands in for ``cv2.VideoCapture(index)``: there is no camera on these machines.
    Serves 64x48 BGR frames at about 100 fps; reads 5..9 fail (a camera hiccup)."""

    opened: list[object] = []

    def __init__(self, device, *args):
        self.device = device
        self.reads = 0
        _FakeCapture.opened.append(device)

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return isinstance(self.device, int)

    def get(self, prop):
        return 30.0

    def read(self):
        time.sleep(0.01)
        self.reads += 1
        if 5 <= self.reads < 10:
            return False, None
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., 2] = 200  # red in BGR
        return True, img

    def release(self):
        pass


def test_camera_device_path_rate_cap_and_reopen(monkeypatch):
    import cv2

    _FakeCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", _FakeCapture)
    bus = InProcBus("sources-device")
    sub = bus.subscribe("/frames", "queue(100)")
    cfg = CameraSourceConfig(device="0", rate_hz=10.0, max_frames=4, reopen_after_failures=3)
    cam = CameraSource(cfg, bus=bus)
    _run_until_finished(cam)
    frames = sub.drain()
    assert cam.kind == "index" and len(frames) == 4
    assert frames[0].rgb[0, 0].tolist() == [200, 0, 0]  # BGR -> RGB
    gaps_ms = np.diff([f.stamp_ns for f in frames]) / 1e6
    assert (gaps_ms >= 90).all()  # at most rate_hz
    assert cam.counters["frames_skipped"] > 0
    assert cam.counters["read_errors"] >= 3 and cam.counters["reopens"] >= 1
    assert _FakeCapture.opened.count(0) >= 2  # opened again after the failures
    bus.close()


class _FakeStream:
    """Stands in for ``sounddevice.InputStream`` (no audio hardware here): calls the
    callback from its own thread with five 100 ms blocks of a 440 Hz tone at 48 kHz."""

    def __init__(self, *, device, samplerate, channels, dtype, blocksize, callback):
        assert channels == 1 and dtype == "float32"
        self.rate, self.block, self.callback = samplerate, blocksize, callback
        self.thread = None

    def start(self):
        import threading

        def feed():
            t = np.arange(5 * self.block) / self.rate
            tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
            for k in range(5):
                self.callback(
                    tone[k * self.block : (k + 1) * self.block, None], self.block, None, None
                )
                time.sleep(0.02)

        self.thread = threading.Thread(target=feed, daemon=True)
        self.thread.start()

    def stop(self):
        self.thread.join()

    def close(self):
        pass


def test_microphone_device_path_resamples_to_16khz(monkeypatch):
    import sounddevice as sd

    table = [{"name": "USB Mic", "max_input_channels": 1, "default_samplerate": 48000.0}]

    def query_devices(device=None, kind=None):
        return table if device is None and kind is None else table[0]

    def check_input_settings(**kwargs):
        if kwargs.get("samplerate") != 48000:
            raise ValueError("Invalid sample rate")

    monkeypatch.setattr(sd, "query_devices", query_devices)
    monkeypatch.setattr(sd, "check_input_settings", check_input_settings)
    monkeypatch.setattr(sd, "InputStream", _FakeStream)
    monkeypatch.setattr(sd.default, "device", [0, 0])
    bus = InProcBus("sources-mic-device")
    sub = bus.subscribe("/audio", "queue(100)")
    mic = MicrophoneSource(MicrophoneSourceConfig(device="default"), bus=bus)
    with mic:
        deadline = time.monotonic() + 5.0
        while mic.chunks_sent < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    chunks = sub.drain()
    assert mic.kind == "device" and mic.device_name == "USB Mic" and mic.device_rate_hz == 48000
    assert len(chunks) == 5
    assert all(c.pcm.shape == (1600, 1) and c.sample_rate_hz == AUDIO_RATE_HZ for c in chunks)
    assert np.all(np.diff([c.stamp_ns for c in chunks]) > 0)
    # still a 440 Hz tone after resampling
    pcm = np.concatenate([c.pcm[:, 0] for c in chunks])
    peak_hz = np.argmax(np.abs(np.fft.rfft(pcm))) * AUDIO_RATE_HZ / len(pcm)
    assert abs(peak_hz - 440.0) < 5.0
    bus.close()
