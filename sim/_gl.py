"""Import MuJoCo with a working offscreen OpenGL backend chosen automatically.

MuJoCo picks its GL backend from ``MUJOCO_GL`` when it is *first imported* and
cannot switch afterwards, and a broken GL stack makes ``mujoco.Renderer`` and
``mujoco.GLContext`` silently absent. So every module of ``sim`` imports MuJoCo
through ``import_mujoco()``:

- ``MUJOCO_GL`` set by the user: respected as is.
- unset: each candidate of ``GL_CANDIDATES`` (``egl``, then ``osmesa``) is tried in
  a short subprocess that creates a 16x16 context; the first that works is put
  in ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) before MuJoCo is imported.
  If none works, physics still runs and ``require_rendering()`` raises
  ``RenderingUnavailable`` listing what was tried and how to fix it.

This module also owns the one clash of that GL stack with torch: triton (which
torch imports lazily) and Mesa's software renderer each bring an LLVM, and the
process segfaults when triton loads second. ``preload_triton()`` loads it first
(``require_rendering()``, the tests' conftest and ``engram train`` call it), or,
when a GL context came first, disables triton instead.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from types import ModuleType

__all__ = [
    "GL_CANDIDATES",
    "RenderingUnavailable",
    "gl_backend",
    "import_mujoco",
    "preload_triton",
    "require_rendering",
]

GL_CANDIDATES: tuple[str, ...] = ("egl", "osmesa")

_PROBE = (
    "import mujoco, sys\n"
    "assert hasattr(mujoco, 'Renderer'), 'mujoco.Renderer missing (GL backend failed to import)'\n"
    "ctx = mujoco.GLContext(16, 16); ctx.make_current(); ctx.free()\n"
)

log = logging.getLogger(__name__)

_probe_report: list[str] = []


class RenderingUnavailable(RuntimeError):
    """No offscreen OpenGL backend works on this machine."""


def _probe(backend: str) -> str | None:
    """None if ``backend`` can create a GL context, else the error text."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"probe failed to run: {exc}"
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _choose_backend() -> None:
    if "mujoco" in sys.modules or os.environ.get("MUJOCO_GL"):
        return
    for backend in GL_CANDIDATES:
        error = _probe(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend  # MuJoCo refuses a mismatch
            return
        _probe_report.append(f"MUJOCO_GL={backend}: {error}")
    # Nothing works: import MuJoCo without rendering; require_rendering() explains.
    os.environ["MUJOCO_GL"] = "disabled"


def import_mujoco() -> ModuleType:
    """The ``mujoco`` module, imported after choosing a GL backend."""
    _choose_backend()
    import mujoco

    return mujoco


def gl_backend() -> str:
    """The backend in use (``egl``, ``osmesa``, ``glfw``, ``disabled`` ...)."""
    import_mujoco()
    return os.environ.get("MUJOCO_GL", "") or "glfw"


def preload_triton() -> None:
    """Load triton (if installed) before Mesa's software OpenGL maps its libLLVM.

    torch imports triton lazily (``torch._dynamo``, reached from optimisers and
    transformers). triton bundles its own LLVM, and loading it *after* Mesa's
    llvmpipe has mapped libLLVM segfaults the process; loading it first is safe
    (measured: 0.13 s). So anything that creates a GL context, and anything that
    may import triton through torch (training), calls this first.

    Too late (a GL context already mapped Mesa's libLLVM): ``import triton`` is
    made to fail cleanly instead (``sys.modules["triton"] = None``), with a
    warning. Eager torch on the CPU or a GPU never needs triton; only
    ``torch.compile`` does.
    """
    if "triton" in sys.modules:
        return
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return
    if _mesa_llvm_loaded():
        log.warning("Mesa's libLLVM is already loaded (OpenGL rendering): triton disabled")
        sys.modules["triton"] = None  # type: ignore[assignment]
        return
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken triton only matters to torch.compile
        sys.modules["triton"] = None  # type: ignore[assignment]


def _mesa_llvm_loaded() -> bool:
    """True if this process has mapped a libLLVM (Mesa's llvmpipe); False if unknown."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libLLVM" in line for line in maps)
    except OSError:
        return False


def require_rendering() -> ModuleType:
    """The ``mujoco`` module if offscreen rendering can work, else ``RenderingUnavailable``."""
    preload_triton()
    mujoco = import_mujoco()
    backend = gl_backend()
    ok = hasattr(mujoco, "Renderer") and hasattr(mujoco, "GLContext")
    if ok and backend not in ("disabled", "disable", "off", "false", "0"):
        return mujoco
    tried = "; ".join(_probe_report) or f"MUJOCO_GL={backend}"
    raise RenderingUnavailable(
        "MuJoCo offscreen rendering is unavailable "
        f"({tried}). mujoco.Renderer exists: {hasattr(mujoco, 'Renderer')}. "
        "Fix: install Mesa's EGL (apt libegl1 libgl1-mesa-dri) and set MUJOCO_GL=egl, "
        "or install OSMesa (apt libosmesa6) and set MUJOCO_GL=osmesa, "
        "then start a fresh Python process."
    )
