"""Time questions: ``between(t0, t1)``, ``last_seen(x)``, ``first_seen(x)``,
``before(x)``, ``after(x)``, ``order([x, y, ...])``. Through ``recall`` a query's
text selects them: "when was the red mug last seen" (``last``), "... first ...",
"what happened before the bell" (``before``), "after ...", and ``t0_ns``/``t1_ns``
restrict to a window.
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING

import numpy as np

from engram.memory.base import Hit
from engram.memory.temporal.chunking import TemporalState
from engram.memory.temporal.records import Chunk, Item, Segment
from engram.runtime.messages import MemoryQuery

__all__ = ["TimeQuestions", "parse_time_intent"]


_INTENT_BEFORE = re.compile(r"\b(before|prior to|preceding)\b(.*)$", re.I)
_INTENT_AFTER = re.compile(r"\b(after|following|since)\b(.*)$", re.I)
_INTENT_LAST = re.compile(r"\b(last|latest|most recent(ly)?|recently)\b", re.I)
_INTENT_FIRST = re.compile(r"\b(first|earliest)\b", re.I)


def parse_time_intent(text: str) -> tuple[str, str]:
    """-> (intent, subject): intent in {"before", "after", "last", "first", ""}.

    "what happened before the bell rang" -> ("before", "the bell rang");
    "when was the red mug last seen" -> ("last", "when was the red mug last seen").
    """
    for intent, pattern in (("before", _INTENT_BEFORE), ("after", _INTENT_AFTER)):
        m = pattern.search(text)
        if m and m.group(2).strip():
            return intent, m.group(2).strip()
    if _INTENT_LAST.search(text):
        return "last", text
    if _INTENT_FIRST.search(text):
        return "first", text
    return "", text


class TimeQuestions(TemporalState):
    """``between``, ``last_seen``, ``first_seen``, ``before``, ``after``, ``order``."""

    if TYPE_CHECKING:  # defined by TemporalRecall

        def _query(
            self, text: str, embedding: np.ndarray | None
        ) -> tuple[dict, frozenset[str]]: ...

        def _chunk_scores(
            self, qv: dict[str, np.ndarray], qt: frozenset[str], t0_ns: int = 0, t1_ns: int = 0
        ) -> tuple[np.ndarray, np.ndarray]: ...

        def _item_scores(
            self, item_ids: list[int], qv: dict[str, np.ndarray], qt: frozenset[str]
        ) -> tuple[np.ndarray, np.ndarray]: ...

        def _hcam(self, qv: dict, qt: frozenset[str], query: MemoryQuery) -> list[Hit]: ...

        def _item_hit(self, item: Item, score: float, best_obj: int = -1) -> Hit: ...

        def _segment(self, ch: Chunk, score: float, item_ids: list[int]) -> Segment: ...

        def _segment_hit(self, seg: Segment) -> Hit: ...

    def between(self, t0_ns: int, t1_ns: int) -> list[Segment]:
        """Segments overlapping [t0_ns, t1_ns] (0 = open end), in time order."""
        out = []
        for cid in self._chunk_order:
            ch = self._chunks.get(cid)
            if ch is None or (t0_ns and ch.end_ns < t0_ns) or (t1_ns and ch.start_ns > t1_ns):
                continue
            out.append(self._segment(ch, 1.0, list(ch.item_ids)))
        out.sort(key=lambda s: s.start_ns)
        return out

    def last_seen(self, what: str | np.ndarray, *, t1_ns: int = 0) -> Hit | None:
        """The latest item matching ``what`` (text or embedding), or None."""
        qv, qt = self._what(what)
        return self._seen(qv, qt, last=True, t1_ns=t1_ns)

    def first_seen(self, what: str | np.ndarray, *, t0_ns: int = 0) -> Hit | None:
        """The earliest item matching ``what`` (text or embedding), or None."""
        qv, qt = self._what(what)
        return self._seen(qv, qt, last=False, t0_ns=t0_ns)

    def _what(self, what: str | np.ndarray) -> tuple[dict, frozenset[str]]:
        if isinstance(what, np.ndarray):
            return self._query("", what.astype(np.float32))
        return self._query(what, None)

    def _seen(
        self, qv: dict, qt: frozenset[str], *, last: bool, t0_ns: int = 0, t1_ns: int = 0
    ) -> Hit | None:
        """Chunks that match at all, newest (oldest) first; the newest (oldest) matching item."""
        thr = self.config.match_min_score
        ids, scores = self._chunk_scores(qv, qt, t0_ns, t1_ns)
        cands = [
            self._chunks[int(c)]
            for c, s in zip(ids.tolist(), scores.tolist())
            if s >= thr * 0.5  # a summary dilutes a single matching frame: be lenient
        ]
        cands.sort(key=lambda ch: ch.end_ns if last else ch.start_ns, reverse=last)
        for ch in cands:
            if ch.compressed or not ch.item_ids:
                seg = self._segment(ch, float(scores[list(ids).index(ch.chunk_id)]), [])
                if seg.score >= thr:
                    return self._segment_hit(seg)
                continue
            items = [i for i in ch.item_ids if self._in_range(self._items[i], t0_ns, t1_ns)]
            if not items:
                continue
            s, best_obj = self._item_scores(items, qv, qt)
            ok = [r for r in range(len(items)) if s[r] >= thr]
            if not ok:
                continue
            pick = (max if last else min)(ok, key=lambda r: (self._items[items[r]].stamp_ns, r))
            hit = self._item_hit(self._items[items[pick]], float(s[pick]), int(best_obj[pick]))
            hit.data["intent"] = "last" if last else "first"
            return hit
        return None

    @staticmethod
    def _in_range(item: Item, t0_ns: int, t1_ns: int) -> bool:
        return not ((t0_ns and item.end_ns < t0_ns) or (t1_ns and item.stamp_ns > t1_ns))

    def before(self, what: str | np.ndarray, *, n: int = 3) -> list[Hit]:
        """Up to ``n`` items just before the event best matching ``what``, nearest first."""
        qv, qt = self._what(what)
        return self._before_after("before", qv, qt, n=n)

    def after(self, what: str | np.ndarray, *, n: int = 3) -> list[Hit]:
        """Up to ``n`` items just after the event best matching ``what``, nearest first."""
        qv, qt = self._what(what)
        return self._before_after("after", qv, qt, n=n)

    def _before_after(self, intent: str, qv: dict, qt: frozenset[str], *, n: int) -> list[Hit]:
        event = self._hcam(qv, qt, MemoryQuery(top_k=1))
        if not event or not event[0].record_id.startswith("item:"):
            return []
        ev = self._items[int(event[0].record_id.split(":")[1])]
        timeline = self._sorted_timeline()
        pos = bisect.bisect_left(timeline, (ev.stamp_ns, ev.item_id))
        step = -1 if intent == "before" else 1
        j = pos + step
        out: list[Hit] = []
        last_text = None
        while 0 <= j < len(timeline) and len(out) < n:
            item = self._items[timeline[j][1]]
            j += step
            if item.text == last_text or item.text == ev.text:
                continue  # repeated frames of the same scene say nothing new
            last_text = item.text
            hit = self._item_hit(item, event[0].score * (1.0 - 0.05 * len(out)))
            hit.data.update({"intent": intent, "event": event[0].record_id})
            out.append(hit)
        return out

    def _sorted_timeline(self) -> list[tuple[int, int]]:
        if self._timeline is None:
            self._timeline = sorted((it.stamp_ns, iid) for iid, it in self._items.items())
        return self._timeline

    def order(self, whats: list[str], *, which: str = "first") -> list[tuple[str, int]]:
        """Sort things by when they were first (or last) seen: -> [(what, stamp_ns)], earliest
        first; things never seen are left out."""
        if which not in ("first", "last"):
            raise ValueError(f"order: which must be 'first' or 'last', got {which!r}")
        found = []
        for w in whats:
            hit = self.first_seen(w) if which == "first" else self.last_seen(w)
            if hit is not None:
                found.append((w, hit.stamp_ns))
        found.sort(key=lambda x: x[1])
        return found
