"""Typed configs from plain data: ``make_config(Config, {"rate_hz": 15})``.

Every node, memory and encoder is configured by a dataclass (fields with units in
their names, a comment each). Launch graphs, CLI flags and JSON give plain dicts;
this module turns one into the other once, checking names and simple types, so a
typo or a wrong type is reported with the field's name instead of failing later.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["config_problems", "make_config"]

C = TypeVar("C")


def make_config(config_cls: type[C], params: dict[str, Any] | C | None, *, where: str = "") -> C:
    """``config_cls(**params)`` after checking names and simple types.

    ``params`` may already be a ``config_cls`` (returned as is) or None (defaults).
    Raises ``ValueError`` listing unknown params and params of the wrong type (ints are
    accepted for floats, lists for tuples).
    """
    if params is None:
        return config_cls()
    if not isinstance(params, dict):  # a config object already (this class or a look-alike)
        return params
    config, problems = config_problems(config_cls, params, where=where)
    if problems:
        raise ValueError("; ".join(problems))
    return config


def config_problems(config_cls: type[C], params: Any, *, where: str = "") -> tuple[Any, list[str]]:
    """``(config, [])`` or ``(None, problems)``: every problem found, each naming ``where``."""
    where = where or getattr(config_cls, "__qualname__", str(config_cls))
    if not isinstance(params, dict):
        return None, [f"{where}: params must be a mapping, got {type(params).__name__}"]
    if not dataclasses.is_dataclass(config_cls):
        return None, [f"{where}: its Config {config_cls!r} is not a dataclass"]
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    problems = []
    unknown = sorted(set(params) - set(fields))
    if unknown:
        problems.append(
            f"{where}: unknown param(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(fields))}"
        )
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks
        hints = {}
    values = {}
    for key, value in params.items():
        if key not in fields:
            continue
        hint = hints.get(key, Any)
        ok, converted = _check_value(value, hint)
        if not ok:
            problems.append(
                f"{where}: param {key!r} must be {_type_name(hint)}, "
                f"got {type(value).__name__} {value!r}"
            )
        values[key] = converted
    if problems:
        return None, problems
    try:
        return config_cls(**values), []
    except Exception as exc:  # noqa: BLE001 - reported with the owner's name
        return None, [f"{where}: bad params: {exc}"]


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _check_value(value: Any, hint: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits a simple type hint, and the value converted to it."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, converted = _check_value(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(hint), value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if hint is str:
        return isinstance(value, str), value
    container = origin or hint
    if container in (list, Sequence):
        return isinstance(value, list), value
    if container is tuple:
        if isinstance(value, (list, tuple)):
            return True, tuple(value)
        return False, value
    if container is dict:
        return isinstance(value, dict), value
    return True, value  # a type this check does not know: let the Config decide
