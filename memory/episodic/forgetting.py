"""Forgetting curve (MemoryBank): every record has an importance I in [0, 1]
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

from engram.memory.episodic.entities import EntityResolution
from engram.memory.episodic.records import Rec, episode_text

__all__ = ["Forgetting"]


class Forgetting(EntityResolution):
    """Retention, consolidation and the capacity bound (see the module docstring)."""

    def retention(self, key: str, now_ns: int | None = None) -> float:
        """R = exp(-(now - last_access) / S) of one record (``KeyError`` if forgotten)."""
        return self._recs[key].retention(self._clock_ns if now_ns is None else now_ns)

    def strength_s(self, key: str) -> float:
        return self._recs[key].strength_s

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

    def _summarise(self, ep: Rec) -> None:
        """An old episode keeps its gist: instruction, outcome, entities."""
        self._unindex(ep)
        d = ep.data
        d["steps"] = [s for s in d["steps"] if s["status"] == "failed"][:3]
        d["keyframes"] = []
        d["gist"] = True
        ep.text = episode_text(ep)
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
