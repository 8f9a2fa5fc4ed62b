"""The architecture as tests: layer contracts, no import cycles, small files, one
installed top-level name, one wiring, a type-checked public API.

The contracts themselves are data in pyproject.toml (``[tool.importlinter]``); these
tests run them and check that the data still covers the code.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "perception", "memory", "planners", "sim")
BIN = Path(sys.executable).parent
MAX_SOURCE_LINES = 800


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "engram." + ".".join(parts)


def test_import_linter_contracts_hold():
    """Core imports no domain package; memory does not import perception; applications
    are imported by nobody; drivers and bridges sit on the core (pyproject.toml)."""
    lint = shutil.which("lint-imports", path=str(BIN)) or shutil.which("lint-imports")
    assert lint, "import-linter is not installed (pip install -e '.[dev]')"
    out = subprocess.run(
        [lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    contracts = _pyproject()["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken" in out.stdout


def test_core_contract_names_every_core_module():
    """A new module directly in runtime/ is core and must be in the core contract."""
    contract = _pyproject()["tool"]["importlinter"]["contracts"][0]
    listed = set(contract["source_modules"])
    on_disk = {
        _module_name(p)
        for p in (ROOT / "runtime").glob("*.py")
        if p.stem not in ("__init__", "register")
    }
    assert on_disk == listed, {"missing": on_disk - listed, "stale": listed - on_disk}


def _import_graph() -> dict[str, set[str]]:
    """module -> modules of this project it imports (any import statement, also inside
    functions: a lazy import still ties two files together)."""
    modules = {_module_name(p): p for p in _source_files()}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for target in targets:
                # the module itself, else its closest enclosing module of this project
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_files():
    """A package's __init__ importing its own modules is not a cycle unless a module
    imports the package back."""
    assert _cycles(_import_graph()) == []


def test_no_source_file_is_too_long():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _source_files()
        if (n := len(p.read_text().splitlines())) > MAX_SOURCE_LINES
    }
    assert not long, f"split these files (over {MAX_SOURCE_LINES} lines): {long}"


def test_every_package_folder_is_installed():
    """pyproject lists its packages by hand (package-dir maps the folders into engram.*):
    a new folder with an __init__.py must be listed, or a wheel would miss it."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {_module_name(p) for p in _source_files() if p.name == "__init__.py"}
    assert on_disk == listed, {"missing": on_disk - listed, "stale": listed - on_disk}


@pytest.mark.slow
def test_wheel_installs_one_top_level_name(tmp_path):
    """``pip install`` of the project adds exactly one top-level import name, ``engram``,
    with every subpackage and its data files under it."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = tmp_path.glob("engram-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"engram"}, tops
    assert "engram/__init__.py" not in names  # a namespace package: nothing to collide with
    for pkg in _pyproject()["tool"]["setuptools"]["packages"]:
        assert pkg.replace(".", "/") + "/__init__.py" in names, pkg
    assert any(n.startswith("engram/sim/assets/") and n.endswith(".xml") for n in names)
    assert any(n.startswith("engram/perception/model_configs/") for n in names)
    assert any("/web/static/" in n for n in names)
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["engram"]


def _node_classes(tree: ast.AST) -> set[str]:
    """Names of the classes a module defines on ``Node`` (``Node`` or ``Node[Config]``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                base = base.value if isinstance(base, ast.Subscript) else base
                if isinstance(base, ast.Name) and base.id == "Node":
                    out.add(node.name)
    return out


def _called_names(tree: ast.AST) -> list[tuple[str, int]]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            calls.append((name, node.lineno))
    return calls


def test_graphs_are_wired_only_in_launch_yaml():
    """No source module constructs another module's node class: graphs are built by the
    launcher from launch/*.yaml (one wiring), not re-wired in Python."""
    trees = {p: ast.parse(p.read_text(), str(p)) for p in _source_files()}
    home = {name: p for p, tree in trees.items() for name in _node_classes(tree)}
    assert {"SimNode", "PerceptionNode", "MemoryNode", "PlannerNode"} <= set(home)
    offenders = [
        f"{p.relative_to(ROOT)}:{line} constructs {name}"
        for p, tree in trees.items()
        for name, line in _called_names(tree)
        if name in home and home[name] != p
    ]
    assert not offenders, offenders


# The public API that is type-checked: the core runtime and the memories.
TYPED = ["engram/runtime/*.py", "engram/memory"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_public_api_type_checks(tmp_path):
    """pyright (basic mode) over the core runtime and memory is clean. pyright resolves
    imports statically, so it reads the code through a link tree engram/<pkg> -> <pkg>/
    (the editable install maps engram.* at import time, which static tools cannot see)."""
    pyright = shutil.which("pyright", path=str(BIN)) or shutil.which("pyright")
    assert pyright, "pyright is not installed (pip install -e '.[dev]')"
    tree = tmp_path / "engram"
    tree.mkdir()
    for pkg in PACKAGES:
        (tree / pkg).symlink_to(ROOT / pkg, target_is_directory=True)
    include = [
        str(p.relative_to(tmp_path))
        for pattern in TYPED
        for p in (sorted(tmp_path.glob(pattern)) if "*" in pattern else [tmp_path / pattern])
        if p.name != "register.py"
    ]
    config = {
        "include": include,  # relative: pyright resolves absolute paths through the links
        "pythonVersion": "3.11",
        "typeCheckingMode": "basic",
        "extraPaths": [str(tmp_path)],
        "venvPath": str(Path(sys.prefix).parent),
        "venv": Path(sys.prefix).name,
    }
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    out = subprocess.run(
        [pyright, "-p", str(tmp_path / "pyrightconfig.json"), "--outputjson"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(out.stdout)
    assert report["summary"]["filesAnalyzed"] >= len(include), report["summary"]
    errors = [
        f"{d['file'].split('/engram/')[-1]}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert not errors, "\n".join(errors[:60])
