"""``engram train``: behaviour cloning of the action expert on demonstrations.

Usage::

    engram train --task T --data DIR [--out CKPT_DIR] [--steps N] [--batch-size B] [--resume]

Python: ``train(task, data_dir, out_dir=..., steps=...) -> Path`` of the checkpoint.

Data loading: ``engram.planners.policies.diffusion.data`` (the formats read); checkpoint files: ``engram.planners.policies.diffusion.checkpoint``.

Checkpoints (``<out>/checkpoint.pt``, written atomically every ``--checkpoint-every``
steps and at the end) hold the model (with its normalisation stats), the exponential
moving average of its weights (``ema``, what ``ActionExpertPolicy.load`` uses), optimiser,
step, config, task, seed and loss history. ``--resume`` continues from the step
stored there. Batches and diffusion noise are drawn from generators seeded by
``(seed, step)``, so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engram.planners.policies.diffusion.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
)
from engram.planners.policies.diffusion.data import (
    DEFAULT_STATE_KEYS,
    Demonstrations,
    TextEmbedder,
    load_episodes,
)

__all__ = [
    "TrainConfig",
    "add_arguments",
    "default_out_dir",
    "run",
    "train",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Optimisation settings of ``train`` (saved in the checkpoint)."""

    steps: int = 3000  # total optimiser steps (a resumed run stops at the same total)
    batch_size: int = 64  # samples per step
    lr: float = 3e-4  # peak AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 10% of lr
    grad_clip: float = 1.0  # max gradient norm (0 = no clipping)
    # decay of the exponential moving average of the weights that policies load
    # (diffusion policies sample better from it); 0 = no EMA
    ema_decay: float = 0.995
    seed: int = 0  # seeds model init, batches and diffusion noise
    checkpoint_every: int = 500  # steps between checkpoints (and at the end)
    # torch intra-op threads while training on the CPU (restored afterwards); 0 = torch's
    # default. These nets are small: on a shared 2-core machine 1 thread was 5x faster
    # than 2 (OpenMP workers spin when the cores are oversubscribed).
    cpu_threads: int = 1
    augment_m: float = 0.005  # noise (m) on seen objects' positions (tabletop layout)
    # share of samples conditioned on the step's subgoal (goal frame: the share that
    # trains the denoiser; the rest train the end-to-end pointer)
    subgoal_fraction: float = 0.7
    # goal frame: a subgoal sample's chunk ends with its segment (last waypoint held)
    # instead of running into the next subgoal's motion (data.Demonstrations)
    segment_chunks: bool = True
    # goal frame: a press's straight descent is labelled with its bottom waypoint,
    # this much (m) deeper (features.press_labels); < 0 = the recorded step labels
    # (the default: round 5's 0.003 fixed shallow presses but did not raise success
    # over tabletop_progress, whose card relies on these defaults)
    press_depth_m: float = -1.0
    press_weight: float = 2.0  # loss weight of the press-descent chunk positions (if on)
    validate_every: int = 0  # steps between closed-loop validations (0 = none)
    validate_episodes: int = 3  # end-to-end episodes per task in each validation
    validate_seed: int = 900_000  # seeds of validation episodes (not in the training data)
    time_budget_s: float = 0.0  # stop (with a checkpoint) after this much wall time; 0 = none


def object_offsets(tasks: Any) -> dict[str, dict[str, list[float]]]:
    """Per simulated task: its objects' centroid offsets (``sim/collect.py``
    ``object_offsets``), which the policy node needs to read percepts the way the
    training state was laid out; {} for tasks the simulator does not know."""
    try:
        from engram.sim.collect import object_offsets as offsets_of
    except ImportError:  # no simulator installed
        return {}
    from engram.runtime import registry

    out = {}
    for task in sorted(set(tasks)):
        if task in registry.known("task"):
            out[task] = offsets_of(task)
    return out


def default_out_dir(task: str) -> Path:
    """``$ENGRAM_CACHE/experts/<task>`` (``~/.cache/engram`` by default)."""
    root = Path(os.environ.get("ENGRAM_CACHE", Path.home() / ".cache" / "engram"))
    return root.expanduser() / "experts" / (task or "default")


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def _to_torch(batch: dict[str, np.ndarray], device: str) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def train(
    task: str,
    data_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    device: str = "auto",
    expert_config: Any = None,
    train_config: TrainConfig | None = None,
    text_embedder: TextEmbedder | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], bool | None] | None = None,
) -> Path:
    """Behaviour-clone an ``ActionExpert`` on the demonstrations of ``task``.

    ``expert_config`` (``ActionExpertConfig``) sets the network; its data-dependent
    sizes (state_dim, action_dim, image_size_px, instruction_dim, action_space, dt_s)
    are taken from the data. ``steps`` / ``batch_size`` override ``train_config``.
    With ``resume`` the run continues from ``<out_dir>/checkpoint.pt`` (its network
    config, seed, batch size and lr; ``steps`` may be raised to train longer).
    ``on_step(step, loss)`` is called after every step (step counts from 1); returning
    True stops the run early, after writing a checkpoint (Ctrl-C does the same).
    Returns the checkpoint path.
    """
    from engram.sim import preload_triton

    # The optimiser imports torch._dynamo, hence triton: load it before any GL context
    # maps Mesa's libLLVM (or disable it when one already has; sim/_gl.py explains).
    preload_triton()
    import torch

    from engram.planners.policies.diffusion.action_expert import resolve_device

    tcfg = train_config or TrainConfig()
    if steps is not None:
        tcfg = replace(tcfg, steps=int(steps))
    if batch_size is not None:
        tcfg = replace(tcfg, batch_size=int(batch_size))
    if tcfg.steps < 1 or tcfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {tcfg.steps}, {tcfg.batch_size}")
    out = Path(out_dir).expanduser() if out_dir is not None else default_out_dir(task)
    device = resolve_device(device)
    run = _Run(task, data_dir, out / CHECKPOINT_NAME, tcfg, device)
    run.setup(expert_config, resume=resume, text_embedder=text_embedder)
    if device != "cpu" or tcfg.cpu_threads <= 0:
        return run.loop(progress=progress, on_step=on_step)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(tcfg.cpu_threads)
    try:
        return run.loop(progress=progress, on_step=on_step)
    finally:
        torch.set_num_threads(previous_threads)


class _Run:
    """One training run: data, model, optimiser, step counter, checkpoints."""

    def __init__(self, task: str, data_dir: Any, ckpt_path: Path, tcfg: TrainConfig, device: str):
        self.task, self.data_dir, self.ckpt_path = task, data_dir, ckpt_path
        self.tcfg, self.device = tcfg, device
        self.start_step = 0
        self.history: list[float] = []

    def setup(self, expert_config: Any, *, resume: bool, text_embedder: Any) -> None:
        import torch

        from engram.planners.policies.diffusion.action_expert import (
            ActionExpert,
            ActionExpertConfig,
        )

        tcfg = self.tcfg
        payload = None
        ecfg = expert_config or ActionExpertConfig()
        if resume and self.ckpt_path.is_file():
            payload = load_checkpoint(self.ckpt_path, device=self.device)
            ecfg = ActionExpertConfig.from_dict(payload["config"])
            saved = payload["train_config"]
            keep = (
                "seed",
                "batch_size",
                "lr",
                "weight_decay",
                "warmup_steps",
                "grad_clip",
                "ema_decay",
            )
            tcfg = replace(tcfg, **{k: saved[k] for k in keep if k in saved})
            self.start_step = int(payload["step"])
            self.history = list(payload.get("loss_history", []))
        elif resume:
            log.warning("--resume: no checkpoint at %s, starting from step 0", self.ckpt_path)
        episodes = load_episodes(
            self.data_dir,
            self.task,
            state_keys=ecfg.state_keys or DEFAULT_STATE_KEYS,
            image_size_px=ecfg.image_size_px,
        )
        first = episodes[0]
        if ecfg.action_mode == "waypoint" and (
            not first.features or (first.action_space or "arm_ee_delta") != "arm_ee_delta"
        ):
            log.warning("waypoint actions need tabletop arm_ee_delta data: learning deltas")
            ecfg = replace(ecfg, action_mode="delta")
        if ecfg.action_mode == "waypoint":
            from engram.planners.policies.diffusion.features import ROBOT_DIM, waypoint_labels

            for ep in episodes:
                ep.actions = waypoint_labels(ep.state[:, :ROBOT_DIM], ep.actions)
        if ecfg.action_mode == "waypoint" and tcfg.press_depth_m >= 0:
            _direct_presses(episodes, tcfg.press_depth_m)
        if ecfg.frame == "goal" and (ecfg.action_mode != "waypoint" or first.goal is None):
            log.warning("the goal frame needs tabletop waypoint data: learning in the world frame")
            ecfg = replace(
                ecfg, frame="", pointer_slots=0, pointer_skills=(), subgoal_progress=False
            )
        if payload is None and ecfg.frame == "goal":
            from engram.planners.policies.diffusion.features import MAX_OBJECTS, SKILLS

            ecfg = replace(ecfg, pointer_slots=MAX_OBJECTS, pointer_skills=SKILLS)
        if payload is None:
            ecfg = replace(
                ecfg,
                state_dim=int(first.state.shape[1]),
                action_dim=int(first.actions.shape[1]),
                state_keys=first.state_keys if not first.features else (),
                action_space=first.action_space or ecfg.action_space,
                dt_s=first.dt_s,
                features=first.features,
                tasks=tuple(sorted({ep.task for ep in episodes if ep.task})),
                object_names={ep.task: list(ep.object_names) for ep in episodes if ep.task},
                object_offsets_m=object_offsets(ep.task for ep in episodes if ep.features),
            )
        self.tcfg = tcfg
        self.data = Demonstrations(
            episodes,
            horizon=ecfg.horizon,
            memory_context=ecfg.memory_context if ecfg.use_memory else 0,
            text_embedder=text_embedder,
            subgoal_fraction=tcfg.subgoal_fraction,
            augment_m=tcfg.augment_m,
            frame=ecfg.frame,
            progress=ecfg.subgoal_progress,
            segment_chunks=tcfg.segment_chunks,
            press_weight=tcfg.press_weight if tcfg.press_depth_m >= 0 else 1.0,
        )
        self.text_embedder = text_embedder
        self.validation: list[dict[str, Any]] = (
            list(payload.get("validation", [])) if payload is not None else []
        )
        if (self.data.state_dim, self.data.action_dim) != (ecfg.state_dim, ecfg.action_dim):
            raise ValueError(
                f"{self.ckpt_path}: checkpoint expects state/action sizes "
                f"{ecfg.state_dim}/{ecfg.action_dim}, the data has "
                f"{self.data.state_dim}/{self.data.action_dim}"
            )
        self.ecfg = ecfg = replace(ecfg, instruction_dim=self.data.instruction_dim)
        torch.manual_seed(tcfg.seed)
        self.expert = ActionExpert(ecfg, device=self.device)
        self.opt = torch.optim.AdamW(
            self.expert.module.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay
        )
        if payload is not None:
            self.expert.load_state_dict(payload["model"])
            self.opt.load_state_dict(payload["optimizer"])
        else:
            self.expert.set_normalization(**self.data.stats())
        # EMA of the parameters (buffers are taken as they are when saving)
        self.ema: dict[str, Any] = {}
        if tcfg.ema_decay > 0:
            saved_ema = payload.get("ema") if payload is not None else None
            for name, param in self.expert.module.named_parameters():
                src = saved_ema[name] if saved_ema is not None else param.detach()
                self.ema[name] = src.detach().clone().to(param.device)
        self.num_episodes = len(episodes)

    def payload(self, step: int) -> dict[str, Any]:
        m = self.expert.module
        return {
            "format": CHECKPOINT_FORMAT,
            "task": self.task,
            "config": self.ecfg.to_dict(),
            "train_config": dict(self.tcfg.__dict__),
            "model": self.expert.state_dict(),
            "ema": {**self.expert.state_dict(), **self.ema} if self.ema else None,
            "optimizer": self.opt.state_dict(),
            "step": step,
            "normalization": {
                k: getattr(m, k).detach().cpu().numpy()
                for k in ("action_min", "action_max", "state_mean", "state_std")
            },
            "loss_history": list(self.history),
            "validation": list(self.validation),
            "data": {
                "dir": str(self.data_dir),
                "episodes": self.num_episodes,
                "samples": self.data.num_samples,
            },
            "saved_unix_s": time.time(),
        }

    def step(self, step: int) -> float:
        """One optimiser step; batch and noise seeded by (seed, step)."""
        import torch

        tcfg, expert = self.tcfg, self.expert
        rng = np.random.default_rng([tcfg.seed, step])
        gen = torch.Generator(device=self.device).manual_seed(tcfg.seed * 1_000_003 + step)
        batch = _to_torch(self.data.batch(rng, tcfg.batch_size), self.device)
        for group in self.opt.param_groups:
            group["lr"] = _lr_at(step, tcfg)
        loss = expert.loss(batch, generator=gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(expert.module.parameters(), tcfg.grad_clip)
        self.opt.step()
        if self.ema:
            decay = min(tcfg.ema_decay, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                for name, param in expert.module.named_parameters():
                    self.ema[name].lerp_(param.detach(), 1.0 - decay)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {step}")
        return value

    def loop(self, *, progress: bool, on_step: Any) -> Path:
        tcfg = self.tcfg
        if self.start_step >= tcfg.steps:
            log.info("checkpoint at step %d already reaches %d steps", self.start_step, tcfg.steps)
            return self.ckpt_path
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=tcfg.steps, initial=self.start_step, desc=f"train {self.task}", unit="step"
            )
        self.expert.train()
        t_start = time.monotonic()
        gpu = f" ({_gpu_name()})" if self.device.startswith("cuda") else ""
        tasks = ", ".join(self.ecfg.tasks) or self.task
        (print if progress else log.info)(
            f"training on {self.device}{gpu}: {self.num_episodes} episodes, "
            f"{self.data.num_samples} samples, tasks {tasks}"
        )
        running, done = None, self.start_step
        try:
            for step in range(self.start_step, tcfg.steps):
                value = self.step(step)
                self.history.append(value)
                done = step + 1
                running = value if running is None else 0.98 * running + 0.02 * value
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{running:.4f}")
                stop = bool(on_step(done, value)) if on_step is not None else False
                if tcfg.time_budget_s and time.monotonic() - t_start > tcfg.time_budget_s:
                    log.warning(
                        "time budget of %.0f s reached at step %d", tcfg.time_budget_s, done
                    )
                    stop = True
                if tcfg.validate_every and done % tcfg.validate_every == 0 and self.ecfg.features:
                    self.validate(done, bar)
                if done % tcfg.checkpoint_every == 0 or done == tcfg.steps or stop:
                    save_checkpoint(self.ckpt_path, self.payload(done))
                    self.plot()
                if stop:
                    break
        except KeyboardInterrupt:
            if done > self.start_step:
                save_checkpoint(self.ckpt_path, self.payload(done))
                log.warning("interrupted at step %d; checkpoint written, --resume continues", done)
            raise
        finally:
            if bar is not None:
                bar.close()
        self.expert.eval()
        return self.ckpt_path

    def ema_policy(self) -> Any:
        """The current EMA weights as an ``ActionExpertPolicy`` (a copy; training goes on)."""
        from engram.planners.policies.diffusion.action_expert import ActionExpert
        from engram.planners.policies.diffusion.policy import ActionExpertPolicy

        expert = ActionExpert(self.ecfg, device=self.device)
        expert.load_state_dict(
            {**self.expert.state_dict(), **self.ema} if self.ema else self.expert.state_dict()
        )
        return ActionExpertPolicy(expert, task=self.task, cpu_threads=None)

    def validate(self, step: int, bar: Any) -> None:
        """Closed-loop: end-to-end episodes per task with the EMA weights (rollout.py)."""
        from engram.planners.policies.diffusion.rollout import TextCache, validate

        t0 = time.monotonic()
        rates = validate(
            self.ema_policy(),
            self.ecfg.tasks,
            episodes=self.tcfg.validate_episodes,
            seed=self.tcfg.validate_seed,
            text=TextCache(self.text_embedder),
        )
        self.validation.append({"step": step, "success_rate": rates})
        msg = ", ".join(f"{k} {v:.2f}" for k, v in rates.items())
        text = f"validation at step {step}: {msg} ({time.monotonic() - t0:.0f} s)"
        if bar is not None:
            bar.write(text)
        log.info(text)

    def plot(self) -> Path | None:
        """``<out>/loss.png``: the loss curve (and validation success), beside the checkpoint."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # matplotlib is optional: no plot
            return None
        loss = np.asarray(self.history, np.float64)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(np.arange(1, len(loss) + 1), loss, lw=0.5, alpha=0.4, label="loss")
        if len(loss) >= 50:
            k = 50
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(k, len(loss) + 1), smooth, lw=1.5, label="loss (mean of 50)")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("diffusion loss")
        if self.validation:
            ax2 = ax.twinx()
            steps = [v["step"] for v in self.validation]
            for task in self.validation[-1]["success_rate"]:
                ax2.plot(
                    steps,
                    [v["success_rate"].get(task, np.nan) for v in self.validation],
                    marker="o",
                    label=f"{task} success",
                )
            ax2.set_ylim(-0.05, 1.05)
            ax2.set_ylabel("validation success (end to end)")
            ax2.legend(loc="upper right", fontsize=7)
        ax.legend(loc="lower left", fontsize=7)
        ax.set_title(f"engram train {self.task}")
        fig.tight_layout()
        path = self.ckpt_path.parent / "loss.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _direct_presses(episodes: list[Any], depth_m: float) -> None:
    """Relabel each tabletop episode's press descents (``features.press_labels``) and
    mark them (``Episode.press``, weighted in the loss)."""
    from engram.planners.policies.diffusion.features import press_labels

    for ep in episodes:
        if ep.segment is None or ep.subgoal_index is None:
            continue
        pressing = np.array([text.startswith("press") for text in ep.subgoals] + [False])
        is_press = pressing[ep.subgoal_index]  # index -1 (no subgoal) -> False
        ep.actions, ep.press = press_labels(ep.state, ep.actions, ep.segment, is_press, depth_m)


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument(
        "--task", required=True, help="task name, several (a,b) or all (every dataset in --data)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="LeRobotDataset v3 folder(s) (from `engram sim collect`; DIR or DIR/<task>)",
    )
    parser.add_argument(
        "--out", default=None, help="checkpoint folder (default: $ENGRAM_CACHE/experts/<task>)"
    )
    parser.add_argument(
        "--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"samples per step (default {d.batch_size})",
    )
    parser.add_argument(
        "--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (default 0)")
    parser.add_argument(
        "--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints"
    )
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    parser.add_argument(
        "--no-memory", action="store_true", help="ablation: train without the memory input"
    )
    parser.add_argument("--horizon", type=int, default=None, help="actions per chunk (default 8)")
    parser.add_argument(
        "--actions",
        choices=("waypoint", "delta"),
        default="waypoint",
        help="learn end-effector waypoints the executor tracks (default; tabletop "
        "arm_ee_delta data, else deltas) or the recorded controller deltas",
    )
    parser.add_argument(
        "--frame",
        choices=("goal", "world"),
        default="goal",
        help="goal (default; tabletop waypoints): subgoal chunks relative to the subgoal's "
        "target, end to end through a pointer at the next subgoal; world: absolute",
    )
    parser.add_argument(
        "--subgoal-progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="goal frame: give the subgoal chunks the running subgoal's progress (rise "
        "above its lowest point, steps since it began; default on)",
    )
    parser.add_argument(
        "--segment-chunks",
        action=argparse.BooleanOptionalAction,
        default=d.segment_chunks,
        help="goal frame: a subgoal's chunk labels end with its segment instead of running "
        "into the next subgoal's motion (default on)",
    )
    parser.add_argument(
        "--press-depth-m",
        type=float,
        default=d.press_depth_m,
        help="goal frame: label a press's straight descent with its bottom waypoint, this "
        "much deeper (e.g. 0.003; default off: < 0 = the recorded step labels)",
    )
    parser.add_argument(
        "--press-weight",
        type=float,
        default=d.press_weight,
        help=f"with --press-depth-m: loss weight of press-descent chunk positions "
        f"(default {d.press_weight})",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=0,
        metavar="PX",
        help="also encode the camera images (obs.rgb; collect with --images), resized to PXxPX",
    )
    parser.add_argument(
        "--threads", type=int, default=d.cpu_threads, help="torch threads on the CPU (0 = torch's)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    parser.add_argument(
        "--validate-every",
        type=int,
        default=d.validate_every,
        help="steps between closed-loop validation rollouts (0 = none)",
    )
    parser.add_argument(
        "--validate-episodes", type=int, default=d.validate_episodes, help="episodes per task"
    )
    parser.add_argument(
        "--augment-m", type=float, default=d.augment_m, help="object position noise (m)"
    )
    parser.add_argument(
        "--subgoal-fraction",
        type=float,
        default=d.subgoal_fraction,
        help=f"share of samples conditioned on a subgoal (default {d.subgoal_fraction})",
    )
    parser.add_argument(
        "--time-budget-min", type=float, default=0.0, help="stop after this many minutes"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from engram.planners.policies.diffusion.action_expert import ActionExpertConfig

    ecfg = ActionExpertConfig(
        use_memory=not args.no_memory,
        image_size_px=max(0, args.images),
        action_mode=getattr(args, "actions", "delta"),
        frame="goal" if getattr(args, "frame", "world") == "goal" else "",
        subgoal_progress=bool(getattr(args, "subgoal_progress", True))
        and getattr(args, "frame", "world") == "goal",
    )
    if args.horizon:
        ecfg = replace(ecfg, horizon=args.horizon)
    tcfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=max(1, args.checkpoint_every),
        cpu_threads=max(0, args.threads),
        validate_every=max(0, args.validate_every),
        validate_episodes=max(1, args.validate_episodes),
        augment_m=max(0.0, args.augment_m),
        subgoal_fraction=min(1.0, max(0.0, args.subgoal_fraction)),
        segment_chunks=bool(getattr(args, "segment_chunks", True)),
        press_depth_m=float(getattr(args, "press_depth_m", TrainConfig.press_depth_m)),
        press_weight=max(0.0, float(getattr(args, "press_weight", TrainConfig.press_weight))),
        time_budget_s=max(0.0, args.time_budget_min * 60.0),
    )
    try:
        path = train(
            args.task,
            args.data,
            out_dir=args.out,
            resume=args.resume,
            device=args.device,
            expert_config=ecfg,
            train_config=tcfg,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"engram train: {exc}")
        return 2
    print(f"checkpoint: {path}")
    return 0
