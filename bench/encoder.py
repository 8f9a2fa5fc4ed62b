"""The simulation-trained image-text encoder (``sim_clip``) against the same tower with
random weights, on held-out MuJoCo renders (seeds no training run used).

Cases:
- **zero-shot accuracy**: each object crop is labelled with the nearest class prompt
  ("a photo of a red cube"); peer: the untrained tower (about chance: 1 / 21, the 20 kinds
  and "wall or furniture").
- **recall@5**: the crop's class is among the 5 nearest prompts; same peer.
- **text -> image precision@5**: a paraphrase that is never a prompt ("a small red box")
  retrieves the 5 nearest crops; share of them that show that kind of object.
- **crops/s**: region embeddings per second on this CPU; peer: the open_clip
  ``engram-vit-small`` tower the simulation used before (random weights, 128 px).

Usage: ``python bench/encoder.py [--quick]``; prints one JSON object (bench/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, result  # noqa: E402

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _scores(enc, crops) -> dict[str, float]:
    from engram.sim.encoder_data import class_prompts

    img = enc.encode_images(crops.images)
    prompts = enc.encode_texts(class_prompts(crops.classes))
    rank = np.argsort(-(img @ prompts.T), axis=1)
    top1 = float(np.mean(rank[:, 0] == crops.labels))
    top5 = float(np.mean((rank[:, :5] == crops.labels[:, None]).any(axis=1)))
    paraphrases = [descs[1] for descs in crops.captions]
    queries = enc.encode_texts(paraphrases)
    nearest = np.argsort(-(queries @ img.T), axis=1)[:, :5]
    precision = float(np.mean(crops.labels[nearest] == np.arange(len(paraphrases))[:, None]))
    return {"top1": top1, "top5": top5, "p5": precision}


def _crops_per_s(enc, crops, repeats: int) -> float:
    frame = np.zeros((480, 640, 3), np.uint8)
    boxes = []
    for i in range(min(len(crops), 32)):
        r, c = divmod(i, 8)
        frame[r * 64 : r * 64 + 64, c * 64 : c * 64 + 64] = crops.images[i]
        boxes.append([c * 64, r * 64, c * 64 + 64, r * 64 + 64])
    boxes = np.asarray(boxes, np.float64)
    enc.encode_regions(frame, boxes)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        enc.encode_regions(frame, boxes)
    return len(boxes) * repeats / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer held-out renders (< 1 min)")
    args = ap.parse_args()
    from engram.perception.encoders import make_encoder
    from engram.sim.encoder_data import render_crops

    crops = render_crops(frames=40 if args.quick else 200, seed=424_242)
    trained = make_encoder("sim_clip", device="cpu")
    random = make_encoder("sim_clip", device="cpu", random_weights=True)
    old = make_encoder("clip", model_name="engram-vit-small", device="cpu")
    s_tr, s_rd = _scores(trained, crops), _scores(random, crops)
    n = f"{len(crops)} held-out crops, {len(crops.classes)} classes"
    repeats = 3 if args.quick else 10
    results = [
        result(f"zero-shot label, {n}", "accuracy", s_tr["top1"], "higher",
               peer="same tower, random weights", peer_value=s_rd["top1"]),
        result(f"zero-shot label, {n}", "recall_at_5", s_tr["top5"], "higher",
               peer="same tower, random weights", peer_value=s_rd["top5"]),
        result(f"text -> image, paraphrased queries, {n}", "precision_at_5", s_tr["p5"],
               "higher", peer="same tower, random weights", peer_value=s_rd["p5"]),
        result("32 regions of a 640x480 frame, CPU", "crops_per_s",
               _crops_per_s(trained, crops, repeats), "higher",
               peer="open_clip engram-vit-small (before)",
               peer_value=_crops_per_s(old, crops, repeats)),
    ]  # fmt: skip
    emit("encoder", results, chance=round(1 / len(crops.classes), 4))


if __name__ == "__main__":
    main()
