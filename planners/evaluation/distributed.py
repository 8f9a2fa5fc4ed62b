"""Episodes fanned out as Ray tasks: ``engram eval [memory-qa] --ray local|auto|ADDRESS
--workers N``.

Each episode of ``engram eval`` is independent: a fresh pipeline (sim, perception,
memory, planner on an in-process bus) per seed. So episodes are Ray tasks
(``num_cpus=1`` each), run in Ray worker processes with their own sim and memory, at
most ``--workers`` at once, and the results are put back in the sequential run's
order: the same seeds give the same per-seed results (``engram eval memory-qa``: each
(stream, seed) is a task; the questions are summarised as in the sequential run) (the lockstep pipeline is
deterministic per seed; ``tests/planners/evaluation/test_distributed.py`` checks it
against the sequential run).

``--ray``:

- ``local``: start Ray on this machine (``ray.init(num_cpus=workers)``), stopped at
  the end;
- ``auto``: join the Ray cluster this machine belongs to (``ray start --head`` ran
  here or ``RAY_ADDRESS`` is set);
- ``ADDRESS``: join that cluster (``ray://head:10001`` through Ray Client, or
  ``head:6379``). The workers must have Engram installed (the same version).

Progress: one line per finished episode on stderr (``[k/N] task seed condition:
success|failure|ERROR (s)``). A failed episode (an exception in it, or its worker
died) does not stop the others: it is reported with its error, counted as not
successful in its condition, and listed in ``result["failures"]``.

Ray is imported inside functions: ``engram --help`` and the sequential run do not
load it.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from engram.planners.evaluation.pipeline import EvalConfig
from engram.runtime import registry

__all__ = [
    "RayUnavailable",
    "add_ray_arguments",
    "check_ray_arguments",
    "evaluate_memory_qa_distributed",
    "evaluate_tasks_distributed",
    "map_episodes",
    "ray_session",
    "run_memory_qa_distributed",
]


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray`` and ``--workers`` (shared by ``engram eval`` and the collectors)."""
    parser.add_argument(
        "--ray",
        default="",
        metavar="local|auto|ADDRESS",
        help="run episodes as Ray tasks: local (start Ray here), auto (this machine's "
        "cluster), or a cluster address (ray://head:10001); default: one after another",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="episodes at once under --ray (0 = CPUs)"
    )


def check_ray_arguments(args: argparse.Namespace, prog: str) -> str:
    """An error message for bad ``--ray`` / ``--workers`` values ("" when fine)."""
    if args.workers < 0:
        return f"{prog}: --workers must be >= 0, got {args.workers}"
    if args.workers and not args.ray:
        return f"{prog}: --workers needs --ray (local, auto or a cluster address)"
    if args.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            return f"{prog}: --ray needs the ray package (pip install ray)"
    return ""


class RayUnavailable(ValueError):
    """``--ray`` names a cluster that cannot be joined (a ValueError: bad input, exit 2)."""


@contextmanager
def ray_session(address: str, workers: int = 0) -> Iterator[int]:
    """Ray initialised for ``address`` (see the module docstring); yields the number of
    episodes to keep in flight. A session this started is shut down at the end."""
    import ray

    started = False
    if ray.is_initialized():
        pass
    elif address == "local":
        import os

        cpus = workers or (os.cpu_count() or 1)
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            # Ray renices its workers by +15 (to keep its own daemons responsive): on a
            # machine shared with other work that starves the episodes (measured here: 2
            # episodes took 2.8x the sequential run's time with 1 worker). Episodes run at
            # the priority of the command, as they do without --ray.
            _system_config={"worker_niceness": 0},
        )
        started = True
    else:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailable(f"--ray {address}: no Ray cluster there ({exc})") from None
        started = True
    try:
        total = int(ray.cluster_resources().get("CPU", 1))
        yield workers or max(1, total)
    finally:
        if started:
            ray.shutdown()


def _guarded(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in the worker; an exception becomes a failure record."""
    t0 = time.monotonic()
    try:
        return {"ok": True, "value": fn(*args), "wall_s": time.monotonic() - t0}
    except Exception as exc:  # noqa: BLE001 - one failed episode must not stop the rest
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
            "wall_s": time.monotonic() - t0,
        }


def map_episodes(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    *,
    address: str = "",
    workers: int = 0,
    describe: Callable[[tuple[Any, ...], dict[str, Any]], str] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """``fn(*call)`` for every call, as Ray tasks under ``address`` (sequentially in this
    process when ``address`` is ""), results in the order of ``calls``: each
    ``{"ok": True, "value": ..., "wall_s": s}`` or ``{"ok": False, "error": ...}``.
    ``fn`` must be a module-level function (workers import it by name)."""
    n = len(calls)
    out: list[dict[str, Any] | None] = [None] * n

    def report(i: int, res: dict[str, Any], done: int) -> None:
        if progress:
            what = describe(calls[i], res) if describe else ("ok" if res["ok"] else "ERROR")
            err = "" if res["ok"] else f" {res['error']}"
            print(f"  [{done}/{n}] {what} ({res['wall_s']:.0f} s){err}", file=sys.stderr)

    if not address:
        for i, call in enumerate(calls):
            out[i] = _guarded(fn, *call)
            report(i, out[i], i + 1)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]
    import ray

    with ray_session(address, workers) as inflight:
        remote = ray.remote(num_cpus=1, max_retries=0)(_guarded)
        fn_ref = ray.put(fn)
        pending: dict[Any, tuple[int, float]] = {}
        nxt = done = 0
        while nxt < n or pending:
            while nxt < n and len(pending) < inflight:
                pending[remote.remote(fn_ref, *calls[nxt])] = (nxt, time.monotonic())
                nxt += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, t0 = pending.pop(ready[0])
            try:
                res = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - the worker died: a failed episode
                res = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                    "wall_s": time.monotonic() - t0,
                }
            done += 1
            out[i] = res
            report(i, res, done)
    return out  # type: ignore[return-value]


def _task_episode(task: str, seed: int, use_memory: bool, kwargs: dict[str, Any]) -> dict:
    """One episode: ``evaluate_tasks`` for one task, seed and condition, in a fresh
    pipeline (runs in a Ray worker). Returns its result dict."""
    from engram.planners.evaluation.tasks import evaluate_tasks

    return evaluate_tasks(
        [task], episodes=1, seed=seed, conditions=(use_memory,), progress=False, **kwargs
    )


def _merge_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One condition's row from its per-episode rows: reports in seed order, counts
    and rates (and the Wilson interval when the rows carry one) recomputed."""
    from engram.planners.evaluation import tasks as task_eval

    reports = [r for row in rows for r in row["reports"]]
    ok = sum(1 for r in reports if r["success"])
    out = dict(next((row for row in rows if "success_rate" in row), rows[0]))
    out.update(
        success_rate=ok / max(1, len(reports)),
        successes=ok,
        episodes=len(reports),
        wall_s=round(sum(row.get("wall_s", 0.0) for row in rows), 1),
        reports=reports,
    )
    if "ci95" in out and hasattr(task_eval, "wilson_interval"):
        lo, hi = task_eval.wilson_interval(ok, len(reports))
        out["ci95"] = [round(lo, 4), round(hi, 4)]
    return out


def evaluate_tasks_distributed(
    tasks: list[str],
    *,
    episodes: int,
    seed: int,
    conditions: tuple[bool, ...] = (True, False),
    config: EvalConfig | None = None,
    address: str = "local",
    workers: int = 0,
    progress: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """``evaluate_tasks`` (same arguments; ``kwargs``: executor, mode, checkpoint,
    harness) with every (task, condition, seed) episode a Ray task. The same result
    (a condition's ``wall_s`` is the sum of its episodes' times), plus ``failures``
    (episodes that raised or whose worker died: each counted as not successful) and
    ``wall_s`` (the whole run)."""
    kwargs = dict(kwargs, config=config or EvalConfig())
    calls = [
        (task, seed + i, use_memory, kwargs)
        for task in tasks
        for use_memory in conditions
        for i in range(episodes)
    ]

    def describe(call: tuple[Any, ...], res: dict[str, Any]) -> str:
        task, s, mem = call[:3]
        name = "memory" if mem else "no_memory"
        ok = "ERROR" if not res["ok"] else "success"
        if res["ok"] and not res["value"]["tasks"][task][name]["successes"]:
            ok = "failure"
        return f"{task} seed {s} {name}: {ok}"

    t0 = time.monotonic()
    results = map_episodes(
        _task_episode, calls, address=address, workers=workers, describe=describe,
        progress=progress,
    )  # fmt: skip
    first = next((r["value"] for r in results if r["ok"]), {})
    out: dict[str, Any] = {k: v for k, v in first.items() if k != "tasks"}
    out.update(tasks={}, episodes=episodes, seed=seed, failures=[])
    k = 0
    for task in tasks:
        row: dict[str, Any] = {"chance": float(registry.get("task", task).chance)}
        for use_memory in conditions:
            name = "memory" if use_memory else "no_memory"
            rows = []
            for i in range(episodes):
                res = results[k]
                k += 1
                if res["ok"]:
                    rows.append(res["value"]["tasks"][task][name])
                    continue
                failed = {"seed": seed + i, "success": False, "error": res["error"]}
                rows.append({"reports": [failed], "wall_s": res["wall_s"]})
                out["failures"].append(
                    {"task": task, "seed": seed + i, "memory": use_memory, "error": res["error"]}
                )
            row[name] = _merge_rows(rows)
        out["tasks"][task] = row
    out["wall_s"] = round(time.monotonic() - t0, 1)
    return out


def _qa_episode(stream: str, seed: int, config: Any) -> dict[str, Any]:
    """One memory-QA stream at one seed (runs in a Ray worker): its questions."""
    from engram.planners.evaluation.memory_qa import evaluate_memory_qa

    res = evaluate_memory_qa(
        episodes=1, seed=seed, streams=(stream,), config=config, progress=False
    )
    return {"questions": res["questions"]}


def evaluate_memory_qa_distributed(
    *,
    episodes: int,
    seed: int,
    streams: tuple[str, ...] = ("tour", "put_back", "count"),
    config: Any = None,
    address: str = "local",
    workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """``evaluate_memory_qa`` with every (stream, seed) a Ray task: the questions come
    back in the sequential order and are summarised the same way; ``failures`` lists
    the streams that failed (their questions are missing, as in a sequential run that
    stopped there, but the others still count)."""
    from engram.planners.evaluation.memory_qa import _Asked, summarise

    calls = [(stream, seed + i, config) for stream in streams for i in range(episodes)]

    def describe(call: tuple[Any, ...], res: dict[str, Any]) -> str:
        n = len(res["value"]["questions"]) if res["ok"] else 0
        return f"memory-qa {call[0]} seed {call[1]}: " + (
            f"{n} questions" if res["ok"] else "ERROR"
        )

    results = map_episodes(
        _qa_episode, calls, address=address, workers=workers, describe=describe,
        progress=progress,
    )  # fmt: skip
    asked, failures = [], []
    for call, res in zip(calls, results):
        if not res["ok"]:
            failures.append({"stream": call[0], "seed": call[1], "error": res["error"]})
            continue
        for q in res["value"]["questions"]:
            asked.append(_Asked(q["type"], q["question"], q["truth"], q["answers"], q["scores"]))
    out = summarise(asked)
    out["failures"] = failures
    return out


def run_memory_qa_distributed(
    *, episodes: int, seed: int, json_path: str = "", config: Any = None, address: str,
    workers: int = 0,
) -> int:  # fmt: skip
    """``engram eval memory-qa --ray ...``: ``run_memory_qa`` over Ray tasks."""
    from engram.planners.evaluation.memory_qa import print_qa_result

    print(
        f"engram eval memory-qa: {episodes} episode(s) per stream from seed {seed} "
        f"(Ray: {address})",
        file=sys.stderr,
    )
    try:
        result = evaluate_memory_qa_distributed(
            episodes=episodes, seed=seed, config=config, address=address, workers=workers
        )
    except RayUnavailable as exc:
        print(f"engram eval memory-qa: {exc}", file=sys.stderr)
        return 2
    print_qa_result(result, json_path, config=config, episodes=episodes, seed=seed)
    return 1 if result["failures"] else 0
