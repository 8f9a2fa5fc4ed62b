"""Asking the memory: cold ``engram memory ask`` / ``info`` and warm answers through the node.

Cases (one JSON object in the BENCH.md shape):

- ``ask, cold (new process)``: wall time of ``engram memory ask ROOT QUESTION --json`` on
  a store written by ``engram demo --task cups`` (a fresh process each time: imports,
  opening the store, answering); peer: the same process opening the store the way ``ask``
  did before (every memory, the working memory's torch bank and MiniLM loaded up front,
  then a ranked recall: ``engram memory ask --hits``);
- ``info, cold (new process)``: ``engram memory info ROOT``; peer: opening every memory
  with MiniLM as ``info`` did before (measured in-process after the same imports);
- ``ask, warm through the memory node``: p50 / p95 of a ``MemoryQuery(answer=True)``
  request on ``/memory/query`` to a ``MemoryNode`` serving that store over an in-process
  bus (what the live page's ``/api/ask`` does); peer: the same node answering the ranked
  recall only (``answer=False``), so the ratio is the answerer's overhead.

Each answer is checked: "which cup hid the cube?" must name the cup the demo's ground
truth says, and "where is the red cube?" must abstain.

    python bench/memory_qa.py [--quick] [--store ROOT] [--seed S]

Without ``--store`` it runs ``engram demo --task cups --seed S --out TMP`` first (about a
minute; ``--quick`` uses the demo's small frames).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, percentile, result  # noqa: E402

ENGRAM = str(Path(sys.executable).with_name("engram"))
QUESTIONS = (
    "which cup hid the cube?",
    "where is the red cube?",
    "where is the yellow block?",
    "how many cups did you see?",
    "when did you first see the cube?",
)


def _make_store(seed: int, quick: bool, tmp: Path) -> tuple[Path, str]:
    out = tmp / "demo"
    cmd = [ENGRAM, "demo", "--task", "cups", "--seed", str(seed), "--out", str(out)]
    if quick:
        cmd.append("--quick")
    subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    truth = json.loads(next((out / "ground_truth").glob("*.json")).read_text())["answer"]["cup"]
    return out / "memory", truth


CPU_S: dict[str, list[float]] = {}  # command kind -> CPU seconds (user + sys) per run


def _wall(cmd: list[str], kind: str = "") -> tuple[float, str]:
    """Wall seconds and stdout of ``cmd``; its CPU seconds go to ``CPU_S[kind]`` (on a
    shared machine the wall time carries other work's load, the CPU time does not)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU_S.setdefault(kind, []).append(cpu)
    return wall, done.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    ap.add_argument("--store", default="", help="a memory store (default: run engram demo)")
    ap.add_argument("--truth", default="", help="the cup that hid the cube in --store")
    ap.add_argument("--seed", type=int, default=7, help="engram demo's seed (default 7)")
    args = ap.parse_args(argv)
    reps = 2 if args.quick else 5
    warm_n = 20 if args.quick else 60
    with tempfile.TemporaryDirectory() as tmp:
        if args.store:
            root, truth = Path(args.store), args.truth
        else:
            root, truth = _make_store(args.seed, args.quick, Path(tmp))
        rows = []
        # ---- cold, a new process each time (interleaved with the peer)
        ask_s, old_s, info_s, old_info_s = [], [], [], []
        for _ in range(reps):
            dt, out = _wall([ENGRAM, "memory", "ask", str(root), QUESTIONS[0], "--json"], "ask")
            ask_s.append(dt)
            ans = json.loads(out)
            if truth and ans["value"] != truth:
                raise AssertionError(f"which cup: answered {ans['value']}, truth {truth}")
            dt, out = _wall([ENGRAM, "memory", "ask", str(root), QUESTIONS[1], "--json"], "ask")
            ask_s.append(dt)
            if not json.loads(out)["abstained"]:
                raise AssertionError("'where is the red cube?' did not abstain")
            old = [ENGRAM, "memory", "ask", str(root), QUESTIONS[0], "--hits"]
            old_s.append(_wall(old, "old_ask")[0])
            info_s.append(_wall([ENGRAM, "memory", "info", str(root)], "info")[0])
            old_info = [sys.executable, __file__, "--_old-info", str(root)]
            old_info_s.append(_wall(old_info, "old_info")[0])
        rows.append(
            result(
                "ask, cold (new process), demo store",
                "p50_wall_s",
                percentile(ask_s, 50),
                "lower",
                peer="opening every memory + MiniLM up front, ranked recall (ask --hits)",
                peer_value=percentile(old_s, 50),
                n=len(ask_s),
                max_s=round(max(ask_s), 3),
                cpu_s_p50=round(percentile(CPU_S["ask"], 50), 3),
                peer_cpu_s_p50=round(percentile(CPU_S["old_ask"], 50), 3),
            )
        )
        rows.append(
            result(
                "info, cold (new process), demo store",
                "p50_wall_s",
                percentile(info_s, 50),
                "lower",
                peer="info as before: every memory + MiniLM loaded",
                peer_value=percentile(old_info_s, 50),
                n=len(info_s),
                cpu_s_p50=round(percentile(CPU_S["info"], 50), 3),
                peer_cpu_s_p50=round(percentile(CPU_S["old_info"], 50), 3),
            )
        )
        # ---- warm, through the memory node over the bus
        from engram.memory.node import MemoryNode, MemoryNodeConfig
        from engram.runtime.bus import InProcBus
        from engram.runtime.messages import MemoryQuery

        names = sorted(p.name for p in (root / "memories").iterdir() if p.is_dir())
        names = [n for n in names if n != "working"]
        served = Path(tmp) / "served"  # the node checkpoints on stop: serve a copy
        shutil.copytree(root, served, ignore=shutil.ignore_patterns("LOCK"))
        bus = InProcBus("bench-memory-qa")
        cfg = MemoryNodeConfig(
            heartbeat_hz=0, consolidate_every_s=0, root=str(served), memories=names
        )
        node = MemoryNode(cfg, bus=bus, name="memory")
        answer_ms: list[float] = []
        recall_ms: list[float] = []
        with node:
            for q in QUESTIONS:  # warm-up: encoder caches, first recalls
                bus.request("/memory/query", MemoryQuery(text=q, answer=True), 30.0)
            for i in range(warm_n):
                q = QUESTIONS[i % len(QUESTIONS)]
                for answer, sink in ((True, answer_ms), (False, recall_ms))[:: 1 - 2 * (i % 2)]:
                    t0 = time.perf_counter()
                    reply = bus.request("/memory/query", MemoryQuery(text=q, answer=answer), 30.0)
                    sink.append((time.perf_counter() - t0) * 1e3)
                    if answer and q == QUESTIONS[0] and truth:
                        assert reply.answer["value"] == truth, reply.answer
        bus.close()
        rows.append(
            result(
                "ask, warm through the memory node (/memory/query, answer=True)",
                "p50_latency_ms",
                percentile(answer_ms, 50),
                "lower",
                peer="the same node, ranked recall only (answer=False)",
                peer_value=percentile(recall_ms, 50),
                p95_ms=round(percentile(answer_ms, 95), 2),
                n=len(answer_ms),
            )
        )
    emit("memory_qa", rows)
    return 0


def _old_info(root: str) -> int:
    """``engram memory info`` as it was: every memory (the working memory's torch bank
    too) and MiniLM loaded before anything is printed."""
    from engram.memory.node import make_embedders
    from engram.memory.system import MemorySystem, MemorySystemConfig, default_memories

    path = Path(root)
    present = sorted(p.name for p in (path / "memories").iterdir() if p.is_dir())
    embedders = make_embedders("minilm")
    system = MemorySystem(
        default_memories(embedders, include=present),
        embedders=embedders,
        config=MemorySystemConfig(root=str(path), checkpoint_every=0),
    )
    for m in system.memories:
        print(m.name, len(m))
    system.close(checkpoint=False)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_old-info":
        sys.exit(_old_info(sys.argv[2]))
    sys.exit(main())
