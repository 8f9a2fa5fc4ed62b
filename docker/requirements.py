"""Print the requirements of pyproject.toml (core + the extras named as arguments), one a
line, so that a Dockerfile installs the dependencies in a layer of their own before the
sources are copied: a code change then rebuilds only the small ``pip install --no-deps``
layer.   python3 docker/requirements.py full > /tmp/requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
name = project["name"]
wanted, seen, out = list(sys.argv[1:]), set(), list(project.get("dependencies", []))
while wanted:
    extra = wanted.pop()
    if extra in seen:
        continue
    seen.add(extra)
    for req in project.get("optional-dependencies", {})[extra]:
        self_ref = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", req.replace(" ", ""))
        if self_ref:  # "engram[sim,perception]": follow the extras, not the package
            wanted += self_ref.group(1).split(",")
        else:
            out.append(req)
print("\n".join(dict.fromkeys(out)))
