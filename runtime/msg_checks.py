"""Validation helpers of ``runtime/messages.py`` (split out of it to keep files small).

Every message is checked on construction (``Message.__post_init__``), also each one the
codec rebuilds on receipt, so these run per message on the bus's hot path: the common
cases (an array that already has the right dtype; a pose) avoid numpy calls on tiny arrays,
whose per-call overhead dominated (``pose_problem`` on a 4x4 in plain floats: ~4 us instead
of ~15 us).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NoReturn

import numpy as np

__all__ = ["MessageError", "pose_problem"]


class MessageError(ValueError):
    """A message field has the wrong shape, dtype or value."""


_PLAIN_MAX_DEPTH = 64  # nesting of lists/dicts in a non-array field (the codec's limit too)
_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack can carry
_DTYPES: dict[str, np.dtype] = {}  # dtype name -> np.dtype (np.dtype(str) costs per call)


def _fail(msg: Any, field_name: str, problem: str) -> NoReturn:
    raise MessageError(f"{type(msg).__name__}.{field_name}: {problem}")


def _array(
    msg: Any,
    field_name: str,
    dtype: str,
    shape: tuple[int | None, ...],
    *,
    optional: bool = False,
    finite: bool = False,
) -> None:
    """Check and normalise ``msg.<field_name>`` in place.

    ``shape`` uses ``None`` for a free dimension. Lossless dtype conversion only:
    ints to a wider/equal int or to float, float64 -> float32 for float32 fields.
    """
    value = getattr(msg, field_name)
    if value is None:
        if optional:
            return
        _fail(msg, field_name, "is required, got None")
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as exc:  # noqa: BLE001 - reported with the field name
            _fail(msg, field_name, f"cannot be converted to an array ({exc})")
    want = _DTYPES.get(dtype)
    if want is None:
        want = _DTYPES[dtype] = np.dtype(dtype)
    if value.dtype != want:
        src = value.dtype
        ok = (
            (src.kind in "iub" and want.kind in "iuf") or (src.kind == "f" and want.kind == "f")
        ) and src.kind != "O"
        if want.kind in "iu" and src.kind == "f":
            ok = False
        if want == np.uint8 and src.kind in "iu" and src != np.uint8:
            ok = bool(value.size == 0 or (value.min() >= 0 and value.max() <= 255))
        if not ok:
            _fail(msg, field_name, f"dtype must be {want}, got {src}")
        value = value.astype(want)
    if value.ndim != len(shape):
        _fail(
            msg, field_name, f"must have {len(shape)} dims {_fmt(shape)}, got shape {value.shape}"
        )
    for axis, (got, need) in enumerate(zip(value.shape, shape)):
        if need is not None and got != need:
            _fail(
                msg, field_name, f"dim {axis} must be {need} {_fmt(shape)}, got shape {value.shape}"
            )
    if finite and value.dtype.kind == "f" and not _all_finite(value):
        _fail(msg, field_name, "contains NaN or inf")
    object.__setattr__(msg, field_name, value)


#: declared type of a plain field -> the Python type its value must have
_PLAIN_KINDS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_PLAIN_KINDS.update({t: list for t in ("list[str]", "list[dict[str, Any]]")})
_PLAIN_KINDS.update({f"dict[str, {t}]": dict for t in ("Any", "float", "int", "str")})


_PLAIN_FIELDS: dict[type, tuple[list[str], list[tuple[str, type]]]] = {}


def _plain_fields(cls: type) -> tuple[list[str], list[tuple[str, type]]]:
    """A message class's field names, and (name, type) of those declared as a plain type
    (str, int, float, bool, list, dict), cached per class (``dataclasses.fields`` on every
    construction was a measurable cost)."""
    out = _PLAIN_FIELDS.get(cls)
    if out is None:
        fields = dataclasses.fields(cls)
        declared = [(f.name, _PLAIN_KINDS.get(str(f.type))) for f in fields]
        out = _PLAIN_FIELDS[cls] = (
            [f.name for f in fields],
            [(name, kind) for name, kind in declared if kind is not None],
        )
    return out


def _coerce_plain(msg: Any, name: str, value: Any, kind: type) -> Any:
    """A plain field's value as its declared type (numpy scalars -> Python; an int for a
    float field; 0/1 for a bool), or ``MessageError`` naming the field."""
    if type(value) is kind:  # the common case, nothing to convert
        return value
    out: Any = None
    if kind is str and isinstance(value, str):
        out = str(value)
    elif kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = int(value)
    elif kind is float and isinstance(value, (int, float, np.integer, np.floating)):
        out = float(value) if not isinstance(value, bool) else None
    elif kind is bool and isinstance(value, (bool, np.bool_)):
        out = bool(value)
    elif kind is bool and isinstance(value, (int, np.integer)) and value in (0, 1):
        out = bool(value)
    elif kind in (list, dict) and isinstance(value, kind):
        out = value
    elif kind is list and isinstance(value, tuple):
        out = list(value)
    if out is None:
        _fail(msg, name, f"must be a {kind.__name__}, got {type(value).__name__}")
    if out is not value:
        object.__setattr__(msg, name, out)
    return out


def _plain_problem(value: Any, depth: int) -> str | None:
    """Why ``value`` cannot travel in a message's non-array field, or None."""
    if value is None or isinstance(value, (bool, float, np.ndarray, np.bool_, np.floating)):
        return None
    if isinstance(value, (int, np.integer)):
        if not _INT_RANGE[0] <= int(value) <= _INT_RANGE[1]:
            return f"int {value} does not fit in 64 bits"
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"string {value[:40]!r} is not valid Unicode (lone surrogate)"
        return None
    if depth >= _PLAIN_MAX_DEPTH:
        return f"nested deeper than {_PLAIN_MAX_DEPTH}"
    if isinstance(value, (list, tuple)):
        for item in value:
            problem = _plain_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"dict key {key!r:.40} is not a str"
            problem = _plain_problem(key, depth + 1) or _plain_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"a {type(value).__name__} cannot be sent (plain data only)"


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


#: bytes of float64 poses / intrinsics that passed ``_pose`` / ``_intrinsics`` lately (a
#: fixed camera, a default identity: the same values on every message): checked once,
#: ~10x cheaper after. Bounded.
_GOOD_POSES: set[bytes] = set()
_GOOD_INTRINSICS: set[bytes] = set()
_GOOD_POSES_MAX = 256  # entries each
_F64 = np.dtype("float64")


def _seen(value: Any, shape: tuple[int, int], good: set[bytes]) -> tuple[bool, bytes | None]:
    """(whether ``value`` passed its check before, the key to remember it by): the exact
    bytes of a float64 array of ``shape`` (same bytes, same verdict), else no key."""
    if type(value) is np.ndarray and value.dtype == _F64 and value.shape == shape:
        key = value.tobytes()
        return key in good, key
    return False, None


def _remember(good: set[bytes], key: bytes | None) -> None:
    if key is not None:
        if len(good) >= _GOOD_POSES_MAX:
            good.clear()
        good.add(key)


def _pose(msg: Any, field_name: str, *, optional: bool = False) -> None:
    """A (4, 4) finite rigid transform: orthonormal rotation, det +1, last row 0 0 0 1."""
    known, key = _seen(getattr(msg, field_name), (4, 4), _GOOD_POSES)
    if known:
        return  # (already the right dtype and shape: nothing to convert)
    _array(msg, field_name, "float64", (4, 4), optional=optional, finite=True)
    pose = getattr(msg, field_name)
    if pose is not None:
        problem = pose_problem(pose)
        if problem:
            _fail(msg, field_name, problem)
        _remember(_GOOD_POSES, key)


def _intrinsics(msg: Any, field_name: str) -> None:
    """A (3, 3) finite float64 pinhole matrix with positive focal lengths fx, fy."""
    known, key = _seen(getattr(msg, field_name), (3, 3), _GOOD_INTRINSICS)
    if known:
        return
    _array(msg, field_name, "float64", (3, 3), finite=True)
    k = getattr(msg, field_name)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        _fail(msg, field_name, "focal lengths fx, fy must be positive")
    _remember(_GOOD_INTRINSICS, key)


def _all_finite(value: np.ndarray) -> bool:
    if value.size <= 16:  # intrinsics, poses: plain floats beat two numpy calls
        return all(map(math.isfinite, value.reshape(-1).tolist()))
    return bool(np.isfinite(value).all())


def pose_problem(pose: np.ndarray) -> str | None:
    """Why a (4, 4) float array is not a finite rigid transform (orthonormal rotation
    with determinant +1, last row 0 0 0 1), or None. The one rigidity rule of Engram:
    messages, perception's geometry and the spatial memory all apply it."""
    if getattr(pose, "shape", None) != (4, 4):
        return _pose_problem_np(pose)
    # Plain floats: this runs on every decoded message (16 numbers; numpy calls on them
    # cost ~4x more). Same tolerances as the numpy form below.
    rows = pose.tolist()
    flat = rows[0] + rows[1] + rows[2] + rows[3]
    if not all(map(math.isfinite, flat)):
        return "contains NaN or inf"
    last = rows[3]
    if max(abs(last[0]), abs(last[1]), abs(last[2]), abs(last[3] - 1.0)) > 1e-6:
        return f"last row must be [0 0 0 1], got {last}"
    r0, r1, r2 = rows[0][:3], rows[1][:3], rows[2][:3]
    worst = 0.0
    for i, a in enumerate((r0, r1, r2)):
        for j, b in enumerate((r0, r1, r2)):
            dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
            worst = max(worst, abs(dot - (1.0 if i == j else 0.0)))
    det = (
        r0[0] * (r1[1] * r2[2] - r1[2] * r2[1])
        - r0[1] * (r1[0] * r2[2] - r1[2] * r2[0])
        + r0[2] * (r1[0] * r2[1] - r1[1] * r2[0])
    )
    if not worst <= 1e-4 or det < 0:
        return "rotation part is not a proper rotation (not rigid)"
    return None


def _pose_problem_np(pose: np.ndarray) -> str | None:
    if not np.all(np.isfinite(pose)):
        return "contains NaN or inf"
    if np.abs(pose[3] - _LAST_ROW).max() > 1e-6:
        return f"last row must be [0 0 0 1], got {pose[3].tolist()}"
    rot = pose[:3, :3]
    if np.abs(rot @ rot.T - _EYE3).max() > 1e-4 or np.linalg.det(rot) < 0:
        return "rotation part is not a proper rotation (not rigid)"
    return None


_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_EYE3 = np.eye(3)


def _same_len(msg: Any, names: list[str]) -> None:
    lengths = {n: len(getattr(msg, n)) for n in names if getattr(msg, n) is not None}
    if len(set(lengths.values())) > 1:
        _fail(msg, names[0], f"per-item fields must have equal length, got {lengths}")


def _nonneg(msg: Any, field_name: str) -> None:
    value = getattr(msg, field_name)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        _fail(msg, field_name, f"must be a non-negative int, got {value!r}")
    object.__setattr__(msg, field_name, int(value))


def _finite_number(msg: Any, field_name: str, *, positive: bool = False) -> None:
    value = getattr(msg, field_name)
    try:
        value = float(value)
    except (TypeError, ValueError):
        _fail(msg, field_name, f"must be a number, got {value!r}")
    if not np.isfinite(value) or (positive and value <= 0):
        _fail(
            msg,
            field_name,
            f"must be a finite{' positive' if positive else ''} number, got {value}",
        )
    object.__setattr__(msg, field_name, value)
