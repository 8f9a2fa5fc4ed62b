"""The simulation-trained image-text encoder (``sim_clip``): shipped weights load by name,
label held-out renders it never saw far above chance, and bad weights are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engram.perception.encoders import EncoderError, make_encoder
from engram.perception.sim_clip import DEFAULT_WEIGHTS, load_card

pytest.importorskip("mujoco")


@pytest.fixture(scope="module")
def held_out():
    """Fresh renders: a seed no shipped training or validation run used."""
    from engram.sim.encoder_data import render_crops

    return render_crops(frames=25, seed=987_654)


def test_shipped_weights_load_by_name_with_their_card(sim_clip):
    assert sim_clip.weights_path == DEFAULT_WEIGHTS
    assert DEFAULT_WEIGHTS.stat().st_size <= 30 * 2**20
    card = load_card(DEFAULT_WEIGHTS)
    assert card["architecture"]["embed_dim"] == sim_clip.dim == 384
    assert card["command"].startswith("engram train-encoder")
    assert card["val_zero_shot_accuracy"] >= 0.9
    # trained on every kind perception is asked to name (the count's tokens and the
    # apartment's things too), each one labelled on held-out renders
    # (and what is no object: walls, furniture, the floor)
    from engram.sim.object_kinds import BACKGROUND, OBJECT_CLASSES

    classes = [*OBJECT_CLASSES, BACKGROUND[0]]
    assert card["data"]["classes"] == classes
    per_class = card["val_accuracy_per_class"]
    assert list(per_class) == classes and min(per_class.values()) >= 0.8, per_class


def test_trained_tower_labels_unseen_renders_and_random_is_near_chance(sim_clip, held_out):
    from engram.sim.train_encoder import zero_shot_accuracy

    acc = zero_shot_accuracy(sim_clip, held_out.images, held_out.labels, held_out.classes)
    rand = make_encoder("sim_clip", device="cpu", random_weights=True)
    acc_random = zero_shot_accuracy(rand, held_out.images, held_out.labels, held_out.classes)
    chance = 1.0 / len(held_out.classes)
    assert acc >= 0.85, acc
    assert acc_random < 0.35, acc_random  # about chance (1/21) - nothing learned
    assert acc > acc_random + 0.5 and acc > 5 * chance


def test_regions_texts_and_images_share_one_384_d_space(sim_clip, held_out):
    img = np.zeros((120, 160, 3), np.uint8)
    img[30:94, 40:104] = held_out.images[0]
    boxes = np.array([[40, 30, 104, 94], [0, 0, 20, 20]], np.float64)
    regions = sim_clip.encode_regions(img, boxes)
    texts = sim_clip.encode_texts(["a red cube", "a blue bowl"])
    whole = sim_clip.encode_images(held_out.images[:3])
    for emb in (regions, texts, whole):
        assert emb.shape[1] == 384 and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


def test_weights_of_another_architecture_are_refused(tmp_path):
    bad = tmp_path / "w.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, bad)
    card = load_card(DEFAULT_WEIGHTS)
    card["architecture"]["width"] = 96  # the file holds width-192 tensors
    bad.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(EncoderError, match="does not match"):
        make_encoder("sim_clip", {"weights_path": str(bad), "device": "cpu"}).load()
    card["architecture"]["mlp_ratio"] = 4  # a field this code does not know
    bad.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(EncoderError, match="does not know"):
        make_encoder("sim_clip", weights_path=str(bad), device="cpu").load()


def test_missing_weights_or_card_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        make_encoder("sim_clip", weights_path=str(tmp_path / "nope.safetensors")).load()
    lonely = tmp_path / "w.safetensors"
    shutil.copy(DEFAULT_WEIGHTS, lonely)
    with pytest.raises(FileNotFoundError, match="card"):
        make_encoder("sim_clip", weights_path=str(lonely)).load()
