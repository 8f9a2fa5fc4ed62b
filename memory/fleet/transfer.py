"""Moving a robot's memories between its SQLite store and the fleet store.

- ``export_root(root, uri, robot_id=...)``: open the robot's persisted memory system
  (``root``: its checkpoints + journal; the robot must not be running, the journal is
  locked) and push all its long-term rows to Milvus under ``robot_id``. Idempotent
  (upserts by primary key): exporting twice leaves one copy.
- ``import_robot(uri, robot_id, dest)``: the rows one robot has in Milvus, written as
  records (collection ``fleet``, ``<memory>.<record_id>``, payload = the row, the
  vector as array ``vec``, provenance naming the robot) into an Engram ``Store`` at
  ``dest``: a local, offline copy of what the fleet knows of that robot.

The fleet store holds rows (``engram.memory.fleet.rows``): what recall across robots
needs, not every internal array of each memory, so an imported copy is searchable
but not a checkpoint a memory can be restored from (the robot's own checkpoints are).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engram.memory.base import Provenance
from engram.memory.fleet.config import DEFAULT_MEMORIES, FleetConfig, milvus_uri
from engram.memory.fleet.milvus import MilvusFleetStore
from engram.memory.fleet.mirror import FleetMirror
from engram.memory.store import Record, Store

__all__ = ["export_root", "import_robot"]


def export_root(
    root: str | Path,
    uri: str,
    *,
    robot_id: str,
    memories: Sequence[str] = DEFAULT_MEMORIES,
    prefix: str = "engram",
    timeout_s: float = 60.0,
) -> int:
    """Push the long-term rows of the memory system persisted at ``root``; returns the
    rows sent. Raises ``FileNotFoundError`` without a persisted system there and
    ``FleetUnavailable`` when the store cannot take them within ``timeout_s``."""
    from engram.memory.fleet.milvus import FleetUnavailable
    from engram.memory.system import MemorySystem, default_memories

    if not (Path(root) / "journal").is_dir():
        raise FileNotFoundError(f"export: no persisted memory system at {root} (no journal)")
    system = MemorySystem(default_memories(include=list(memories)), workers=1, root=root)
    try:
        cfg = FleetConfig(uri=uri, robot_id=robot_id, prefix=prefix, sync_interval_s=0)
        mirror = FleetMirror(system, cfg, start=False)
        try:
            if not mirror.flush(timeout_s=timeout_s):
                raise FleetUnavailable(f"export to {uri}: {mirror.last_error}")
            return mirror.counters["pushed"]
        finally:
            mirror.close()
    finally:
        system.close(checkpoint=False)


def import_robot(
    uri: str, robot_id: str, dest: str | Path, *, prefix: str = "engram", batch: int = 1000
) -> int:
    """Copy ``robot_id``'s rows from the fleet store into an Engram ``Store`` at ``dest``
    (collection ``fleet``); returns the records written."""
    FleetConfig(uri=uri, robot_id=robot_id)  # validates both
    store = MilvusFleetStore(milvus_uri(uri), prefix=prefix, timeout_s=60.0)
    n = 0
    try:
        client = store.client()
        with Store(dest) as out:
            for coll in store.collections():
                store.query(coll, expr="", limit=1)  # loads a released collection
                it = client.query_iterator(
                    coll,
                    batch_size=batch,
                    filter=f'robot_id == "{robot_id}"',
                    output_fields=["*"],
                )
                try:
                    while rows := it.next():
                        for r in rows:
                            meta = dict(r.get("meta") or {})
                            prov = meta.get("provenance") or {}
                            payload = {k: v for k, v in r.items() if k != "vec"}
                            payload["collection"] = coll
                            out.put(
                                Record(
                                    "fleet",
                                    f"{r['memory']}.{r['record_id']}",
                                    payload=payload,
                                    arrays={"vec": np.asarray(r["vec"], np.float32)},
                                    kind=r["kind"],
                                    stamp_ns=int(r["stamp_ns"]),
                                    provenance=Provenance(
                                        source_topic=prov.get("source_topic", ""),
                                        stamp_ns=int(prov.get("stamp_ns", 0)),
                                        seq=int(prov.get("seq", 0)),
                                        producer=robot_id,
                                    ),
                                ),
                                keep_history=False,
                            )
                            n += 1
                finally:
                    it.close()
    finally:
        store.close()
    return n
