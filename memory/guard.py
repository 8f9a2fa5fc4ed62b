"""Memory guard (after A-MemGuard): consensus checks before a fact enters semantic memory.

A poisoned or mistaken record ("the red mug is in the garage", said once,
while the camera has seen it on the kitchen table all morning) should not
silently overwrite what many independent observations agree on. The guard
decides, for every candidate fact, one of:

- ``accepted``: nothing contradicts it; it is added.
- ``reinforced``: the same fact is already current; its support grows.
- ``updated``: it contradicts the current fact of a single-valued relation
  (``in``, ``on``, ...), or a location implied by a chain of facts (``mug on
  table_1``, ``table_1 in kitchen`` imply ``mug in kitchen``), *and* its evidence
  is at least ``update_margin`` times the consensus evidence of what it
  contradicts: it supersedes the old fact, which stays in the history.
- ``quarantined``: it contradicts without enough evidence. It is kept aside,
  not applied. Later independent support for it accumulates there and releases
  it (``released``) once the margin is met; support for the old fact instead
  refutes it (``refuted``), and the source that claimed it gets a *lesson*.
- ``rejected``: its source's trust times its confidence is below ``min_evidence``.
- ``expired``: a quarantined candidate older than ``quarantine_ttl_s``.

Evidence of a fact is the sum over its distinct supporters (source kind and
producer, e.g. ``observation:/percepts``) of ``trust * confidence *
sqrt(min(n, 9)) * freshness``, where n counts that supporter's confirmations (so
one source repeating itself gains at most 3x), trust is ``source_trust[source]``
divided by ``1 + lesson_penalty * lessons[supporter]`` (A-MemGuard's "lessons":
sources that were caught contradicting the consensus are trusted less), and
freshness is ``0.5 ** (age / half_life_s)`` since the supporter's last
confirmation (the world changes, old evidence counts less).

Every decision goes to the audit log (bounded to ``audit_max`` entries), with
the evidence numbers and the facts involved. Repeated reinforcement by the same
supporter is counted on the fact, not logged each time.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Candidate", "Decision", "GuardConfig", "MemoryGuard", "add_support"]


def _default_trust() -> dict[str, float]:
    return {"observation": 1.0, "system": 1.0, "speech": 0.6, "told": 0.6, "inferred": 0.4}


@dataclass
class GuardConfig:
    """Consensus rules of the ``MemoryGuard``."""

    source_trust: dict[str, float] = field(default_factory=_default_trust)  # trust per source kind
    default_trust: float = 0.3  # trust of a source kind not listed above
    update_margin: float = 1.0  # an update needs evidence >= this x the contradicted consensus
    half_life_s: float = 600.0  # evidence halves every this many seconds since its last support
    min_evidence: float = 0.05  # below this trust x confidence a candidate is rejected outright
    lesson_penalty: float = 1.0  # trust of a supporter is divided by 1 + this x its lessons
    quarantine_ttl_s: float = 3600.0  # quarantined candidates older than this expire
    max_quarantine: int = 1000  # quarantined candidates kept (oldest expire first)
    audit_max: int = 100_000  # audit-log entries kept (oldest dropped)
    max_repeat: int = 9  # confirmations by one supporter that count (sqrt(min(n, max_repeat)))

    def __post_init__(self) -> None:
        if self.update_margin <= 0 or self.half_life_s <= 0:
            raise ValueError("GuardConfig: update_margin and half_life_s must be > 0")


@dataclass
class Candidate:
    """A fact someone wants to write."""

    subject: str
    relation: str
    object: str
    confidence: float  # [0, 1]
    source: str  # "observation", "speech", "told", "inferred", "system"
    producer: str  # who: topic or node name (one supporter = source + producer)
    stamp_ns: int

    @property
    def supporter(self) -> str:
        return f"{self.source}:{self.producer}"

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.subject, self.relation, self.object)


@dataclass
class Decision:
    """What the guard decided about a candidate."""

    action: str  # accepted | reinforced | updated | quarantined | released | rejected
    reason: str
    evidence_new: float = 0.0
    evidence_current: float = 0.0
    conflicts: list[str] = field(default_factory=list)  # fact ids it contradicts
    quarantine_id: str = ""  # set when quarantined / released
    #: support the applied fact starts with (accepted / updated / released):
    #: {supporter: [trust x confidence, confirmations, last_ns]}
    supporters: dict[str, list[float]] = field(default_factory=dict)

    @property
    def applied(self) -> bool:
        return self.action in ("accepted", "reinforced", "updated", "released")


class MemoryGuard:
    """Consensus checks, quarantine, lessons and the audit log. See the module docstring.

    The semantic memory owns the facts; the guard scores evidence with
    ``evidence(supporters, now_ns)`` where supporters is
    ``{supporter: [trust_x_confidence, confirmations, last_ns]}``.
    """

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        self.audit: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.config.audit_max
        )
        self.quarantine: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.lessons: dict[str, int] = {}
        self._next_audit = 0
        self._next_q = 0

    # ---- evidence -----------------------------------------------------------------------
    def trust(self, source: str, supporter: str) -> float:
        base = self.config.source_trust.get(source, self.config.default_trust)
        return base / (1.0 + self.config.lesson_penalty * self.lessons.get(supporter, 0))

    def weight(self, cand: Candidate) -> float:
        """trust x confidence of one candidate's own assertion."""
        return self.trust(cand.source, cand.supporter) * min(max(cand.confidence, 0.0), 1.0)

    def evidence(self, supporters: dict[str, list[float]], now_ns: int) -> float:
        cfg = self.config
        total = 0.0
        for sup, (w, n, last_ns) in supporters.items():
            age_s = max(0.0, (now_ns - last_ns) / 1e9)
            fresh = 0.5 ** (age_s / cfg.half_life_s)
            penalty = 1.0 + cfg.lesson_penalty * self.lessons.get(sup, 0)
            total += (w / penalty) * math.sqrt(min(n, cfg.max_repeat)) * fresh
        return total

    # ---- decisions ----------------------------------------------------------------------
    def decide(
        self,
        cand: Candidate,
        *,
        same: Any | None,
        conflicts: list[Any],
        now_ns: int,
    ) -> Decision:
        """Decide about ``cand`` given the current identical fact (``same``, or None) and the
        current facts it contradicts (each with ``fact_id`` and ``supporters``)."""
        cfg = self.config
        self._expire(now_ns)
        w = self.weight(cand)
        if w < cfg.min_evidence:
            return self._record(
                cand,
                Decision("rejected", f"trust x confidence {w:.3f} < {cfg.min_evidence}", w),
            )
        if same is not None:
            first = cand.supporter not in same.supporters
            d = Decision("reinforced", "same fact already current", w)
            self._refute_against(cand, now_ns)
            return self._record(cand, d) if first else d
        qid, q = self._find_quarantined(cand.triple)
        supporters = {k: list(v) for k, v in q["supporters"].items()} if q is not None else {}
        add_support(supporters, cand.supporter, w, now_ns)
        if not conflicts:
            if q is not None:
                del self.quarantine[qid]
                d = Decision("released", "no longer contradicted", w, quarantine_id=qid)
            else:
                d = Decision("accepted", "no contradiction", w)
            d.supporters = supporters
            return self._record(cand, d)
        e_new = self.evidence(supporters, now_ns)
        e_cur = max(self.evidence(f.supporters, now_ns) for f in conflicts)
        ids = [f.fact_id for f in conflicts]
        if e_new >= cfg.update_margin * e_cur:
            action = "released" if q is not None else "updated"
            if q is not None:
                del self.quarantine[qid]
            reason = f"evidence {e_new:.3f} >= {cfg.update_margin} x consensus {e_cur:.3f}"
            d = Decision(action, reason, e_new, e_cur, ids, qid or "", supporters)
            return self._record(cand, d)
        if q is None:
            self._next_q += 1
            qid = f"q{self._next_q}"
            q = {
                "quarantine_id": qid,
                "subject": cand.subject,
                "relation": cand.relation,
                "object": cand.object,
                "confidence": cand.confidence,
                "source": cand.source,
                "producer": cand.producer,
                "first_ns": now_ns,
                "conflicts": ids,
                "supporters": supporters,
            }
            self.quarantine[qid] = q
            while len(self.quarantine) > cfg.max_quarantine:
                old_id, old = self.quarantine.popitem(last=False)
                self._audit("expired", old, reason="quarantine full", quarantine_id=old_id)
        else:
            q["supporters"] = supporters
        reason = f"contradicts {', '.join(ids)}: evidence {e_new:.3f} < {cfg.update_margin} x {e_cur:.3f}"
        return self._record(cand, Decision("quarantined", reason, e_new, e_cur, ids, qid))

    def _refute_against(self, cand: Candidate, now_ns: int) -> None:
        """Support for a current fact refutes quarantined claims that contradict it;
        their sources get a lesson."""
        for qid, q in list(self.quarantine.items()):
            if (q["subject"], q["relation"]) != (cand.subject, cand.relation):
                continue
            if q["object"] == cand.object or q["first_ns"] >= now_ns:
                continue
            if cand.supporter in q["supporters"]:
                continue  # a source agreeing with both sides refutes nothing
            del self.quarantine[qid]
            for sup in q["supporters"]:
                self.lessons[sup] = self.lessons.get(sup, 0) + 1
            self._audit(
                "refuted",
                q,
                reason=f"{cand.supporter} confirmed {cand.subject} {cand.relation} {cand.object}",
                quarantine_id=qid,
                lessons={s: self.lessons[s] for s in q["supporters"]},
            )

    def _find_quarantined(self, triple: tuple[str, str, str]) -> tuple[str, dict | None]:
        for qid, q in self.quarantine.items():
            if (q["subject"], q["relation"], q["object"]) == triple:
                return qid, q
        return "", None

    def _expire(self, now_ns: int) -> None:
        ttl_ns = self.config.quarantine_ttl_s * 1e9
        for qid, q in list(self.quarantine.items()):
            if now_ns - q["first_ns"] > ttl_ns:
                del self.quarantine[qid]
                self._audit("expired", q, reason="quarantine TTL passed", quarantine_id=qid)

    # ---- audit --------------------------------------------------------------------------
    def _record(self, cand: Candidate, d: Decision) -> Decision:
        self._audit(
            d.action,
            {
                "subject": cand.subject,
                "relation": cand.relation,
                "object": cand.object,
                "confidence": cand.confidence,
                "source": cand.source,
                "producer": cand.producer,
            },
            reason=d.reason,
            evidence_new=round(d.evidence_new, 4),
            evidence_current=round(d.evidence_current, 4),
            conflicts=d.conflicts,
            quarantine_id=d.quarantine_id,
            stamp_ns=cand.stamp_ns,
        )
        return d

    def _audit(self, action: str, what: dict[str, Any], **extra: Any) -> None:
        self._next_audit += 1
        entry = {
            "audit_id": self._next_audit,
            "action": action,
            **{
                k: what[k]
                for k in ("subject", "relation", "object", "source", "producer")
                if k in what
            },
            **extra,
        }
        entry.setdefault("stamp_ns", what.get("first_ns", 0))
        self.audit.append(entry)

    # ---- persistence --------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "audit": list(self.audit),
            "quarantine": list(self.quarantine.values()),
            "lessons": self.lessons,
            "next_audit": self._next_audit,
            "next_q": self._next_q,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.audit.clear()
        self.audit.extend(state["audit"])
        self.quarantine = collections.OrderedDict(
            (q["quarantine_id"], dict(q, supporters=dict(q["supporters"])))
            for q in state["quarantine"]
        )
        self.lessons = dict(state["lessons"])
        self._next_audit = state["next_audit"]
        self._next_q = state["next_q"]


def add_support(supporters: dict[str, list[float]], sup: str, w: float, now_ns: int) -> None:
    """Add one confirmation by ``sup`` (weight: the best trust x confidence it gave)."""
    old = supporters.get(sup)
    if old is None:
        supporters[sup] = [w, 1, now_ns]
    else:
        supporters[sup] = [max(old[0], w), old[1] + 1, max(old[2], now_ns)]
