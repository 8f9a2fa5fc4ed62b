"""Shared-memory payloads between real OS processes (runtime/shm.py): frames over an ipc://
ZmqBus arrive through shared memory and intact; a stuck reader never blocks the writer
and its frames are never overwritten; a killed reader releases its slots; a killed
writer's ring is swept; overwritten slots and bad descriptors are detected; a launch
graph with process groups uses it without configuration."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from engram.runtime.codec import DecodeError, decode, encode
from engram.runtime.launcher import Launch
from engram.runtime.messages import Frame
from engram.runtime.shm import (
    DESCRIPTOR_MAGIC,
    SHM_DIR,
    ShmConfig,
    ShmDropped,
    ShmError,
    ShmReader,
    ShmWriter,
    _descriptor,
    _parse_descriptor,
    is_descriptor,
    shm_supported,
    sweep_stale_rings,
)
from engram.runtime.zmq_broker import serve_broker
from engram.runtime.zmq_bus import ZmqBus

pytestmark = pytest.mark.skipif(not shm_supported(), reason="needs Linux x86-64 /dev/shm")

SPAWN = mp.get_context("spawn")
FAST = {"poll_s": 0.02}


def _frame(value: int, shape: tuple[int, int] = (480, 640)) -> Frame:
    return Frame(rgb=np.full((*shape, 3), value % 256, np.uint8), camera=f"c{value}")


def _wrap(writer: ShmWriter, value: int, topic: str = "/f") -> list | None:
    out = writer.wrap(topic, [topic.encode() + b"\0", *encode(_frame(value))])
    return None if out is None else [bytes(out[1]), bytes(out[2])]


# ---------------------------------------------------------------------------
# through the bus, across processes


def _publish(url: str, n: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    bus = ZmqBus(url, **FAST)
    try:
        assert bus.wait_for_subscribers("/frames", 2, timeout_s=20)
        time.sleep(0.2)
        for i in range(n):
            bus.publish("/frames", _frame(i))
            bus.publish("/frames", _frame(i, (8, 8)))  # small: stays inline
            time.sleep(0.01)
        assert bus._shm is not None
        out.put((bus._shm.sent, bus._shm.inline))
        time.sleep(0.5)
    finally:
        bus.close()


def test_frames_cross_processes_through_shared_memory_intact_and_read_only(ipc_url):
    broker = serve_broker(ipc_url)
    bus = ZmqBus(ipc_url, **FAST)
    out = SPAWN.Queue()
    child = SPAWN.Process(target=_publish, args=(ipc_url, 20, out), daemon=True)
    try:
        lossy = bus.subscribe("/frames", "queue(64)")
        lossless = bus.subscribe("/frames", "all(64)")
        child.start()
        got: dict[str, list[Frame]] = {"lossy": [], "lossless": []}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(len(v) for v in got.values()) < 40:
            for name, sub in (("lossy", lossy), ("lossless", lossless)):
                msg = sub.get(timeout_s=0.05)
                if msg is not None:
                    got[name].append(msg)
        sent, inline = out.get(timeout=20)
        for name, frames in got.items():
            big = [f for f in frames if f.rgb.shape == (480, 640, 3)]
            assert len(big) == 20, (name, len(frames))
            for frame in big:
                value = int(frame.camera[1:])
                assert np.all(frame.rgb == value), name
                assert not frame.rgb.flags.writeable  # nobody can write into a shared slot
        assert (sent, inline) == (20, 0)  # every large frame, no small one, went through shm
        readers = [r.shm for r in bus._receivers]
        assert sum(r.zero_copy + r.copied for r in readers) == 40
        assert lossy.dropped == 0 and lossless.lost == 0
    finally:
        child.join(timeout=20)
        if child.is_alive():
            child.kill()
        bus.close()
        broker.close()


# ---------------------------------------------------------------------------
# a stuck reader, a killed reader


def _stuck_reader(descriptors: list, conn) -> None:  # noqa: ANN001 - a Connection
    reader = ShmReader(lossless=True, config=ShmConfig(slots=4, pin_budget=4))
    held = [decode(reader.resolve(d)) for d in descriptors]  # pinned: zero-copy views
    conn.send([reader.zero_copy, reader.copied])
    conn.recv()  # "check", after the writer has tried to publish many more
    conn.send(
        [int(f.rgb[0, 0, 0]) for f in held] + [bool(np.all(f.rgb == f.rgb[0, 0, 0])) for f in held]
    )
    time.sleep(60)  # stuck until killed


def test_stuck_reader_never_blocks_writer_and_its_frames_stay_intact_then_death_frees_slots():
    cfg = ShmConfig(slots=4, pin_budget=4, alive_check_s=0.05)
    writer = ShmWriter(cfg)
    mine, theirs = SPAWN.Pipe()
    try:
        descriptors = [_wrap(writer, i) for i in range(4)]
        assert all(d is not None for d in descriptors)
        child = SPAWN.Process(target=_stuck_reader, args=(descriptors, theirs), daemon=True)
        child.start()
        assert mine.poll(30)
        # two held as zero-copy views (pins; half the slots at most), two copied out
        assert mine.recv() == [2, 2]
        t0 = time.monotonic()
        results = [_wrap(writer, 100 + i) for i in range(50)]
        elapsed = time.monotonic() - t0
        # the two unpinned slots take two messages, which the stuck "all" reader is then
        # owed (it never reads them); after that no slot is free: inline, never a wait
        assert [r is not None for r in results] == [True, True] + [False] * 48
        assert writer.inline == 48 and elapsed < 2.0
        mine.send("check")
        assert mine.poll(10)
        assert mine.recv() == [0, 1, 2, 3, True, True, True, True]  # untouched
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=10)
        time.sleep(0.1)  # past alive_check_s
        assert all(_wrap(writer, 200 + i) is not None for i in range(4))  # released
    finally:
        if child.is_alive():
            child.kill()
        writer.close()


def test_lossless_reader_slots_are_kept_until_read_and_lossy_ones_are_overwritten():
    cfg = ShmConfig(slots=4)
    writer = ShmWriter(cfg)
    lossless, lossy = ShmReader(True, cfg), ShmReader(False, cfg)
    try:
        first = _wrap(writer, 0)
        assert first is not None
        decode(lossless.resolve(first))  # claims an entry, cursor = its seq
        decode(lossy.resolve(first))  # both have read it: message 1 reuses its slot 0
        pending = [_wrap(writer, i) for i in range(1, 5)]  # slot 0, then slots 1..3
        assert all(p is not None for p in pending)
        assert _wrap(writer, 5) is None  # every slot is owed to the lossless reader
        for i, p in enumerate(pending, 1):
            frame = decode(lossless.frames(p))
            assert int(frame.rgb[0, 0, 0]) == i
            with pytest.raises(ValueError):  # a zero-copy view of the slot stays read-only
                frame.rgb.flags.writeable = True
            del frame
        assert _slot(pending[0]) == _slot(first) == 0
        # read: slots free again; the lossy reader lags (read 0 only), so round robin
        assert _slot(_wrap(writer, 6)) == 0
        with pytest.raises(ShmDropped):  # the lossy reader was too late for message 1
            lossy.resolve(pending[0])
    finally:
        lossless.close()
        lossy.close()
        writer.close()


def _slot(desc: list | None) -> int:
    assert desc is not None and is_descriptor(desc[0])
    return _parse_descriptor(memoryview(desc[0])[len(DESCRIPTOR_MAGIC) :])[1]


def test_a_reader_that_keeps_up_gets_the_same_warm_slot_and_a_held_view_moves_the_writer():
    writer, reader = ShmWriter(ShmConfig(slots=4)), ShmReader(False, ShmConfig(slots=4))
    try:
        slots = []
        for i in range(5):
            desc = _wrap(writer, i)
            slots.append(_slot(desc))
            assert int(decode(reader.frames(desc)).rgb[0, 0, 0]) == i  # read, view dropped
        assert slots == [0] * 5  # the newest slot again: no cache-cold copy
        held = decode(reader.frames(_wrap(writer, 5)))  # a view kept: its slot is pinned
        nxt = _wrap(writer, 6)
        assert _slot(nxt) != slots[0] and int(held.rgb[0, 0, 0]) == 5  # never overwritten
    finally:
        reader.close()
        writer.close()


def test_a_reader_holding_the_message_it_works_on_has_the_writer_alternate_two_slots():
    # a consumer keeps the message it works on until it gets the next; the writer then
    # takes the warmest slot the reader has read and let go of, not the next of 16 in turn
    writer, reader = ShmWriter(ShmConfig(slots=16)), ShmReader(False, ShmConfig(slots=16))
    try:
        slots, held = [], None
        for i in range(12):
            desc = _wrap(writer, i)
            slots.append(_slot(desc))
            held = decode(reader.frames(desc))  # the previous one is let go of only now
            assert int(held.rgb[0, 0, 0]) == i
        assert len(set(slots)) == 2 and slots[0] != slots[1], slots
    finally:
        del held
        reader.close()
        writer.close()


def test_a_reader_without_a_table_entry_yet_still_gets_its_first_messages():
    # the bus says how many subscriptions a message goes to; while fewer readers are in
    # the table, the writer takes no slot early (a new reader has not claimed an entry)
    def run(readers: int) -> list[int | None]:
        cfg = ShmConfig(slots=4)
        writer, early, late = ShmWriter(cfg), ShmReader(True, cfg), ShmReader(True, cfg)
        try:
            sent = []
            for i in range(3):
                out = writer.wrap("/f", [b"/f\0", *encode(_frame(i))], readers)
                assert out is not None
                sent.append([bytes(out[1]), bytes(out[2])])
                decode(early.frames(sent[-1]))  # read at once and let go
            got: list[int | None] = []
            for desc in sent:  # the late reader's first messages, read now
                try:
                    got.append(int(decode(late.frames(desc)).rgb[0, 0, 0]))
                except ShmDropped:
                    got.append(None)
            return got
        finally:
            early.close()
            late.close()
            writer.close()

    assert run(readers=2) == [0, 1, 2]  # two subscriptions, one in the table: no reuse
    assert run(readers=0) == [None, None, 2]  # count unknown: the warm slot, reused


def test_loaned_arrays_are_published_without_a_copy_and_unpublished_loans_come_back():
    cfg = ShmConfig(slots=4)
    writer, reader = ShmWriter(cfg), ShmReader(False, cfg)
    try:
        for _ in range(10):  # loans never published are given back by the next one
            assert writer.loan("/f", [((480, 640, 3), np.uint8)]) is not None
        (rgb,) = writer.loan("/f", [((480, 640, 3), np.uint8)])
        rgb[:] = 7  # "the camera decodes into it"
        rgb[0, 0] = [1, 2, 3]
        msg = Frame(rgb=rgb, camera="loan")
        assert msg.rgb is rgb  # the message holds the loaned view itself
        desc = writer.wrap("/f", [b"/f\0", *encode(msg)])
        assert desc is not None and writer.loaned == 1 and writer.sent == 1
        assert not rgb.flags.writeable  # the slot belongs to the readers now
        got = decode(reader.frames([bytes(desc[1]), bytes(desc[2])]))
        assert got.camera == "loan" and got.rgb[0, 0].tolist() == [1, 2, 3]
        assert int(got.rgb[1:].min()) == int(got.rgb[1:].max()) == 7
        # a loan whose arrays are not the message's: the message is copied as usual
        writer.loan("/f", [((480, 640, 3), np.uint8)])
        other = writer.wrap("/f", [b"/f\0", *encode(_frame(9))])
        assert other is not None and writer.loaned == 1 and writer.sent == 2
        assert int(decode(reader.frames([bytes(other[1]), bytes(other[2])])).rgb[5, 5, 0]) == 9
        assert writer.loan("/f", [((4, 4), np.uint8)]) is None  # small: no shared memory
    finally:
        reader.close()
        writer.close()


def test_loans_of_changing_shapes_are_laid_out_right_and_bad_shapes_refused():
    """Loan layouts are remembered per distinct specs: each shape and dtype still gets its
    own layout, several arrays do not overlap, and the codec's frames of them are in place
    (published without a copy)."""
    writer, reader = ShmWriter(ShmConfig(slots=4)), ShmReader(False, ShmConfig(slots=4))
    try:
        for h, w in ((480, 640), (240, 320), (480, 640), (600, 800)):
            for _ in range(2):
                rgb, depth = writer.loan("/f", [((h, w, 3), np.uint8), ((h, w), "float32")])
                assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
                assert depth.shape == (h, w) and depth.dtype == np.float32
                rgb[:] = h % 251
                depth[:] = 1.5  # would overwrite the image if they overlapped
                loaned = writer.loaned
                desc = writer.wrap("/f", [b"/f\0", *encode(Frame(rgb=rgb, depth=depth))])
                assert desc is not None and writer.loaned == loaned + 1  # in place
                got = decode(reader.frames([bytes(desc[1]), bytes(desc[2])]))
                assert int(got.rgb.min()) == int(got.rgb.max()) == h % 251
                assert float(got.depth.min()) == float(got.depth.max()) == 1.5
        # a part of a loan array: copied unless it starts where the loan did
        for part, in_place in ((slice(0, 240), 1), (slice(240, 480), 0)):
            (rgb,) = writer.loan("/f", [((480, 640, 3), np.uint8)])
            rgb[:240] = 11
            rgb[240:] = 22
            loaned = writer.loaned
            desc = writer.wrap("/f", [b"/f\0", *encode(Frame(rgb=rgb[part]))])
            assert desc is not None and writer.loaned == loaned + in_place
            got = decode(reader.frames([bytes(desc[1]), bytes(desc[2])]))
            assert got.rgb.shape == (240, 640, 3)
            assert int(got.rgb.min()) == int(got.rgb.max()) == (11 if in_place else 22)
        (flat,) = writer.loan("/f", [(200_000, np.uint8)])  # an int shape
        assert flat.shape == (200_000,)
        with pytest.raises(ValueError, match="negative dimension"):
            writer.loan("/f", [((480, -640, 3), np.uint8)])
    finally:
        reader.close()
        writer.close()


def test_bus_loan_on_ipc_lies_in_shared_memory_and_is_plain_elsewhere(ipc_url, monkeypatch):
    broker = serve_broker(ipc_url)
    bus = ZmqBus(ipc_url, **FAST)
    monkeypatch.setenv("ENGRAM_SHM", "0")
    plain_bus = ZmqBus(ipc_url, **FAST)
    try:
        sub = bus.subscribe("/frames", "all(4)")
        assert bus.wait_for_subscribers("/frames", 1, timeout_s=10)
        (rgb,) = bus.loan("/frames", ((480, 640, 3), np.uint8))
        rgb[:] = 42
        bus.publish("/frames", Frame(rgb=rgb))
        got = sub.get(timeout_s=10)
        assert got is not None and int(got.rgb.min()) == int(got.rgb.max()) == 42
        assert bus._shm is not None and bus._shm.loaned == 1
        (plain,) = plain_bus.loan("/frames", ((480, 640, 3), np.uint8))
        assert plain_bus._shm is None and plain.shape == (480, 640, 3) and plain.flags.writeable
    finally:
        plain_bus.close()
        bus.close()
        broker.close()


def test_synthetic_camera_builds_its_frames_in_the_loaned_slot(ipc_url):
    """The camera source renders into ``Node.loan`` arrays: on an ipc bus every frame it
    publishes is sent without a copy, and what arrives equals what it rendered."""
    from engram.runtime.demo_nodes import SyntheticCamera

    broker = serve_broker(ipc_url)
    bus = ZmqBus(ipc_url, **FAST)
    try:
        cam = SyntheticCamera(SyntheticCamera.Config(width_px=320, height_px=240), bus=bus)
        sub = bus.subscribe(cam.topic("frames"), "all(8)")
        assert bus.wait_for_subscribers(cam.topic("frames"), 1, timeout_s=10)
        cam.on_configure()
        for i in range(3):
            frame = cam.make_frame(i)
            expected_rgb, expected_depth = frame.rgb.copy(), frame.depth.copy()
            cam.publish("frames", frame)
            got = sub.get(timeout_s=10)
            assert got is not None and np.array_equal(got.rgb, expected_rgb)
            assert np.array_equal(got.depth, expected_depth)
        assert bus._shm is not None and bus._shm.loaned == 3  # no frame was copied
    finally:
        bus.close()
        broker.close()


# ---------------------------------------------------------------------------
# stale rings, bad input


def _doomed_writer(conn) -> None:  # noqa: ANN001
    writer = ShmWriter()
    assert _wrap(writer, 1) is not None
    conn.send(next(iter(writer._rings.values())).name)
    time.sleep(60)


def test_ring_of_a_killed_writer_is_swept_and_a_live_one_is_kept():
    live = ShmWriter()
    mine, theirs = SPAWN.Pipe()
    child = SPAWN.Process(target=_doomed_writer, args=(theirs,), daemon=True)
    try:
        assert _wrap(live, 1) is not None
        live_name = next(iter(live._rings.values())).name
        child.start()
        assert mine.poll(30)
        dead_name = mine.recv()
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=10)
        assert (SHM_DIR / dead_name).exists()  # SIGKILL left it behind
        assert sweep_stale_rings(min_age_s=0) >= 1
        assert not (SHM_DIR / dead_name).exists()
        assert (SHM_DIR / live_name).exists()
    finally:
        if child.is_alive():
            child.kill()
        live.close()
    assert not (SHM_DIR / live_name).exists()  # close() removes its own rings


def test_bad_descriptors_are_clear_errors():
    reader = ShmReader(False)
    header = encode(_frame(0, (8, 8)))[0]
    for desc in (
        DESCRIPTOR_MAGIC + b"garbage",
        DESCRIPTOR_MAGIC + b"\x94\xa3abc\x00\x02\x90" * 3,
        _descriptor(b"engram-shm.1.0123456789ab.1", 0, 2, [10])[:-1],  # cut short
        _descriptor(b"\xff\xfe", 0, 2, [10]),  # a name that is not text
    ):
        with pytest.raises(ShmError, match=r"bad shared-memory descriptor|bad ring"):
            reader.resolve([desc, header])
    traversal = _descriptor(b"../../etc/passwd", 0, 2, [10])
    with pytest.raises(DecodeError, match="bad ring"):
        reader.resolve([traversal, header])
    missing = _descriptor(b"engram-shm.1.0123456789ab.1", 0, 2, [10])
    with pytest.raises(ShmDropped, match="gone"):
        reader.resolve([missing, header])
    assert is_descriptor(missing) and not is_descriptor(header)
    with pytest.raises(ValueError, match="slots"):
        ShmConfig(slots=1)


# ---------------------------------------------------------------------------
# engram launch: no configuration


def test_launch_graph_with_process_groups_uses_shared_memory_without_configuration():
    graph = {
        "name": "shm_launch",
        "shutdown_grace_s": 3.0,
        "nodes": [
            {
                "name": "camera",
                "type": "synthetic_camera",
                "params": {"rate_hz": 30, "width_px": 320, "height_px": 240},
                "process": "cam",
            },
            {"name": "stats", "type": "frame_stats"},  # a thread of the launcher
        ],
    }
    with Launch(graph, status=None) as launch:
        deadline = time.monotonic() + 30
        stats = launch.nodes["stats"]
        while time.monotonic() < deadline and stats.frames < 10:  # type: ignore[attr-defined]
            time.sleep(0.05)
        pid = launch.status()["camera"]["pid"]
        rings = [p.name for p in Path(SHM_DIR).glob(f"engram-shm.{pid}.*")]
        assert stats.frames >= 10 and stats.last_shape == (240, 320, 3)  # type: ignore[attr-defined]
        assert launch.url.startswith("ipc://")
        assert rings, "the camera process published without a shared-memory ring"
        readers = [r.shm for r in launch.bus._receivers]  # type: ignore[union-attr]
        assert sum(r.zero_copy + r.copied for r in readers) >= 10
    assert not any(Path(SHM_DIR).glob(f"engram-shm.{pid}.*"))  # removed on clean stop
