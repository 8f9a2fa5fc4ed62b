"""Static checks of docker/ (no Docker engine here): every COPY source exists, every
entry command is a real CLI command, and compose services point at real files."""

from __future__ import annotations

import glob
import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import yaml

from engram.runtime import registry
from engram.runtime.launcher import Launch

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
APT_NEEDED = {
    "libusb-1.0-0",
    "libegl1",
    "libgl1",
    "libgl1-mesa-dri",
    "libosmesa6",
    "libportaudio2",
    "ffmpeg",
    "espeak-ng",
    "sox",
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def copy_sources(arguments: str) -> list[str]:
    words = [w for w in shlex.split(arguments) if not w.startswith("--")]
    if arguments.lstrip().startswith("["):
        words = exec_form(arguments)
    return words[:-1]


def entry_command(path: Path) -> list[str]:
    entry, cmd = [], []
    for keyword, arguments in instructions(path):
        if keyword == "ENTRYPOINT":
            entry = exec_form(arguments)
        elif keyword == "CMD":
            cmd = exec_form(arguments)
    return entry + cmd


def test_three_dockerfiles_from_the_expected_bases():
    names = {p.name for p in DOCKERFILES}
    assert names == {"Dockerfile.cpu", "Dockerfile.cuda", "Dockerfile.ros2"}
    bases = {p.name: next(a for k, a in instructions(p) if k == "FROM") for p in DOCKERFILES}
    assert bases["Dockerfile.cpu"] == "python:3.11-slim"
    assert (
        bases["Dockerfile.cuda"].startswith("nvidia/cuda:")
        and "runtime" in bases["Dockerfile.cuda"]
    )
    assert bases["Dockerfile.ros2"] == "ros:jazzy"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_in_the_build_context(dockerfile):
    """The build context is the repository root (docker build -f docker/X .)."""
    copies = [a for k, a in instructions(dockerfile) if k in ("COPY", "ADD")]
    assert copies
    ignore = (DOCKER / f"{dockerfile.name}.dockerignore").read_text().split()
    for arguments in copies:
        assert "--from" not in arguments
        for source in copy_sources(arguments):
            matches = glob.glob(str(REPO / source))
            assert matches, f"{dockerfile.name}: COPY source {source!r} does not exist"
            top = source.split("/")[0]
            assert f"!{top}" in ignore or f"!{source}" in ignore, (
                f"{dockerfile.name}: {source!r} is excluded by {dockerfile.name}.dockerignore"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_apt_packages_and_full_install(dockerfile):
    text = " ".join(a for k, a in instructions(dockerfile) if k == "RUN")
    assert APT_NEEDED <= set(text.split()), (
        f"{dockerfile.name} misses {APT_NEEDED - set(text.split())}"
    )
    assert '".[full]"' in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_non_root_user(dockerfile):
    steps = instructions(dockerfile)
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile.name} runs as root"
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert "useradd" in runs and users[-1] in runs  # the user is created in the image
    keywords = [k for k, _ in steps]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_are_a_layer_before_the_sources(dockerfile):
    """A code change must not reinstall torch & co: dependencies resolve before COPY runtime,
    and the install after the sources resolves nothing (--no-deps)."""
    steps = instructions(dockerfile)
    first_source = next(
        i for i, (k, a) in enumerate(steps) if k == "COPY" and a.startswith("runtime")
    )
    deps = [i for i, (k, a) in enumerate(steps) if k == "RUN" and "requirements.py full" in a]
    assert deps and deps[0] < first_source, f"{dockerfile.name}: dependencies after the sources"
    for keyword, arguments in steps[first_source:]:
        if keyword == "RUN" and "pip install" in arguments:
            for cmd in arguments.split("&&"):
                if "pip install" in cmd:
                    assert "--no-deps" in cmd, f"{dockerfile.name}: {cmd.strip()!r} resolves again"


def test_requirements_helper_lists_the_full_extra():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), "full"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "torch==2.15.0" in out and any(r.startswith("numpy") for r in out)


def test_no_break_system_packages_and_a_slim_cpu_torch():
    for dockerfile in DOCKERFILES:
        assert "--break-system-packages" not in dockerfile.read_text(), dockerfile.name
    cpu = " ".join(a for k, a in instructions(DOCKER / "Dockerfile.cpu") if k == "RUN")
    assert "download.pytorch.org/whl/cpu" in cpu  # no 3 GB of nvidia-* wheels on a CPU image
    ros = " ".join(a for k, a in instructions(DOCKER / "Dockerfile.ros2") if k == "RUN")
    assert "venv --system-site-packages /opt/ros-venv" in ros
    assert "/opt/ros-venv" in (DOCKER / "ros2-entrypoint.sh").read_text()


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_engram_images_run_a_real_subcommand(name):
    command = entry_command(DOCKER / name)
    assert command[0] == "engram" and command[1] in registry.known("command")
    assert command == ["engram", "demo"]


def test_ros2_image_builds_the_package_and_runs_its_launch_file():
    path = DOCKER / "Dockerfile.ros2"
    steps = instructions(path)
    command = entry_command(path)
    assert command[0] == "/ros2-entrypoint.sh"
    assert command[1:] == ["ros2", "launch", "engram", "engram.launch.py"]
    pkg, launch_file = command[3], command[4]
    import xml.etree.ElementTree as ET

    assert ET.parse(REPO / "ros2" / pkg / "package.xml").getroot().findtext("name") == pkg
    assert (REPO / "ros2" / pkg / "launch" / launch_file).is_file()
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert "colcon build --packages-select engram" in runs
    copies = [a for k, a in steps if k == "COPY"]
    assert "ros2/engram /opt/ros_ws/src/engram" in copies
    entry = (DOCKER / "ros2-entrypoint.sh").read_text()
    assert "/opt/ros_ws/install/setup.bash" in entry and 'exec "$@"' in entry
    assert (DOCKER / "ros2-entrypoint.sh").stat().st_mode & 0o111, "entrypoint must be executable"


def _compose():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_services_use_existing_dockerfiles_and_real_commands():
    compose = _compose()
    services = compose["services"]
    assert {"broker", "sim", "perception", "memory"} <= set(services)
    for name, service in services.items():
        build = service["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"
        assert service["environment"]["ENGRAM_BUS"].startswith("tcp://")
        dockerfile = context / build["dockerfile"]
        entry = service.get("entrypoint")
        command = service.get("command", [])
        if entry is None:
            entry = [w for w in entry_command(dockerfile)[:1]]
        full = list(entry) + list(command)
        if full[0] == "engram":
            assert full[1] in registry.known("command"), (
                f"{name}: engram {full[1]} is not a subcommand"
            )
        else:
            assert full[:2] == ["python", "-m"], f"{name}: unexpected command {full}"
            spec = importlib.util.find_spec(full[2])
            assert spec is not None and spec.origin
            assert 'if __name__ == "__main__"' in Path(spec.origin).read_text()


def test_compose_graphs_exist_share_the_tcp_bus_and_validate():
    compose = _compose()
    url = compose["x-engram"]["environment"]["ENGRAM_BUS"]
    broker = compose["services"]["broker"]
    assert broker["command"] == [url]
    graphs = []
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command[:1] == ["launch"]:
            graphs.append((name, REPO / command[1]))
    assert {n for n, _ in graphs} == {"sim", "perception", "memory"}
    for name, path in graphs:
        assert path.is_file(), f"{name}: graph {path} missing"
        assert yaml.safe_load(path.read_text())["bus"] == url, f"{name}: not the compose bus"
        launch = Launch.from_yaml(path)
        assert not launch.groups, f"{name}: the broker runs in its own container"
        problems = launch.validate()
        assert problems == [], f"{name}: {problems}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_local(argv: list[str]) -> list[str]:
    """A container command as a local process (same image layout: repo root as workdir)."""
    import sys

    if argv[0] == "engram":
        return [sys.executable, "-m", "engram.runtime.apps.cli", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"unexpected program {argv[0]!r}")


def test_compose_broker_and_sim_services_talk_zeromq_over_tcp():
    """The broker and sim services' own commands, as processes on loopback tcp (what
    network_mode: host gives the containers), with this test as a third bus peer."""
    import os
    import subprocess

    from engram.runtime.bus import make_bus

    services = _compose()["services"]
    compose_url = services["broker"]["command"][0]
    url = f"tcp://127.0.0.1:{_free_port()}"  # a free port instead of 5550: parallel runs
    broker_cmd = _as_local([*services["broker"]["entrypoint"], url])
    sim_cmd = _as_local(["engram", *services["sim"]["command"], "--bus", url])
    env = dict(os.environ, ENGRAM_BUS=url, PYTHONPATH=str(REPO))
    assert compose_url != url
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for cmd in (broker_cmd, sim_cmd)
    ]
    bus = make_bus(url)
    try:
        frames = bus.subscribe("/frames", "latest")
        states = bus.subscribe("/robot_state", "latest")
        frame = frames.get(60.0)
        assert frame is not None, "no frame from the sim service"
        assert frame.rgb.shape == (480, 640, 3) and frame.depth is not None
        assert states.get(10.0) is not None
    finally:
        bus.close()
        for proc in reversed(procs):
            proc.terminate()
        codes = [proc.wait(30) for proc in procs]
    assert codes == [0, 0], [p.stderr.read().decode()[-2000:] for p in procs]
