"""Action-expert inference speed: chunks/s with and without the memory bank, DDIM vs DDPM.

    python bench/policy.py [--quick] [--threads N] [--device cpu|cuda|auto] [--checkpoint NAME]

Cases (the default network size of ``ActionExpertConfig``, the shared tabletop state
layout of ``features.py``: S = 45, actions A = 5, chunk H = 8; random weights: speed
does not depend on them):

- the shipped checkpoint (``--checkpoint``, default ``tabletop_progress``: what ``engram eval
  --executor expert`` runs), when present: ``act`` with its memory bank full, peer: the same model with its bank
  emptied before every chunk (the no-memory condition);

- full ``ActionExpertPolicy.act`` path (numpy in, ``ActionChunk`` out) with a full memory bank
  (16 entries, so every call retrieves, writes and consolidates), DDIM 10 steps;
  peer: the same network without the memory bank (``use_memory=False``);
- DDIM (10 steps) against full DDPM sampling (100 steps), memory variant;
- one training step (batch 64, 16 memory slots) per second, no peer;
- the memory variant at ``--threads`` (default 1, what ``ActionExpertPolicy`` sets on a CPU)
  against torch's default thread count, when they differ.

Prints one JSON object (bench/README.md). ``--quick`` runs under a minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, percentile, result  # noqa: E402

from engram.planners.policies.diffusion.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402

STATE_DIM, ACTION_DIM = 45, 5  # features.STATE_DIM, the arm's arm_ee_delta


def _policy(use_memory: bool, device: str):
    import torch

    from engram.planners.policies.diffusion.action_expert import ActionExpert, ActionExpertConfig
    from engram.planners.policies.diffusion.policy import ActionExpertPolicy

    torch.manual_seed(0)
    cfg = ActionExpertConfig(state_dim=STATE_DIM, action_dim=ACTION_DIM, use_memory=use_memory)
    return ActionExpertPolicy(ActionExpert(cfg, device=device), cpu_threads=None)  # --threads rules


def _kw(policy, emb: np.ndarray) -> dict:
    """A goal-frame expert with a pointer acts end to end through its pointer: it needs
    a text embedder for the subgoal it points at and the task's object names."""
    if not policy.config.pointer_slots:
        return {}
    return {"text": lambda _text: emb, "task_name": next(iter(policy.config.object_names), "")}


def _state(rng: np.random.Generator) -> np.ndarray:
    s = rng.standard_normal(STATE_DIM).astype(np.float32)
    s[-1] = 0.0  # no goal: end to end (a goal-frame expert's full path: pointer + chunk)
    return s


def _prepare(policy, *, sampler: str = "ddim"):
    """Reset, fill the bank past capacity (so every act consolidates), warm up."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(384).astype(np.float32)
    policy.sampler = sampler
    policy.reset(seed=0)
    for _ in range(policy.config.memory_capacity + 2):
        policy.observe({"state": rng.standard_normal(STATE_DIM)}, instruction_embedding=emb)
    for _ in range(3):
        policy.act({"state": _state(rng)}, instruction_embedding=emb, **_kw(policy, emb))
    return policy


def _time_acts(policy, n: int) -> list[float]:
    """Seconds per ``act()`` call, n calls."""
    rng = np.random.default_rng(1)
    emb = rng.standard_normal(384).astype(np.float32)
    times = []
    kw = _kw(policy, emb)
    for _ in range(n):
        obs = {"state": _state(rng)}
        t0 = time.perf_counter()
        policy.act(obs, instruction_embedding=emb, **kw)
        times.append(time.perf_counter() - t0)
    return times


def _shipped(device: str, n: int, name: str = DEFAULT_CHECKPOINT) -> list[dict]:
    """A shipped checkpoint (``name``), with and without its memory bank."""
    from engram.planners.policies.diffusion.checkpoint import shipped
    from engram.planners.policies.diffusion.policy import ActionExpertPolicy

    if name not in shipped():
        return []
    with_mem = _prepare(ActionExpertPolicy.load(name, device=device, cpu_threads=None))
    without = _prepare(
        ActionExpertPolicy.load(name, device=device, cpu_threads=None, use_memory=False)
    )
    a, b = [], []
    for _ in range(5):
        a += _time_acts(with_mem, max(1, n // 5))
        b += _time_acts(without, max(1, n // 5))
    return [
        result(
            f"shipped checkpoint {name!r}, act with memory, DDIM {with_mem.config.ddim_steps} "
            f"steps, {device}",
            "chunks_per_s",
            len(a) / sum(a),
            "higher",
            peer="same model, memory bank emptied before every chunk",
            peer_value=len(b) / sum(b),
        )
    ]


def _train_steps_per_s(device: str, n: int) -> float:
    import torch

    from engram.planners.policies.diffusion.action_expert import ActionExpert, ActionExpertConfig

    cfg = ActionExpertConfig(state_dim=STATE_DIM, action_dim=ACTION_DIM)
    ex = ActionExpert(cfg, device=device)
    b, m = 64, cfg.memory_context
    g = torch.Generator().manual_seed(0)
    batch = {
        "state": torch.randn(b, STATE_DIM, generator=g),
        "instruction": torch.randn(b, 384, generator=g),
        "actions": torch.rand(b, cfg.horizon, ACTION_DIM, generator=g) * 2 - 1,
        "step": torch.full((b,), 40, dtype=torch.long),
        "mem_state": torch.randn(b, m, STATE_DIM, generator=g),
        "mem_step": torch.arange(m).repeat(b, 1),
        "mem_mask": torch.ones(b, m, dtype=torch.bool),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    opt = torch.optim.AdamW(ex.module.parameters(), lr=3e-4)

    def _step() -> None:
        loss = ex.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        _step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        _step()
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 1 minute)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 = torch's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help=f"shipped checkpoint to time (default {DEFAULT_CHECKPOINT})",
    )
    args = parser.parse_args(argv)

    import torch

    from engram.planners.policies.diffusion.action_expert import resolve_device

    default_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    n = 40 if args.quick else 300
    n_ddpm = 5 if args.quick else 30
    mem_policy = _prepare(_policy(True, device))
    peer_policy = _prepare(_policy(False, device))
    with_mem, without = [], []
    for _ in range(10):  # interleaved blocks, so load changes hit both alike
        with_mem += _time_acts(mem_policy, n // 10)
        without += _time_acts(peer_policy, n // 10)
    ddpm = _time_acts(_prepare(_policy(True, device), sampler="ddpm"), n_ddpm)
    threads = torch.get_num_threads()
    other = None
    if device == "cpu" and default_threads != threads:
        torch.set_num_threads(default_threads)
        other = _time_acts(mem_policy, n_ddpm)
        torch.set_num_threads(threads)
    rate = len(with_mem) / sum(with_mem)
    rate_peer = len(without) / sum(without)
    rate_ddpm = len(ddpm) / sum(ddpm)
    where = f"{device}, {torch.get_num_threads()} thread(s)"
    results = [
        result(
            f"ActionExpertPolicy.act, default size, DDIM 10 steps, memory bank full (16), {where}",
            "chunks_per_s",
            rate,
            "higher",
            peer="same network without the memory bank (use_memory=False)",
            peer_value=rate_peer,
        ),
        result(
            f"ActionExpertPolicy.act latency with memory, DDIM 10 steps, {where}",
            "p50_latency_ms",
            1000 * percentile(with_mem, 50),
            "lower",
            peer="same network without the memory bank (use_memory=False)",
            peer_value=1000 * percentile(without, 50),
        ),
        result(
            f"DDIM 10 steps vs DDPM 100 steps, with memory, {where}",
            "chunks_per_s",
            rate,
            "higher",
            peer="DDPM ancestral sampling, all 100 steps",
            peer_value=rate_ddpm,
        ),
        result(
            f"training step, batch 64, 16 memory slots, {where}",
            "steps_per_s",
            _train_steps_per_s(device, 10 if args.quick else 50),
            "higher",
        ),
    ]
    if other is not None:
        results.append(
            result(
                f"ActionExpertPolicy.act with memory, {threads} thread(s) (ActionExpertPolicy's default)",
                "chunks_per_s",
                rate,
                "higher",
                peer=f"torch's default {default_threads} threads",
                peer_value=len(other) / sum(other),
            )
        )
    results += _shipped(device, n, args.checkpoint)
    emit("policy", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
