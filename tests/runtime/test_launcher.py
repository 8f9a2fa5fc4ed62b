"""Launcher and supervisor: validation, in-process and multi-process graphs, restarts, shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engram.runtime import registry
from engram.runtime.launcher import GraphError, Launch, start_order
from engram.runtime.messages import Frame
from engram.runtime.node import Input, Node
from engram.runtime.supervisor import (
    ManagedProcess,
    RestartPolicy,
    Supervisor,
    backoff_delay_s,
    describe_exit,
)

REPO = Path(__file__).resolve().parents[2]
GRAPHS = Path(__file__).parent / "graphs"


class PerceptSink(Node):
    """Test node reading Percepts (to make type mismatches)."""

    INPUTS = {"percepts": Input("Percept")}

    def on_percepts(self, msg) -> None:
        pass


@pytest.fixture
def percept_sink():
    registry.register("node", "percept_sink", f"{__name__}:PerceptSink")
    yield
    registry.REGISTRY.unregister("node", "percept_sink")


def problems_of(graph: dict) -> list[str]:
    return Launch(graph, source="test.yaml", status=None).validate()


def cam(name="camera", **extra):
    return {"name": name, "type": "synthetic_camera", **extra}


def stats(name="stats", **extra):
    return {"name": name, "type": "frame_stats", **extra}


# ---------------------------------------------------------------------------
# validation


def test_shipped_graphs_are_valid():
    for path in [REPO / "launch" / "demo.yaml", REPO / "launch" / "demo_multiprocess.yaml"]:
        assert Launch.from_yaml(path, status=None).validate() == [], path
    for path in [GRAPHS / "multiprocess.yaml", GRAPHS / "two_processes.yaml"]:
        assert Launch.from_yaml(path, status=None).validate() == [], path


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        (
            {"nodes": [cam(), {"name": "x", "type": "warp_drive"}]},
            ["node 'x': unknown node type 'warp_drive'", "synthetic_camera"],
        ),
        (
            {"nodes": [cam(params={"rate_hz": 30, "fps": 3, "colour": "red"}), stats()]},
            ["node 'camera'", "unknown param(s) 'colour', 'fps'", "rate_hz"],
        ),
        (
            {"nodes": [cam(params={"rate_hz": "fast"}), stats()]},
            ["node 'camera'", "param 'rate_hz' must be float, got str 'fast'"],
        ),
        (
            {"nodes": [cam(), stats(topics={"frames": "/elsewhere"})]},
            ["node 'stats' input 'frames' reads topic '/elsewhere'", "no node outputs it"],
        ),
        (
            {"nodes": [cam(topics={"pictures": "/x"}), stats()]},
            ["node 'camera'", "unknown port", "pictures"],
        ),
        (
            {"nodes": [cam(), stats(), stats()]},
            ["duplicate node name 'stats'"],
        ),
        (
            {"nodes": [cam(), stats()], "external_topics": {"/frames": "Percept"}},
            ["topic '/frames' has outputs of different types", "Percept", "Frame"],
        ),
        (
            {"nodes": [cam(process="a", restart={"policy": "sometimes"}), stats()]},
            ["node 'camera': restart policy must be one of always, on-failure, never"],
        ),
        (
            {"nodes": [cam(restart="always"), stats()]},
            ["node 'camera': 'restart' needs a 'process:' group"],
        ),
        (
            {"bus": "inproc://x", "nodes": [cam(process="sensors"), stats()]},
            ["bus 'inproc://x' is in-process but process groups ['sensors']"],
        ),
        (
            {"nodes": [cam(paramz={"rate_hz": 1}), stats()], "nodez": []},
            ["unknown top-level key(s) 'nodez'", "node 'camera': unknown key(s) 'paramz'"],
        ),
        (
            {"nodes": []},
            ["'nodes' must be a non-empty list"],
        ),
        (
            {
                "nodes": [
                    cam("c1", process="g", restart="always"),
                    cam("c2", process="g", restart="never"),
                    stats(),
                ]
            },
            ["process group 'g': nodes c1, c2 declare different restart policies"],
        ),
    ],
    ids=[
        "unknown-type",
        "unknown-params",
        "param-type",
        "no-producer",
        "unknown-port",
        "duplicate-name",
        "conflicting-outputs",
        "bad-restart",
        "restart-without-process",
        "inproc-with-groups",
        "unknown-keys",
        "no-nodes",
        "group-restart-conflict",
    ],
)
def test_invalid_graph_problems_name_the_culprit(graph, expected):
    problems = problems_of(graph)
    text = "\n".join(problems)
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    with pytest.raises(GraphError) as err:
        Launch(graph, source="test.yaml", status=None).start()
    assert err.value.problems == problems


def test_type_mismatch_between_connected_topics(percept_sink):
    problems = problems_of(
        {
            "nodes": [
                cam(topics={"frames": "/shared"}),
                {"name": "sink", "type": "percept_sink", "topics": {"percepts": "/shared"}},
            ]
        }
    )
    assert problems == [
        "type mismatch on topic '/shared': node 'camera' output 'frames' publishes Frame "
        "but node 'sink' input 'percepts' expects Percept"
    ]


def test_all_problems_are_reported_together():
    launch = Launch.from_yaml(GRAPHS / "invalid.yaml", status=None)
    text = "\n".join(launch.validate())
    for fragment in [
        "unknown param(s) 'colour'",
        "reads topic '/nowhere'",
        "duplicate node name 'stats'",
        "unknown node type 'velodyne'",
    ]:
        assert fragment in text


def test_external_topics_satisfy_inputs_and_unreadable_files_are_errors(tmp_path):
    graph = {"nodes": [stats()], "external_topics": {"/frames": "Frame"}}
    assert problems_of(graph) == []
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [unclosed\n")
    with pytest.raises(GraphError, match="not valid YAML"):
        Launch.from_yaml(bad)
    with pytest.raises(GraphError, match="cannot read"):
        Launch.from_yaml(tmp_path / "missing.yaml")


def test_start_order_puts_consumers_first():
    graph = {"nodes": [cam(), stats()]}
    launch = Launch(graph, status=None)
    from engram.runtime.bus import InProcBus
    from engram.runtime.launcher import build_node

    bus = InProcBus("order")
    nodes = [build_node(spec, bus) for spec in launch.specs]
    assert [n.name for n in start_order(nodes)] == ["stats", "camera"]


# ---------------------------------------------------------------------------
# running


def test_inprocess_graph_streams_frames():
    graph = {
        "bus": "inproc://launch-test",
        "nodes": [cam(params={"rate_hz": 100, "width_px": 32, "height_px": 24}), stats()],
    }
    with Launch(graph, status=None) as launch:
        assert launch.url == "inproc://launch-test"
        deadline = time.monotonic() + 5
        while launch.nodes["stats"].frames < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert launch.nodes["stats"].frames >= 5
        assert launch.status()["camera"] == {"process": None, "state": "running"}
    assert all(n.state == "stopped" for n in launch.nodes.values())


def test_graph_that_finishes_by_itself_is_waited_for():
    graph = {
        "nodes": [cam(params={"rate_hz": 100, "max_frames": 3, "width_px": 8, "height_px": 8})]
    }
    with Launch(graph, status=None) as launch:
        assert launch.wait(5.0)
        assert launch.nodes["camera"].frames_sent == 3


def _frame_after(sub, t_ns: int, timeout_s: float) -> Frame | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.get(0.2)
        if msg is not None and msg.stamp_ns > t_ns:
            return msg
    return None


def test_multiprocess_graph_restarts_a_killed_process_and_traffic_resumes():
    lines: list[str] = []
    with Launch.from_yaml(GRAPHS / "multiprocess.yaml", status=lines.append) as launch:
        assert launch.url.startswith("ipc://")
        sub = launch.bus.subscribe("/test/frames", "queue(32)")
        first = _frame_after(sub, 0, 20.0)
        assert first is not None and first.rgb.shape == (48, 64, 3)
        stats = launch.nodes["stats"]
        deadline = time.monotonic() + 10
        # stats is connected too, and its last seq is high enough to notice the restart
        while stats.frames < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc = launch.processes["cam"]
        old_pid = proc.pid
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.time_ns()
        after = _frame_after(sub, killed_at, 20.0)
        assert after is not None, "no frames after the camera process was restarted"
        assert proc.restarts == 1 and proc.pid != old_pid
        assert proc.last_exit == "killed by SIGKILL"
        assert launch.status()["camera"]["restarts"] == 1
        # the in-process stats node saw the restarted camera too (its seq started over)
        deadline = time.monotonic() + 10
        while stats.seq_resets < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stats.seq_resets >= 1
    text = "\n".join(lines)
    assert "'cam' killed by SIGKILL; restarting" in text
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def _start_cli_launch(graph: Path) -> tuple[subprocess.Popen, dict[str, int], str]:
    """Start `engram launch graph`; read the child pids and the bus URL from its status lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engram.runtime.apps.cli", "launch", str(graph)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: dict[str, int] = {}
    url = ""
    deadline = time.monotonic() + 30
    groups = 2 if "two_processes" in graph.name else 1
    while len(pids) < groups and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if ": bus " in line:
            url = line.split(": bus ")[1].strip()
        if "started process" in line:
            name = line.split("'")[1]
            pids[name] = int(line.split(" pid ")[1].split()[0])
    return proc, pids, url


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line for line in f)
    except FileNotFoundError:
        return True


def test_sigterm_to_launcher_stops_every_child():
    proc, pids, _ = _start_cli_launch(GRAPHS / "two_processes.yaml")
    try:
        assert set(pids) == {"cam", "stats"}
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "got SIGTERM; shutting down" in err
    for pid in pids.values():
        assert _gone(pid), f"child {pid} outlived the launcher"


def test_children_exit_when_the_launcher_is_killed():
    proc, pids, url = _start_cli_launch(GRAPHS / "multiprocess.yaml")
    try:
        assert "cam" in pids
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 10
        while not _gone(pids["cam"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pids["cam"]), "an orphaned child kept running"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
        if url.startswith("ipc:///tmp/engram-launch-"):  # a killed launcher cannot clean up
            shutil.rmtree(Path(url[len("ipc://") :]).parent, ignore_errors=True)


# ---------------------------------------------------------------------------
# supervisor policies (trivial shell children: fast and deterministic)


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def test_backoff_doubles_and_is_capped():
    policy = RestartPolicy(backoff_s=0.5, max_backoff_s=3.0)
    assert [backoff_delay_s(policy, n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert describe_exit(-9) == "killed by SIGKILL" and describe_exit(2) == "exited with code 2"


def test_on_failure_gives_up_after_max_restarts():
    proc = ManagedProcess("crashy", sh("exit 3"), restart=RestartPolicy("on-failure", 2, 0.01))
    sup = Supervisor([proc], status=None, poll_s=0.01)
    sup.start()
    try:
        assert sup.wait(10.0)
    finally:
        sup.stop(1.0)
    assert proc.state == "failed" and proc.restarts == 2
    assert len(set(proc.pids)) == 3 and proc.last_exit == "exited with code 3"
    assert sup.failed == ["crashy"]


@pytest.mark.parametrize(
    ("policy", "script", "state", "restarts"),
    [
        ("never", "exit 1", "exited", 0),
        ("on-failure", "exit 0", "exited", 0),
        ("always", "exit 0", "failed", 2),
    ],
)
def test_restart_policies(policy, script, state, restarts):
    proc = ManagedProcess("p", sh(script), restart=RestartPolicy(policy, 2, 0.01))
    sup = Supervisor([proc], status=None, poll_s=0.01)
    sup.start()
    try:
        assert sup.wait(10.0)
    finally:
        sup.stop(1.0)
    assert (proc.state, proc.restarts) == (state, restarts)


def test_stop_kills_children_that_ignore_sigterm(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    script = f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"
    proc = ManagedProcess("stubborn", sh(script), restart=RestartPolicy("never"))
    sup = Supervisor([proc], status=None, poll_s=0.01)
    sup.start()
    deadline = time.monotonic() + 5
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    sup.stop(grace_s=0.3)
    assert time.monotonic() - t0 < 5
    assert proc.state == "stopped"
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild), "the child's own children must go too"


# ---------------------------------------------------------------------------
# liveness (issue 18, defect 1): alive but not heartbeating is a failure too


def _watchdog_script(lines: list[str]) -> list[str]:
    """A child that writes watchdog lines (as engram.runtime.child does), then hangs."""
    code = (
        "import os, time; fd = int(os.environ['ENGRAM_WATCHDOG_FD'])\n"
        f"for line in {lines!r}:\n"
        "    os.write(fd, (line + '\\n').encode()); time.sleep(0.1)\n"
        "time.sleep(60)\n"
    )
    return [sys.executable, "-c", code]


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (["ages cam=0.1", "ages cam=0.2"], "sent no heartbeat"),  # then silence (hung)
        (["ages cam=0.1"] + ["ages cam=5.0"] * 20, "node(s) stopped heartbeating: cam"),
    ],
)
def test_a_process_that_stops_heartbeating_is_reported_and_restarted(lines, why):
    status: list[str] = []
    policy = RestartPolicy("on-failure", 1, 0.01, heartbeat_timeout_s=1.0)
    proc = ManagedProcess("hung", _watchdog_script(lines), restart=policy)
    sup = Supervisor([proc], status=status.append, poll_s=0.02)
    sup.start()
    try:
        deadline = time.monotonic() + 15
        while proc.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.restarts == 1 and proc.hangs >= 1, status
        assert why in proc.last_exit and "killed by SIGKILL" in proc.last_exit
        assert any(why in line and "killing it to restart" in line for line in status), status
    finally:
        sup.stop(1.0)


def test_never_policy_reports_a_hang_without_restarting():
    status: list[str] = []
    policy = RestartPolicy("never", heartbeat_timeout_s=0.5)
    proc = ManagedProcess("hung", _watchdog_script(["ages a=0.1"]), restart=policy)
    sup = Supervisor([proc], status=status.append, poll_s=0.02)
    sup.start()
    try:
        deadline = time.monotonic() + 10
        while proc.hangs < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.hangs == 1 and proc.state == "running" and proc.restarts == 0
        assert any("not restarting (never)" in line for line in status)
    finally:
        sup.stop(1.0)


def test_a_stopped_child_process_is_detected_and_restarted():
    graph = {
        "name": "test_sigstop",
        "shutdown_grace_s": 3.0,
        "nodes": [
            {
                "name": "camera",
                "type": "synthetic_camera",
                "params": {"rate_hz": 30, "width_px": 32, "height_px": 24, "heartbeat_hz": 5},
                "topics": {"frames": "/test/frames"},
                "process": "cam",
                "restart": {"policy": "on-failure", "backoff_s": 0.1, "heartbeat_timeout_s": 1.5},
            }
        ],
    }
    lines: list[str] = []
    with Launch(graph, source="test.yaml", status=lines.append) as launch:
        sub = launch.bus.subscribe("/test/frames", "queue(32)")
        assert _frame_after(sub, 0, 20.0) is not None
        proc = launch.processes["cam"]
        deadline = time.monotonic() + 10
        while proc.last_beat_at == 0.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.node_ages_s.keys() == {"camera"}  # the child's watchdog reports its node
        old_pid = proc.pid
        os.kill(old_pid, signal.SIGSTOP)  # alive, but frozen
        stopped_at = time.time_ns()
        after = _frame_after(sub, stopped_at, 20.0)
        assert after is not None, "no frames after the frozen process was restarted"
        assert proc.restarts == 1 and proc.pid != old_pid and proc.hangs == 1
    assert any("sent no heartbeat" in line for line in lines), lines


def test_a_process_group_freezes_its_start_up_heap_after_collecting_its_garbage():
    """runtime/child.py: once its nodes have started, the start-up heap leaves the full
    collections (a gen-2 collection over it stalled a memory recall for 90 ms)."""
    import gc
    import weakref

    from engram.runtime.child import _freeze_startup_heap

    class Cycle:
        pass

    a = Cycle()
    a.me = a  # garbage only the cycle collector can free
    gone = weakref.ref(a)
    del a
    before = gc.get_freeze_count()
    try:
        _freeze_startup_heap()
        assert gone() is None  # collected first, not frozen
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
