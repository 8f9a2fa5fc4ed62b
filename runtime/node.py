"""The ``Node`` base class: declared inputs/outputs, lifecycle, timers, heartbeat.

A node declares its ports as data, so a launch graph can be validated before
anything starts::

    class Doubler(Node):
        INPUTS = {"frames": Input("Frame", policy="latest")}
        OUTPUTS = {"percepts": Output("Percept")}

        def on_frames(self, frame: Frame) -> None:      # handler: on_<input port>
            self.publish("percepts", make_percept(frame))

Ports have a default topic (``/<port>``) that a launch graph can remap
(``topics={"frames": "/camera/front"}``). Each input is served by its own thread
that pulls from a bounded ``Subscription`` (see ``runtime/bus.py`` for policies)
and calls ``on_<port>(msg)``. A message whose type is not the port's declared type
(a ``Heartbeat`` sent to a frames topic) never reaches the handler: it is counted
(``wrong_type``) and dropped, with a rate-limited log line. An exception in a handler
is logged and counted; the node keeps running.

Lifecycle: ``configure()`` -> ``start()`` -> ``stop()`` (hooks ``on_configure``,
``on_start``, ``on_stop``); ``with node:`` configures, starts and stops.
Services (request/reply) are declared in ``SERVICES`` and answered by
``on_<service>(request) -> reply``. Timers: ``self.add_timer(rate_hz, fn)``.

Every node publishes a ``Heartbeat`` on ``/heartbeat`` at ``heartbeat_hz`` with its
state and counters (received, dropped, lost, wrong_type, decode_errors, handler_errors,
published) plus whatever ``health()`` adds; ``last_heartbeat_s`` (monotonic) is when the
last one went out, which a process's watchdog reports to its supervisor
(``engram.runtime.child``).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from engram.runtime.bus import Bus, BusClosed, QueuePolicy, Subscription, make_bus
from engram.runtime.config import make_config
from engram.runtime.messages import Heartbeat, Message, message_type

__all__ = ["HEARTBEAT_TOPIC", "Input", "Node", "NodeConfig", "Output", "Service"]

log = logging.getLogger(__name__)

HEARTBEAT_TOPIC = "/heartbeat"


@dataclass(frozen=True)
class Input:
    """An input port: message type name, freshness policy, default topic (``/<port>``)."""

    type: str
    policy: str = "queue(8)"
    topic: str = ""

    def __post_init__(self) -> None:
        message_type(self.type)  # KeyError naming the known types
        QueuePolicy.parse(self.policy)


@dataclass(frozen=True)
class Output:
    """An output port: message type name and default topic (``/<port>``)."""

    type: str
    topic: str = ""

    def __post_init__(self) -> None:
        message_type(self.type)


@dataclass(frozen=True)
class Service:
    """A request/reply endpoint this node answers: request and reply type names."""

    request: str
    reply: str
    topic: str = ""


@dataclass
class NodeConfig:
    """Settings every node has. Subclass configs add their own fields."""

    heartbeat_hz: float = 1.0  # heartbeat publish rate; 0 disables
    poll_timeout_s: float = 0.1  # how long an input thread waits before re-checking stop


ConfigT = TypeVar("ConfigT", bound=NodeConfig)


class Node(Generic[ConfigT]):
    """Base class of every node. See the module docstring.

    Generic in its config type: ``class MyNode(Node[MyNodeConfig])`` with
    ``Config = MyNodeConfig``. The constructor takes a ``Config``, a plain dict of its
    fields (checked and converted once, here: launch graphs and CLIs pass dicts), or
    None for the defaults.
    """

    INPUTS: ClassVar[dict[str, Input]] = {}
    OUTPUTS: ClassVar[dict[str, Output]] = {}
    SERVICES: ClassVar[dict[str, Service]] = {}
    Config: ClassVar[type] = NodeConfig

    def __init__(
        self,
        config: ConfigT | dict[str, Any] | None = None,
        *,
        name: str | None = None,
        bus: Bus | None = None,
        topics: dict[str, str] | None = None,
    ) -> None:
        self.config: ConfigT = make_config(
            self.Config, config, where=f"node {name or type(self).__name__!r}"
        )
        self.name = name or type(self).__name__
        self.bus = bus if bus is not None else make_bus("inproc://default")
        self._topics = dict(topics or {})
        unknown = (
            set(self._topics) - set(self.inputs()) - set(self.outputs()) - set(self.services())
        )
        if unknown:
            raise ValueError(
                f"node {self.name!r}: topic remap for unknown port(s) {sorted(unknown)}; "
                f"ports are {sorted(set(self.inputs()) | set(self.outputs()) | set(self.services()))}"
            )
        self.state = "created"
        self.counters: dict[str, int] = {
            "received": 0,
            "published": 0,
            "handler_errors": 0,
        }
        self._subs: dict[str, Subscription] = {}
        self._threads: list[threading.Thread] = []
        self._timers: list[tuple[float, Callable[[], None]]] = []
        self._stop = threading.Event()
        self._started_at = 0.0
        self._lock = threading.Lock()
        self._inputs_handled = 0  # input messages whose handler has returned (input_backlog)
        self.last_heartbeat_s = 0.0  # time.monotonic() of the last heartbeat published
        self._wrong_type_logged = -float("inf")  # rate limit of the wrong-type log line

    # ---- declared ports (override to make them depend on config) ---------------
    def inputs(self) -> dict[str, Input]:
        return dict(self.INPUTS)

    def outputs(self) -> dict[str, Output]:
        return dict(self.OUTPUTS)

    def services(self) -> dict[str, Service]:
        return dict(self.SERVICES)

    def topic(self, port: str) -> str:
        """The topic a port is wired to (launch remap, else the port's own, else ``/<port>``)."""
        if port in self._topics:
            return self._topics[port]
        decl = self.inputs().get(port) or self.outputs().get(port) or self.services().get(port)
        if decl is None:
            raise KeyError(f"node {self.name!r} has no port {port!r}")
        return decl.topic or f"/{port}"

    # ---- lifecycle --------------------------------------------------------------
    def configure(self) -> None:
        if self.state != "created":
            return
        self.on_configure()
        self.state = "configured"

    def start(self) -> None:
        self.configure()
        if self.state == "running":
            return
        self._stop.clear()
        self._inputs_handled = 0  # the subscriptions below start from 0 too
        self._started_at = time.monotonic()
        for port, decl in self.inputs().items():
            handler = getattr(self, f"on_{port}", None)
            if handler is None:
                raise TypeError(f"node {self.name!r}: input {port!r} needs a method on_{port}(msg)")
            sub = self.bus.subscribe(self.topic(port), decl.policy)
            self._subs[port] = sub
            self._spawn(f"{self.name}:{port}", self._input_loop, sub, handler, decl.type)
        for port in self.services():
            handler = getattr(self, f"on_{port}", None)
            if handler is None:
                raise TypeError(f"node {self.name!r}: service {port!r} needs on_{port}(request)")
            self.bus.serve(self.topic(port), self._guarded_service(handler))
        if self.config.heartbeat_hz > 0:
            self.add_timer(self.config.heartbeat_hz, self._publish_heartbeat)
        for rate_hz, fn in self._timers:
            self._spawn(f"{self.name}:timer", self._timer_loop, rate_hz, fn)
        self.state = "running"
        self.on_start()

    def stop(self) -> None:
        if self.state != "running":
            return
        self.state = "stopping"
        self._stop.set()
        for sub in self._subs.values():
            sub.close()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5.0)
        try:
            self.on_stop()
        finally:
            self._threads.clear()
            self._subs.clear()
            self.state = "stopped"

    def spin(self, duration_s: float | None = None) -> None:
        """Block until ``stop()`` is called (or ``duration_s`` passes)."""
        self._stop.wait(duration_s)

    @property
    def running(self) -> bool:
        return self.state == "running" and not self._stop.is_set()

    def input_backlog(self) -> int:
        """Input messages delivered to this node but not yet handled: queued, or in a
        handler now (dropped ones do not count). 0: it has handled all it received."""
        with self._lock:
            handled = self._inputs_handled  # read first: delivered only grows
        delivered = sum(s.received - s.dropped for s in list(self._subs.values()))
        return max(0, delivered - handled)

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- hooks for subclasses ---------------------------------------------------
    def on_configure(self) -> None:
        """Load models, open files, add timers. Runs once before start."""

    def on_start(self) -> None:
        """Called after subscriptions and timers are running."""

    def on_stop(self) -> None:
        """Flush and release resources."""

    def health(self) -> dict[str, Any]:
        """Extra heartbeat content: ``{"counters": {...}, "latency_ms": {...}, "info": {...}}``."""
        return {}

    # ---- helpers for subclasses -------------------------------------------------
    def publish(self, port: str, msg: Message) -> None:
        decl = self.outputs().get(port)
        if decl is None:
            raise KeyError(f"node {self.name!r} has no output port {port!r}")
        if msg.TYPE != decl.type:
            raise TypeError(
                f"node {self.name!r}: output {port!r} carries {decl.type}, got {msg.TYPE}"
            )
        self.bus.publish(self.topic(port), msg)
        with self._lock:
            self.counters["published"] += 1

    def loan(self, port: str, *specs: tuple[tuple[int, ...], Any]) -> list[Any]:
        """Arrays to build the next message on output ``port`` in, without a copy on the
        way out where the bus has shared memory (``Bus.loan``)."""
        return self.bus.loan(self.topic(port), *specs)

    def add_timer(self, rate_hz: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` at ``rate_hz`` while running (add in ``on_configure``)."""
        if rate_hz <= 0:
            raise ValueError(f"timer rate must be > 0 Hz, got {rate_hz}")
        self._timers.append((rate_hz, fn))
        if self.state == "running":
            self._spawn(f"{self.name}:timer", self._timer_loop, rate_hz, fn)

    def count(self, counter: str, n: int = 1) -> None:
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + n

    # ---- internals --------------------------------------------------------------
    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _input_loop(
        self, sub: Subscription, handler: Callable[[Message], None], type_name: str
    ) -> None:
        while not self._stop.is_set():
            try:
                msg = sub.get(self.config.poll_timeout_s)
            except BusClosed:
                return
            if msg is None:
                continue
            self.count("received")
            if msg.TYPE != type_name:
                self._drop_wrong_type(sub, msg, type_name)
            else:
                self._call(handler, msg)
            with self._lock:
                self._inputs_handled += 1

    def _drop_wrong_type(self, sub: Subscription, msg: Message, type_name: str) -> None:
        sub.wrong_type += 1
        self.count("wrong_type")
        now = time.monotonic()
        if now - self._wrong_type_logged >= 5.0:
            self._wrong_type_logged = now
            log.warning(
                "node %s: dropped a %s on %s, which carries %s (%d so far)",
                self.name,
                msg.TYPE,
                sub.topic,
                type_name,
                self.counters.get("wrong_type", 0),
            )

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - a handler error must not kill the node
            self.count("handler_errors")
            log.error(
                "node %s: error in %s:\n%s",
                self.name,
                getattr(fn, "__name__", fn),
                traceback.format_exc(),
            )
            return None

    def _guarded_service(
        self, handler: Callable[[Message], Message]
    ) -> Callable[[Message], Message]:
        def serve(request: Message) -> Message:
            self.count("requests")
            try:
                return handler(request)
            except Exception:
                self.count("handler_errors")
                log.error("node %s: service error:\n%s", self.name, traceback.format_exc())
                raise

        return serve

    def _timer_loop(self, rate_hz: float, fn: Callable[[], None]) -> None:
        period = 1.0 / rate_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            self._call(fn)
            next_t += period
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind: skip missed ticks rather than burst
                next_t = time.monotonic()
                delay = 0
            if self._stop.wait(delay):
                return

    def heartbeat(self) -> Heartbeat:
        """The current health as a message."""
        with self._lock:
            counters = dict(self.counters)
        counters["dropped"] = sum(s.dropped for s in self._subs.values())
        counters["decode_errors"] = sum(s.decode_errors for s in self._subs.values())
        counters["lost"] = sum(s.lost for s in self._subs.values())
        extra = self.health()
        counters.update(extra.get("counters", {}))
        return Heartbeat(
            node=self.name,
            state=self.state,
            uptime_s=time.monotonic() - self._started_at if self._started_at else 0.0,
            counters={k: int(v) for k, v in counters.items()},
            latency_ms={k: float(v) for k, v in extra.get("latency_ms", {}).items()},
            info=extra.get("info", {}),
        )

    def _publish_heartbeat(self) -> None:
        try:
            self.bus.publish(HEARTBEAT_TOPIC, self.heartbeat())
        except BusClosed:
            return
        self.last_heartbeat_s = time.monotonic()


def load_node_class(type_name: str) -> type[Node]:
    """The class registered as node type ``type_name`` (``engram.runtime.registry``,
    kind ``node``), imported now; clear errors for unknown names."""
    from engram.runtime import registry

    cls = registry.get("node", type_name)
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        target = registry.REGISTRY.target("node", type_name)
        raise TypeError(f"node type {type_name!r} -> {target} is not a Node subclass")
    return cls
