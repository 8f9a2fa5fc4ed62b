"""``gymnasium.make`` of an Engram task in a fresh interpreter, with nothing imported first:
gymnasium 1.x loads no plugins, so the id names the registering module
(``"engram.sim.tasks:engram/cups-v0"``, gymnasium's documented ``module:id`` form)."""

from __future__ import annotations

import subprocess
import sys


def test_make_with_the_module_prefix_in_a_fresh_interpreter():
    code = (
        "import gymnasium\n"
        "env = gymnasium.make('engram.sim.tasks:engram/cups-v0', width_px=32, height_px=24)\n"
        "obs, info = env.reset(seed=0)\n"
        "assert env.action_space.contains(env.action_space.sample())\n"
        "assert gymnasium.spec('engram/cups-v0').id == 'engram/cups-v0'\n"
        "env.close()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr
