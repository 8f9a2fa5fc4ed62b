"""``SceneMonitor``: the current view's short-term scene changes (what ``watch`` waits for)."""

from __future__ import annotations

import numpy as np

from engram.runtime.messages import Percept
from engram.sim.robots import ROBOT_PART_LABELS

__all__ = ["SceneMonitor", "object_key"]


def object_key(label: str, object_id: int, by_id: bool) -> str:
    """How the planner names one perceived object: its label, or ``label#id`` when
    labels name kinds rather than objects (``by_id``, camera mode)."""
    return f"{label}#{int(object_id)}" if by_id else label


class SceneMonitor:
    """Short-term scene changes over the last ``window_s`` of percepts, for ``watch``.

    Per label: when it was first / last in view (since the monitor was reset), its
    position, and for lamp-like objects (labels containing ``button``, ``light`` or
    ``lamp``) whether it is *lit*: its brightness (``brightness``: its own pixels, max
    over RGB, 0..1) is above ``lit_min`` and ``lit_ratio`` times the median of the
    lamp-like objects in the same frame (or its own darkest reading).
    ``update`` returns the changes it saw: ``("light_on" | "light_off", label, stamp_ns)``.
    It is the current view's short-term state, not a memory: decisions come from memory.
    """

    def __init__(
        self,
        *,
        window_s: float = 5.0,
        move_tol_m: float = 0.005,
        lit_ratio: float = 1.6,
        lit_min: float = 0.4,
        key_by_id: bool = False,
    ) -> None:
        self.window_s = window_s
        # key objects "label#id" (camera mode: labels name kinds, several objects share one)
        self.key_by_id = key_by_id
        self.move_tol_m = move_tol_m
        self.lit_ratio = lit_ratio
        self.lit_min = lit_min
        self.reset()

    def reset(self) -> None:
        self.first_seen: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        self.positions: dict[str, np.ndarray] = {}
        self.lit: set[str] = set()
        self.darkest: dict[str, float] = {}
        self.last_change_ns = 0
        self.newest_ns = 0
        self.light_events = 0

    @staticmethod
    def lamp_like(label: str) -> bool:
        return any(w in label for w in ("button", "light", "lamp"))

    def brightness(self, percept: Percept, k: int) -> float | None:
        """How bright object k is, 0..1: perception's reading of the object's own pixels
        in the full frame (``Percept.object_brightness``) when it sent one; else (an older
        perception) the brightest pixel of the middle of its box in the thumbnail (the
        boxes are in pixels of the ``percept.image_width_px`` wide frame; None when
        unknown). The thumbnail reading mixes in what surrounds a small lamp (a 64 px
        thumbnail gives a whole button 3 px), so a dark cap on a bright table read high."""
        own = percept.object_brightness
        if own is not None and k < len(own):
            return float(own[k])
        thumb = percept.thumbnail
        if thumb is None or thumb.size == 0 or percept.image_width_px <= 0:
            return None
        th, tw = thumb.shape[:2]
        scale = tw / percept.image_width_px
        x1, y1, x2, y2 = (float(v) * scale for v in percept.object_boxes[k])
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = max((x2 - x1) * 0.3, 0.5), max((y2 - y1) * 0.3, 0.5)
        c0, c1 = int(np.clip(np.floor(cx - hw), 0, tw - 1)), int(np.clip(np.ceil(cx + hw), 1, tw))
        r0, r1 = int(np.clip(np.floor(cy - hh), 0, th - 1)), int(np.clip(np.ceil(cy + hh), 1, th))
        region = thumb[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)]
        return float(region.max(axis=2).max()) / 255.0 if region.size else None

    def update(self, percept: Percept) -> list[tuple[str, str, int]]:
        stamp = int(percept.stamp_ns)
        self.newest_ns = max(self.newest_ns, stamp)
        events: list[tuple[str, str, int]] = []
        visible = set()
        keys = [
            object_key(label, int(oid), self.key_by_id)
            for label, oid in zip(percept.object_labels, percept.object_ids)
        ]
        for k, label in enumerate(keys):
            if percept.object_labels[k] in ROBOT_PART_LABELS:
                continue
            visible.add(label)
            self.first_seen.setdefault(label, stamp)
            self.last_seen[label] = stamp
            pos = np.asarray(percept.object_centroids[k], np.float64)
            old = self.positions.get(label)
            if old is None or np.linalg.norm(old - pos) > self.move_tol_m:
                self.last_change_ns = stamp
            self.positions[label] = pos
        lamps = [
            (label, self.brightness(percept, k))
            for k, label in enumerate(keys)
            if self.lamp_like(label)
        ]
        lamps = [(label, b) for label, b in lamps if b is not None]
        if lamps:
            median = float(np.median([b for _, b in lamps]))
            for label, b in lamps:
                self.darkest[label] = min(self.darkest.get(label, b), b)
                ref = median if len(lamps) >= 2 else self.darkest[label]
                on = b >= self.lit_min and b >= self.lit_ratio * max(ref, 1e-3)
                if on and label not in self.lit:
                    self.lit.add(label)
                    events.append(("light_on", label, stamp))
                elif not on and label in self.lit:
                    self.lit.discard(label)
                    events.append(("light_off", label, stamp))
        for label in list(self.lit):  # a lamp out of view is not known to be lit
            if label not in visible:
                self.lit.discard(label)
        if events:
            self.last_change_ns = stamp
            self.light_events += sum(1 for e in events if e[0] == "light_on")
        return events

    def visible(self, label: str, *, within_s: float = 0.0) -> bool:
        last = self.last_seen.get(label)
        return last is not None and self.newest_ns - last <= within_s * 1e9

    def seen_since(self, prefix: str, t_ns: int) -> list[str]:
        return sorted(
            label
            for label, last in self.last_seen.items()
            if label.startswith(prefix) and last >= t_ns
        )
