"""Episodic memory: episodes, events and entities (M3-Agent), with a forgetting curve (MemoryBank).

Records:

- *Entities* (M3-Agent's entity-centric memory): objects (from ``Percept``
  objects), people and voices (a ``Transcript``'s speaker), sounds
  (``SoundEvent`` labels), places (``observe_place``). Each has a label and its
  aliases, a running-mean embedding per space (image for objects, audio for
  sounds), a count, first/last seen stamps and its last position.
- *Events*: an entity first seen or moved, something said or heard, a plan
  step that succeeded or failed, an episode's end.
- *Episodes*: one task attempt: the ``Instruction``, the ``PlanStep`` statuses
  (the plan and the actions taken), the outcome, up to ``keyframes_per_episode``
  keyframes (stamp, labels, image embedding) and the entities involved.

Entity resolution (an observation -> an existing entity, or a new one), in order:

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

Forgetting curve (MemoryBank): every record has an importance I in [0, 1]
(``importance`` per record kind) and a strength S in seconds, S0 =
``base_strength_s * (1 + importance_gain * I)``. Retention is
``R = exp(-(now - last_access) / S)``. A recall that returns a record reinforces
it: ``S *= recall_growth`` and ``last_access = now``; observing an entity again
refreshes ``last_access``. Recall scores are ``relevance * ((1 - w) + w * R)``
with ``w = recall_retention_weight``. "now" is the newest stamp this memory
has seen (or the ``now_ns`` given to ``consolidate``).

Consolidation rule (``consolidate``, and the capacity part after every write
that exceeds ``capacity``):

1. duplicate entities (same kind and label, cosine >= ``entity_merge_min_cos``,
   within ``merge_radius_m``) are merged (logged, undoable);
2. events with R < ``forget_below`` are forgotten; entities with R <
   ``forget_below`` seen only once are forgotten; episodes with R <
   ``forget_below`` are summarised to a gist (steps and keyframes dropped,
   instruction, outcome and entities kept), and gists with R <
   ``forget_below ** 2`` are forgotten;
3. when more than ``capacity`` records remain, the records with the lowest
   ``R * (0.5 + I)`` are forgotten (events before entities before episodes
   on ties) down to 95% of ``capacity``.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram.memory.base import Hit, Memory, Provenance
from engram.memory.index import (
    Embedders,
    IndexConfig,
    VectorIndex,
    l2n,
    lexical_score,
    query_vectors,
    tokens,
)
from engram.memory.store import Record, Store
from engram.runtime.messages import (
    Instruction,
    MemoryQuery,
    Message,
    Percept,
    PlanStep,
    SoundEvent,
    Transcript,
)

__all__ = ["EpisodicConfig", "EpisodicMemory"]

_TERMINAL = ("succeeded", "failed", "aborted")
_END_SKILLS = ("done", "episode", "task")


def _default_importance() -> dict[str, float]:
    return {
        "object": 0.3,
        "person": 0.6,
        "voice": 0.6,
        "sound": 0.3,
        "place": 0.5,
        "first_seen": 0.3,
        "moved": 0.5,
        "speech": 0.6,
        "heard": 0.4,
        "step_failed": 0.7,
        "step_succeeded": 0.4,
        "episode_end": 0.6,
        "episode": 0.8,
    }


@dataclass
class EpisodicConfig:
    """Entity resolution, forgetting curve and capacity of the ``EpisodicMemory``."""

    merge_min_cos: float = 0.85  # embedding cosine to resolve to an entity whatever its label
    merge_min_cos_same_label: float = 0.6  # ... when the labels agree (and it is near)
    merge_radius_m: float = 0.5  # an observation this close to an entity's position is "near"
    ambiguity_margin: float = 0.05  # log a resolution whose runner-up scored within this
    entity_merge_min_cos: float = 0.92  # consolidation: duplicate entities above this merge
    move_event_m: float = 0.3  # a resolved entity this far from its last position "moved"
    base_strength_s: float = 3600.0  # S0 of a record with importance 0 (seconds)
    importance_gain: float = 4.0  # S0 = base_strength_s * (1 + gain * importance)
    recall_growth: float = 2.0  # a recall multiplies the strength S by this
    forget_below: float = 0.05  # retention under which consolidation forgets / summarises
    capacity: int = 50_000  # records (entities + events + episodes) kept at most
    keyframes_per_episode: int = 8  # keyframes kept per episode (uniformly thinned)
    recall_retention_weight: float = 0.3  # w in score = relevance * ((1 - w) + w * R)
    lexical_weight: float = 0.5  # share of word overlap in relevance (rest: embedding cosine)
    merge_log_max: int = 10_000  # merge-log entries kept (oldest dropped)
    tracks_max: int = 4096  # perception object ids remembered for rule 0 (least recent dropped)
    importance: dict[str, float] = field(default_factory=_default_importance)  # per record kind
    index: IndexConfig = field(default_factory=IndexConfig)  # vector search settings

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"EpisodicConfig.capacity must be >= 1, got {self.capacity}")
        if self.recall_growth < 1.0:
            raise ValueError("EpisodicConfig.recall_growth must be >= 1 (recall reinforces)")
        if not 0.0 < self.forget_below < 1.0:
            raise ValueError("EpisodicConfig.forget_below must be in (0, 1)")


@dataclass
class _Rec:
    """Common fields of every episodic record (the forgetting curve)."""

    key: str  # "e12" entity, "v3" event, "p1" episode
    kind: str
    text: str
    stamp_ns: int  # first seen / happened / started
    importance: float
    strength_s: float
    last_access_ns: int
    provenance: Provenance
    version: int = 1
    position: tuple[float, float, float] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    embs: dict[str, np.ndarray] = field(default_factory=dict)  # space -> unit vector

    def retention(self, now_ns: int) -> float:
        dt = max(0.0, (now_ns - self.last_access_ns) / 1e9)
        return math.exp(-dt / max(self.strength_s, 1e-9))


class EpisodicMemory(Memory):
    """Episodes, events and entities with forgetting. See the module docstring."""

    name = "episodic"
    accepts = ("Percept", "Transcript", "SoundEvent", "Instruction", "PlanStep")
    #: save(dir) into a copy of its previous save only writes what changed (store.sync)
    incremental_save = True

    def __init__(
        self, config: EpisodicConfig | None = None, *, embedders: Embedders | None = None
    ) -> None:
        self.config = config or EpisodicConfig()
        self.embedders = embedders
        self._reset()

    def reset(self) -> None:
        """Forget everything (an empty memory, same configuration)."""
        self._reset()

    def _reset(self) -> None:
        self._recs: dict[str, _Rec] = {}
        self._post: dict[str, set[str]] = {}
        self._toks: dict[str, frozenset[str]] = {}  # key -> its words (cache)
        # entity key -> (version, distinct word sets of its names): recall's name match
        self._name_toks: dict[str, tuple[int, tuple[frozenset[str], ...]]] = {}
        self._index: dict[str, VectorIndex] = {}  # space -> vectors keyed by _num(key)
        self._dims: dict[str, int] = {}
        self._by_label: dict[tuple[str, str], set[str]] = {}  # (kind, label) -> entity keys
        # (kind, perception object id) -> entity key, least recently resolved first
        self._tracks: collections.OrderedDict[tuple[str, int], str] = collections.OrderedDict()
        self._next = 0
        self._clock_ns = 0
        self._open_episode: str | None = None
        self.merge_log: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.config.merge_log_max
        )
        self._next_log = 0
        self.counters = {
            "written": 0,
            "entities_created": 0,
            "observations_merged": 0,
            "entities_merged": 0,
            "forgotten": 0,
            "summarised": 0,
            "reinforced": 0,
        }

    # ---- record bookkeeping -------------------------------------------------------------
    def _new_key(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}{self._next}"

    @staticmethod
    def _num(key: str) -> int:
        return int(key[1:])

    def _strength0(self, importance: float) -> float:
        return self.config.base_strength_s * (1.0 + self.config.importance_gain * importance)

    def _add(self, rec: _Rec) -> _Rec:
        self._recs[rec.key] = rec
        self._index_rec(rec)
        return rec

    def _index_rec(self, rec: _Rec) -> None:
        self._name_toks.pop(rec.key, None)
        self._toks[rec.key] = self._rec_tokens(rec)
        for t in self._toks[rec.key]:
            self._post.setdefault(t, set()).add(rec.key)
        for space, vec in rec.embs.items():
            self._vindex(space, vec.size).add([self._num(rec.key)], vec)
        if rec.key[0] == "e":
            self._by_label.setdefault((rec.kind, rec.data["label"]), set()).add(rec.key)

    def _unindex(self, rec: _Rec) -> None:
        self._name_toks.pop(rec.key, None)
        for t in self._toks.pop(rec.key, frozenset()):
            posting = self._post.get(t)
            if posting is not None:
                posting.discard(rec.key)
                if not posting:
                    del self._post[t]
        for space in rec.embs:
            self._index[space].remove([self._num(rec.key)])
        if rec.key[0] == "e":
            self._by_label.get((rec.kind, rec.data["label"]), set()).discard(rec.key)

    def _remove(self, key: str) -> None:
        rec = self._recs.pop(key)
        self._unindex(rec)

    @staticmethod
    def _rec_tokens(rec: _Rec) -> frozenset[str]:
        if rec.key[0] == "e":  # an entity is found by its names, not its description
            return tokens(" ".join((rec.kind, rec.data["label"], *rec.data["aliases"])))
        return tokens(f"{rec.text} {rec.kind.replace('_', ' ')}")

    def _vindex(self, space: str, dim: int) -> VectorIndex:
        idx = self._index.get(space)
        if idx is None:
            self._dims.setdefault(space, dim)
            idx = self._index[space] = VectorIndex(dim, config=self.config.index)
        elif idx.dim != dim:
            raise ValueError(
                f"embedding of dimension {dim} for space {space!r} of dimension {idx.dim}"
            )
        return idx

    def _check_dim(self, space: str, dim: int, what: str) -> None:
        have = self._dims.get(space)
        if have is not None and have != dim:
            raise ValueError(f"{what}: dimension {dim} differs from the {have} of space {space!r}")

    def _event(
        self,
        kind: str,
        text: str,
        stamp_ns: int,
        prov: Provenance,
        *,
        position: tuple[float, float, float] | None = None,
        entities: list[str] | None = None,
        emb: dict[str, np.ndarray] | None = None,
    ) -> _Rec:
        imp = self.config.importance.get(kind, 0.3)
        data: dict[str, Any] = {"entities": entities or []}
        if self._open_episode is not None:
            data["episode"] = self._open_episode
        return self._add(
            _Rec(
                key=self._new_key("v"),
                kind=kind,
                text=text,
                stamp_ns=stamp_ns,
                importance=imp,
                strength_s=self._strength0(imp),
                last_access_ns=stamp_ns,
                provenance=prov,
                position=position,
                data=data,
                embs=emb or {},
            )
        )

    def _log(self, action: str, **fields: Any) -> dict[str, Any]:
        self._next_log += 1
        entry = {"log_id": self._next_log, "action": action, "stamp_ns": self._clock_ns, **fields}
        self.merge_log.append(entry)
        return entry

    # ---- writing ------------------------------------------------------------------------
    def write(self, msg: Message, *, topic: str = "") -> None:
        if msg.TYPE not in self.accepts:
            return
        prov = Provenance.of(msg, topic)
        if isinstance(msg, Percept):
            if msg.object_embeddings is not None and len(msg.object_embeddings):
                self._check_dim(
                    "image", msg.object_embeddings.shape[1], "Percept.object_embeddings"
                )
            if msg.embedding is not None and msg.keyframe and self._open_episode:
                self._check_dim("image", msg.embedding.size, "Percept.embedding")
        elif isinstance(msg, SoundEvent) and msg.embedding is not None:
            self._check_dim("audio", msg.embedding.size, "SoundEvent.embedding")
        elif isinstance(msg, Transcript) and msg.embedding is not None:
            self._check_dim("text", msg.embedding.size, "Transcript.embedding")
        self._clock_ns = max(self._clock_ns, msg.stamp_ns)
        if isinstance(msg, Percept):
            self._on_percept(msg, prov)
        elif isinstance(msg, Transcript):
            self._on_transcript(msg, prov)
        elif isinstance(msg, SoundEvent):
            self._on_sound(msg, prov)
        elif isinstance(msg, Instruction):
            self._on_instruction(msg, prov)
        elif isinstance(msg, PlanStep):
            self._on_step(msg, prov)
        self.counters["written"] += 1
        if len(self._recs) > self.config.capacity:
            self._enforce_capacity(self._clock_ns)

    def _on_percept(self, p: Percept, prov: Provenance) -> None:
        embs = None if p.object_embeddings is None else l2n(p.object_embeddings)
        near_ids = None
        idx = self._index.get("image")
        if embs is not None and idx is not None and len(idx):
            _, near_ids = idx.search(embs, 5)  # all objects of the percept in one search
        taken: set[str] = set()
        seen: list[str] = []
        centroids = p.object_centroids.tolist()
        for k, label in enumerate(p.object_labels):
            pos = tuple(centroids[k])
            emb = None if embs is None else embs[k]
            key = self._resolve(
                "object",
                label,
                emb,
                pos,
                p.stamp_ns,
                prov,
                exclude=taken,
                near_ids=None if near_ids is None else near_ids[k],
                track=int(p.object_ids[k]) if p.object_ids[k] >= 0 else None,  # -1: no id
            )
            taken.add(key)
            seen.append(key)
        ep = self._episode()
        if ep is not None:
            ents = ep.data["entities"]
            for key in seen:
                if key not in ents:
                    ents.append(key)
            if p.keyframe and p.embedding is not None:
                self._add_keyframe(ep, p)
            ep.version += 1

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
                float(np.linalg.norm(np.subtract(ent.position, pos)))
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
            and float(np.linalg.norm(np.subtract(old_pos, pos))) >= cfg.move_event_m
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
                f"{label} moved from {_fmt_pos(old_pos)} to {_fmt_pos(pos)}",
                stamp_ns,
                prov,
                position=pos,
                entities=[key],
            )
        return key

    def _observe(
        self,
        ent: _Rec,
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

    def _entity_text(self, ent: _Rec) -> str:
        d = ent.data
        where = f" at {_fmt_pos(ent.position)}" if ent.position is not None else ""
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
        ent = _Rec(
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
            f"first saw {label} ({kind})" + (f" at {_fmt_pos(pos)}" if pos else ""),
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
            "place", label, None, tuple(position), stamp_ns, prov or Provenance(stamp_ns=stamp_ns)
        )

    def _on_transcript(self, t: Transcript, prov: Provenance) -> None:
        ents = []
        if t.speaker:
            ents.append(self._resolve("person", t.speaker, None, None, t.stamp_ns, prov))
        said = tokens(t.text)
        for (kind, label), keys in list(self._by_label.items()):
            if kind == "object" and tokens(label) and tokens(label) <= said:
                ents.extend(sorted(keys))
        pos = (
            tuple(float(v) for v in t.world_from_robot[:3, 3])
            if t.world_from_robot is not None
            else None
        )
        who = t.speaker or "someone"
        emb = {"text": l2n(t.embedding)} if t.embedding is not None and t.embedding.size else {}
        self._event(
            "speech",
            f'{who} said "{t.text}"',
            t.start_ns or t.stamp_ns,
            prov,
            position=pos,  # type: ignore[arg-type]
            entities=ents,
            emb=emb,
        )

    def _on_sound(self, s: SoundEvent, prov: Provenance) -> None:
        pos = (
            tuple(float(v) for v in s.world_from_robot[:3, 3])
            if s.world_from_robot is not None
            else None
        )
        emb = l2n(s.embedding) if s.embedding is not None and s.embedding.size else None
        label = s.label or "sound"
        key = self._resolve("sound", label, emb, None, s.stamp_ns, prov, space="audio")
        self._event(
            "heard",
            f"heard {label} ({s.peak_hz:.0f} Hz)",
            s.start_ns or s.stamp_ns,
            prov,
            position=pos,  # type: ignore[arg-type]
            entities=[key],
        )

    def _episode(self) -> _Rec | None:
        return None if self._open_episode is None else self._recs.get(self._open_episode)

    def _on_instruction(self, ins: Instruction, prov: Provenance) -> None:
        ep = self._episode()
        if ep is not None:
            if ins.episode_id and ep.data["episode_id"] == ins.episode_id:
                return  # the same task repeated
            self.end_episode("interrupted", stamp_ns=ins.stamp_ns)
        self._start_episode(ins.text, ins.task, ins.episode_id, ins.stamp_ns, prov)

    def _start_episode(
        self, instruction: str, task: str, episode_id: str, stamp_ns: int, prov: Provenance
    ) -> _Rec:
        imp = self.config.importance.get("episode", 0.8)
        key = self._new_key("p")
        embs = {}
        if self.embedders is not None and instruction:
            vec = self.embedders.embed("text", instruction)
            if vec is not None:
                embs["text"] = vec
        ep = _Rec(
            key=key,
            kind="episode",
            text=f'episode: "{instruction}"',
            stamp_ns=stamp_ns,
            importance=imp,
            strength_s=self._strength0(imp),
            last_access_ns=stamp_ns,
            provenance=prov,
            data={
                "episode_id": episode_id or key,
                "instruction": instruction,
                "task": task,
                "end_ns": 0,
                "steps": [],
                "outcome": "",
                "keyframes": [],
                "keyframe_stride": 1,
                "keyframes_seen": 0,
                "entities": [],
                "gist": False,
            },
            embs=embs,
        )
        self._add(ep)
        self._open_episode = key
        return ep

    def _on_step(self, step: PlanStep, prov: Provenance) -> None:
        ep = self._episode()
        if ep is None or (step.episode_id and ep.data["episode_id"] != step.episode_id):
            if ep is not None:
                self.end_episode("interrupted", stamp_ns=step.stamp_ns)
            ep = self._start_episode("", "", step.episode_id, step.stamp_ns, prov)
        if step.skill in _END_SKILLS and step.status in _TERMINAL:
            self.end_episode(step.status, stamp_ns=step.stamp_ns, reason=step.reason)
            return
        steps = ep.data["steps"]
        entry = {
            "skill": step.skill,
            "args": step.args,
            "status": step.status,
            "attempt": step.attempt,
            "reason": step.reason,
            "stamp_ns": step.stamp_ns,
        }
        for i in range(len(steps) - 1, -1, -1):
            s = steps[i]
            if (s["skill"], s["args"], s["attempt"]) == (step.skill, step.args, step.attempt):
                steps[i] = entry
                break
        else:
            steps.append(entry)
        ep.version += 1
        if step.status in ("succeeded", "failed"):
            args = ", ".join(f"{v}" for v in step.args.values())
            text = f"{step.skill}({args}) {step.status}" + (
                f": {step.reason}" if step.reason else ""
            )
            self._event(f"step_{step.status}", text, step.stamp_ns, prov)

    def end_episode(self, outcome: str, *, stamp_ns: int | None = None, reason: str = "") -> None:
        """Close the open episode with ``outcome`` (succeeded, failed, aborted, interrupted)."""
        ep = self._episode()
        if ep is None:
            return
        stamp = stamp_ns if stamp_ns is not None else self._clock_ns
        self._clock_ns = max(self._clock_ns, stamp)
        self._unindex(ep)
        ep.data["outcome"] = outcome
        ep.data["end_ns"] = stamp
        ep.text = self._episode_text(ep)
        ep.version += 1
        self._index_rec(ep)
        self._open_episode = None
        self._event(
            "episode_end",
            f'episode "{ep.data["instruction"]}" {outcome}' + (f": {reason}" if reason else ""),
            stamp,
            ep.provenance,
        )

    @staticmethod
    def _episode_text(ep: _Rec) -> str:
        d = ep.data
        steps = ", ".join(f"{s['skill']}:{s['status']}" for s in d["steps"][:8])
        gist = " (gist)" if d["gist"] else ""
        return f'episode{gist}: "{d["instruction"]}" -> {d["outcome"] or "open"}' + (
            f" [{steps}]" if steps else ""
        )

    def _add_keyframe(self, ep: _Rec, p: Percept) -> None:
        d = ep.data
        d["keyframes_seen"] += 1
        if (d["keyframes_seen"] - 1) % d["keyframe_stride"]:
            return
        d["keyframes"].append(
            {
                "stamp_ns": p.stamp_ns,
                "labels": list(p.object_labels),
                "embedding": l2n(p.embedding),
                "position": [float(v) for v in p.world_from_camera[:3, 3]],
            }
        )
        if len(d["keyframes"]) > self.config.keyframes_per_episode:
            d["keyframes"] = d["keyframes"][::2]  # thin uniformly, then keep every 2nd
            d["keyframe_stride"] *= 2

    # ---- recall -------------------------------------------------------------------------
    def recall(self, query: MemoryQuery) -> list[Hit]:
        qv = query_vectors(query.text, query.embedding, self.embedders, self._dims)
        qt = tokens(query.text)
        if not qv and not qt and query.near is None and not (query.t0_ns or query.t1_ns):
            return []
        cands: set[str] = set()
        for t in qt:
            cands |= self._post.get(t, set())
        for space, q in qv.items():
            idx = self._index.get(space)
            if idx is not None and len(idx):
                _, ids = idx.search(q, max(4 * query.top_k, 16))
                for i in ids[0].tolist():
                    if i >= 0:
                        cands |= {k for k in (f"e{i}", f"v{i}", f"p{i}") if k in self._recs}
        if not qv and not qt:  # only a place or a time window
            cands = set(self._recs)
        now = self._clock_ns
        lam, w = self.config.lexical_weight, self.config.recall_retention_weight
        filtered = bool(
            query.t0_ns or query.t1_ns or (query.near is not None and query.radius_m > 0)
        )
        scored = []
        for key in cands:
            rec = self._recs[key]
            if filtered and not self._passes(rec, query):
                continue
            emb = 0.0
            for space, q in qv.items():
                v = rec.embs.get(space)
                if v is not None:
                    emb = max(emb, float(v @ q))
                if rec.kind == "episode" and space == "image":
                    for kf in rec.data["keyframes"]:
                        if kf["embedding"].size == q.size:
                            emb = max(emb, float(kf["embedding"] @ q))
            emb = min(max(emb, 0.0), 1.0)
            if key[0] == "e":  # an entity matches by its best name (label or alias)
                lex = max(lexical_score(qt, t) for t in self._names_of(rec))
            else:
                lex = lexical_score(qt, self._toks[key])
            if qv and qt:
                rel = lam * lex + (1 - lam) * emb
            elif qv:
                rel = emb
            elif qt:
                rel = lex
            else:
                rel = 1.0
            if rel <= 0:
                continue
            score = rel * ((1 - w) + w * rec.retention(now))
            scored.append((score, rec.stamp_ns, key))
        scored.sort(key=lambda x: (-x[0], -x[1], x[2]))
        hits = []
        for score, _, key in scored[: query.top_k]:
            rec = self._recs[key]
            hits.append(self._hit(rec, score, now))
            self._reinforce(rec, now)
        return hits

    def _names_of(self, rec: _Rec) -> tuple[frozenset[str], ...]:
        """Distinct word sets of an entity's names (label, aliases; each also with its
        kind), cached until the entity changes."""
        cached = self._name_toks.get(rec.key)
        if cached is not None and cached[0] == rec.version:
            return cached[1]
        names = (rec.data["label"], *rec.data["aliases"])
        sets = tuple({tokens(t) for n in names for t in (n, f"{n} {rec.kind}")})
        self._name_toks[rec.key] = (rec.version, sets)
        return sets

    def _passes(self, rec: _Rec, query: MemoryQuery) -> bool:
        start = rec.stamp_ns
        end = rec.data.get("last_ns") or rec.data.get("end_ns") or rec.stamp_ns
        if query.t0_ns and end < query.t0_ns:
            return False
        if query.t1_ns and start > query.t1_ns:
            return False
        if query.near is not None and query.radius_m > 0:
            if rec.position is None:
                return False
            if float(np.linalg.norm(np.asarray(rec.position) - query.near)) > query.radius_m:
                return False
        return True

    def _reinforce(self, rec: _Rec, now: int) -> None:
        """MemoryBank: recalling strengthens a memory and resets its clock."""
        rec.strength_s *= self.config.recall_growth
        rec.last_access_ns = max(rec.last_access_ns, now)
        rec.version += 1
        self.counters["reinforced"] += 1

    def _hit(self, rec: _Rec, score: float, now: int) -> Hit:
        data = {
            "kind": rec.kind,
            "importance": rec.importance,
            "strength_s": rec.strength_s,
            "retention": round(rec.retention(now), 6),
        }
        d = rec.data
        if rec.key[0] == "e":
            data.update(
                label=d["label"],
                count=d["count"],
                last_seen_ns=d["last_ns"],
                aliases=sorted(d["aliases"]),
            )
        elif rec.key[0] == "v":
            data.update(entities=list(d["entities"]), episode=d.get("episode", ""))
        else:
            data.update(
                episode_id=d["episode_id"],
                instruction=d["instruction"],
                outcome=d["outcome"],
                steps=[{k: s[k] for k in ("skill", "status", "reason")} for s in d["steps"]],
                entities=list(d["entities"]),
                end_ns=d["end_ns"],
            )
        stamp = d.get("last_ns", rec.stamp_ns) if rec.key[0] == "e" else rec.stamp_ns
        return Hit(
            memory=self.name,
            score=score,
            text=rec.text,
            stamp_ns=stamp,
            position=rec.position,
            record_id=f"{_PREFIX_NAMES[rec.key[0]]}:{rec.key}",
            provenance=rec.provenance,
            data=data,
        )

    # ---- inspection ---------------------------------------------------------------------
    def entities(self, kind: str = "") -> list[dict[str, Any]]:
        """Entities (optionally of one kind) as dicts: key, kind, label, count, position."""
        return [
            {
                "key": r.key,
                "kind": r.kind,
                "label": r.data["label"],
                "aliases": dict(r.data["aliases"]),
                "count": r.data["count"],
                "position": r.position,
                "first_ns": r.stamp_ns,
                "last_ns": r.data["last_ns"],
            }
            for r in self._recs.values()
            if r.key[0] == "e" and (not kind or r.kind == kind)
        ]

    def episodes(self) -> list[dict[str, Any]]:
        return [
            dict(r.data, key=r.key, text=r.text) for r in self._recs.values() if r.key[0] == "p"
        ]

    def events(self) -> list[dict[str, Any]]:
        return [
            {"key": r.key, "kind": r.kind, "text": r.text, "stamp_ns": r.stamp_ns}
            for r in self._recs.values()
            if r.key[0] == "v"
        ]

    def retention(self, key: str, now_ns: int | None = None) -> float:
        """R = exp(-(now - last_access) / S) of one record (``KeyError`` if forgotten)."""
        return self._recs[key].retention(self._clock_ns if now_ns is None else now_ns)

    def strength_s(self, key: str) -> float:
        return self._recs[key].strength_s

    def __contains__(self, key: str) -> bool:
        return key in self._recs

    # ---- consolidation ------------------------------------------------------------------
    def consolidate(self, *, now_ns: int | None = None) -> None:
        now = max(self._clock_ns, now_ns or 0)
        self._clock_ns = now
        self._merge_duplicates()
        thr = self.config.forget_below
        for key in list(self._recs):
            rec = self._recs[key]
            r = rec.retention(now)
            if key == self._open_episode or r >= thr:
                continue
            if key[0] == "v" or (key[0] == "e" and rec.data["count"] <= 1):
                self._forget(key)
            elif key[0] == "p":
                if not rec.data["gist"]:
                    self._summarise(rec)
                elif r < thr * thr:
                    self._forget(key)
        self._enforce_capacity(now)

    def _forget(self, key: str) -> None:
        self._remove(key)
        self.counters["forgotten"] += 1

    def _summarise(self, ep: _Rec) -> None:
        """An old episode keeps its gist: instruction, outcome, entities."""
        self._unindex(ep)
        d = ep.data
        d["steps"] = [s for s in d["steps"] if s["status"] == "failed"][:3]
        d["keyframes"] = []
        d["gist"] = True
        ep.text = self._episode_text(ep)
        ep.version += 1
        self._index_rec(ep)
        self.counters["summarised"] += 1

    def _enforce_capacity(self, now: int) -> None:
        if len(self._recs) <= self.config.capacity:
            return
        # down to 95% of capacity, so that the sort below runs once per many writes
        excess = len(self._recs) - int(self.config.capacity * 0.95)
        rank = {"v": 0, "e": 1, "p": 2}
        order = sorted(
            (
                (r.retention(now) * (0.5 + r.importance), rank[k[0]], r.stamp_ns, k)
                for k, r in self._recs.items()
                if k != self._open_episode
            )
        )
        for _, _, _, key in order[:excess]:
            self._forget(key)

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

    def _duplicates(self, a: _Rec, b: _Rec) -> bool:
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

    def _merge_entities(self, a: _Rec, b: _Rec, *, reason: str) -> dict[str, Any]:
        before_a, before_b = _snapshot(a), _snapshot(b)
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
            self._add(_restore(snap))
        self._log("unmerge", entity=entry["entity"], absorbed=entry["absorbed"], undoes=log_id)

    # ---- persistence --------------------------------------------------------------------
    def _records(self) -> Any:
        meta = {
            "next": self._next,
            "clock_ns": self._clock_ns,
            "open_episode": self._open_episode,
            "next_log": self._next_log,
            "counters": self.counters,
            "dims": self._dims,
            "tracks": [[k, t, key] for (k, t), key in self._tracks.items()],
        }
        yield Record(self.name, "meta", payload=meta, kind="meta")
        for rec in self._recs.values():
            arrays: dict[str, np.ndarray] = {}
            snap = _snapshot(rec, arrays=arrays)
            yield Record(
                self.name,
                rec.key,
                kind=rec.kind,
                stamp_ns=rec.stamp_ns,
                provenance=rec.provenance,
                version=rec.version,
                payload=snap,
                arrays=arrays,
            )
        for entry in self.merge_log:
            yield Record(self.name, f"log{entry['log_id']}", kind="log", payload=entry, version=1)

    def save(self, directory: str | Path) -> None:
        with Store(directory) as store:
            store.sync(self.name, self._records(), keep_history=False)

    def load(self, directory: str | Path) -> None:
        with Store(directory) as store:
            meta = store.get(self.name, "meta")
            if meta is None:
                raise ValueError(f"{directory}: no episodic memory saved there")
            self._reset()
            m = meta.payload
            self._next, self._clock_ns = m["next"], m["clock_ns"]
            self._open_episode, self._next_log = m["open_episode"], m["next_log"]
            self.counters.update(m["counters"])
            self._dims = {k: int(v) for k, v in m["dims"].items()}
            self._tracks = collections.OrderedDict(
                ((k, int(t)), key) for k, t, key in m.get("tracks", [])
            )
            logs = []
            for rec in store.scan(self.name):
                if rec.kind == "meta":
                    continue
                if rec.kind == "log":
                    logs.append(rec.payload)
                    continue
                r = _restore(rec.payload, arrays=rec.arrays)
                r.version = rec.version
                r.provenance = rec.provenance
                self._add(r)
            for entry in sorted(logs, key=lambda e: e["log_id"]):
                self.merge_log.append(entry)

    # ---- sizes --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._recs)

    def stats(self) -> dict[str, Any]:
        kinds = collections.Counter(k[0] for k in self._recs)
        return {
            "records": len(self),
            "entities": kinds["e"],
            "events": kinds["v"],
            "episodes": kinds["p"],
            "merge_log": len(self.merge_log),
            **self.counters,
        }


_PREFIX_NAMES = {"e": "entity", "v": "event", "p": "episode"}


def _fmt_pos(pos: tuple[float, float, float] | None) -> str:
    return "?" if pos is None else "(" + ", ".join(f"{v:.2f}" for v in pos) + ")"


def _snapshot(rec: _Rec, *, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """A msgpack-able copy of a record. With ``arrays``, vectors go there (named
    ``emb_<space>``, ``sum_<space>``, ``kf``); otherwise they are inlined as lists."""
    data = dict(rec.data)
    embs = {k: np.asarray(v, np.float32) for k, v in rec.embs.items()}
    sums = {k: np.asarray(v, np.float32) for k, v in data.pop("emb_sum", {}).items()}
    if "aliases" in data:
        data["aliases"] = dict(data["aliases"])
    kfs = data.get("keyframes")
    kf_vecs = [kf["embedding"] for kf in kfs] if kfs else []
    if kfs:
        data["keyframes"] = [{k: v for k, v in kf.items() if k != "embedding"} for kf in kfs]
    snap: dict[str, Any] = {
        "key": rec.key,
        "kind": rec.kind,
        "text": rec.text,
        "stamp_ns": rec.stamp_ns,
        "importance": rec.importance,
        "strength_s": rec.strength_s,
        "last_access_ns": rec.last_access_ns,
        "provenance": rec.provenance.to_dict(),
        "version": rec.version,
        "position": None if rec.position is None else list(rec.position),
        "data": data,
    }
    if arrays is None:
        snap["embs"] = {k: v.tolist() for k, v in embs.items()}
        snap["sums"] = {k: v.tolist() for k, v in sums.items()}
        snap["kf"] = [np.asarray(v, np.float32).tolist() for v in kf_vecs]
    else:
        arrays.update({f"emb_{k}": v for k, v in embs.items()})
        arrays.update({f"sum_{k}": v for k, v in sums.items()})
        if kf_vecs:
            arrays["kf"] = np.stack(kf_vecs).astype(np.float32)
    return snap


def _restore(snap: dict[str, Any], *, arrays: dict[str, np.ndarray] | None = None) -> _Rec:
    data = dict(snap["data"])
    if arrays is None:
        embs = {k: np.asarray(v, np.float32) for k, v in snap.get("embs", {}).items()}
        sums = {k: np.asarray(v, np.float32) for k, v in snap.get("sums", {}).items()}
        kf_vecs = [np.asarray(v, np.float32) for v in snap.get("kf", [])]
    else:
        embs = {k[4:]: v for k, v in arrays.items() if k.startswith("emb_")}
        sums = {k[4:]: v for k, v in arrays.items() if k.startswith("sum_")}
        kf_vecs = list(arrays["kf"]) if "kf" in arrays else []
    if sums:
        data["emb_sum"] = sums
    if "keyframes" in data:
        data["keyframes"] = [dict(kf, embedding=v) for kf, v in zip(data["keyframes"], kf_vecs)]
    if "merged_from" in data:
        data["merged_from"] = list(data["merged_from"])
    return _Rec(
        key=snap["key"],
        kind=snap["kind"],
        text=snap["text"],
        stamp_ns=snap["stamp_ns"],
        importance=snap["importance"],
        strength_s=snap["strength_s"],
        last_access_ns=snap["last_access_ns"],
        provenance=Provenance(**snap["provenance"]),
        version=snap.get("version", 1),
        position=None if snap["position"] is None else tuple(snap["position"]),
        data=data,
        embs=embs,
    )
