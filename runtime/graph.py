"""Launch graphs as data: read, override, parse, validate, build nodes.

The schema is described in ``engram.runtime.launcher`` (which runs graphs) and
``launch/README.md``. Here:

- ``graph_path(name)``, ``read_graph(path)``, ``load_graph(name, params=..., drop=...)``:
  a graph file's data, with per-node param overrides and nodes removed;
- ``parse_graph(data, source)`` (structure) and ``validate_graph(settings, specs)`` (node
  classes, params, ports, wiring, process groups): every problem, each naming the node,
  port or topic; ``GraphError`` carries them;
- ``build_node(spec, bus)``, ``build_nodes(graph, bus)``: nodes constructed on a bus, not
  started; ``start_order(nodes)``: consumers before producers;
- ``curve_from_settings``: a graph's ``curve:`` section as a ``CurveConfig``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engram.runtime import registry
from engram.runtime.bus import Bus, InProcBus
from engram.runtime.config import config_problems, make_config
from engram.runtime.messages import MESSAGE_TYPES
from engram.runtime.node import HEARTBEAT_TOPIC, Node, load_node_class
from engram.runtime.supervisor import RestartPolicy

__all__ = [
    "GraphError",
    "NodeSpec",
    "build_node",
    "build_nodes",
    "curve_from_settings",
    "graph_path",
    "group_policy",
    "load_graph",
    "parse_graph",
    "read_graph",
    "start_order",
    "validate_graph",
]

_GRAPH_KEYS = {"curve", "name", "bus", "nodes", "external_topics", "shutdown_grace_s"}
_CURVE_KEYS = {"secret_key", "server_public_key", "allowed_keys_dir"}
_NODE_KEYS = {"name", "type", "params", "topics", "process", "restart"}
_RESTART_KEYS = {f.name for f in dataclasses.fields(RestartPolicy)}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class GraphError(ValueError):
    """A launch graph is invalid; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


@dataclass
class NodeSpec:
    """One node entry of a graph, as parsed (before its class is imported)."""

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    process: str | None = None
    restart: RestartPolicy | None = None

    def child_spec(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "params": self.params, "topics": self.topics}


# ---------------------------------------------------------------------------
# building nodes (shared by the launcher and its child processes)


def build_node(spec: dict[str, Any] | NodeSpec, bus: Bus) -> Node:
    """Import, configure and construct one node on ``bus`` (not started)."""
    if isinstance(spec, NodeSpec):
        spec = spec.child_spec()
    cls = load_node_class(spec["type"])
    where = f"node {spec['name']!r} ({cls.__name__})"
    config = make_config(cls.Config, spec.get("params") or {}, where=where)
    return cls(config, name=spec["name"], bus=bus, topics=spec.get("topics") or {})


def graph_path(name: str | os.PathLike[str]) -> Path:
    """A graph file: a path as given, or a name of the project's ``launch/`` folder
    (``"sim_full"`` -> ``launch/sim_full.yaml``; ``ENGRAM_LAUNCH_DIR`` overrides the folder)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    folder = os.environ.get("ENGRAM_LAUNCH_DIR") or Path(__file__).resolve().parents[1] / "launch"
    return Path(folder) / f"{path.name}.yaml"


def read_graph(path: str | os.PathLike[str]) -> Any:
    """A graph file's YAML data, unchecked; ``GraphError`` if it cannot be read or parsed."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GraphError(str(path), [f"cannot read the graph file: {exc}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraphError(str(path), [f"not valid YAML: {exc}"]) from None


def load_graph(
    name: str | os.PathLike[str],
    *,
    params: dict[str, dict[str, Any]] | None = None,
    drop: Iterable[str] = (),
) -> dict[str, Any]:
    """A launch graph's data with overrides: ``params`` merges into each named node's
    params (nested dicts merged key by key), ``drop`` removes nodes by name. Unknown node
    names in either are an error (``GraphError``): a typo must not silently do nothing."""
    import copy

    path = graph_path(name)
    data = read_graph(path)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise GraphError(str(path), ["a launch graph must be a mapping with a 'nodes' list"])
    data = copy.deepcopy(data)
    names = [n.get("name") for n in data["nodes"] if isinstance(n, dict)]
    unknown = sorted((set(params or {}) | set(drop)) - set(names))
    if unknown:
        raise GraphError(str(path), [f"overrides name unknown node(s) {unknown}; nodes: {names}"])
    data["nodes"] = [n for n in data["nodes"] if n.get("name") not in set(drop)]
    for node in data["nodes"]:
        extra = (params or {}).get(node.get("name"))
        if extra:
            node["params"] = _merge(node.get("params") or {}, extra)
    data.setdefault("name", path.stem)
    return data


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_nodes(graph: dict[str, Any], bus: Bus, *, source: str = "<graph>") -> dict[str, Node]:
    """Validate ``graph`` and construct its nodes on ``bus`` (not started), by name, in the
    graph's order. For callers that drive the nodes themselves (the lockstep evaluation);
    ``engram.runtime.launcher.Launch`` is the way to run a graph. ``GraphError`` lists every problem."""
    settings, specs, problems = parse_graph(graph, source)
    problems = problems + validate_graph(settings, specs)
    if problems:
        raise GraphError(source, problems)
    return {spec.name: build_node(spec, bus) for spec in specs}


def start_order(nodes: Sequence[Node]) -> list[Node]:
    """Consumers before their producers, so subscriptions exist before data flows.

    Reverse topological order of the producer -> consumer graph; nodes in a cycle
    keep their given order.
    """
    produced_by: dict[str, set[int]] = {}
    for i, node in enumerate(nodes):
        for port in node.outputs():
            produced_by.setdefault(node.topic(port), set()).add(i)
    consumers_of: dict[int, set[int]] = {i: set() for i in range(len(nodes))}
    for j, node in enumerate(nodes):
        for port in node.inputs():
            for i in produced_by.get(node.topic(port), ()):
                if i != j:
                    consumers_of[i].add(j)
    order: list[int] = []
    placed: set[int] = set()
    remaining = list(range(len(nodes)))
    while remaining:
        ready = [i for i in remaining if consumers_of[i] <= placed]
        if not ready:  # a cycle: take the first remaining node
            ready = [remaining[0]]
        for i in ready:
            order.append(i)
            placed.add(i)
        remaining = [i for i in remaining if i not in placed]
    return [nodes[i] for i in order]


# ---------------------------------------------------------------------------
# parsing and validation


def _parse_curve(raw: Any, source: str, problems: list[str]) -> dict[str, str] | None:
    """The ``curve`` section -> absolute key paths (relative to the graph file), or None."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "secret_key" not in raw:
        problems.append(
            "curve must be a mapping with 'secret_key' (and optionally 'server_public_key', "
            f"'allowed_keys_dir'), got {raw!r}"
        )
        return None
    unknown = sorted(set(raw) - _CURVE_KEYS)
    if unknown:
        problems.append(
            f"curve: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(_CURVE_KEYS))}"
        )
    base = Path(source).resolve().parent if Path(source).is_file() else Path.cwd()
    out: dict[str, str] = {}
    for key in sorted(_CURVE_KEYS & set(raw)):
        value = raw[key]
        if not isinstance(value, str) or not value:
            problems.append(f"curve.{key} must be a path, got {value!r}")
            continue
        path = base / Path(value).expanduser()
        want_dir = key == "allowed_keys_dir"
        if not (path.is_dir() if want_dir else path.is_file()):
            what = "directory" if want_dir else "key file"
            problems.append(f"curve.{key}: {what} {path} does not exist (make keys: engram keys)")
        out[key] = str(path)
    return out


def curve_from_settings(curve: dict[str, str] | None) -> Any:
    """A graph's parsed ``curve`` section -> ``CurveConfig`` (None -> None)."""
    if not curve:
        return None
    from engram.runtime.zmq_curve import CurveConfig

    return CurveConfig.from_files(
        curve["secret_key"],
        server_public_key_file=curve.get("server_public_key"),
        allowed_keys_dir=curve.get("allowed_keys_dir"),
    )


def parse_graph(data: Any, source: str) -> tuple[dict[str, Any], list[NodeSpec], list[str]]:
    """Structural checks; returns (graph settings, node specs, problems)."""
    problems: list[str] = []
    if not isinstance(data, dict):  # (an empty file is None): default settings, no nodes
        settings = {"name": "graph", "bus": None, "external_topics": {}, "curve": None}
        settings["shutdown_grace_s"] = 5.0
        problem = f"a launch graph must be a mapping with a 'nodes' list, got {data!r:.200}"
        return settings, [], [problem]
    unknown = sorted(set(data) - _GRAPH_KEYS)
    if unknown:
        problems.append(
            f"unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(_GRAPH_KEYS))}"
        )
    default_name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(source).stem).lstrip(".-") or "graph"
    settings: dict[str, Any] = {
        "name": data.get("name") or default_name,
        "bus": data.get("bus"),
        "shutdown_grace_s": data.get("shutdown_grace_s", 5.0),
        "external_topics": data.get("external_topics") or {},
    }
    if not isinstance(settings["name"], str) or not _NAME_RE.match(settings["name"]):
        problems.append(f"graph name must be a simple identifier, got {settings['name']!r}")
        settings["name"] = "graph"
    bus = settings["bus"]
    if bus is not None and (
        not isinstance(bus, str) or not bus.startswith(("inproc://", "ipc://", "tcp://"))
    ):
        problems.append(f"bus must be an inproc://, ipc:// or tcp:// URL, got {bus!r}")
    settings["curve"] = _parse_curve(data.get("curve"), source, problems)
    grace = settings["shutdown_grace_s"]
    if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0:
        problems.append(f"shutdown_grace_s must be a number >= 0, got {grace!r}")
        settings["shutdown_grace_s"] = 5.0
    external = settings["external_topics"]
    if not isinstance(external, dict):
        problems.append(f"external_topics must map topic -> message type, got {external!r}")
        settings["external_topics"] = {}
    else:
        for topic, type_name in external.items():
            if not isinstance(type_name, str) or type_name not in MESSAGE_TYPES:
                problems.append(
                    f"external_topics: topic {topic!r} has unknown message type {type_name!r}; "
                    f"known: {', '.join(sorted(MESSAGE_TYPES))}"
                )
        # only well-formed entries go on to the wiring checks (a list as a type: no crash)
        settings["external_topics"] = {
            t: n for t, n in external.items() if isinstance(n, str) and n in MESSAGE_TYPES
        }
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.append("'nodes' must be a non-empty list of node entries")
        return settings, [], problems
    specs: list[NodeSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_nodes):
        spec, node_problems = _parse_node(raw, index)
        problems += node_problems
        if spec is None:
            continue
        if spec.name in seen:
            problems.append(
                f"duplicate node name {spec.name!r} (nodes #{seen[spec.name] + 1} and #{index + 1})"
            )
            continue
        seen[spec.name] = index
        specs.append(spec)
    return settings, specs, problems


def _parse_node(raw: Any, index: int) -> tuple[NodeSpec | None, list[str]]:
    where = f"node #{index + 1}"
    if not isinstance(raw, dict):
        return None, [f"{where}: must be a mapping with name and type, got {raw!r}"]
    name = raw.get("name")
    if isinstance(name, str) and _NAME_RE.match(name):
        where = f"node {name!r}"
    else:
        return None, [f"{where}: 'name' must be a simple identifier, got {name!r}"]
    problems = []
    unknown = sorted(set(raw) - _NODE_KEYS)
    if unknown:
        problems.append(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(_NODE_KEYS))}"
        )
    type_name = raw.get("type")
    if not isinstance(type_name, str):
        problems.append(f"{where}: 'type' is required (one of {', '.join(registry.known('node'))})")
        type_name = ""
    elif type_name not in registry.known("node"):
        problems.append(
            f"{where}: unknown node type {type_name!r}; known: {', '.join(registry.known('node'))}"
        )
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        problems.append(f"{where}: 'params' must be a mapping, got {type(params).__name__}")
        params = {}
    topics = raw.get("topics") or {}
    if not isinstance(topics, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v and not any(c.isspace() for c in v)
        for k, v in topics.items()
    ):
        problems.append(
            f"{where}: 'topics' must map port -> topic name (no spaces), got {topics!r}"
        )
        topics = {}
    process = raw.get("process")
    if process is not None and (not isinstance(process, str) or not _NAME_RE.match(process)):
        problems.append(f"{where}: 'process' must be a simple identifier, got {process!r}")
        process = None
    restart = None
    raw_restart: Any = raw.get("restart")  # str shorthand, mapping, or junk to report
    if raw_restart is not None:
        if process is None:
            problems.append(
                f"{where}: 'restart' needs a 'process:' group (nodes in the launcher's own "
                "process are not restarted)"
            )
        if isinstance(raw_restart, str):
            raw_restart = {"policy": raw_restart}
        if not isinstance(raw_restart, dict):
            problems.append(f"{where}: 'restart' must be a policy name or a mapping")
        else:
            bad = sorted(set(raw_restart) - _RESTART_KEYS)
            if bad:
                problems.append(
                    f"{where}: unknown restart key(s) {', '.join(map(repr, bad))}; "
                    f"known: {', '.join(sorted(_RESTART_KEYS))}"
                )
            else:
                restart = RestartPolicy(**raw_restart)
                problems += [f"{where}: restart {p}" for p in restart.problems()]
    spec = NodeSpec(
        name=name,
        type=type_name,
        params=params,
        topics=topics,
        process=process,
        restart=restart,
    )
    return spec, problems


@dataclass
class _Port:
    node: str
    port: str
    type: str


def validate_graph(settings: dict[str, Any], specs: list[NodeSpec]) -> list[str]:
    """Semantic checks: classes, params, ports, wiring, process groups."""
    problems: list[str] = []
    probe_bus = InProcBus("launch-validate")
    outputs: dict[str, list[_Port]] = {}
    inputs: dict[str, list[_Port]] = {}
    services: dict[str, list[_Port]] = {}
    for spec in specs:
        where = f"node {spec.name!r}"
        if spec.type not in registry.known("node"):
            continue  # reported while parsing
        try:
            cls = load_node_class(spec.type)
        except Exception as exc:  # noqa: BLE001 - any import failure is a graph problem
            problems.append(f"{where}: cannot load node type {spec.type!r}: {exc}")
            continue
        config, problems_here = config_problems(
            cls.Config, spec.params, where=f"node {spec.name!r} ({cls.__name__})"
        )
        problems += problems_here
        if config is None:
            # Still check ports and wiring, with the default config.
            try:
                config = cls.Config()
            except Exception:  # noqa: BLE001 - already reported as a config problem
                continue
        try:
            node = cls(config, name=spec.name, bus=probe_bus, topics=spec.topics)
            node_inputs, node_outputs = node.inputs(), node.outputs()
            node_services = node.services()
        except Exception as exc:  # noqa: BLE001 - e.g. a remap of an unknown port
            problems.append(f"{where} ({spec.type}): {exc}")
            continue
        for port, decl in node_inputs.items():
            inputs.setdefault(node.topic(port), []).append(_Port(spec.name, port, decl.type))
        for port, decl in node_outputs.items():
            outputs.setdefault(node.topic(port), []).append(_Port(spec.name, port, decl.type))
        for port, decl in node_services.items():
            services.setdefault(node.topic(port), []).append(_Port(spec.name, port, decl.request))
        outputs.setdefault(HEARTBEAT_TOPIC, []).append(_Port(spec.name, "heartbeat", "Heartbeat"))
    probe_bus.close()
    for topic, type_name in settings["external_topics"].items():
        outputs.setdefault(topic, []).append(_Port("<external>", topic, type_name))

    for topic, producers in sorted(outputs.items()):
        kinds = {p.type for p in producers}
        if len(kinds) > 1:
            listing = ", ".join(f"node {p.node!r} output {p.port!r} ({p.type})" for p in producers)
            problems.append(f"topic {topic!r} has outputs of different types: {listing}")
    for topic, consumers in sorted(inputs.items()):
        producers = outputs.get(topic)
        for c in consumers:
            if not producers:
                problems.append(
                    f"node {c.node!r} input {c.port!r} reads topic {topic!r} ({c.type}) but no "
                    "node outputs it (add a producer, remap with 'topics:', or list it under "
                    "external_topics)"
                )
                continue
            for p in producers:
                if p.type != c.type:
                    source = (
                        "external_topics declares"
                        if p.node == "<external>"
                        else f"node {p.node!r} output {p.port!r} publishes"
                    )
                    problems.append(
                        f"type mismatch on topic {topic!r}: {source} {p.type} but node "
                        f"{c.node!r} input {c.port!r} expects {c.type}"
                    )
    for topic, servers in sorted(services.items()):
        if len(servers) > 1:
            names = ", ".join(f"node {s.node!r} service {s.port!r}" for s in servers)
            problems.append(f"service topic {topic!r} is served more than once: {names}")

    groups: dict[str, list[NodeSpec]] = {}
    for spec in specs:
        if spec.process:
            groups.setdefault(spec.process, []).append(spec)
    bus = settings["bus"]
    if groups and isinstance(bus, str) and bus.startswith("inproc://"):
        problems.append(
            f"bus {bus!r} is in-process but process groups {sorted(groups)} need an "
            "ipc:// or tcp:// bus (or leave 'bus' out to get a temporary ipc:// one)"
        )
    if settings.get("curve") and (
        (not groups and not bus) or (isinstance(bus, str) and bus.startswith("inproc://"))
    ):
        problems.append(
            "curve secures a ZeroMQ bus: it needs an ipc:// or tcp:// bus (set 'bus', or "
            "give nodes 'process:' groups); an in-process bus never leaves the process"
        )
    for group, members in sorted(groups.items()):
        policies = {
            (m.name, m.restart) for m in members if m.restart is not None
        }  # nodes that declare one
        distinct = {p for _, p in policies}
        if len(distinct) > 1:
            names = ", ".join(sorted(n for n, _ in policies))
            problems.append(
                f"process group {group!r}: nodes {names} declare different restart policies "
                "(a group restarts as one process)"
            )
    return problems


def group_policy(members: Iterable[NodeSpec]) -> RestartPolicy:
    for m in members:
        if m.restart is not None:
            return m.restart
    return RestartPolicy()
