"""The on-disk store: versions and history, tombstones, incremental sync, export/import,
compaction, schema migration, torn-append repair, the writer lock, and a real SIGKILL
of a writer process mid-ingest (reopen consistent, loss within one batch)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from engram.memory.base import Provenance
from engram.memory.store import (
    SCHEMA_VERSION,
    Record,
    Store,
    StoreConfig,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    message_to_record,
    record_to_message,
)
from tests.memory._factories import percept

REPO = Path(__file__).resolve().parents[2]


def vec(i: int, d: int = 16) -> np.ndarray:
    return (np.arange(d, dtype=np.float32) + i).astype(np.float32)


def test_versions_history_and_tombstones(tmp_path: Path) -> None:
    prov = Provenance(source_topic="/percepts", stamp_ns=5, seq=3, producer="test")
    with Store(tmp_path) as s:
        s.put(Record("facts", "f1", {"object": "table_1"}, {"emb": vec(1)}, provenance=prov))
        s.put(Record("facts", "f1", {"object": "table_2"}, {"emb": vec(2)}, provenance=prov))
        s.commit()
        cur = s.get("facts", "f1")
        assert cur.version == 2 and cur.payload == {"object": "table_2"}
        assert np.array_equal(cur.arrays["emb"], vec(2))
        assert cur.provenance.source_topic == "/percepts" and cur.provenance.seq == 3
        hist = s.history("facts", "f1")
        assert [h.payload["object"] for h in hist] == ["table_1", "table_2"]
        assert np.array_equal(s.get("facts", "f1", version=1).arrays["emb"], vec(1))
        s.delete("facts", "f1")
        s.commit()
        assert s.get("facts", "f1") is None and len(s.history("facts", "f1")) == 3
        assert s.count("facts") == 0 and s.count("facts", all_versions=True) == 3
        # keep_history=False drops older versions
        s.put(Record("m", "a", {"v": 1}))
        s.put(Record("m", "a", {"v": 2}), keep_history=False)
        s.commit()
        assert [h.payload["v"] for h in s.history("m", "a")] == [2]
        with pytest.raises(ValueError, match="collection"):
            s.put(Record("bad name!", "x"))
        with pytest.raises(TypeError, match=r"cannot store"):
            s.put(Record("m", "x", {"obj": object()}))


def test_sync_writes_only_changes_and_bulk_arrays(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        recs = [Record("c", f"r{i}", {"i": i}, {"e": vec(i)}, version=1) for i in range(50)]
        assert s.sync("c", recs)["written"] == 50
        recs[3] = Record("c", "r3", {"i": 333}, {"e": vec(333)}, version=2)
        out = s.sync("c", recs[:40])  # r40..r49 disappear -> tombstones
        assert out == {"written": 1, "deleted": 10, "unchanged": 39}
        ids, arr = s.load_arrays("c", "e")
        assert len(ids) == 40 and arr.shape == (40, 16)
        got = dict(zip(ids, arr))
        assert np.array_equal(got["r3"], vec(333)) and np.array_equal(got["r7"], vec(7))


def test_a_store_rewritten_by_sync_stays_bounded_and_intact(tmp_path: Path) -> None:
    d = 256  # 1 KiB per record: 200 records = 200 KiB live
    with Store(tmp_path) as s:
        for gen in range(1, 21):  # every record rewritten 20 times, as checkpoints do
            recs = [
                Record(
                    "c",
                    f"r{i}",
                    {"i": i, "gen": gen, "text": "x" * 300},
                    {"e": vec(gen + i, d)},
                    version=gen,
                )
                for i in range(200)
            ]
            s.sync("c", recs, keep_history=False)
            g = s.garbage()
            assert g["array_bytes"] <= 2 * g["array_live_bytes"] + (1 << 16), (gen, g)
            assert g["sqlite_free_bytes"] <= 0.5 * g["sqlite_bytes"] + (1 << 16), (gen, g)
        assert g["array_live_bytes"] == 200 * d * 4
    with Store(tmp_path, config=StoreConfig(read_only=True)) as s:  # reopens, all current
        ids, arr = s.load_arrays("c", "e")
        got = dict(zip(ids, arr))
        assert len(got) == 200 and np.array_equal(got["r7"], vec(27, d))
        assert s.get("c", "r199").payload["gen"] == 20
        assert s.integrity_check() == []


def test_damaged_files_raise_store_corrupt_naming_the_file(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as s:
        s.put(Record("c", "r", {"i": 1}, {"e": vec(1)}))
    db = tmp_path / "a" / "store.sqlite"
    good = db.read_bytes()
    db.write_bytes(good[: len(good) // 3])  # torn
    with pytest.raises(StoreCorrupt, match=r"store\.sqlite is corrupt"):
        Store(tmp_path / "a")
    db.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreCorrupt, match=str(db)):
        Store(tmp_path / "a", config=StoreConfig(read_only=True))
    db.write_bytes(good)
    with Store(tmp_path / "a") as s:  # restored file, lock free again
        assert s.get("c", "r").payload == {"i": 1}


def test_export_import_and_compact_round_trip(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as s:
        for i in range(20):
            s.put(Record("c", f"r{i}", {"i": i, "blob": b"\x00\x01"}, {"e": vec(i)}, kind="k"))
        s.put(Record("c", "r0", {"i": -1}, {"e": vec(-1)}))
        s.delete_where("c", max_record_id="r15")  # r0, r1, r10..r15 (string order)
        out = s.compact()
        assert out["bytes_after"] < out["bytes_before"]
        assert s.integrity_check() == []
        n = s.export(tmp_path / "dump.jsonl")
        assert n == s.count("c", all_versions=True)
        expected = {r.record_id: (r.payload, r.arrays["e"]) for r in s.scan("c")}
    with Store(tmp_path / "b") as t:
        assert t.import_(tmp_path / "dump.jsonl") == n
        got = {r.record_id: (r.payload, r.arrays["e"]) for r in t.scan("c")}
    assert got.keys() == expected.keys()
    for k, (payload, arr) in expected.items():
        assert got[k][0] == payload and np.array_equal(got[k][1], arr)


def test_schema_migration_from_v1(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "store.sqlite")
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE records (rid INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL,
          record_id TEXT NOT NULL, version INTEGER NOT NULL, current INTEGER NOT NULL DEFAULT 1,
          deleted INTEGER NOT NULL DEFAULT 0, kind TEXT NOT NULL DEFAULT '',
          stamp_ns INTEGER NOT NULL DEFAULT 0, source_topic TEXT NOT NULL DEFAULT '',
          source_seq INTEGER NOT NULL DEFAULT 0, written_ns INTEGER NOT NULL,
          batch INTEGER NOT NULL DEFAULT 0, payload BLOB NOT NULL, arrays TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE array_files (path TEXT PRIMARY KEY, committed_bytes INTEGER NOT NULL);
        """
    )
    db.execute(
        "INSERT INTO records (collection, record_id, version, written_ns, payload) "
        "VALUES ('c', 'old', 1, 1, X'81a16101')"  # msgpack {"a": 1}
    )
    db.commit()
    db.close()
    with Store(tmp_path) as s:
        assert s.schema_version == SCHEMA_VERSION
        rec = s.get("c", "old")
        assert rec.payload == {"a": 1} and rec.provenance.producer == ""
        s.put(Record("c", "new", {"b": 2}, provenance=Provenance(producer="me")))
        s.commit()
        assert s.get("c", "new").provenance.producer == "me"
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path)


def test_torn_append_is_truncated_and_lock_is_exclusive(tmp_path: Path) -> None:
    with Store(tmp_path) as s:
        s.put(Record("c", "a", {}, {"e": vec(1)}))
        s.commit()
        with pytest.raises(StoreLocked):
            Store(tmp_path)  # a second writer
        ro = Store(tmp_path, config=StoreConfig(read_only=True))  # readers need no lock
        assert ro.count("c") == 1
        ro.close()
    arr_file = next((tmp_path / "arrays").rglob("*.bin"))
    size = arr_file.stat().st_size
    with open(arr_file, "ab") as fh:  # an append whose commit never happened
        fh.write(b"\xff" * 100)
    with Store(tmp_path) as s:
        assert arr_file.stat().st_size == size
        assert s.integrity_check() == []
        assert np.array_equal(s.get("c", "a").arrays["e"], vec(1))


def test_messages_round_trip_as_records(tmp_path: Path) -> None:
    msg = percept(
        1.5,
        ["red_mug"],
        embedding=np.ones(8, np.float32),
        object_embeddings=np.ones((1, 8), np.float32),
        points=20,
        seq=7,
    )
    rec = message_to_record(msg, collection="journal", record_id="1", topic="/percepts")
    with Store(tmp_path) as s:
        s.put(rec)
        s.commit()
        back, topic = record_to_message(s.get("journal", "1"))
    assert back == msg and topic == "/percepts"


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from engram.memory.store import Record, Store, StoreConfig
    s = Store(sys.argv[1], config=StoreConfig(batch_records=int(sys.argv[2]), batch_interval_s=1e9))
    i = 0
    while True:
        s.put(Record("c", f"r{i:08d}", {"i": i}, {"e": np.full(64, i, np.float32)}))
        print(f"put {i} committed {s.commits}", flush=True)
        i += 1
    """
)


def test_sigkill_mid_ingest_loses_at_most_the_uncommitted_batch(tmp_path: Path) -> None:
    batch = 50
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), str(batch)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    last_put = -1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "writer died early"
        last_put = int(line.split()[1])
        commits = int(line.split()[3])
        if commits >= 5 and last_put % batch == batch // 2:  # mid-batch
            break
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()  # lines already in the pipe
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in rest.splitlines():
        last_put = int(line.split()[1])
    with Store(tmp_path) as s:
        assert s.integrity_check() == []
        n = s.count("c")
        assert n % batch == 0 and n >= 5 * batch  # whole batches only
        lost = (last_put + 1) - n
        assert 0 <= lost <= batch, f"lost {lost} records, bound is one batch of {batch}"
        ids, arr = s.load_arrays("c", "e")
        idx = np.array([int(r[1:]) for r in ids])
        assert np.array_equal(np.sort(idx), np.arange(n))  # no gaps, no torn record
        assert np.all(arr == idx[:, None].astype(np.float32))
        # and it keeps working after the crash
        s.put(Record("c", "after", {"ok": True}, {"e": np.zeros(64, np.float32)}))
        s.commit()
        assert s.get("c", "after").payload == {"ok": True}


def test_array_files_hold_each_arrays_raw_bytes(tmp_path: Path) -> None:
    # the commit writes each array's own buffer (no tobytes copy): the bytes on disk and
    # their CRC must be exactly what tobytes gives, for every kind of array a record holds
    arrays = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f64_strided": np.arange(20, dtype=np.float64)[::3],  # not contiguous
        "big_endian": np.arange(5, dtype=">i4"),
        "flags": np.array([True, False, True]),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "u8": np.arange(7, dtype=np.uint8),
    }
    with Store(tmp_path / "s") as s:
        s.put(Record("c", "r", {"k": 1}, arrays))
        s.commit()
        back = s.get("c", "r").arrays
    with Store(tmp_path / "s") as s:  # reopened: read back from the files, CRC checked
        again = s.get("c", "r").arrays
    for name, a in arrays.items():
        for got in (back[name], again[name]):
            assert got.dtype == a.dtype and got.tobytes() == np.ascontiguousarray(a).tobytes()
    for name, a in arrays.items():  # one file per array name: exactly the raw bytes
        f = tmp_path / "s" / "arrays" / "c" / f"{name}.0.bin"
        assert f.read_bytes() == np.ascontiguousarray(a).tobytes()
