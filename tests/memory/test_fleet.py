"""Fleet memory on Milvus Lite: four robots (four MemorySystems, one thread each) share
one Milvus Lite server process; each recalls the others' observations with the right
robot in the provenance; the server is SIGKILLed mid-stream: nothing it acknowledged is
lost, the robots keep working on their own memories, and each resyncs when it returns,
with no row duplicated."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engram.memory.fleet import FleetConfig, FleetMirror, milvus_uri
from engram.memory.fleet.lite import LiteServer
from engram.memory.fleet.rows import capture
from engram.memory.system import MemorySystem, default_memories
from engram.runtime.messages import MemoryQuery
from tests.memory._factories import percept, transcript, unit

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

ROBOTS = [f"r{i}" for i in range(4)]
LONG_TERM = ["spatial", "temporal", "episodic", "semantic"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LiteServer(tmp_path_factory.mktemp("milvus") / "data").start()
    yield srv
    srv.stop()


def _robot(uri: str, robot_id: str, tmp, *, prefix: str, interval_s: float = 0.0):
    system = MemorySystem(default_memories(include=LONG_TERM), workers=1)
    cfg = FleetConfig(
        uri=uri,
        robot_id=robot_id,
        prefix=prefix,
        outbox=str(tmp / f"{prefix}-{robot_id}.sqlite"),
        sync_interval_s=interval_s,
        retry_s=0.2,
        timeout_s=2.0,
    )
    return system, FleetMirror(system, cfg)


def _own_pks(mirror: FleetMirror) -> set[str]:
    """What the robot's memories hold now, as fleet primary keys."""
    out = set()
    for name in mirror.memories:
        _, present = capture(mirror.system[name], {})
        out |= {mirror.outbox.pk(name, rid) for rid in present}
    return out


def test_store_setting_forms():
    assert milvus_uri("milvus://10.0.0.5:19530") == "http://10.0.0.5:19530"
    assert milvus_uri("milvus-lite://runs/fleet.db") == "runs/fleet.db"
    assert milvus_uri("runs/fleet.db") == "runs/fleet.db"
    with pytest.raises(ValueError, match=r"milvus://host:port"):
        milvus_uri("postgres://x")
    with pytest.raises(ValueError, match="robot_id"):
        FleetConfig(uri="x.db", robot_id="bad id")


def test_four_robots_recall_each_other_with_provenance(server, tmp_path):
    robots = [_robot(server.uri, r, tmp_path, prefix="prov") for r in ROBOTS]
    rng = np.random.default_rng(0)
    try:

        def feed(i: int) -> None:
            system, mirror = robots[i]
            for k in range(6):
                system.write(
                    percept(
                        1.0 + k,
                        [f"thing{i}_cup"],
                        centroids=[[float(i), float(k), 0.5]],
                        object_embeddings=unit(rng.normal(size=(1, 16))),
                    )
                )
            system.write(transcript(20.0 + i, f"robot {i} parked near dock{i}"))
            assert mirror.flush(timeout_s=20)

        threads = [threading.Thread(target=feed, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, (_, mirror) in enumerate(robots):
            for j, other in enumerate(ROBOTS):
                if j == i:
                    continue
                hits = mirror.last_seen(f"thing{j} cup")
                assert hits, f"{ROBOTS[i]} finds nothing {other} saw"
                assert {h.provenance.producer for h in hits} == {other}
                assert {h.data["robot_id"] for h in hits} == {other}
                landmark = [h for h in hits if h.memory == "spatial"]
                assert len(landmark) == 1  # one object record, upserted 6 times
                (local,) = [
                    o for o in robots[j][0]["spatial"].objects.records.values()
                    if o.label == f"thing{j}_cup"
                ]  # fmt: skip
                assert landmark[0].position == pytest.approx(tuple(local.position))
                assert landmark[0].stamp_ns == local.last_seen_ns
                assert landmark[0].stamp_ns == hits[0].stamp_ns  # newest first
            own = mirror.recall(MemoryQuery(text="parked dock", top_k=10), scope="own")
            assert own and {h.data["robot_id"] for h in own} == {ROBOTS[i]}
            others = mirror.recall(MemoryQuery(text="parked dock", top_k=20), scope="others")
            assert {h.data["robot_id"] for h in others} == set(ROBOTS) - {ROBOTS[i]}
        # every robot's records exactly once, keyed by robot
        store = robots[0][1].store
        for _, mirror in robots:
            pks = store.pks(f'robot_id == "{mirror.robot_id}"')
            assert len(pks) == len(set(pks))
            assert set(pks) == _own_pks(mirror)
    finally:
        for system, mirror in robots:
            mirror.close()
            system.close()


def test_server_killed_mid_stream_loses_nothing_acknowledged(server, tmp_path):
    robots = [_robot(server.uri, r, tmp_path, prefix="kill", interval_s=0.05) for r in ROBOTS]
    acked: dict[str, list[tuple[float, str]]] = {r: [] for r in ROBOTS}
    for (_, mirror), rid in zip(robots, ROBOTS):
        real_ack = mirror.outbox.ack

        def ack(entries, real_ack=real_ack, log=acked[rid]):
            real_ack(entries)
            now = time.monotonic()
            log.extend((now, e[4]) for e in entries if e[2] == "upsert")

        mirror.outbox.ack = ack  # type: ignore[method-assign]
    killed_at = [0.0]
    errors: list[str] = []

    def feed(i: int) -> None:
        system = robots[i][0]
        rng = np.random.default_rng(i)
        for k in range(40):
            system.write(
                percept(
                    1.0 + k * 0.5,
                    [f"box{i}_{k % 5}"],
                    centroids=[[float(i), float(k % 5), 0.0]],
                    object_embeddings=unit(rng.normal(size=(1, 16))),
                )
            )
            time.sleep(0.01)

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while not all(acked.values()) and time.monotonic() < deadline:  # mid-stream: all pushing
        time.sleep(0.02)
    killed_at[0] = time.monotonic()
    server.kill()
    time.sleep(0.5)
    down_pending = [m.outbox.pending() for _, m in robots]
    for i, (_, mirror) in enumerate(robots):  # the robots work on: their own memories answer
        hits = mirror.recall(MemoryQuery(text=f"box{i}", top_k=3))
        if not hits or {h.data["fleet"] for h in hits} != {"offline"}:
            errors.append(f"{ROBOTS[i]}: no local answer while the store is down: {hits}")
    server.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert any(p > 0 for p in down_pending), "nothing was waiting while the server was down"
        store = robots[0][1].store
        survived = set(store.pks("")) if store.collections() else set()
        for rid in ROBOTS:
            before = {pk for t, pk in acked[rid] if t < killed_at[0]}
            assert before, f"{rid}: nothing acknowledged before the kill"
            assert before <= survived, f"{rid}: lost {sorted(before - survived)[:5]}"
        for _, mirror in robots:
            assert mirror.flush(timeout_s=30)
            assert mirror.outbox.pending() == 0
            assert mirror.counters["outages"] >= 1
        for _, mirror in robots:  # resynced: exactly what each robot holds, once
            pks = store.pks(f'robot_id == "{mirror.robot_id}"')
            assert len(pks) == len(set(pks))
            assert set(pks) == _own_pks(mirror)
            assert store.count(f'robot_id == "{mirror.robot_id}"') == len(pks)
    finally:
        for system, mirror in robots:
            mirror.close()
            system.close()
