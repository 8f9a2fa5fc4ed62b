"""Robot controllers and the action vectors they accept.

Action spaces (``ActionChunk.action_space`` names one of ``ACTION_SPACES``):

``arm_ee_delta`` (A = 5): ``[dx, dy, dz, dyaw, gripper]``
    End-effector deltas per control step in the world frame: metres for
    dx, dy, dz (each clipped to +-0.05), radians for dyaw (+-0.5) about the
    vertical; ``gripper`` is absolute, 0 = fully open (10 cm) .. 1 = fully closed.
    The gripper points down (top grasps); yaw is the direction of the finger
    closing axis in the table plane. The controller integrates a commanded pose
    (kept within ``max_lead_m`` of the measured one, so a blocked arm presses
    with bounded force instead of winding up) and solves damped least-squares
    IK for the six joint position servos.

``base_velocity`` (A = 3): ``[vx, vy, yaw_rate]``
    Holonomic base velocity in the base frame: m/s forward and left (each
    clipped to +-1.0), rad/s counter-clockwise (+-2.0). Zero stops the base.

``ctrl`` (A = model.nu): raw actuator controls of any MJCF model, clipped to the
    actuators' ``ctrlrange``.

A zero-order "stop" action for each space is ``stop_action(space)``: the arm
holds its commanded pose and keeps its gripper; the base stops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engram.sim._gl import import_mujoco
from engram.sim.motion import yaw_of

__all__ = [
    "ACTION_SPACES",
    "ROBOT_PART_LABELS",
    "ActionSpec",
    "ArmConfig",
    "ArmController",
    "BaseConfig",
    "BaseController",
    "CtrlController",
]


@dataclass(frozen=True)
class ActionSpec:
    """Layout of one action space: component names, units and bounds."""

    name: str
    names: tuple[str, ...]
    units: tuple[str, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    doc: str

    @property
    def dim(self) -> int:
        return len(self.names)


ACTION_SPACES: dict[str, ActionSpec] = {
    "arm_ee_delta": ActionSpec(
        "arm_ee_delta",
        ("dx", "dy", "dz", "dyaw", "gripper"),
        ("m", "m", "m", "rad", "1"),
        (-0.05, -0.05, -0.05, -0.5, 0.0),
        (0.05, 0.05, 0.05, 0.5, 1.0),
        "end-effector deltas per step (world frame) and absolute gripper closure 0..1",
    ),
    "base_velocity": ActionSpec(
        "base_velocity",
        ("vx", "vy", "yaw_rate"),
        ("m/s", "m/s", "rad/s"),
        (-1.0, -1.0, -2.0),
        (1.0, 1.0, 2.0),
        "holonomic base velocity in the base frame",
    ),
}


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# gripper pointing down: x axis along world x, z axis along world -z
_R_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])


def _rotation_error(r_des: np.ndarray, r_cur: np.ndarray) -> np.ndarray:
    """(3,) world-frame rotation vector taking r_cur to r_des."""
    mujoco = import_mujoco()
    q_des = np.empty(4)
    q_cur = np.empty(4)
    mujoco.mju_mat2Quat(q_des, r_des.ravel())
    mujoco.mju_mat2Quat(q_cur, r_cur.ravel())
    q_inv = np.empty(4)
    mujoco.mju_negQuat(q_inv, q_cur)
    q_err = np.empty(4)
    mujoco.mju_mulQuat(q_err, q_des, q_inv)
    if q_err[0] < 0:
        q_err = -q_err
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, q_err, 1.0)
    return vel


@dataclass
class ArmConfig:
    """Settings of ``ArmController``."""

    joints: tuple[str, ...] = (
        "shoulder_pan",
        "shoulder_lift",
        "elbow",
        "wrist_pitch",
        "wrist_roll",
        "wrist_tilt",
    )  # arm joint names, base to tip
    fingers: tuple[str, ...] = ("finger_left", "finger_right")  # finger slide joints
    #: the arm's bodies (sim/assets/arm.xml), as segmentation labels them
    part_labels: tuple[str, ...] = (
        "arm_base",
        "link1",
        "link2",
        "link3",
        "link4",
        "link5",
        "hand",
        "finger_left",
        "finger_right",
    )
    ee_site: str = "ee"  # tool centre point site
    finger_open_m: float = 0.05  # finger joint position when fully open (per finger)
    max_lead_m: float = 0.04  # commanded EE position stays within this of the measured one
    max_yaw_lead_rad: float = 0.6  # same for yaw
    workspace_low_m: tuple[float, float, float] = (-0.5, -0.35, 0.405)  # EE box, world
    workspace_high_m: tuple[float, float, float] = (0.5, 0.45, 0.95)
    ik_iterations: int = 3  # damped least-squares iterations per control step
    ik_damping: float = 0.03  # DLS damping lambda
    home_ee_m: tuple[float, float, float] = (0.0, -0.15, 0.70)  # home EE position, world


class ArmController:
    """Top-down end-effector delta control of a 6-DoF arm with a parallel gripper.

    ``apply(action)`` with action (5,) = [dx, dy, dz, dyaw, gripper] (see module doc)
    sets ``data.ctrl`` for the joint and finger servos.
    """

    space = ACTION_SPACES["arm_ee_delta"]

    def __init__(self, model, data, config: ArmConfig | None = None) -> None:
        mujoco = import_mujoco()
        self.model, self.data = model, data
        self.config = cfg = config or ArmConfig()
        jid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in cfg.joints]
        if min(jid) < 0:
            missing = [n for n, i in zip(cfg.joints, jid) if i < 0]
            raise ValueError(f"arm joints not in model: {missing}")
        self.qadr = np.array([model.jnt_qposadr[i] for i in jid])
        self.dadr = np.array([model.jnt_dofadr[i] for i in jid])
        self.qlow = model.jnt_range[jid, 0].copy()
        self.qhigh = model.jnt_range[jid, 1].copy()
        self.act = np.array(
            [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in cfg.joints]
        )
        fj = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in cfg.fingers]
        self.finger_qadr = np.array([model.jnt_qposadr[i] for i in fj])
        self.finger_act = np.array(
            [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in cfg.fingers]
        )
        self.finger_geoms = {
            g
            for g in range(model.ngeom)
            if model.geom_bodyid[g] in {model.jnt_bodyid[i] for i in fj}
        }
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, cfg.ee_site)
        if self.site < 0:
            raise ValueError(f"end-effector site {cfg.ee_site!r} not in model")
        self._ik = mujoco.MjData(model)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self.q_des = np.zeros(len(jid))
        self.p_cmd = np.zeros(3)
        self.yaw_cmd = 0.0
        self.gripper = 0.0
        self._home: np.ndarray | None = None

    # ---- state --------------------------------------------------------------
    def ee_pos(self) -> np.ndarray:
        """(3,) measured tool centre point, world metres."""
        return self.data.site_xpos[self.site].copy()

    def ee_mat(self) -> np.ndarray:
        """(3, 3) measured tool frame orientation."""
        return self.data.site_xmat[self.site].reshape(3, 3).copy()

    def ee_yaw(self) -> float:
        return yaw_of(self.data.site_xmat[self.site])

    def world_from_ee(self) -> np.ndarray:
        """(4, 4) pose of the tool frame."""
        out = np.eye(4)
        out[:3, :3] = self.ee_mat()
        out[:3, 3] = self.ee_pos()
        return out

    def gripper_width(self) -> float:
        """Current finger opening, metres (0 = closed)."""
        return float(self.data.qpos[self.finger_qadr].sum())

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self.dadr].copy()

    # ---- IK -----------------------------------------------------------------
    def solve_ik(
        self, p_des: np.ndarray, yaw_des: float, q0: np.ndarray, *, iterations: int
    ) -> np.ndarray:
        """(6,) joint positions reaching the top-down pose (p_des, yaw_des) from q0."""
        mujoco = import_mujoco()
        m, d = self.model, self._ik
        r_des = _rot_z(yaw_des) @ _R_DOWN
        q = q0.copy()
        lam2 = self.config.ik_damping**2
        for _ in range(iterations):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err = np.concatenate(
                [
                    p_des - d.site_xpos[self.site],
                    _rotation_error(r_des, d.site_xmat[self.site].reshape(3, 3)),
                ]
            )
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dadr], self._jacr[:, self.dadr]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), err)
            step = np.max(np.abs(dq))
            if step > 0.5:
                dq *= 0.5 / step
            q = np.clip(q + dq, self.qlow, self.qhigh)
        return q

    def home_qpos(self) -> np.ndarray:
        """(6,) joint positions of the home pose (solved once, cached)."""
        if self._home is None:
            guess = np.array([0.0, -0.5, -1.6, -1.04, 0.0, 0.0])
            self._home = self.solve_ik(np.array(self.config.home_ee_m), 0.0, guess, iterations=200)
        return self._home.copy()

    # ---- control ------------------------------------------------------------
    def reset(self, q: np.ndarray | None = None, *, gripper: float = 0.0) -> None:
        """Put the arm at ``q`` (default: home) at rest, with the gripper at ``gripper``."""
        mujoco = import_mujoco()
        q = self.home_qpos() if q is None else np.asarray(q, float)
        self.data.qpos[self.qadr] = q
        self.data.qvel[self.dadr] = 0.0
        width = (1.0 - gripper) * self.config.finger_open_m
        self.data.qpos[self.finger_qadr] = width
        self.q_des = q.copy()
        self.data.ctrl[self.act] = q
        self.data.ctrl[self.finger_act] = width
        self.gripper = gripper
        mujoco.mj_kinematics(self.model, self.data)
        self.p_cmd = self.data.site_xpos[self.site].copy()
        self.yaw_cmd = yaw_of(self.data.site_xmat[self.site])

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Set servo targets for one control step; returns the clipped (5,) action."""
        cfg = self.config
        a = np.clip(np.asarray(action, float), self.space.low, self.space.high)
        ee = self.data.site_xpos[self.site]
        p = np.clip(self.p_cmd + a[:3], cfg.workspace_low_m, cfg.workspace_high_m)
        self.p_cmd = np.clip(p, ee - cfg.max_lead_m, ee + cfg.max_lead_m)
        yaw_meas = self.ee_yaw()
        yaw = self.yaw_cmd + a[3]
        # keep the command near the measured yaw (measured is wrapped to [-pi, pi])
        lead = np.angle(np.exp(1j * (yaw - yaw_meas)))
        lead = float(np.clip(lead, -cfg.max_yaw_lead_rad, cfg.max_yaw_lead_rad))
        self.yaw_cmd = float(np.clip(yaw_meas + lead, -2.9, 2.9))
        self.q_des = self.solve_ik(
            self.p_cmd, self.yaw_cmd, self.q_des, iterations=cfg.ik_iterations
        )
        self.data.ctrl[self.act] = self.q_des
        self.gripper = float(a[4])
        self.data.ctrl[self.finger_act] = (1.0 - self.gripper) * cfg.finger_open_m
        return a.astype(np.float32)

    def stop_action(self) -> np.ndarray:
        """Hold the commanded pose, keep the gripper."""
        return np.array([0.0, 0.0, 0.0, 0.0, self.gripper], np.float32)


@dataclass
class BaseConfig:
    """Settings of ``BaseController``."""

    joints: tuple[str, str, str] = ("base_x", "base_y", "base_yaw")  # slide x, slide y, hinge z
    actuators: tuple[str, str, str] = ("base_vx", "base_vy", "base_wz")  # velocity servos
    part_labels: tuple[str, ...] = ("base",)  # the base's bodies (sim/assets/apartment.xml)


#: the robots' own bodies as segmentation labels them (self-knowledge, not objects): the
#: sim node lists them in each ``Frame.robot_labels``; perception and the planner skip them
ROBOT_PART_LABELS: frozenset[str] = frozenset(ArmConfig.part_labels + BaseConfig.part_labels)


class BaseController:
    """Holonomic base: action (3,) = [vx, vy, yaw_rate] in the base frame -> world-frame servos."""

    space = ACTION_SPACES["base_velocity"]

    def __init__(self, model, data, config: BaseConfig | None = None) -> None:
        mujoco = import_mujoco()
        self.model, self.data = model, data
        self.config = cfg = config or BaseConfig()
        jid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in cfg.joints]
        if min(jid) < 0:
            raise ValueError(f"base joints {cfg.joints} not all in model")
        self.qadr = np.array([model.jnt_qposadr[i] for i in jid])
        self.dadr = np.array([model.jnt_dofadr[i] for i in jid])
        self.act = np.array(
            [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in cfg.actuators]
        )
        if min(self.act) < 0:
            raise ValueError(f"base actuators {cfg.actuators} not all in model")
        self.body = model.jnt_bodyid[jid[2]]
        self.command = np.zeros(3)

    def pose(self) -> np.ndarray:
        """(3,) [x, y, yaw] metres, radians."""
        return self.data.qpos[self.qadr].copy()

    def velocity(self) -> np.ndarray:
        """(3,) world-frame [vx, vy, yaw_rate]."""
        return self.data.qvel[self.dadr].copy()

    def world_from_base(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = self.data.xmat[self.body].reshape(3, 3)
        out[:3, 3] = self.data.xpos[self.body]
        return out

    def reset(self, x: float, y: float, yaw: float) -> None:
        self.data.qpos[self.qadr] = (x, y, yaw)
        self.data.qvel[self.dadr] = 0.0
        self.data.ctrl[self.act] = 0.0
        self.command = np.zeros(3)

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Set the velocity servos for one control step; returns the clipped (3,) action."""
        a = np.clip(np.asarray(action, float), self.space.low, self.space.high)
        yaw = self.data.qpos[self.qadr[2]]
        c, s = np.cos(yaw), np.sin(yaw)
        self.data.ctrl[self.act] = (c * a[0] - s * a[1], s * a[0] + c * a[1], a[2])
        self.command = a
        return a.astype(np.float32)

    def stop_action(self) -> np.ndarray:
        return np.zeros(3, np.float32)


class CtrlController:
    """Raw actuator controls for any model: action (nu,) clipped to each ``ctrlrange``."""

    def __init__(self, model, data) -> None:
        mujoco = import_mujoco()
        self.model, self.data = model, data
        low = np.full(model.nu, -np.inf)
        high = np.full(model.nu, np.inf)
        limited = model.actuator_ctrllimited.astype(bool)
        low[limited] = model.actuator_ctrlrange[limited, 0]
        high[limited] = model.actuator_ctrlrange[limited, 1]
        self.low, self.high = low, high
        self.space = ActionSpec(
            "ctrl",
            tuple(
                mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) or f"act{i}"
                for i in range(model.nu)
            ),
            tuple("ctrl" for _ in range(model.nu)),
            tuple(float(v) for v in np.where(np.isfinite(low), low, -1e6)),
            tuple(float(v) for v in np.where(np.isfinite(high), high, 1e6)),
            "raw actuator controls",
        )
        self._hold = np.zeros(model.nu)

    def reset(self) -> None:
        self._hold = np.clip(self.data.ctrl.copy(), self.low, self.high)

    def apply(self, action: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(action, float), self.low, self.high)
        self.data.ctrl[:] = a
        self._hold = a
        return a.astype(np.float32)

    def stop_action(self) -> np.ndarray:
        """Keep the last controls (for position servos that is 'hold')."""
        return self._hold.astype(np.float32)
