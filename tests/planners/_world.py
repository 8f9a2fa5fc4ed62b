"""A kinematic tabletop for planner tests: no physics, exact and instant.

The tool centre point integrates ``arm_ee_delta`` actions; closing the gripper
within 2.5 cm (xy) of an object's centre, low enough, attaches it (unless a slip is
injected); opening releases it onto the table. Percepts list the objects that are
not hidden, with centroids and extents; robot states carry ``world_from_ee`` and
the gripper width. Buttons count a press when the fingertips go 6 mm below the cap.
"""

from __future__ import annotations

import numpy as np

from engram.runtime.messages import ActionChunk, Percept, RobotState

TABLE_Z = 0.40
FINGER_M = 0.036


def make_percept(
    labels: list[str],
    *,
    stamp_ns: int,
    centroids: object = None,
    extents: object = None,
    boxes: object = None,
    **fields: object,
) -> Percept:
    """A ``Percept`` of the objects ``labels`` (ids 0..n-1, confidence 1): centroids and
    extents (n, 3) m and boxes (n, 4) px default to zeros; ``fields``: other fields."""
    n = len(labels)

    def rows(value: object, width: int, dtype: type) -> np.ndarray:
        if value is None:
            return np.zeros((n, width), dtype)
        return np.asarray(value, dtype).reshape(n, width)

    return Percept(
        stamp_ns=stamp_ns,
        object_ids=np.arange(n, dtype=np.int32),
        object_labels=list(labels),
        object_confidences=np.ones(n, np.float32),
        object_boxes=rows(boxes, 4, np.int32),
        object_centroids=rows(centroids, 3, np.float32),
        object_extents=rows(extents, 3, np.float32),
        **fields,
    )


class KinematicTable:
    def __init__(self, objects: dict[str, tuple[list[float], list[float]]]) -> None:
        """objects: label -> (centre [x, y, z], extent [dx, dy, dz])."""
        self.objects = {k: np.array(p, float) for k, (p, _) in objects.items()}
        self.extents = {k: np.array(e, float) for k, (_, e) in objects.items()}
        self.hidden: set[str] = set()
        self.ee = np.array([0.0, -0.15, 0.70])
        self.yaw = 0.0
        self.closure = 0.0
        self.held: str | None = None
        self.slips = 0  # grasps that will fail
        self.presses: list[str] = []
        self._down: set[str] = set()
        self.t_ns = 0
        self.seq = 0

    def step(self, action: np.ndarray) -> None:
        a = np.asarray(action, float)
        delta = np.clip(a[:3], -0.05, 0.05)
        if a[4] > 0.5 and self.held is None:  # closed fingers moving low push what they hit
            for label, pos in self.objects.items():
                if label in self.hidden or "button" in label:
                    continue
                low = self.ee[2] - FINGER_M < pos[2] + self.extents[label][2] / 2
                reach = self.extents[label][0] / 2 + 0.012
                ahead = self.ee[:2] + delta[:2]
                if low and np.linalg.norm(ahead - pos[:2]) < reach:
                    pos[:2] += delta[:2]
        self.ee = self.ee + delta
        self.ee[2] = max(self.ee[2], 0.405)
        self.yaw += float(np.clip(a[3], -0.5, 0.5))
        closing = a[4] > 0.5 and self.closure <= 0.5
        opening = a[4] <= 0.5 and self.closure > 0.5
        self.closure = float(a[4])
        if closing and self.held is None:
            for label, pos in self.objects.items():
                low = self.ee[2] - FINGER_M < pos[2] + self.extents[label][2] / 2
                if (
                    label not in self.hidden
                    and np.linalg.norm(pos[:2] - self.ee[:2]) < 0.025
                    and low
                ):
                    if self.slips > 0:
                        self.slips -= 1
                    else:
                        self.held = label
                    break
        if opening and self.held is not None:
            pos = self.objects[self.held]
            pos[2] = TABLE_Z + self.extents[self.held][2] / 2
            self.held = None
        if self.held is not None:
            self.objects[self.held] = self.ee - np.array([0, 0, 0.02])
        for label, pos in self.objects.items():
            if "button" in label:
                top = pos[2] + self.extents[label][2] / 2
                down = (
                    self.ee[2] - FINGER_M < top - 0.006
                    and np.linalg.norm(pos[:2] - self.ee[:2]) < 0.03
                )
                if down and label not in self._down:
                    self.presses.append(label)
                    self._down.add(label)
                elif not down:
                    self._down.discard(label)
        self.t_ns += 100_000_000

    def run_chunk(self, chunk: ActionChunk) -> None:
        self.step(chunk.actions[0])

    def percept(self) -> Percept:
        labels = [k for k in self.objects if k not in self.hidden]
        self.seq += 1
        return make_percept(
            labels,
            stamp_ns=self.t_ns,
            frame_seq=self.seq,
            centroids=[self.objects[k] for k in labels],
            extents=[self.extents[k] for k in labels],
        )

    def robot_state(self) -> RobotState:
        pose = np.eye(4)
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        pose[:3, :3] = np.array([[c, s, 0], [s, -c, 0], [0, 0, -1.0]])
        pose[:3, 3] = self.ee
        return RobotState(
            stamp_ns=self.t_ns,
            robot="arm",
            world_from_ee=pose,
            # fingers closed on a held object stay as wide as the object
            gripper_width_m=float(self.extents[self.held][0])
            if self.held is not None
            else 0.1 * (1.0 - self.closure),
        )
