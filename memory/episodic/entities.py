"""Entity resolution (an observation -> an existing entity, or a new one), in order:

0. *track*: the perception's object id (a tracker's or the simulator's id) last
   resolved to an entity of the same label: that entity;
1. *near*: the entity is within ``merge_radius_m`` and either has the same
   label with embedding cosine >= ``merge_min_cos_same_label`` or any label
   with cosine >= ``merge_min_cos`` (a detector's label flicker, mug/cup) --
   the latter not when the observation's perception id differs from one the
   entity is already known by: two look-alike objects the perception tells
   apart (two identical cups side by side) stay two entities;
2. *moved*: same label and cosine >= ``merge_min_cos`` but farther away (a
   "moved" event is written);
3. otherwise a new entity. Two observations of one percept never resolve to
   the same entity. Creations, moves, entity-entity merges and close calls
   (a second candidate within ``ambiguity_margin``) go to the merge log
   (``merge_log``), bounded to ``merge_log_max`` entries; an entity-entity merge
   keeps both prior states, so ``undo_merge`` can restore them.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from engram.memory.base import Provenance
from engram.memory.episodic.ledger import RecordLedger
from engram.memory.episodic.records import Rec, fmt_pos, restore, snapshot
from engram.memory.index import l2n

__all__ = ["EntityResolution"]


def _norm(v: np.ndarray) -> float:
    """``float(np.linalg.norm(v))`` of a 1-D float vector, bit for bit (norm computes
    ``sqrt(v.dot(v))``), without norm's argument handling: ~2 us less per call, and the
    resolution of one percept's objects makes ~25 calls."""
    return float(np.sqrt(v.dot(v)))


class EntityResolution(RecordLedger):
    """Entity resolution, entity-entity merges and their undo (see the module docstring)."""

    def _resolve(
        self,
        kind: str,
        label: str,
        emb: np.ndarray | None,
        pos: tuple[float, float, float] | None,
        stamp_ns: int,
        prov: Provenance,
        *,
        exclude: set[str] = frozenset(),  # type: ignore[assignment]
        space: str = "image",
        near_ids: np.ndarray | None = None,
        track: int | None = None,
    ) -> str:
        """Resolve one observation to an entity key (creating one if needed).

        near_ids: ids of the nearest vectors of ``space`` when already searched.
        track: the perception's object id; one that already resolved to an entity of
        the same label resolves to it again (rule 0)."""
        key = self._resolve_scored(
            kind, label, emb, pos, stamp_ns, prov, exclude, space, near_ids, track
        )
        if track is not None:
            self._tracks[(kind, track)] = key
            self._tracks.move_to_end((kind, track))
            while len(self._tracks) > self.config.tracks_max:
                self._tracks.popitem(last=False)
        return key

    def _resolve_scored(
        self,
        kind: str,
        label: str,
        emb: np.ndarray | None,
        pos: tuple[float, float, float] | None,
        stamp_ns: int,
        prov: Provenance,
        exclude: set[str],
        space: str,
        near_ids: np.ndarray | None,
        track: int | None,
    ) -> str:
        cfg = self.config
        cands = set(self._by_label.get((kind, label), ()))
        tracked = self._tracks.get((kind, track)) if track is not None else None
        if (
            near_ids is None
            and emb is not None
            and space in self._index
            and len(self._index[space])
        ):
            near_ids = self._index[space].search(emb, 5)[1][0]
        if near_ids is not None:
            cands |= {f"e{i}" for i in near_ids.tolist() if i >= 0 and f"e{i}" in self._recs}
        if tracked is not None and tracked in self._recs:
            cands.add(tracked)
        scored: list[tuple[float, str, str, float | None, float | None]] = []
        known_by_other: set[str] | None = None  # entities bound to another perception id
        for key in cands - exclude:
            ent = self._recs[key]
            if ent.kind != kind:
                continue
            ev = ent.embs.get(space)
            cos = float(ev @ emb) if (ev is not None and emb is not None) else None
            dist = (
                _norm(np.subtract(ent.position, pos))
                if (ent.position is not None and pos is not None)
                else None
            )
            same = ent.data["label"] == label or label in ent.data["aliases"]
            near = dist is None or dist <= cfg.merge_radius_m
            look_alike = cos is not None and cos >= cfg.merge_min_cos
            if look_alike and not same and track is not None and key != tracked:
                if known_by_other is None:
                    known_by_other = {
                        k for (kd, t), k in self._tracks.items() if kd == kind and t != track
                    }
                look_alike = key not in known_by_other
            if key == tracked and same:
                scored.append((10.0, key, "track" if near else "moved", cos, dist))
            elif near and (
                (same and (cos is None or cos >= cfg.merge_min_cos_same_label)) or look_alike
            ):
                score = (cos if cos is not None else 0.7) + (
                    0.5 * (1 - dist / cfg.merge_radius_m) if dist is not None else 0.0
                )
                scored.append((score, key, "near", cos, dist))
            elif same and cos is not None and cos >= cfg.merge_min_cos:
                scored.append((cos - 0.5, key, "moved", cos, dist))
        scored.sort(reverse=True)
        if not scored:
            return self._create_entity(kind, label, emb, pos, stamp_ns, prov, space=space)
        score, key, reason, cos, dist = scored[0]
        ent = self._recs[key]
        if len(scored) > 1 and scored[0][0] - scored[1][0] < cfg.ambiguity_margin:
            self._log(
                "ambiguous",
                entity=key,
                runner_up=scored[1][1],
                label=label,
                margin=round(scored[0][0] - scored[1][0], 4),
                provenance=prov.to_dict(),
            )
        old_pos = ent.position
        self._observe(ent, label, emb, pos, stamp_ns, space)
        self.counters["observations_merged"] += 1
        if (
            old_pos is not None
            and pos is not None
            and _norm(np.subtract(old_pos, pos)) >= cfg.move_event_m
        ):
            if reason == "moved":
                self._log(
                    "moved",
                    entity=key,
                    label=label,
                    cos=cos,
                    dist_m=dist,
                    provenance=prov.to_dict(),
                )
            self._event(
                "moved",
                f"{label} moved from {fmt_pos(old_pos)} to {fmt_pos(pos)}",
                stamp_ns,
                prov,
                position=pos,
                entities=[key],
            )
        return key

    def _observe(
        self,
        ent: Rec,
        label: str,
        emb: np.ndarray | None,
        pos: tuple[float, float, float] | None,
        stamp_ns: int,
        space: str,
    ) -> None:
        d = ent.data
        old_tokens = self._toks[ent.key]
        d["count"] += 1
        d["last_ns"] = max(d["last_ns"], stamp_ns)
        d["aliases"][label] = d["aliases"].get(label, 0) + 1
        if emb is not None:
            s = d.setdefault("emb_sum", {})
            s[space] = np.asarray(s.get(space, 0), np.float32) + emb
            ent.embs[space] = l2n(s[space])
            self._vindex(space, emb.size).add([self._num(ent.key)], ent.embs[space])
        if pos is not None:
            ent.position = pos
        ent.last_access_ns = max(ent.last_access_ns, stamp_ns)  # observing refreshes
        ent.text = self._entity_text(ent)
        new_tokens = self._rec_tokens(ent)
        for t in new_tokens - old_tokens:
            self._post.setdefault(t, set()).add(ent.key)
        self._toks[ent.key] = new_tokens
        ent.version += 1

    def _entity_text(self, ent: Rec) -> str:
        d = ent.data
        where = f" at {fmt_pos(ent.position)}" if ent.position is not None else ""
        return f"{d['label']} ({ent.kind}) seen {d['count']}x{where}"

    def _create_entity(
        self,
        kind: str,
        label: str,
        emb: np.ndarray | None,
        pos: tuple[float, float, float] | None,
        stamp_ns: int,
        prov: Provenance,
        *,
        space: str = "image",
    ) -> str:
        imp = self.config.importance.get(kind, 0.3)
        ent = Rec(
            key=self._new_key("e"),
            kind=kind,
            text="",
            stamp_ns=stamp_ns,
            importance=imp,
            strength_s=self._strength0(imp),
            last_access_ns=stamp_ns,
            provenance=prov,
            position=pos,
            data={
                "label": label,
                "aliases": {label: 1},
                "count": 1,
                "last_ns": stamp_ns,
                "merged_from": [],
            },
        )
        if emb is not None:
            ent.data["emb_sum"] = {space: emb.astype(np.float32)}
            ent.embs[space] = emb.astype(np.float32)
        ent.text = self._entity_text(ent)
        self._add(ent)
        self.counters["entities_created"] += 1
        self._log("create", entity=ent.key, kind=kind, label=label, provenance=prov.to_dict())
        self._event(
            "first_seen",
            f"first saw {label} ({kind})" + (f" at {fmt_pos(pos)}" if pos else ""),
            stamp_ns,
            prov,
            position=pos,
            entities=[ent.key],
        )
        return ent.key

    def observe_place(
        self, label: str, position: tuple[float, float, float], *, stamp_ns: int, prov=None
    ) -> str:
        """Record that the robot is at a named place (e.g. from spatial memory's topology)."""
        self._clock_ns = max(self._clock_ns, stamp_ns)
        return self._resolve(
            "place",
            label,
            None,
            cast(tuple[float, float, float], tuple(position)),
            stamp_ns,
            prov or Provenance(stamp_ns=stamp_ns),
        )

    def _merge_duplicates(self) -> None:
        for keys in list(self._by_label.values()):
            keys = sorted(keys, key=self._num)
            i = 0
            while i < len(keys):
                a = self._recs.get(keys[i])
                j = i + 1
                while a is not None and j < len(keys):
                    b = self._recs.get(keys[j])
                    if b is not None and self._duplicates(a, b):
                        self._merge_entities(a, b, reason="duplicate")
                        keys.pop(j)
                    else:
                        j += 1
                i += 1

    def _duplicates(self, a: Rec, b: Rec) -> bool:
        cfg = self.config
        if a.kind != b.kind:
            return False
        if a.position is not None and b.position is not None:
            if float(np.linalg.norm(np.subtract(a.position, b.position))) > cfg.merge_radius_m:
                return False
        for space in a.embs.keys() & b.embs.keys():
            if float(a.embs[space] @ b.embs[space]) < cfg.entity_merge_min_cos:
                return False
        return True

    def merge_entities(self, keep: str, absorb: str, *, reason: str = "manual") -> dict[str, Any]:
        """Merge entity ``absorb`` into ``keep``; returns the merge-log entry."""
        for k in (keep, absorb):
            if k not in self._recs or k[0] != "e":
                raise KeyError(f"merge_entities: no entity {k!r}")
        return self._merge_entities(self._recs[keep], self._recs[absorb], reason=reason)

    def _merge_entities(self, a: Rec, b: Rec, *, reason: str) -> dict[str, Any]:
        before_a, before_b = snapshot(a), snapshot(b)
        self._unindex(a)
        self._remove(b.key)
        da, db = a.data, b.data
        da["count"] += db["count"]
        da["last_ns"] = max(da["last_ns"], db["last_ns"])
        for lab, n in db["aliases"].items():
            da["aliases"][lab] = da["aliases"].get(lab, 0) + n
        for space, s in db.get("emb_sum", {}).items():
            sums = da.setdefault("emb_sum", {})
            sums[space] = np.asarray(sums.get(space, 0), np.float32) + s
            a.embs[space] = l2n(sums[space])
        if db["last_ns"] >= da["last_ns"] and b.position is not None:
            a.position = b.position
        a.stamp_ns = min(a.stamp_ns, b.stamp_ns)
        a.strength_s = max(a.strength_s, b.strength_s)
        a.last_access_ns = max(a.last_access_ns, b.last_access_ns)
        a.importance = max(a.importance, b.importance)
        da["merged_from"].append(b.key)
        a.text = self._entity_text(a)
        a.version += 1
        self._index_rec(a)
        for tk, key in list(self._tracks.items()):
            if key == b.key:
                self._tracks[tk] = a.key
        for rec in self._recs.values():  # events and episodes now point at the survivor
            ents = rec.data.get("entities")
            if ents and b.key in ents:
                rec.data["entities"] = [a.key if e == b.key else e for e in ents]
        self.counters["entities_merged"] += 1
        return self._log(
            "merge_entities",
            entity=a.key,
            absorbed=b.key,
            reason=reason,
            before=before_a,
            absorbed_state=before_b,
        )

    def undo_merge(self, log_id: int) -> None:
        """Restore both entities of an entity-entity merge as they were before it."""
        entry = next((e for e in self.merge_log if e["log_id"] == log_id), None)
        if entry is None or entry["action"] != "merge_entities":
            raise KeyError(f"undo_merge: no entity merge with log_id {log_id} in the merge log")
        a = self._recs.get(entry["entity"])
        if a is not None:
            self._unindex(a)
            del self._recs[a.key]
        for snap in (entry["before"], entry["absorbed_state"]):
            self._add(restore(snap))
        self._log("unmerge", entity=entry["entity"], absorbed=entry["absorbed"], undoes=log_id)
