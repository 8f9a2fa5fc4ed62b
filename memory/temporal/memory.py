"""``TemporalMemory``: writing items to the timeline, persistence and sizes; chunking,
recall and time questions come from the classes it composes (``engram.memory.temporal``
describes the whole).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, cast

import numpy as np

from engram.memory.base import Memory, Provenance
from engram.memory.embedding import Embedders
from engram.memory.index import VectorIndex, all_finite, l2n, tokens
from engram.memory.store import Record, Store
from engram.memory.temporal.chunking import Chunking
from engram.memory.temporal.config import TemporalConfig
from engram.memory.temporal.recall import TemporalRecall
from engram.memory.temporal.records import OBJ_STRIDE, Chunk, Item
from engram.runtime.messages import Message, Percept, SoundEvent, Transcript

__all__ = ["TemporalConfig", "TemporalMemory"]


class TemporalMemory(Chunking, TemporalRecall, Memory):
    """A chunked timeline with hierarchical (HCAM) recall. See the module docstring."""

    name = "temporal"
    accepts = ("Percept", "Transcript", "SoundEvent")
    #: save(dir) into a copy of its previous save only writes what changed (store.sync)
    incremental_save = True

    def __init__(
        self, config: TemporalConfig | None = None, *, embedders: Embedders | None = None
    ) -> None:
        self.config = config or TemporalConfig()
        self.embedders = embedders
        self.reset()

    def reset(self) -> None:
        """Forget everything (an empty memory, same configuration)."""
        self._items: dict[int, Item] = {}
        self._chunks: dict[int, Chunk] = {}
        self._chunk_order: list[int] = []  # chunk ids in time (creation) order
        self._detailed: collections.deque[int] = collections.deque()  # closed, not compressed
        self._open: Chunk | None = None
        self._dims: dict[str, int] = {}
        self._item_index: dict[str, VectorIndex] = {}
        self._obj_index: dict[str, VectorIndex] = {}
        self._chunk_index: dict[str, VectorIndex] = {}
        self._chunk_obj_index: dict[str, VectorIndex] = {}  # per-label object means of chunks
        self._tok_items: dict[str, list[int]] = {}
        self._tok_chunks: dict[str, set[int]] = {}
        self._next_item = 0
        self._next_chunk = 0
        self._t0_ns: int | None = None
        self._timeline: list[tuple[int, int]] | None = None  # sorted (stamp, item_id) cache
        self._dead_postings = 0
        self.counters = {"written": 0, "items_scored": 0, "chunks_scored": 0, "compressed": 0}

    def write(self, msg: Message, *, topic: str = "") -> None:
        if isinstance(msg, Percept):
            labels = tuple(msg.object_labels)
            text = ("saw " + ", ".join(labels)) if labels else "saw nothing labelled"
            emb, objs = msg.embedding, msg.object_embeddings
            pos = tuple(float(v) for v in msg.world_from_camera[:3, 3])
            obj_pos = msg.object_centroids.astype(float).tolist()
            kind, start, end = "percept", msg.stamp_ns, msg.stamp_ns
            space = "image"
        elif isinstance(msg, Transcript):
            labels = (msg.speaker,) if msg.speaker else ()
            text = f"{msg.speaker}: {msg.text}" if msg.speaker else msg.text
            emb, objs, obj_pos = msg.embedding, None, []
            pos = (
                tuple(float(v) for v in msg.world_from_robot[:3, 3])
                if msg.world_from_robot is not None
                else None
            )
            kind, start, end = "transcript", msg.start_ns or msg.stamp_ns, msg.end_ns
            space = "text"
        elif isinstance(msg, SoundEvent):
            labels = (msg.label,) if msg.label else ()
            text = f"heard {msg.label or 'a sound'} ({msg.peak_hz:.0f} Hz, {msg.energy_db:.0f} dB)"
            emb, objs, obj_pos = msg.embedding, None, []
            pos = (
                tuple(float(v) for v in msg.world_from_robot[:3, 3])
                if msg.world_from_robot is not None
                else None
            )
            kind, start, end = "sound", msg.start_ns or msg.stamp_ns, msg.end_ns
            space = "audio"
        else:
            return
        # Validate everything before changing state.
        if emb is not None and emb.size:
            self._check_dim(space, emb.size, f"{msg.TYPE}.embedding")
        if objs is not None and len(objs):
            self._check_dim(space, objs.shape[1], f"{msg.TYPE}.object_embeddings")
            if len(objs) >= OBJ_STRIDE:
                raise ValueError(f"Percept.object_embeddings: at most {OBJ_STRIDE - 1} objects")
        for arr, field_name in ((emb, "embedding"), (objs, "object_embeddings")):
            if arr is not None and arr.size and not all_finite(arr):
                raise ValueError(f"{msg.TYPE}.{field_name}: contains NaN or inf")
        item = Item(
            item_id=self._next_item,
            kind=kind,
            stamp_ns=int(start),
            end_ns=int(max(end, start)),
            text=text,
            labels=labels,
            toks=tokens(" ".join((text, *labels))),
            chunk_id=-1,
            space=space if emb is not None and emb.size else "",
            n_objects=0 if objs is None else len(objs),
            position=pos,  # type: ignore[arg-type]
            object_positions=obj_pos,
            provenance=Provenance.of(msg, topic),
        )
        vec = l2n(cast(np.ndarray, emb).reshape(-1)) if item.space else None
        self._append(item, vec, None if objs is None or not len(objs) else l2n(objs))
        self.counters["written"] += 1

    def _records(self) -> Any:
        meta = {
            "dims": self._dims,
            "next_item": self._next_item,
            "next_chunk": self._next_chunk,
            "t0_ns": self._t0_ns,
            "open": None if self._open is None else self._open.chunk_id,
            "chunk_order": self._chunk_order,
            "counters": self.counters,
        }
        yield Record(self.name, "meta", payload=meta, kind="meta", version=0)
        for ch in self._chunks.values():
            yield Record(
                self.name,
                f"c{ch.chunk_id}",
                kind="chunk",
                stamp_ns=ch.start_ns,
                version=ch.version,
                payload={
                    "start_ns": ch.start_ns,
                    "end_ns": ch.end_ns,
                    "item_ids": ch.item_ids,
                    "n_items": ch.n_items,
                    "label_counts": ch.label_counts,
                    "texts": ch.texts,
                    "counts": ch.counts,
                    "toks": sorted(ch.toks),
                    "closed": ch.closed,
                    "compressed": ch.compressed,
                    "last_labels": sorted(ch.last_labels),
                    "obj_labels": ch.obj_labels,
                },
                arrays={
                    **{f"sum_{k}": np.asarray(v, np.float32) for k, v in ch.sums.items()},
                    **(
                        {"obj_sums": np.stack(ch.obj_sums).astype(np.float32)}
                        if ch.obj_sums
                        else {}
                    ),
                },
            )
        for item in self._items.values():
            arrays = {}
            if item.space:
                arrays["emb"] = self._item_index[item.space].get([item.item_id])[0]
            if item.n_objects:
                idx = self._obj_index[item.space or "image"]
                arrays["obj"] = idx.get(item.item_id * OBJ_STRIDE + np.arange(item.n_objects))
            yield Record(
                self.name,
                f"i{item.item_id}",
                kind="item",
                stamp_ns=item.stamp_ns,
                provenance=item.provenance,
                version=1,
                payload={
                    "item_id": item.item_id,
                    "kind": item.kind,
                    "end_ns": item.end_ns,
                    "text": item.text,
                    "labels": list(item.labels),
                    "chunk_id": item.chunk_id,
                    "space": item.space,
                    "n_objects": item.n_objects,
                    "position": item.position,
                    "object_positions": item.object_positions,
                },
                arrays=arrays,
            )

    def save(self, directory: str | Path) -> None:
        with Store(directory) as store:
            store.sync(self.name, self._records(), keep_history=False)

    def load(self, directory: str | Path) -> None:
        with Store(directory) as store:
            meta_rec = store.get(self.name, "meta")
            if meta_rec is None:
                raise ValueError(f"{directory}: no temporal memory saved there")
            self.reset()
            meta = meta_rec.payload
            self._dims = {k: int(v) for k, v in meta["dims"].items()}
            self._next_item, self._next_chunk = meta["next_item"], meta["next_chunk"]
            self._t0_ns = meta["t0_ns"]
            self._chunk_order = list(meta["chunk_order"])
            self.counters.update(meta["counters"])
            item_vecs: dict[str, tuple[list[int], list[np.ndarray]]] = {}
            obj_vecs: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
            for rec in store.scan(self.name, kind="chunk"):
                p = rec.payload
                ch = Chunk(
                    chunk_id=int(rec.record_id[1:]),
                    start_ns=p["start_ns"],
                    end_ns=p["end_ns"],
                    item_ids=list(p["item_ids"]),
                    n_items=p["n_items"],
                    label_counts=dict(p["label_counts"]),
                    texts=list(p["texts"]),
                    sums={k[4:]: v for k, v in rec.arrays.items() if k.startswith("sum_")},
                    obj_labels=list(p["obj_labels"]),
                    obj_sums=[v.copy() for v in rec.arrays.get("obj_sums", [])],
                    counts={k: int(v) for k, v in p["counts"].items()},
                    toks=set(p["toks"]),
                    closed=p["closed"],
                    compressed=p["compressed"],
                    version=rec.version,
                    last_labels=frozenset(p["last_labels"]),
                )
                self._chunks[ch.chunk_id] = ch
                for t in ch.toks:
                    self._tok_chunks.setdefault(t, set()).add(ch.chunk_id)
                if ch.closed:
                    self._upsert_summary(ch)
            if meta["open"] is not None:
                self._open = self._chunks[meta["open"]]
            self._detailed.extend(
                cid
                for cid in self._chunk_order
                if cid in self._chunks
                and self._chunks[cid].closed
                and not self._chunks[cid].compressed
            )
            # in item order, whatever order the store holds them in (an imported copy)
            scanned = sorted(store.scan(self.name, kind="item"), key=lambda r: r.payload["item_id"])
            for rec in scanned:
                p = rec.payload
                item = Item(
                    item_id=p["item_id"],
                    kind=p["kind"],
                    stamp_ns=rec.stamp_ns,
                    end_ns=p["end_ns"],
                    text=p["text"],
                    labels=tuple(p["labels"]),
                    toks=tokens(" ".join((p["text"], *p["labels"]))),
                    chunk_id=p["chunk_id"],
                    space=p["space"],
                    n_objects=p["n_objects"],
                    position=None if p["position"] is None else tuple(p["position"]),
                    object_positions=p["object_positions"],
                    provenance=rec.provenance,
                )
                self._items[item.item_id] = item
                if item.space:
                    ids, vecs = item_vecs.setdefault(item.space, ([], []))
                    ids.append(item.item_id)
                    vecs.append(rec.arrays["emb"])
                if item.n_objects:
                    oids, ovecs = obj_vecs.setdefault(item.space or "image", ([], []))
                    oids.append(item.item_id * OBJ_STRIDE + np.arange(item.n_objects))
                    ovecs.append(rec.arrays["obj"])
            for space, (ids, vecs) in item_vecs.items():
                self._index(self._item_index, space, vecs[0].size).add(ids, np.stack(vecs))
            for space, (oids, ovecs) in obj_vecs.items():
                self._index(self._obj_index, space, ovecs[0].shape[1]).add(
                    np.concatenate(oids), np.concatenate(ovecs)
                )
            self._rebuild_postings()

    def __len__(self) -> int:
        return len(self._items) + sum(1 for c in self._chunks.values() if c.compressed)

    def stats(self) -> dict[str, Any]:
        return {
            "records": len(self),
            "items": len(self._items),
            "chunks": len(self._chunks),
            "compressed_chunks": sum(1 for c in self._chunks.values() if c.compressed),
            **self.counters,
        }
