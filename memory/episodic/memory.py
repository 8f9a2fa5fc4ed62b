"""``EpisodicMemory``: what each message adds (entities, events, episodes), inspection
and persistence; resolution, forgetting and recall come from the classes it composes
(``engram.memory.episodic`` describes the records)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, cast

import numpy as np

from engram.memory.base import Memory, Provenance
from engram.memory.embedding import Embedders
from engram.memory.episodic.config import EpisodicConfig
from engram.memory.episodic.forgetting import Forgetting
from engram.memory.episodic.recall import EpisodicRecall
from engram.memory.episodic.records import Rec, episode_text, restore, snapshot
from engram.memory.index import VectorIndex, all_finite, l2n, tokens
from engram.memory.store import Record, Store
from engram.runtime.messages import (
    Instruction,
    Message,
    Percept,
    PlanStep,
    SoundEvent,
    Transcript,
)

__all__ = ["EpisodicConfig", "EpisodicMemory"]

_TERMINAL = ("succeeded", "failed", "aborted")
_END_SKILLS = ("done", "episode", "task")


class EpisodicMemory(Forgetting, EpisodicRecall, Memory):
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
        self.reset()

    def reset(self) -> None:
        """Forget everything (an empty memory, same configuration)."""
        self._recs: dict[str, Rec] = {}
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
        for field_name in ("embedding", "object_embeddings"):
            arr = getattr(msg, field_name, None)
            if isinstance(arr, np.ndarray) and arr.size and not all_finite(arr):
                raise ValueError(f"{msg.TYPE}.{field_name}: contains NaN or inf")
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

    def _episode(self) -> Rec | None:
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
    ) -> Rec:
        imp = self.config.importance.get("episode", 0.8)
        key = self._new_key("p")
        embs = {}
        if self.embedders is not None and instruction:
            vec = self.embedders.embed("text", instruction)
            if vec is not None:
                embs["text"] = vec
        ep = Rec(
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
        ep.text = episode_text(ep)
        ep.version += 1
        self._index_rec(ep)
        self._open_episode = None
        self._event(
            "episode_end",
            f'episode "{ep.data["instruction"]}" {outcome}' + (f": {reason}" if reason else ""),
            stamp,
            ep.provenance,
        )

    def _add_keyframe(self, ep: Rec, p: Percept) -> None:
        d = ep.data
        d["keyframes_seen"] += 1
        if (d["keyframes_seen"] - 1) % d["keyframe_stride"]:
            return
        d["keyframes"].append(
            {
                "stamp_ns": p.stamp_ns,
                "labels": list(p.object_labels),
                "embedding": l2n(cast(np.ndarray, p.embedding)),
                "position": [float(v) for v in p.world_from_camera[:3, 3]],
            }
        )
        if len(d["keyframes"]) > self.config.keyframes_per_episode:
            d["keyframes"] = d["keyframes"][::2]  # thin uniformly, then keep every 2nd
            d["keyframe_stride"] *= 2

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

    def __contains__(self, key: str) -> bool:
        return key in self._recs

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
            snap = snapshot(rec, arrays=arrays)
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
            self.reset()
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
                r = restore(rec.payload, arrays=rec.arrays)  # with its exact provenance
                r.version = rec.version
                self._add(r)
            for entry in sorted(logs, key=lambda e: e["log_id"]):
                self.merge_log.append(entry)

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
