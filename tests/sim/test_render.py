"""Offscreen rendering: depth back-projects onto the true geometry, segmentation names
the right bodies, intrinsics and poses follow the OpenCV convention."""

from __future__ import annotations

import os
import subprocess
import sys

import mujoco
import numpy as np
import pytest

from engram.sim.envs import make
from engram.sim.render import RenderConfig, RgbdRenderer


def _rays(env, frame, step: int = 5):
    """Cast a MuJoCo ray through every step-th pixel centre; returns pixel coords, hit
    distances along the ray expressed as z-depth, hit geom ids (-1 = none) and the
    surface normals there."""
    m, d = env.model, env.data
    h, w = frame.depth.shape
    vs, us = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    us, vs = us.ravel(), vs.ravel()
    k_inv = np.linalg.inv(frame.intrinsics)
    rot, origin = frame.world_from_camera[:3, :3], frame.world_from_camera[:3, 3]
    groups = np.array([1, 1, 1, 0, 0, 0], np.uint8)
    z = np.full(len(us), -1.0)
    geom = np.full(len(us), -1)
    normal = np.zeros((len(us), 3))
    gid = np.zeros(1, np.int32)
    for i, (u, v) in enumerate(zip(us, vs)):
        ray_cam = k_inv @ np.array([u, v, 1.0])  # z = 1: the ray parameter is the z-depth
        dist = mujoco.mj_ray(m, d, origin, rot @ ray_cam, groups, 1, -1, gid, normal[i])
        if dist >= 0:
            z[i], geom[i] = dist, gid[0]
    return us, vs, z, geom, normal


def _backproject(frame, us, vs):
    depth = frame.depth[vs, us].astype(np.float64)
    cam = np.linalg.inv(frame.intrinsics) @ np.stack([us, vs, np.ones_like(us)]).astype(float)
    pts = cam * depth
    return (frame.world_from_camera[:3, :3] @ pts).T + frame.world_from_camera[:3, 3]


@pytest.fixture(scope="module")
def cups_frame():
    env = make("cups", width_px=160, height_px=120)
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.stop_action())  # cube visible, cups hovering
    frame = env.render_frame()
    yield env, frame
    env.close()


def test_frame_shapes_and_camera_convention(cups_frame):
    _, f = cups_frame
    assert f.rgb.shape == (120, 160, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (120, 160) and f.depth.dtype == np.float32
    assert f.segmentation.shape == (120, 160) and f.segmentation.dtype == np.int32
    np.testing.assert_allclose(f.intrinsics[0, 2], 79.5)
    np.testing.assert_allclose(f.intrinsics[1, 2], 59.5)
    rot = f.world_from_camera[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
    # OpenCV: +z looks forward (towards the table, i.e. down), +y points down in the image
    assert rot[2, 2] < -0.5  # optical axis has a downward component
    assert rot[2, 1] < 0  # image-down is world-down-ish
    top = _backproject(f, np.array([80]), np.array([5]))[0]
    bottom = _backproject(f, np.array([80]), np.array([115]))[0]
    cam = f.world_from_camera[:3, 3]
    assert np.linalg.norm(top - cam) > np.linalg.norm(bottom - cam)  # image top is farther


def test_depth_matches_ray_cast_geometry(cups_frame):
    env, f = cups_frame
    us, vs, z, _, _ = _rays(env, f)
    both = (z > 0) & (f.depth[vs, us] > 0)
    err = np.abs(f.depth[vs, us][both] - z[both])
    assert both.sum() > 500
    assert np.mean(err < 0.01) > 0.97, f"only {np.mean(err < 0.01):.3f} of pixels within 1 cm"
    assert np.median(err) < 0.002
    # nothing hit -> depth 0 and segmentation -1
    miss = z < 0
    assert np.all(f.depth[vs, us][miss] == 0) and np.all(f.segmentation[vs, us][miss] == -1)


def test_table_top_back_projects_onto_its_plane(cups_frame):
    env, f = cups_frame
    us, vs, _, geom, normal = _rays(env, f, step=3)
    table = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "table_top")
    on_table = (geom == table) & (normal[:, 2] > 0.99)  # the top face, not the front edge
    assert on_table.sum() > 300
    pts = _backproject(f, us[on_table], vs[on_table])
    dz = pts[:, 2] - env.table_z_m
    assert np.mean(np.abs(dz) < 0.01) > 0.98
    assert abs(np.median(dz)) < 0.002
    assert np.all(np.abs(pts[:, :2]) < [0.56, 0.51])  # inside the table's extent


def test_segmentation_ids_are_the_bodies_hit(cups_frame):
    env, f = cups_frame
    us, vs, _, geom, _ = _rays(env, f, step=3)
    hit = geom >= 0
    body = env.model.geom_bodyid[geom[hit]]
    expected = np.where(body == 0, -1, body)
    got = f.segmentation[vs[hit], us[hit]]
    assert np.mean(got == expected) > 0.97
    # labels name the bodies; the visible cube's pixels back-project onto the cube
    prize = env._body("prize")
    assert f.labels[str(prize)] == "prize"
    vv, uu = np.nonzero(f.segmentation == prize)
    assert len(uu) >= 3
    pts = _backproject(f, uu, vv)
    assert np.all(np.abs(pts - env.body_pos("prize")) < 0.025)
    ids = set(np.unique(f.segmentation).tolist()) - {-1}
    names = {f.labels[str(i)] for i in ids}
    assert {"prize", "cup_0", "cup_1", "cup_2"} <= names


def test_apartment_depth_and_segmentation():
    env = make("fetch_seen", width_px=128, height_px=96)
    env.reset(seed=0)
    base = env.controller
    obj = "mug_red"
    slot = env.placement[obj]
    ax, ay = slot["approach_m"]
    px, py = slot["position_m"][:2]
    base.reset(ax - 0.6 * (px - ax), ay - 0.6 * (py - ay), float(np.arctan2(py - ay, px - ax)))
    mujoco.mj_forward(env.model, env.data)
    f = env.render_frame()
    us, vs, z, geom, _ = _rays(env, f, step=4)
    both = (z > 0) & (f.depth[vs, us] > 0)
    err = np.abs(f.depth[vs, us][both] - z[both])
    assert np.mean(err < 0.01) > 0.97
    mug = env._body(obj)
    assert (f.segmentation == mug).sum() > 10
    assert f.labels[str(mug)] == obj
    body = env.model.geom_bodyid[geom[geom >= 0]]
    expected = np.where(body == 0, -1, body)
    assert np.mean(f.segmentation[vs[geom >= 0], us[geom >= 0]] == expected) > 0.97
    assert env.visible_mask()[env.tracked.index(obj)]
    env.close()


def test_shadows_render_differently_but_same_geometry():
    env = make("button_sequence")
    env.reset(seed=0)
    plain = RgbdRenderer(env.model, RenderConfig(width_px=96, height_px=72, shadows=False))
    shadow = RgbdRenderer(env.model, RenderConfig(width_px=96, height_px=72, shadows=True))
    a, b = plain.render(env.data, "scene"), shadow.render(env.data, "scene")
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).sum() > 0
    np.testing.assert_allclose(a.depth, b.depth, atol=1e-4)
    np.testing.assert_array_equal(a.segmentation, b.segmentation)
    with pytest.raises(ValueError, match="cameras"):
        plain.render(env.data, "no_such_camera")
    plain.close()
    shadow.close()


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (GL backends are chosen once per process)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )


def test_clear_error_without_a_gl_backend():
    code = (
        "import numpy as np\n"
        "from engram.sim.scene import load_scene\n"
        "from engram.sim.render import RgbdRenderer\n"
        "import mujoco\n"
        "m = load_scene('arm'); d = mujoco.MjData(m); mujoco.mj_forward(m, d)\n"
        "mujoco.mj_step(m, d)  # physics works without GL\n"
        "RgbdRenderer(m).render(d, 'wrist')\n"
    )
    proc = _python(code, dict(os.environ, MUJOCO_GL="disabled", PYOPENGL_PLATFORM=""))
    assert proc.returncode != 0
    assert "RenderingUnavailable" in proc.stderr
    assert "MUJOCO_GL=egl" in proc.stderr and "osmesa" in proc.stderr


def test_gl_backend_is_chosen_automatically():
    code = (
        "import os\n"
        "from engram.sim.envs import make\n"
        "env = make('count', width_px=32, height_px=24); env.reset(seed=0)\n"
        "f = env.render_frame(); assert f.rgb.shape == (24, 32, 3) and f.depth.max() > 0\n"
        "print('backend', os.environ['MUJOCO_GL'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    proc = _python(code, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in ("backend egl", "backend osmesa")


def test_torch_training_after_a_gl_context_does_not_crash():
    """A GL context made before triton loads (Mesa's libLLVM mapped first): preload_triton
    then disables triton, so torch's optimiser (which imports it) runs instead of the
    process segfaulting; without Mesa, triton is simply loaded."""
    code = (
        "import sys, mujoco\n"
        "ctx = mujoco.GLContext(16, 16); ctx.make_current()\n"
        "from engram.sim._gl import _mesa_llvm_loaded, preload_triton\n"
        "mesa = _mesa_llvm_loaded(); preload_triton()\n"
        "import torch\n"
        "m = torch.nn.Linear(2, 2); opt = torch.optim.AdamW(m.parameters())\n"
        "m(torch.zeros(1, 2)).sum().backward(); opt.step()\n"
        "print('mesa', mesa, 'triton', sys.modules.get('triton', 'absent') is not None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    env.update(MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl")
    proc = _python(code, env)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    out = proc.stdout.split()
    assert out[0] == "mesa" and out[2] == "triton"
    if out[1] == "True":  # llvmpipe: triton disabled, with a warning
        assert out[3] == "False" and "triton disabled" in proc.stderr
