"""Node base class: lifecycle, handlers, errors, timers, services, heartbeat counters."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from engram.runtime.bus import InProcBus
from engram.runtime.messages import ActionChunk, Heartbeat, Instruction, MemoryQuery, Recall
from engram.runtime.node import HEARTBEAT_TOPIC, Input, Node, NodeConfig, Output, Service


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Echo(Node):
    """Repeats instructions as upper case; fails on the text 'boom'."""

    INPUTS = {"text": Input("Instruction", policy="queue(32)")}
    OUTPUTS = {"shout": Output("Instruction")}
    SERVICES = {"ask": Service("MemoryQuery", "Recall")}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []
        self.handled: list[str] = []

    def on_configure(self) -> None:
        self.calls.append("configure")

    def on_start(self) -> None:
        self.calls.append("start")

    def on_stop(self) -> None:
        self.calls.append("stop")

    def on_text(self, msg: Instruction) -> None:
        if msg.text == "boom":
            raise RuntimeError("boom")
        self.handled.append(msg.text)
        self.publish("shout", Instruction(text=msg.text.upper()))

    def on_ask(self, query: MemoryQuery) -> Recall:
        if query.text == "fail":
            raise ValueError("cannot answer")
        return Recall(
            query_text=query.text, hits=[{"memory": "echo", "score": 1.0, "text": query.text}]
        )


@pytest.fixture
def bus():
    b = InProcBus("test-node")
    yield b
    b.close()


def test_lifecycle_hooks_run_once_in_order(bus):
    node = Echo(bus=bus, name="echo")
    assert node.state == "created"
    with node:
        assert node.state == "running" and node.running
        node.start()  # idempotent
    assert node.state == "stopped"
    node.stop()  # idempotent
    assert node.calls == ["configure", "start", "stop"]


def test_handler_publishes_and_errors_are_counted_without_stopping(bus):
    out = bus.subscribe("/shout", "all(16)")
    with Echo(bus=bus, name="echo", config=NodeConfig(heartbeat_hz=0)) as node:
        for text in ["a", "boom", "b", "boom", "c"]:
            bus.publish("/text", Instruction(text=text))
        assert wait_for(lambda: node.counters["received"] == 5)
        assert wait_for(lambda: len(node.handled) == 3)
        assert node.running
    assert node.handled == ["a", "b", "c"]
    assert node.counters["handler_errors"] == 2
    assert node.counters["published"] == 3
    assert [m.text for m in out.drain()] == ["A", "B", "C"]


def test_topic_remap_and_unknown_port_remap(bus):
    out = bus.subscribe("/loud", "all(4)")
    with Echo(bus=bus, topics={"text": "/in", "shout": "/loud"}, config=NodeConfig(heartbeat_hz=0)):
        bus.publish("/in", Instruction(text="x"))
        assert out.get(2.0).text == "X"
    with pytest.raises(ValueError, match=r"unknown port.*nope"):
        Echo(bus=bus, topics={"nope": "/x"})


def test_publish_checks_port_and_type(bus):
    node = Echo(bus=bus)
    with pytest.raises(KeyError, match="no output port 'missing'"):
        node.publish("missing", Instruction(text="x"))
    with pytest.raises(TypeError, match="carries Instruction, got ActionChunk"):
        node.publish("shout", ActionChunk(actions=np.zeros((1, 2), np.float32)))


def test_missing_handler_is_reported_at_start(bus):
    class NoHandler(Node):
        INPUTS = {"frames": Input("Frame")}

    with pytest.raises(TypeError, match="on_frames"):
        NoHandler(bus=bus).start()


def test_service_reply_and_service_error_counted(bus):
    with Echo(bus=bus, config=NodeConfig(heartbeat_hz=0)) as node:
        reply = bus.request("/ask", MemoryQuery(text="where"), timeout_s=2.0)
        assert isinstance(reply, Recall) and reply.hits[0]["text"] == "where"
        with pytest.raises(ValueError, match="cannot answer"):
            bus.request("/ask", MemoryQuery(text="fail"), timeout_s=2.0)
    assert node.counters["requests"] == 2
    assert node.counters["handler_errors"] == 1


def test_timer_runs_while_running_and_survives_errors(bus):
    ticks = []

    class Ticker(Node):
        """Counts ticks; every second tick raises."""

        def on_configure(self) -> None:
            self.add_timer(100.0, self.tick)

        def tick(self) -> None:
            ticks.append(time.monotonic())
            if len(ticks) % 2 == 0:
                raise RuntimeError("odd tick")

    node = Ticker(bus=bus, config=NodeConfig(heartbeat_hz=0))
    with node:
        assert wait_for(lambda: len(ticks) >= 6)
    n_at_stop = len(ticks)
    assert node.counters["handler_errors"] >= 3
    time.sleep(0.1)
    assert len(ticks) == n_at_stop  # no ticks after stop
    with pytest.raises(ValueError, match="rate"):
        node.add_timer(0, lambda: None)


def test_heartbeat_reports_counters_and_drops(bus):
    release = threading.Event()

    class Slow(Node):
        """Blocks in its handler until released."""

        INPUTS = {"text": Input("Instruction", policy="latest")}

        def on_text(self, msg: Instruction) -> None:
            release.wait(5.0)

        def health(self):
            return {"counters": {"custom": 7}, "latency_ms": {"p50": 1.5}, "info": {"ok": True}}

    beats = bus.subscribe(HEARTBEAT_TOPIC, "queue(64)")
    with Slow(bus=bus, name="slow", config=NodeConfig(heartbeat_hz=50.0)) as node:
        bus.publish("/text", Instruction(text="first"))
        assert wait_for(lambda: node.counters["received"] == 1)
        for i in range(5):  # the handler is busy: 'latest' keeps only the newest
            bus.publish("/text", Instruction(text=f"n{i}"))
        release.set()
        assert wait_for(lambda: node.counters["received"] == 2)

        def final_beat():
            for hb in beats.drain():
                assert isinstance(hb, Heartbeat)
                if hb.node == "slow" and hb.counters["received"] == 2:
                    return hb
            return None

        hb = None
        deadline = time.monotonic() + 5.0
        while hb is None and time.monotonic() < deadline:
            hb = final_beat()
            time.sleep(0.02)
    assert hb is not None
    assert hb.counters["dropped"] == 4
    assert hb.counters["handler_errors"] == 0 and hb.counters["decode_errors"] == 0
    assert hb.counters["custom"] == 7
    assert hb.latency_ms == {"p50": 1.5} and hb.info == {"ok": True}
    assert hb.state == "running" and hb.uptime_s > 0


def test_config_subclass_is_used():
    @dataclass
    class TickConfig(NodeConfig):
        rate_hz: float = 5.0  # tick rate

    class Configured(Node):
        """Has its own config."""

        Config = TickConfig

    node = Configured(bus=InProcBus("cfg"))
    assert isinstance(node.config, TickConfig) and node.config.rate_hz == 5.0


def test_input_backlog_counts_queued_and_running_messages_not_dropped_ones(bus):
    release = threading.Event()

    class Blocked(Node):
        INPUTS = {"text": Input("Instruction", policy="queue(4)")}

        def on_text(self, msg: Instruction) -> None:
            release.wait(5.0)

    with Blocked(bus=bus, name="blocked") as node:
        assert node.input_backlog() == 0
        bus.publish("/text", Instruction(text="first"))
        assert wait_for(lambda: node.counters["received"] == 1)  # in the handler now
        for i in range(6):  # queue(4): two of these are dropped
            bus.publish("/text", Instruction(text=f"n{i}"))
        assert node.input_backlog() == 5  # one running + four queued
        release.set()
        assert wait_for(lambda: node.input_backlog() == 0)
        assert node.counters["received"] == 5


def test_a_message_of_the_wrong_type_is_counted_and_dropped_before_the_handler(bus):
    """Issue 18, defect 3: a valid Heartbeat on an Instruction topic never reaches on_text
    (it failed there with an AttributeError before)."""
    with Echo(bus=bus, name="echo", config=NodeConfig(heartbeat_hz=0)) as node:
        bus.publish("/text", Heartbeat(node="intruder"))
        bus.publish("/text", Instruction(text="ok"))
        assert wait_for(lambda: node.handled == ["ok"])
        assert wait_for(lambda: node.input_backlog() == 0)
        assert node.counters["wrong_type"] == 1
        assert node.counters["handler_errors"] == 0
        assert node.heartbeat().counters["wrong_type"] == 1
        assert node._subs["text"].wrong_type == 1
