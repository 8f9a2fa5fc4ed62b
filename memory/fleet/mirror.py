"""``FleetMirror``: a robot's long-term memories mirrored to the fleet store, and recall
across the fleet.

The robot's ``MemorySystem`` stays as it is (its own memories, journal and SQLite
checkpoints: the single-robot default, unchanged). The mirror observes it: every
``sync_interval_s`` (and on ``sync()`` / ``flush()``) it

1. *captures*: in each mirrored memory's lane (queued behind the writes already
   there, so a capture sees them all; memories are not thread-safe) it lists the
   records whose fingerprint changed (``engram.memory.fleet.rows``) and stages them,
   with deletes of records the memory dropped, in the local outbox (one SQLite
   transaction per memory);
2. *pushes*: sends the outbox to Milvus in order, in batches, and drops an entry
   only once Milvus acknowledged it (``engram.memory.fleet.outbox``).

Faults. While Milvus is unreachable the push fails fast (``timeout_s``), the rows
wait in the outbox (bounded by the records the memories hold: one entry per record,
the latest version) and the robot works on with its local memories; recall falls back
to them. When Milvus returns, the next push sends everything staged: a row whose
acknowledgement was lost is sent again and upserted onto itself. What a crash
loses: of the robot, nothing staged when ``outbox`` is a file (rows not yet captured
are still in the memories, whose own journal covers them, and are captured on the
next start: fingerprints are kept with the outbox); of the Milvus server, nothing it
acknowledged (Milvus Lite writes its WAL before answering; a Milvus cluster its
log broker).

Recall. ``recall(query, scope=...)`` searches the fleet's rows: ``"fleet"`` (every
robot), ``"own"`` or ``"others"``, or ``robots=[...]``; by vector when the query has
an embedding (rows of the same space and dimension), else by the words of its text.
``last_seen("red cup")`` answers "where did any robot last see the red cup?". Each
hit's provenance names the robot (``provenance.producer`` and ``data["robot_id"]``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from engram.memory.base import Hit, Provenance
from engram.memory.fleet.config import FleetConfig, milvus_uri
from engram.memory.fleet.milvus import FleetUnavailable, MilvusFleetStore
from engram.memory.fleet.outbox import Entry, Outbox
from engram.memory.fleet.rows import NO_SPACE, Row, capture
from engram.runtime.messages import MemoryQuery

if TYPE_CHECKING:
    from engram.memory.system import MemorySystem

__all__ = ["FleetMirror", "attach_fleet"]

log = logging.getLogger(__name__)

SCOPES = ("fleet", "own", "others")
_STOP = frozenset(
    "a an the is was were where what when who did do does any robot last see saw seen".split()
)


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


class FleetMirror:
    """Mirror of one robot's memories in the fleet store. See the module docstring.

    ``FleetMirror(system, FleetConfig(uri="fleet.db", robot_id="r1"))``; ``close()`` it
    before the system (it makes a last push attempt)."""

    def __init__(
        self,
        system: MemorySystem,
        config: FleetConfig,
        *,
        store: MilvusFleetStore | None = None,
        start: bool = True,
    ) -> None:
        self.system = system
        self.config = cfg = config
        self.robot_id = cfg.robot_id
        self.store = store or MilvusFleetStore(
            milvus_uri(cfg.uri), prefix=cfg.prefix, timeout_s=cfg.timeout_s, index=cfg.index
        )
        self.outbox = Outbox(cfg.outbox, robot_id=cfg.robot_id, durable=cfg.durable)
        self.memories = [n for n in cfg.memories if n in system.names]
        self.online: bool | None = None  # None until the first push
        self.last_error = ""
        self.counters = {"staged": 0, "pushed": 0, "push_failures": 0, "outages": 0}
        self._capture_lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start and cfg.sync_interval_s > 0:
            self._thread = threading.Thread(
                target=self._loop, name=f"fleet-{cfg.robot_id}", daemon=True
            )
            self._thread.start()

    # ---- capture and push -------------------------------------------------------------
    def capture(self) -> int:
        """Stage what changed in the mirrored memories. Returns the entries staged."""
        n = 0
        with self._capture_lock:
            futs = []
            for name in self.memories:
                known = self.outbox.known(name)
                lane = self.system._by_name[name]  # the memory's lane: serial with its writes
                futs.append(
                    (name, known, lane.submit(lambda m=lane.memory, k=known: capture(m, k)))
                )
            for name, known, fut in futs:
                rows, present = fut.result()
                ups = [
                    (r.record_id, r.fingerprint, r.collection(self.config.prefix), self._row(r))
                    for r in rows
                ]
                n += self.outbox.stage(name, ups, set(known) - present)
        self.counters["staged"] += n
        return n

    def _row(self, r: Row) -> dict[str, Any]:
        vec = [1.0, 0.0] if r.vector is None else [float(v) for v in r.vector]
        return {
            "pk": self.outbox.pk(r.memory, r.record_id),
            "robot_id": self.robot_id,
            "memory": r.memory,
            "record_id": r.record_id,
            "kind": r.kind,
            "stamp_ns": int(r.stamp_ns),
            "text": r.text[: self.config.text_max_chars],
            "meta": {
                "position": None if r.position is None else list(r.position),
                "space": r.space if r.vector is not None else NO_SPACE,
                "provenance": r.provenance.to_dict(),
                **r.extra,
            },
            "vec": vec,
        }

    def push(self) -> int:
        """Send the outbox to the store, acknowledged batch by batch. Returns the entries
        sent; raises ``FleetUnavailable`` (what is not sent stays staged)."""
        sent = 0
        with self._push_lock:
            try:
                while True:
                    entries = self.outbox.take(self.config.batch_rows)
                    if not entries:
                        break
                    self._send(entries)
                    self.outbox.ack(entries)
                    sent += len(entries)
            except FleetUnavailable as exc:
                self.counters["push_failures"] += 1
                self._set_online(False, str(exc))
                self.counters["pushed"] += sent
                raise
        self.counters["pushed"] += sent
        self._set_online(True, "")
        return sent

    def _send(self, entries: list[Entry]) -> None:
        groups: dict[tuple[str, str], list[Entry]] = {}
        for e in entries:  # one key per (collection, pk): order only matters within a key
            groups.setdefault((e[2], e[3]), []).append(e)
        for (op, coll), group in groups.items():
            if op == "upsert":
                self.store.upsert(coll, [e[5] for e in group if e[5] is not None])
            else:
                self.store.delete(coll, [e[4] for e in group])

    def _set_online(self, online: bool, error: str) -> None:
        if online != self.online:
            if online:
                log.info("fleet store %s reachable (robot %s)", self.config.uri, self.robot_id)
            else:
                self.counters["outages"] += 1
                log.warning(
                    "fleet store %s unreachable (robot %s): %s; rows wait in the outbox",
                    self.config.uri,
                    self.robot_id,
                    error,
                )
        self.online = online
        self.last_error = error

    def sync(self) -> bool:
        """Capture, then push. Returns True when the outbox is empty afterwards."""
        self.capture()
        try:
            self.push()
        except FleetUnavailable:
            return False
        return self.outbox.pending() == 0

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Capture, then push until everything staged is acknowledged or ``timeout_s``
        passed (retrying every ``retry_s``). Returns True when nothing is left."""
        deadline = time.monotonic() + timeout_s
        self.capture()
        while True:
            try:
                self.push()
                return True
            except FleetUnavailable:
                if time.monotonic() + self.config.retry_s > deadline:
                    return False
                time.sleep(self.config.retry_s)

    def _loop(self) -> None:
        period = self.config.sync_interval_s
        while not self._stop.wait(period):
            try:
                self.capture()
                self.push()
                period = self.config.sync_interval_s
            except FleetUnavailable:
                period = max(self.config.sync_interval_s, self.config.retry_s)
            except Exception:  # noqa: BLE001 - the mirror must not die with one bad sync
                log.exception("fleet sync of robot %s failed", self.robot_id)

    # ---- recall -----------------------------------------------------------------------
    def _expr(
        self,
        scope: str,
        robots: Sequence[str] | None,
        memories: Sequence[str] | None,
        query: MemoryQuery | None = None,
        kinds: Sequence[str] | None = None,
    ) -> str:
        if scope not in SCOPES:
            raise ValueError(f"fleet recall: scope must be one of {SCOPES}, got {scope!r}")
        parts = []
        if robots:
            bad = [r for r in robots if not re.fullmatch(r"[A-Za-z0-9_.\-]+", r)]
            if bad:
                raise ValueError(f"fleet recall: bad robot id(s) {bad}")
            parts.append("robot_id in [" + ", ".join(f'"{r}"' for r in robots) + "]")
        elif scope == "own":
            parts.append(f'robot_id == "{self.robot_id}"')
        elif scope == "others":
            parts.append(f'robot_id != "{self.robot_id}"')
        if memories:
            parts.append("memory in [" + ", ".join(f'"{m}"' for m in memories if m.isalnum()) + "]")
        if kinds:
            parts.append("kind in [" + ", ".join(f'"{k}"' for k in kinds if k.isalnum()) + "]")
        if query is not None and query.t0_ns:
            parts.append(f"stamp_ns >= {int(query.t0_ns)}")
        if query is not None and query.t1_ns:
            parts.append(f"stamp_ns <= {int(query.t1_ns)}")
        return " and ".join(parts)

    def recall(
        self,
        query: MemoryQuery,
        *,
        scope: str = "fleet",
        robots: Sequence[str] | None = None,
        space: str = "text",
        kinds: Sequence[str] | None = None,
        fallback: bool = True,
    ) -> list[Hit]:
        """Hits from the fleet store (see the module docstring). ``query.memories``
        restricts the source memories. When the store is unreachable and ``fallback``,
        the robot's own memories answer (hits marked ``data["fleet"] = "offline"``);
        without ``fallback`` ``FleetUnavailable`` is raised."""
        mems = [m for m in query.memories if m != "fleet"] or None
        expr = self._expr(scope, robots, mems, query, kinds)
        try:
            rows = self._find(query, expr, space)
        except FleetUnavailable as exc:
            self._set_online(False, str(exc))
            if not fallback or scope == "others" or (robots and self.robot_id not in robots):
                raise
            local = MemoryQuery(
                text=query.text,
                memories=[m for m in (mems or self.memories) if m in self.system.names],
                top_k=query.top_k,
                embedding=query.embedding,
                t0_ns=query.t0_ns,
                t1_ns=query.t1_ns,
            )
            hits = self.system.recall(local)
            for h in hits:
                h.data = dict(h.data, robot_id=self.robot_id, fleet="offline")
                h.provenance = Provenance(
                    h.provenance.source_topic,
                    h.provenance.stamp_ns,
                    h.provenance.seq,
                    self.robot_id,
                )
            return hits
        rows.sort(key=lambda r: (-r["score"], -int(r["stamp_ns"])))
        return [self._hit(r) for r in rows[: query.top_k]]

    def _find(self, query: MemoryQuery, expr: str, space: str) -> list[dict[str, Any]]:
        limit = max(query.top_k, 1)
        colls = self.store.collections()
        if query.embedding is not None:
            vec = np.asarray(query.embedding, np.float32).reshape(-1)
            n = float(np.linalg.norm(vec))
            vec = vec / n if n > 0 else vec
            coll = f"{self.config.prefix}_{space}_{vec.shape[0]}"
            if coll not in colls:
                return []
            rows = self.store.search(coll, vec.tolist(), expr=expr, limit=limit)
            for r in rows:
                r["score"] = min(1.0, max(0.0, r["score"]))
            return rows
        words = _words(query.text)
        if not words:
            raise ValueError("fleet recall: the query has neither an embedding nor words")
        like = "(" + " or ".join(f'text like "%{w}%"' for w in words) + ")"
        full = f"{expr} and {like}" if expr else like
        out = []
        for coll in colls:
            for r in self.store.query(coll, expr=full, limit=limit * 20):
                have = set(_words(r["text"]))
                r["score"] = sum(1 for w in words if w in have) / len(words)
                out.append(r)
        return out

    def last_seen(
        self, label: str, *, scope: str = "fleet", robots: Sequence[str] | None = None
    ) -> list[Hit]:
        """Where robots last saw ``label`` ("red cup"): object landmarks and observations
        naming every word of it, newest first (one hit per robot and record)."""
        words = _words(label)
        if not words:
            raise ValueError(f"fleet last_seen: no words in {label!r}")
        expr = self._expr(scope, robots, None, None, ("object", "item"))
        like = " and ".join(f'text like "%{w}%"' for w in words)
        rows = []
        for coll in self.store.collections():
            for r in self.store.query(
                coll, expr=f"{expr} and {like}" if expr else like, limit=1000
            ):
                have = set(_words(r["text"]))
                if all(w in have for w in words):
                    r["score"] = 1.0
                    rows.append(r)
        rows.sort(key=lambda r: -int(r["stamp_ns"]))
        return [self._hit(r) for r in rows]

    def _hit(self, r: dict[str, Any]) -> Hit:
        meta = dict(r.get("meta") or {})
        prov = meta.pop("provenance", {}) or {}
        pos = meta.pop("position", None)
        return Hit(
            memory=r["memory"],
            score=float(r["score"]),
            text=r["text"],
            stamp_ns=int(r["stamp_ns"]),
            position=None if pos is None else (float(pos[0]), float(pos[1]), float(pos[2])),
            record_id=r["pk"],
            provenance=Provenance(
                source_topic=prov.get("source_topic", ""),
                stamp_ns=int(prov.get("stamp_ns", 0)),
                seq=int(prov.get("seq", 0)),
                producer=r["robot_id"],
            ),
            data={"robot_id": r["robot_id"], "kind": r["kind"], "fleet": "online", **meta},
        )

    # ---- health and lifecycle ---------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "pending": self.outbox.pending(),
            "online": self.online,
            "last_error": self.last_error,
        }

    def close(self, *, push_timeout_s: float = 2.0) -> None:
        """Stop the background sync, make a last capture + push attempt (what is not
        acknowledged stays in a file outbox for the next start), close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        try:
            self.flush(timeout_s=push_timeout_s)
        except Exception:  # noqa: BLE001 - closing must not fail on a dead store
            log.warning("fleet: last push of robot %s failed", self.robot_id)
        self.outbox.close()
        self.store.close()


def attach_fleet(
    system: MemorySystem, store: str, *, robot_id: str, root: str = "", **settings: Any
) -> FleetMirror | None:
    """The mirror a ``store`` setting asks for: ``"sqlite"`` (or "") -> None (the single-
    robot default, nothing attached); ``milvus://...`` or a ``.db`` path -> a started
    ``FleetMirror`` whose outbox lives in ``root/fleet-outbox.sqlite`` (in memory
    without ``root``). Raises ``ValueError`` on a bad setting."""
    if store in ("", "sqlite"):
        return None
    outbox = settings.pop("outbox", "") or (f"{root}/fleet-outbox.sqlite" if root else "")
    cfg = FleetConfig(uri=store, robot_id=robot_id, outbox=outbox, **settings)
    return FleetMirror(system, cfg)
