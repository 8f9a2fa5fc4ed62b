"""The colcon package under ros2/engram: package.xml, setup, launch files, parameters.

ROS 2 is not installable here, so the package is checked statically, and the Python
launch file is executed against small stand-ins of ``launch``/``launch_ros`` that
record what it declares.
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib
import py_compile
import runpy
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from engram.runtime import registry
from engram.runtime.bridges.ros2.nodes import BridgeConfig

PKG = Path(__file__).resolve().parents[2] / "ros2" / "engram"


@pytest.fixture(scope="module")
def setup_kwargs():
    """Run ros2/engram/setup.py with setuptools.setup replaced by a recorder."""
    import setuptools

    captured = {}
    original = setuptools.setup
    cwd = Path.cwd()
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        import os

        os.chdir(PKG)
        runpy.run_path(str(PKG / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
        os.chdir(cwd)
    return captured


def console_scripts(setup_kwargs) -> dict[str, str]:
    out = {}
    for line in setup_kwargs["entry_points"]["console_scripts"]:
        name, _, target = (part.strip() for part in line.partition("="))
        out[name] = target
    return out


def test_package_xml_names_an_ament_python_package():
    root = ET.parse(PKG / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "engram"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "nav_msgs", "tf2_msgs", "launch_ros"} <= deps
    assert root.findtext("license") and root.find("maintainer").get("email")
    assert (PKG / "resource" / "engram").is_file()  # ament index marker


def test_setup_installs_marker_launch_config_and_importable_scripts(setup_kwargs):
    data = dict(setup_kwargs["data_files"])
    assert data["share/ament_index/resource_index/packages"] == ["resource/engram"]
    assert data["share/engram"] == ["package.xml"]
    assert set(data["share/engram/launch"]) == {
        "launch/engram.launch.py",
        "launch/engram.launch.yaml",
    }
    assert "config/bridge.yaml" in data["share/engram/config"]
    assert "config/graph.yaml" in data["share/engram/config"]
    for files in data.values():
        for f in files:
            assert (PKG / f).exists(), f
    scripts = console_scripts(setup_kwargs)
    assert scripts, "no console scripts"
    for name, target in scripts.items():
        module_name, _, func_name = target.partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
        assert callable(func), f"{name} -> {target} is not callable"
    cfg = configparser.ConfigParser()
    cfg.read(PKG / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/engram"
    assert cfg["install"]["install_scripts"] == "$base/lib/engram"


class _Recorded:
    """A stand-in launch entity that keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch_modules(monkeypatch):
    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "ExecuteProcess"],
        "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution"],
        "launch_ros": [],
        "launch_ros.actions": ["Node"],
        "launch_ros.substitutions": ["FindPackageShare"],
    }
    for module_name, classes in names.items():
        module = types.ModuleType(module_name)
        for cls in classes:
            setattr(module, cls, type(cls, (_Recorded,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)


def test_python_launch_file_starts_graph_and_declared_bridge(monkeypatch, setup_kwargs):
    path = PKG / "launch" / "engram.launch.py"
    py_compile.compile(str(path), doraise=True)
    _fake_launch_modules(monkeypatch)
    namespace = runpy.run_path(str(path))
    description = namespace["generate_launch_description"]()
    (entities,) = description.args
    by_kind: dict[str, list] = {}
    for entity in entities:
        by_kind.setdefault(type(entity).__name__, []).append(entity)
    args = {a.args[0]: a.kwargs.get("default_value") for a in by_kind["DeclareLaunchArgument"]}
    assert args["engram"] == "engram" and args["bus"].startswith("tcp://")
    scripts = console_scripts(setup_kwargs)
    for node in by_kind["Node"]:
        assert node.kwargs["package"] == "engram"
        assert node.kwargs["executable"] in scripts
    (graph,) = by_kind["ExecuteProcess"]
    cmd = graph.kwargs["cmd"]
    assert cmd[0].args == ("engram",)  # LaunchConfiguration("engram"), default "engram"
    assert cmd[1] in registry.known("command") and cmd[1] == "launch"
    assert "--bus" in cmd


def test_yaml_launch_file_mirrors_the_python_one(setup_kwargs):
    doc = yaml.safe_load((PKG / "launch" / "engram.launch.yaml").read_text())
    entries = doc["launch"]
    args = {e["arg"]["name"]: e["arg"].get("default") for e in entries if "arg" in e}
    assert set(args) == {"graph", "bus", "params", "engram"} and args["engram"] == "engram"
    nodes = [e["node"] for e in entries if "node" in e]
    scripts = console_scripts(setup_kwargs)
    assert nodes and all(n["pkg"] == "engram" and n["exec"] in scripts for n in nodes)
    (executable,) = [e["executable"] for e in entries if "executable" in e]
    program, _, rest = executable["cmd"].partition(") ")
    assert program == "$(var engram"  # the engram command, default "engram"
    assert rest.split()[0] in registry.known("command") and rest.split()[0] == "launch"


def test_bridge_parameters_are_bridge_config_fields():
    doc = yaml.safe_load((PKG / "config" / "bridge.yaml").read_text())
    params = doc["engram_bridge"]["ros__parameters"]
    fields = {f.name: f for f in dataclasses.fields(BridgeConfig)}
    unknown = set(params) - set(fields) - {"bus_url"}
    assert not unknown, f"unknown bridge parameters {sorted(unknown)}"
    defaults = BridgeConfig()
    for name, value in params.items():
        if name in fields:
            assert type(value) is type(getattr(defaults, name)), name


def test_engram_graph_run_by_the_launch_file_validates():
    """config/graph.yaml: process groups (so it serves the broker the bridge joins), the
    bridge's topics declared external, and every node, param and wire valid."""
    from engram.runtime.launcher import Launch

    launch = Launch.from_yaml(PKG / "config" / "graph.yaml")
    assert launch.validate() == []
    assert launch.groups, "the graph must serve the bus broker (needs process groups)"
    doc = yaml.safe_load((PKG / "config" / "graph.yaml").read_text())
    assert doc["bus"] == "tcp://127.0.0.1:5550"
    bridge_outputs = {"/frames": "Frame", "/audio": "AudioChunk", "/robot_state": "RobotState"}
    assert bridge_outputs.items() <= doc["external_topics"].items()
    from engram.runtime.node import load_node_class

    memory = load_node_class("memory")
    assert memory.SERVICES["query"].topic == BridgeConfig().memory_service  # questions reach it
