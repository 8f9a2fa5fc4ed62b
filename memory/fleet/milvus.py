"""``MilvusFleetStore``: the fleet's rows in Milvus through ``pymilvus`` (imported lazily).

The same code path for embedded Milvus Lite (a ``.db`` path: pymilvus runs it in this
process; or ``python -m milvus_lite server`` as a process several robots share) and a
Milvus standalone or cluster (``http://host:port``). One collection per vector space
and dimension (``<prefix>_<space>_<dim>``, e.g. ``engram_text_384``; rows without a
vector go to ``<prefix>_none_2``), all with the same scalar fields: ``pk``
(``robot_id/memory/record_id``, primary), ``robot_id``, ``memory``, ``record_id``,
``kind``, ``stamp_ns``, ``text`` and ``meta`` (JSON: position, provenance, extras);
the vector field ``vec`` is searched by inner product (rows hold unit vectors, so it
is the cosine).

Every call has a timeout; any failure (refused connection, timeout, server error) is
raised as ``FleetUnavailable`` so the caller keeps its outbox and tries later.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["FleetUnavailable", "MilvusFleetStore"]

log = logging.getLogger(__name__)

_FIELDS = ["pk", "robot_id", "memory", "record_id", "kind", "stamp_ns", "text", "meta"]


class FleetUnavailable(ConnectionError):
    """The fleet store could not be reached or refused the call."""


class MilvusFleetStore:
    """Collections of fleet rows in one Milvus (see the module docstring)."""

    def __init__(
        self, uri: str, *, prefix: str = "engram", timeout_s: float = 2.0, index: str = "FLAT"
    ) -> None:
        self.uri = uri
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.index = index
        self._client: Any = None
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    # ---- connection -------------------------------------------------------------------
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    from pymilvus import MilvusClient

                    # pymilvus logs a full traceback for every refused RPC while the
                    # server is down; the fleet mirror reports the outage itself.
                    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
                    # dedicated: a connection of its own, not pymilvus's per-URI shared
                    # one, so a fresh client really reconnects; short gRPC reconnect
                    # backoff: back within a second of the server (default: up to 120 s)
                    self._client = MilvusClient(
                        uri=self.uri,
                        timeout=self.timeout_s,
                        dedicated=True,
                        grpc_options={
                            "grpc.initial_reconnect_backoff_ms": 100,
                            "grpc.min_reconnect_backoff_ms": 100,
                            "grpc.max_reconnect_backoff_ms": 1000,
                        },
                    )
                except Exception as exc:  # noqa: BLE001 - any failure: store unavailable
                    raise FleetUnavailable(f"fleet store {self.uri}: {exc}") from None
            return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        client = self.client()
        for attempt in range(2):
            try:
                return getattr(client, fn)(*args, timeout=self.timeout_s, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any failure: store unavailable
                # a restarted server holds its collections released: load, then retry once
                if attempt == 0 and args and "load()" in str(exc):
                    try:
                        client.load_collection(args[0], timeout=self.timeout_s)
                        continue
                    except Exception:  # noqa: BLE001, S110 - reported below
                        pass
                # a channel that saw the server die can stay in gRPC's reconnect backoff
                # after it is back: one retry on a fresh connection
                if attempt == 0 and "connect" in str(exc).lower():
                    self.close()
                    client = self.client()
                    continue
                raise FleetUnavailable(f"fleet store {self.uri}: {what} failed: {exc}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass
                self._client = None
            self._ready.clear()

    # ---- collections ------------------------------------------------------------------
    def collections(self) -> list[str]:
        names = self._call("list_collections", "list_collections")
        return sorted(n for n in names if n.startswith(self.prefix + "_"))

    def ensure(self, coll: str, dim: int) -> None:
        """Create collection ``coll`` with a ``dim``-d vector field unless it exists."""
        if coll in self._ready:
            return
        if not self._call("has_collection", "has_collection", coll):
            from pymilvus import DataType

            client = self.client()
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=512)
            schema.add_field("robot_id", DataType.VARCHAR, max_length=128)
            schema.add_field("memory", DataType.VARCHAR, max_length=64)
            schema.add_field("record_id", DataType.VARCHAR, max_length=256)
            schema.add_field("kind", DataType.VARCHAR, max_length=64)
            schema.add_field("stamp_ns", DataType.INT64)
            schema.add_field("text", DataType.VARCHAR, max_length=2048)
            schema.add_field("meta", DataType.JSON)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
            params = client.prepare_index_params()
            params.add_index("vec", index_type=self.index, metric_type="IP")
            try:
                self._call(
                    "create_collection",
                    "create_collection",
                    coll,
                    schema=schema,
                    index_params=params,
                )
            except FleetUnavailable:
                # another robot may have created it in the meantime
                if not self._call("has_collection", "has_collection", coll):
                    raise
        self._ready.add(coll)

    # ---- rows -------------------------------------------------------------------------
    def upsert(self, coll: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.ensure(coll, len(rows[0]["vec"]))
            self._call("upsert", "upsert", coll, rows)

    def flush(self, coll: str) -> None:
        """Seal the collection's buffered rows into segments (Milvus flushes on its own;
        Milvus Lite searches unflushed rows row by row, so a bulk load ends with this)."""
        self._call("flush", "flush", coll)

    def delete(self, coll: str, pks: list[str]) -> None:
        if pks and self._call("has_collection", "has_collection", coll):
            self._call("delete", "delete", coll, ids=pks)

    def search(
        self, coll: str, vector: list[float], *, expr: str, limit: int
    ) -> list[dict[str, Any]]:
        res = self._call(
            "search",
            "search",
            coll,
            data=[vector],
            limit=limit,
            filter=expr,
            output_fields=_FIELDS,
        )
        return [dict(h["entity"], score=float(h["distance"])) for h in res[0]] if res else []

    def query(self, coll: str, *, expr: str, limit: int) -> list[dict[str, Any]]:
        return list(
            self._call("query", "query", coll, filter=expr, output_fields=_FIELDS, limit=limit)
        )

    def count(self, expr: str = "") -> int:
        """Rows matching ``expr`` over every fleet collection."""
        n = 0
        for coll in self.collections():
            res = self._call("count", "query", coll, filter=expr, output_fields=["count(*)"])
            n += int(res[0]["count(*)"])
        return n

    def pks(self, expr: str = "", *, limit: int = 16384) -> list[str]:
        """Primary keys of rows matching ``expr`` over every fleet collection."""
        out: list[str] = []
        for coll in self.collections():
            res = self._call("query", "query", coll, filter=expr, output_fields=["pk"], limit=limit)
            out.extend(r["pk"] for r in res)
        return out
