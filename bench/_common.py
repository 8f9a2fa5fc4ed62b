"""The JSON envelope every benchmark prints (see bench/README.md)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["emit", "interleaved_ms", "machine_info", "percentile", "result"]


def machine_info() -> dict[str, Any]:
    """cpus, gpu (name or None), python version. Imports torch only if already imported."""
    gpu = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    return {"cpus": os.cpu_count(), "gpu": gpu, "python": platform.python_version()}


def result(
    case: str,
    metric: str,
    value: float,
    better: str,
    *,
    peer: str | None = None,
    peer_value: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One result row; ``ratio`` is how many times better than the peer (bench/README.md)."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    row: dict[str, Any] = {"case": case, "metric": metric, "value": _round(value), "better": better}
    if peer is not None and peer_value is not None:
        row["peer"] = peer
        row["peer_value"] = _round(peer_value)
        if value and peer_value:
            ratio = peer_value / value if better == "lower" else value / peer_value
            row["ratio"] = _round(ratio)
    row.update(extra)
    return row


def percentile(values: list[float], q: float) -> float:
    """q in [0, 100]; nearest-rank on sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def interleaved_ms(
    fns: dict[str, Callable[[Any], Any]], inputs: Iterable[Any]
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Run every function of ``fns`` on each input, timing each call (ms).

    The order rotates from one input to the next, so that neither warm caches (the
    second call on the same input) nor a burst of load on a shared machine favour one
    side. -> ({name: [ms, ...]}, {name: [return value, ...]}), in input order.
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    outs: dict[str, list[Any]] = {n: [] for n in names}
    for i, x in enumerate(inputs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            out = fns[name](x)
            times[name].append((time.perf_counter() - t0) * 1e3)
            outs[name].append(out)
    return times, outs


def _round(x: float) -> float:
    return float(f"{x:.4g}") if isinstance(x, float) else x


def emit(bench: str, results: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Print the benchmark's JSON object on stdout and return it."""
    out = {"bench": bench, "machine": machine_info(), "results": results, **extra}
    print(json.dumps(out, indent=2))
    return out


median = statistics.median
