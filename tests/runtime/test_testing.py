"""The test double (run_node) and the node contract checker over every registered node type."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from engram.runtime import registry
from engram.runtime.demo_nodes import FrameStats, SyntheticCamera
from engram.runtime.messages import Frame, Instruction, MemoryQuery, Recall
from engram.runtime.node import Input, Node, NodeConfig, Output, Service, load_node_class
from engram.runtime.testing import ContractError, check_node, node_problems, run_node


@dataclass
class ShoutConfig(NodeConfig):
    """Settings of Shout."""

    repeat: int = 1  # how many copies of each instruction to publish


class Shout(Node):
    """Upper-cases instructions, `repeat` times; answers queries; fails on 'boom'."""

    INPUTS = {"text": Input("Instruction", policy="latest")}
    OUTPUTS = {"loud": Output("Instruction"), "count": Output("Recall")}
    SERVICES = {"ask": Service("MemoryQuery", "Recall")}
    Config = ShoutConfig

    def on_text(self, msg: Instruction) -> None:
        if msg.text == "boom":
            raise RuntimeError("boom")
        for _ in range(self.config.repeat):
            self.publish("loud", Instruction(text=msg.text.upper()))
        self.publish("count", Recall(query_text=str(self.counters["received"])))

    def on_ask(self, query: MemoryQuery) -> Recall:
        return Recall(query_text=query.text[::-1])


def instr(text: str) -> Instruction:
    return Instruction(text=text)


def test_run_node_feeds_inputs_in_order_and_collects_outputs_per_port():
    # 'latest' would drop inputs if they were fed without waiting for each to be handled
    out = run_node(Shout, [("text", instr(t)) for t in "abcde"], config=ShoutConfig(repeat=2))
    assert [m.text for m in out["loud"]] == ["A", "A", "B", "B", "C", "C", "D", "D", "E", "E"]
    assert [m.query_text for m in out["count"]] == ["1", "2", "3", "4", "5"]


def test_run_node_with_service_requests_and_topic_remaps():
    out = run_node(
        Shout,
        [("ask", MemoryQuery(text="abc")), ("text", instr("x"))],
        topics={"loud": "/elsewhere"},
    )
    assert [m.query_text for m in out["ask"]] == ["cba"]
    assert [m.text for m in out["loud"]] == ["X"]


def test_run_node_reports_handler_errors():
    with pytest.raises(RuntimeError, match="boom"):
        run_node(Shout, [("text", instr("boom"))])
    node = Shout()
    out = run_node(node, [("text", instr("boom")), ("text", instr("ok"))], raise_errors=False)
    assert [m.text for m in out["loud"]] == ["OK"]
    assert node.counters["handler_errors"] == 1 and node.state == "stopped"


def test_run_node_rejects_bad_inputs_and_times_out():
    with pytest.raises(KeyError, match="port 'nope'"):
        run_node(Shout, [("nope", instr("x"))])
    with pytest.raises(TypeError, match="not a Message"):
        run_node(Shout, [("text", "plain string")])

    gate = threading.Event()

    class Stuck(Node):
        """Never finishes handling."""

        INPUTS = {"text": Input("Instruction")}

        def on_text(self, msg) -> None:
            gate.wait(5.0)

    threading.Timer(0.3, gate.set).start()  # lets the node stop after the timeout
    with pytest.raises(TimeoutError, match="input #0 on port 'text'"):
        run_node(Stuck, [("text", instr("x"))], timeout_s=0.1)


def test_run_node_on_the_demo_nodes():
    stats = FrameStats()
    frames = [Frame(seq=s, rgb=np.zeros((4, 4, 3), np.uint8)) for s in (1, 2, 5, 1)]
    assert run_node(stats, [("frames", f) for f in frames]) == {}
    assert (stats.frames, stats.seq_gaps, stats.seq_resets) == (4, 2, 1)

    cfg = SyntheticCamera.Config(rate_hz=200, width_px=16, height_px=8, max_frames=3)
    out = run_node(SyntheticCamera, [], config=cfg, duration_s=0.3)
    assert [f.seq for f in out["frames"]] == [1, 2, 3]
    f = out["frames"][0]
    assert f.rgb.shape == (8, 16, 3) and f.depth.shape == (8, 16)
    assert np.all(f.depth > 0)
    assert not np.array_equal(out["frames"][0].rgb, out["frames"][1].rgb)  # the pattern moves
    pose = out["frames"][1].world_from_camera
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3))
    # the camera looks at the origin: the origin is in front of it (+z in the camera frame)
    origin_in_camera = np.linalg.inv(pose) @ np.array([0.0, 0.0, 0.5, 1.0])
    assert origin_in_camera[2] > 0


# ---------------------------------------------------------------------------
# contract checks


@pytest.mark.parametrize("type_name", registry.known("node"))
def test_every_registered_node_type_keeps_the_contract(type_name):
    check_node(load_node_class(type_name))


def test_check_node_finds_contract_breaches():
    @dataclass
    class UndocumentedConfig(NodeConfig):
        speed: float = 1.0

    class Broken(Node):
        INPUTS = {"frames": Input("Frame"), "bad-name": Input("Frame")}
        OUTPUTS = {"frames": Output("Frame"), "wrong": Input("Frame")}
        SERVICES = {"ask": Service("MemoryQuery", "Answer")}
        Config = UndocumentedConfig

    problems = "\n".join(node_problems(Broken))
    for fragment in [
        "no docstring",
        "INPUTS['bad-name']: port names must be identifiers",
        "port 'frames' is declared in both INPUTS and OUTPUTS",
        "OUTPUTS['wrong'] must be a Output, got Input",
        "SERVICES['ask']: unknown message type 'Answer'",
        "INPUTS['frames']: no handler method on_frames()",
        "SERVICES['ask']: no handler method on_ask()",
        "Config field 'speed' has no comment",
    ]:
        assert fragment in problems
    with pytest.raises(ContractError, match="problem"):
        check_node(Broken)

    class NotDataclassConfig(Node):
        """Config is a plain class."""

        class Config:
            rate_hz = 1.0

    assert node_problems(NotDataclassConfig) == [
        f"Config must be a dataclass, got {NotDataclassConfig.Config!r}"
    ]

    class FailsToConstruct(Node):
        """Its constructor raises."""

        def __init__(self, *args, **kwargs) -> None:
            raise OSError("no camera attached")

    assert "no camera attached" in node_problems(FailsToConstruct)[0]
    assert node_problems(int) == ["<class 'int'> is not a Node subclass"]
    check_node(Shout)  # a well-formed node passes
