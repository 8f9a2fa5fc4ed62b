"""Paper-ready evaluation output: confidence intervals, a plot, provenance, rounded floats.

``write_report(doc, json_path, config=..., argv=...)`` finishes an evaluation's JSON (the
shape of bench/README.md) and writes it:

- every rate row (metric ``success_rate``, ``accuracy`` or ``*_rate``) with a trial count
  (``n`` or ``episodes``) gets ``ci95_low`` / ``ci95_high``, the Wilson score 95% interval
  (and ``peer_ci95_low`` / ``peer_ci95_high`` for its peer): with few trials "100% vs 50%"
  says little, and the interval shows how little;
- ``plot``: a PNG next to the JSON (``<name>.png``): per case, Engram's value beside the
  peer's, with the 95% intervals as error bars (success with/without memory per task,
  QA errors or accuracy per question type);
- ``provenance``: the git commit (and whether the tree had uncommitted changes), the
  versions of the packages that shape results, Python and platform, the command line,
  and the full configuration (a dataclass, as a dict);
- floats rounded to 6 significant digits (no ``1.6000000000000012``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGES",
    "add_confidence_intervals",
    "plot_results",
    "provenance",
    "round_floats",
    "wilson_interval",
    "write_report",
]

#: packages whose versions are recorded (those installed)
PACKAGES = (
    "engram",
    "numpy",
    "scipy",
    "torch",
    "open-clip-torch",
    "transformers",
    "sentence-transformers",
    "faster-whisper",
    "ctranslate2",
    "mujoco",
    "open3d",
    "gymnasium",
    "faiss-cpu",
    "pymilvus",
)
_REPO = Path(__file__).resolve().parents[2]


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default): (low, high)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, successes / n))
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _is_rate(metric: str) -> bool:
    return metric in ("success_rate", "accuracy") or metric.endswith("_rate")


def add_confidence_intervals(doc: dict[str, Any]) -> dict[str, Any]:
    """Wilson 95% intervals on every rate row that says how many trials it had."""
    for row in doc.get("results", []):
        n = row.get("n", row.get("episodes"))
        if not _is_rate(str(row.get("metric", ""))) or not isinstance(n, int) or n <= 0:
            continue
        for key, prefix in (("value", "ci95"), ("peer_value", "peer_ci95")):
            value = row.get(key)
            if isinstance(value, (int, float)) and 0.0 <= value <= 1.0:
                lo, hi = wilson_interval(round(value * n), n)
                row[f"{prefix}_low"], row[f"{prefix}_high"] = lo, hi
    return doc


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def provenance(config: Any = None, argv: list[str] | None = None) -> dict[str, Any]:
    """What produced a result: code version, package versions, command line, configuration."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    commit = _git("rev-parse", "HEAD")
    return {
        "git_commit": commit or None,
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))
        if commit
        else None,
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": list(sys.argv if argv is None else argv),
        "config": _plain_config(config),
    }


def _plain_config(value: Any) -> Any:
    """Dataclasses (also nested in dicts/lists) as dicts; argparse internals dropped."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain_config(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain_config(v) for v in value]
    return value


def round_floats(value: Any, digits: int = 6) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits (recursively)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v, digits) for v in value]
    return value


def plot_results(doc: dict[str, Any], path: str | Path) -> Path:
    """A PNG of the result rows: value vs peer per case, 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc.get("results", []) if isinstance(r.get("value"), (int, float))]
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_metric.setdefault(str(r.get("metric")), []).append(r)
    panels = max(1, len(by_metric))
    fig, axes = plt.subplots(panels, 1, figsize=(9, 3.2 * panels), squeeze=False)
    for ax, (metric, group) in zip(axes[:, 0], by_metric.items()):
        xs = list(range(len(group)))
        width = 0.38
        for offset, key, prefix, label in (
            (-width / 2, "value", "ci95", "Engram (with memory)"),
            (width / 2, "peer_value", "peer_ci95", None),
        ):
            vals = [r.get(key) for r in group]
            if all(v is None for v in vals):
                continue
            heights = [float(v) if v is not None else 0.0 for v in vals]
            # clamped at 0: a rate of 1.0 (or 0.0) with an interval rounded to fewer
            # digits than the rate gives a tiny negative length, which matplotlib refuses
            errs = [
                [max(0.0, h - r.get(f"{prefix}_low", h)) for h, r in zip(heights, group)],
                [max(0.0, r.get(f"{prefix}_high", h) - h) for h, r in zip(heights, group)],
            ]
            peers = sorted({str(r.get("peer")) for r in group if r.get("peer")})
            name = label or ("peer: " + ", ".join(peers) if peers else "peer")
            ax.bar([x + offset for x in xs], heights, width, yerr=errs, capsize=3, label=name)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(r.get("case")) for r in group], rotation=20, ha="right")
        better = group[0].get("better", "")
        ax.set_ylabel(f"{metric} ({better} is better)")
        if _is_rate(metric):
            ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
    fig.suptitle(f"{doc.get('bench', 'eval')}: 95% Wilson intervals on rates", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    doc: dict[str, Any],
    json_path: str | Path,
    *,
    config: Any = None,
    argv: list[str] | None = None,
    plot: bool = True,
) -> dict[str, Any]:
    """Add intervals, the plot and provenance to ``doc``, round its floats, write it as
    JSON to ``json_path`` (the plot beside it, same name, ``.png``); returns the document."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    add_confidence_intervals(doc)
    if plot:
        doc["plot"] = str(plot_results(doc, json_path.with_suffix(".png")))
    doc["provenance"] = provenance(config, argv)
    doc = round_floats(json.loads(json.dumps(doc, default=str)))
    json_path.write_text(json.dumps(doc, indent=2))
    return doc
