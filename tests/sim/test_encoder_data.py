"""Rendered crops for the sim encoder: every class appears, crops show their object, and
``engram train-encoder`` runs end to end (tiny) and writes weights a SimClipEncoder loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mujoco")

from engram.sim.encoder_data import OBJECT_CLASSES, class_prompts, render_crops  # noqa: E402


def test_crops_cover_every_class_and_differ_by_seed():
    a = render_crops(frames=16, seed=1)  # 45% apartment views: its six things too
    b = render_crops(frames=16, seed=2)
    assert a.images.shape[1:] == (64, 64, 3) and a.images.dtype == np.uint8
    assert len(a) == len(a.labels) > 12
    assert a.classes[-1] == "wall or furniture" and len(a.classes) == len(OBJECT_CLASSES) + 1
    assert set(a.labels.tolist()) | set(b.labels.tolist()) == set(range(len(a.classes)))
    assert len(a.captions) == len(a.classes) == len(class_prompts(a.classes))
    assert not np.array_equal(a.images[:5], b.images[:5])


def test_red_cube_crops_are_red_and_blue_bowl_crops_are_blue():
    crops = render_crops(frames=30, seed=3)
    red = crops.images[crops.labels == crops.classes.index("red cube")].reshape(-1, 3)
    blue = crops.images[crops.labels == crops.classes.index("blue bowl")].reshape(-1, 3)
    assert len(red) and len(blue)
    red_px = (red[:, 0] > 120) & (red[:, 1] < 80) & (red[:, 2] < 80)
    blue_px = (blue[:, 2] > 120) & (blue[:, 0] < 100)
    assert red_px.mean() > 0.08 and blue_px.mean() > 0.08


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="frames"):
        render_crops(frames=0, seed=0)
    with pytest.raises(ValueError, match="apartment_share"):
        render_crops(frames=1, seed=0, apartment_share=1.5)


def test_tabletop_only_and_apartment_only_views():
    from engram.sim.object_kinds import APARTMENT_KINDS

    flat = render_crops(frames=6, seed=4, apartment_share=0.0)
    flat_kinds = {flat.classes[i] for i in flat.labels.tolist()}
    assert flat_kinds and not flat_kinds & set(APARTMENT_KINDS)
    home = render_crops(frames=6, seed=4, apartment_share=1.0)
    home_kinds = {home.classes[i] for i in home.labels.tolist()}
    assert home_kinds and home_kinds <= {*APARTMENT_KINDS, "wall or furniture"}
    assert "wall or furniture" in home_kinds  # one background patch per view
    bare = render_crops(frames=6, seed=4, apartment_share=1.0, background=False)
    assert len(bare) and "wall or furniture" not in {bare.classes[i] for i in bare.labels.tolist()}


def test_train_encoder_command_writes_loadable_weights(tmp_path, capsys):
    from engram.perception.encoders import make_encoder
    from engram.runtime.apps.cli import main

    out = tmp_path / "enc"
    rc = main(
        [
            "train-encoder", "--out", str(out), "--train-frames", "10", "--val-frames", "4",
            "--steps", "6", "--val-every", "3", "--batch", "16",
        ]
    )  # fmt: skip
    assert rc == 0
    card = json.loads((out / "engram-sim-vit.json").read_text())
    assert [c["step"] for c in card["curve"]] == [3, 6]
    assert (out / "engram-sim-vit-curve.png").stat().st_size > 1000
    enc = make_encoder("sim_clip", weights_path=str(out / "engram-sim-vit.safetensors"))
    assert enc.encode_texts(["a red cube"]).shape == (1, 384)
    assert main(["train-encoder", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
