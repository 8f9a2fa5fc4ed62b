"""One registry of named components, imported lazily: ``register`` / ``get`` / ``known``.

Everything a launch graph, a CLI flag or a config names by a string goes through it::

    from engram.runtime import registry

    registry.register("node", "sim", "engram.sim.node:SimNode")   # "module:attribute"
    registry.known("node")            # -> ['camera', 'memory', ..., 'sim'] (imports nothing)
    cls = registry.get("node", "sim") # imports engram.sim.node now, returns SimNode

Kinds in use: ``node`` (launch graph node types), ``encoder`` (image/text encoders),
``memory`` (memories of the memory system), ``task`` (``TaskSpec`` of each simulated
task), ``skill`` (the planner's skill controllers), ``planner``, ``policy`` (what turns
observations into ``ActionChunk``s), ``recipe`` (a planner recipe that is not a task's),
``command`` (``engram`` subcommands), ``bus`` (transports by URL scheme), ``replayer``
(players of foreign recordings, e.g. ROS 2 bags). A kind is just a string: a package may
add its own.

Targets are ``"module:attribute"`` strings, so reading the registry imports nothing
heavy; a non-string target (a class or a function) is stored as it is.

Who registers: the core registers its own entries below; every other package has a
``register`` module (``engram.sim.register``, ...) that the registry imports once, on
the first query, through the ``engram.register`` entry-point group of the installed
distribution (``pyproject.toml``). So the core names none of the domain packages, and a
third-party distribution adds nodes, tasks or memories by declaring the same entry point.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

__all__ = ["ENTRY_POINT_GROUP", "Registry", "RegistryError", "get", "known", "load", "register"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "engram.register"


class RegistryError(KeyError):
    """An unknown kind or name, or a target that cannot be imported (the message says which)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class Registry:
    """Maps ``(kind, name)`` to a lazily imported target. See the module docstring."""

    def __init__(self, *, entry_point_group: str | None = ENTRY_POINT_GROUP) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._group = entry_point_group
        self._plugins_loaded = entry_point_group is None
        self._lock = threading.RLock()
        self.plugin_errors: list[str] = []  # plugin modules that failed to import

    # ---- writing ----------------------------------------------------------------------
    def register(self, kind: str, name: str, target: Any, *, replace: bool = False) -> None:
        """Add ``name`` under ``kind``; ``target`` is ``"module:attr"`` or the object itself.

        Registering a name twice with a different target is an error unless ``replace``."""
        if not kind or not name:
            raise ValueError("registry: kind and name must be non-empty strings")
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"registry: target {target!r} of {kind} {name!r} is not 'module:attr'")
        with self._lock:
            entries = self._entries.setdefault(kind, {})
            old = entries.get(name)
            if old is not None and old != target and not replace:
                raise ValueError(
                    f"registry: {kind} {name!r} is already registered as {old!r}; "
                    "pass replace=True to override it"
                )
            entries[name] = target

    def unregister(self, kind: str, name: str) -> None:
        """Remove an entry (tests; a plugin replacing a default)."""
        with self._lock:
            self._entries.get(kind, {}).pop(name, None)

    # ---- reading ----------------------------------------------------------------------
    def known(self, kind: str) -> list[str]:
        """The names registered under ``kind``, sorted; imports no target."""
        self._load_plugins()
        with self._lock:
            return sorted(self._entries.get(kind, {}))

    def kinds(self) -> list[str]:
        self._load_plugins()
        with self._lock:
            return sorted(self._entries)

    def target(self, kind: str, name: str) -> Any:
        """The registered target of ``name`` (the string, not the imported object)."""
        self._load_plugins()
        with self._lock:
            entries = self._entries.get(kind, {})
            if name not in entries:
                known = ", ".join(sorted(entries)) or "none"
                raise RegistryError(f"unknown {kind} {name!r}; known: {known}")
            return entries[name]

    def __contains__(self, key: tuple[str, str]) -> bool:
        kind, name = key
        self._load_plugins()
        return name in self._entries.get(kind, {})

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name``, importing its module on first use."""
        target = self.target(kind, name)
        if not isinstance(target, str):
            return target
        try:
            return load(target)
        except RegistryError as exc:
            raise RegistryError(f"{kind} {name!r} -> {exc}") from exc.__cause__

    # ---- plugins ----------------------------------------------------------------------
    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        with self._lock:
            if self._plugins_loaded:
                return
            self._plugins_loaded = True  # before importing: plugins call register()
            from importlib.metadata import entry_points

            for ep in sorted(entry_points(group=self._group or ""), key=lambda e: e.name):
                try:
                    ep.load()
                except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the rest
                    msg = f"{ep.name} ({ep.value}): {type(exc).__name__}: {exc}"
                    self.plugin_errors.append(msg)
                    log.warning("registry: plugin %s failed to load", msg)


def load(target: str) -> Any:
    """The object a ``"module:attr"`` string names (``attr`` may be dotted), imported now.

    The one place such strings are resolved: registry entries, and strings that registered
    objects carry themselves (``TaskSpec.env``, ``TaskSpec.recipe``)."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"{target}: cannot import {module_name} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"{target}: {module_name} has no {attr!r}") from None
    return obj


REGISTRY = Registry()

register = REGISTRY.register
get = REGISTRY.get
known = REGISTRY.known

# ---- the core's own entries ----------------------------------------------------------
register("node", "synthetic_camera", "engram.runtime.demo_nodes:SyntheticCamera")
register("node", "frame_stats", "engram.runtime.demo_nodes:FrameStats")
# bus transports by URL scheme (engram.runtime.bus.make_bus; inproc:// is built in)
register("bus", "ipc", "engram.runtime.zmq_bus:ZmqBus")
register("bus", "tcp", "engram.runtime.zmq_bus:ZmqBus")
