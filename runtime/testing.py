"""Test doubles and contract checks for nodes (like dora's ``MockNode``, Gymnasium's ``check_env``).

``run_node`` runs one node on a private ``InProcBus``, feeds it input messages in
order (waiting until each one has been handled), and returns what it published
per output port::

    out = run_node(Doubler, [("numbers", msg1), ("numbers", msg2)])
    assert [m.value for m in out["doubled"]] == [2, 4]

``check_node`` checks a node class against the ``Node`` contract and raises
``ContractError`` listing every problem; ``node_problems`` returns them.
``tests/runtime/test_testing.py`` runs it over every registered node type.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from engram.runtime.bus import BusClosed, InProcBus, QueuePolicy, Subscription
from engram.runtime.messages import MESSAGE_TYPES, Message
from engram.runtime.node import Input, Node, Output, Service

__all__ = ["ContractError", "check_node", "node_problems", "run_node"]

_bus_ids = itertools.count(1)
_PORT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ContractError(AssertionError):
    """A node class breaks the ``Node`` contract; ``problems`` lists how."""

    def __init__(self, cls: type, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{cls.__module__}.{cls.__qualname__}: {len(self.problems)} problem(s):\n{lines}"
        )


# ---------------------------------------------------------------------------
# run_node


def run_node(
    node: type[Node] | Node,
    inputs: Sequence[tuple[str, Message]],
    *,
    config: Any = None,
    topics: dict[str, str] | None = None,
    timeout_s: float = 5.0,
    duration_s: float = 0.0,
    raise_errors: bool = True,
) -> dict[str, list[Message]]:
    """Run a node on ``inputs`` and collect what it publishes.

    node: a ``Node`` subclass (constructed with ``config`` and ``topics``) or an
    instance that has not been started (it is moved onto a private bus).
    inputs: ``(port, message)`` pairs fed in order; each must be handled before the
    next is sent (``TimeoutError`` after ``timeout_s``). A service port's message
    is sent as a request and the reply is collected under that port's name.
    duration_s: keep running this long after the last input (for timer-driven nodes).
    raise_errors: re-raise the first exception a handler raised (after stopping).

    Returns ``{port: [messages in publish order]}`` for every output (and requested
    service) port; heartbeats are not included.
    """
    bus = InProcBus(f"run_node-{next(_bus_ids)}")
    if isinstance(node, Node):
        if node.state != "created":
            raise ValueError(
                f"run_node: node {node.name!r} is already {node.state}; pass a fresh one"
            )
        if config is not None or topics is not None:
            raise ValueError("run_node: config/topics apply to a node class, not an instance")
        instance = node
        instance.bus = bus
    elif isinstance(node, type) and issubclass(node, Node):
        instance = node(config, bus=bus, topics=topics)
    else:
        raise TypeError(f"run_node: expected a Node subclass or instance, got {node!r}")

    node_inputs, node_outputs, node_services = (
        instance.inputs(),
        instance.outputs(),
        instance.services(),
    )
    for index, (port, msg) in enumerate(inputs):
        if port not in node_inputs and port not in node_services:
            raise KeyError(
                f"run_node: input #{index} names port {port!r}, but node {instance.name!r} has "
                f"inputs {sorted(node_inputs)} and services {sorted(node_services)}"
            )
        if not isinstance(msg, Message):
            raise TypeError(f"run_node: input #{index} ({port!r}) is not a Message: {msg!r}")

    handled = {port: threading.Semaphore(0) for port in node_inputs}
    errors: list[BaseException] = []
    for port in node_inputs:
        original = getattr(instance, f"on_{port}", None)
        if original is None:
            continue  # start() reports the missing handler
        setattr(instance, f"on_{port}", _signalling(original, handled[port], errors))

    collectors = {
        port: _Collector(bus.subscribe(instance.topic(port), "all(256)")) for port in node_outputs
    }
    replies: dict[str, list[Message]] = {}
    instance.start()
    try:
        for index, (port, msg) in enumerate(inputs):
            if port in node_services:
                replies.setdefault(port, []).append(
                    bus.request(instance.topic(port), msg, timeout_s=timeout_s)
                )
                continue
            bus.publish(instance.topic(port), msg)
            if not handled[port].acquire(timeout=timeout_s):
                raise TimeoutError(
                    f"run_node: node {instance.name!r} did not handle input #{index} on port "
                    f"{port!r} within {timeout_s:g} s"
                )
        if duration_s > 0:
            time.sleep(duration_s)
    finally:
        instance.stop()
        for collector in collectors.values():
            collector.finish()
        bus.close()
    if raise_errors and errors:
        raise errors[0]
    out = {port: c.messages for port, c in collectors.items()}
    out.update(replies)
    return out


def _signalling(handler: Any, done: threading.Semaphore, errors: list[BaseException]) -> Any:
    def wrapped(msg: Message) -> Any:
        try:
            return handler(msg)
        except Exception as exc:
            errors.append(exc)
            raise  # the node counts it and keeps running
        finally:
            done.release()

    wrapped.__name__ = getattr(handler, "__name__", "handler")
    return wrapped


class _Collector:
    """Moves a subscription's messages into a list on its own thread."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.messages: list[Message] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"collect:{sub.topic}")
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                msg = self.sub.get(0.5)
            except BusClosed:
                return
            if msg is not None:
                self.messages.append(msg)

    def finish(self) -> None:
        self.sub.close()  # the thread drains what is left, then sees BusClosed
        self._thread.join(5.0)


# ---------------------------------------------------------------------------
# check_node


def node_problems(cls: type, *, config: Any = None) -> list[str]:
    """Every way ``cls`` breaks the ``Node`` contract (empty when it is fine).

    Checks: a ``Node`` subclass with a docstring; ``INPUTS``/``OUTPUTS``/``SERVICES``
    hold ``Input``/``Output``/``Service`` values under identifier port names,
    unique across the three; message types are registered; policies parse;
    ``on_<port>`` exists for every input and service; ``Config`` is a dataclass
    whose fields all have defaults and a comment (``# ...`` on the field's line or
    ``#:`` above it); the node constructs with that config on an in-process bus
    and its ports resolve to topics.
    """
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        return [f"{cls!r} is not a Node subclass"]
    problems: list[str] = []
    if not (cls.__doc__ or "").strip():
        problems.append("the class has no docstring")
    tables = {
        "INPUTS": (cls.INPUTS, Input),
        "OUTPUTS": (cls.OUTPUTS, Output),
        "SERVICES": (cls.SERVICES, Service),
    }
    seen: dict[str, str] = {}
    for table_name, (table, kind) in tables.items():
        if not isinstance(table, dict):
            problems.append(f"{table_name} must be a dict of port -> {kind.__name__}")
            continue
        for port, decl in table.items():
            where = f"{table_name}[{port!r}]"
            if not isinstance(port, str) or not _PORT_RE.match(port):
                problems.append(f"{where}: port names must be identifiers")
            if port in seen:
                problems.append(f"port {port!r} is declared in both {seen[port]} and {table_name}")
            seen[port] = table_name
            if not isinstance(decl, kind):
                problems.append(f"{where} must be a {kind.__name__}, got {type(decl).__name__}")
                continue
            types_ = (decl.request, decl.reply) if isinstance(decl, Service) else (decl.type,)
            for t in types_:
                if t not in MESSAGE_TYPES:
                    problems.append(f"{where}: unknown message type {t!r}")
            if isinstance(decl, Input):
                try:
                    QueuePolicy.parse(decl.policy)
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
            if decl.topic and any(c.isspace() for c in decl.topic):
                problems.append(f"{where}: topic {decl.topic!r} contains whitespace")
            if isinstance(decl, (Input, Service)) and not callable(
                getattr(cls, f"on_{port}", None)
            ):
                problems.append(f"{where}: no handler method on_{port}()")
    problems += _config_problems(cls)
    if problems:
        return problems
    bus = InProcBus("check_node")
    try:
        node = cls(config, bus=bus)
        for port in [*node.inputs(), *node.outputs(), *node.services()]:
            topic = node.topic(port)
            if not isinstance(topic, str) or not topic:
                problems.append(f"port {port!r} resolves to an empty topic")
    except Exception as exc:  # noqa: BLE001 - reported as a contract problem
        problems.append(
            f"cannot be constructed with {'its default config' if config is None else 'the given config'}: {exc!r}"
        )
    finally:
        bus.close()
    return problems


def check_node(cls: type, *, config: Any = None) -> None:
    """Raise ``ContractError`` listing every problem of ``cls`` (see ``node_problems``)."""
    problems = node_problems(cls, config=config)
    if problems:
        raise ContractError(cls, problems)


def _config_problems(cls: type[Node]) -> list[str]:
    config_cls = cls.Config
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        return [f"Config must be a dataclass, got {config_cls!r}"]
    problems = []
    for f in dataclasses.fields(config_cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"Config field {f.name!r} has no default (graphs may omit params)")
        if not _field_documented(config_cls, f.name):
            problems.append(
                f"Config field {f.name!r} has no comment saying what it is (and its unit)"
            )
    return problems


def _field_documented(config_cls: type, name: str) -> bool:
    """Whether the class that defines ``name`` comments it (``name: T = v  # ...`` or ``#:`` above)."""
    for klass in config_cls.__mro__:
        if name not in getattr(klass, "__annotations__", {}):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            return True  # no source to inspect (built dynamically): do not guess
        pattern = re.compile(rf"^\s*{re.escape(name)}\s*:")
        for i, line in enumerate(lines):
            if pattern.match(line):
                if "#" in line.split(":", 1)[1]:
                    return True
                return i > 0 and lines[i - 1].strip().startswith("#")
        return False
    return False
