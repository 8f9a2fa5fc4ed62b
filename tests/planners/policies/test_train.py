"""``engram train``: demonstrations loader, loss falls, checkpoints, resume, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engram.planners.policies.diffusion.action_expert import ActionExpertConfig  # noqa: E402
from engram.planners.policies.diffusion.checkpoint import load_checkpoint  # noqa: E402
from engram.planners.policies.diffusion.data import load_episodes  # noqa: E402
from engram.planners.policies.diffusion.policy import ActionExpertPolicy  # noqa: E402
from engram.planners.policies.diffusion.train import TrainConfig, train  # noqa: E402
from engram.runtime.apps.cli import main as engram  # noqa: E402

from .._synthetic import (  # noqa: E402
    cue_reach_episode,
    reach_episode,
    tiny_config,
    write_episodes,
)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    return write_episodes(tmp_path_factory.mktemp("demos") / "cue_reach", cue_reach_episode, 16)


def test_loader_reads_episodes_and_names_bad_files(tmp_path: Path, demos: Path):
    eps = load_episodes(demos.parent, "cue_reach")  # DIR/<task> is found too
    assert len(eps) == 16
    assert eps[0].state.shape == (16, 5) and eps[0].actions.shape == (16, 3)
    assert eps[0].instructions == ["reach the goal, remember the cue"]
    assert eps[0].action_space == "test"

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_episodes(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="sim collect"):
        load_episodes(empty, "cups")

    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "e0.npz", obs_state=np.zeros((3, 2), np.float32), instruction="x")
    with pytest.raises(ValueError, match=r"e0\.npz: missing field\(s\) \['actions'\]"):
        load_episodes(bad)
    np.savez(
        bad / "e0.npz",
        obs_state=np.zeros((3, 2), np.float32),
        actions=np.zeros((4, 1), np.float32),
        instruction="x",
    )
    with pytest.raises(ValueError, match="obs_state has 3 steps, actions 4"):
        load_episodes(bad)
    np.savez(
        bad / "e0.npz",
        obs_state=np.zeros((3, 2), np.float32),
        actions=np.zeros((3, 1), np.float32),
        instruction="x",
        success=False,
    )
    with pytest.raises(ValueError, match="failures"):
        load_episodes(bad)
    assert len(load_episodes(bad, successful_only=False)) == 1


def test_batches_hold_chunks_and_only_past_memory(demos: Path):
    from engram.planners.policies.diffusion.data import Demonstrations

    data = Demonstrations(load_episodes(demos), horizon=4, memory_context=8)
    batch = data.batch(np.random.default_rng(0), 64)
    assert batch["state"].shape == (64, 5) and batch["actions"].shape == (64, 4, 3)
    assert batch["mem_state"].shape == (64, 8, 5) and batch["mem_mask"].shape == (64, 8)
    step, mem_step, mask = batch["step"], batch["mem_step"], batch["mem_mask"]
    assert np.all(mask.sum(1) == np.minimum(step, 8))
    assert np.all(np.where(mask, mem_step < step[:, None], True))  # strictly earlier steps
    ordered = np.where(mask[:, 1:], np.diff(mem_step, axis=1) > 0, True)
    assert np.all(ordered)
    # chunk = the next 4 actions of the sample's episode (the last repeated past the end),
    # memory = that episode's states at mem_step
    for i in range(64):
        ep = next(e for e in data.episodes if np.array_equal(e.state[step[i]], batch["state"][i]))
        idx = np.minimum(np.arange(step[i], step[i] + 4), len(ep) - 1)
        np.testing.assert_array_equal(batch["actions"][i], ep.actions[idx])
        k = int(mask[i].sum())
        np.testing.assert_array_equal(batch["mem_state"][i, :k], ep.state[mem_step[i, :k]])


def test_loss_falls_in_a_few_steps(tmp_path: Path, demos: Path):
    losses: list[float] = []
    train(
        "cue_reach",
        demos,
        out_dir=tmp_path,
        steps=60,
        device="cpu",
        expert_config=tiny_config(),
        train_config=TrainConfig(batch_size=32, lr=3e-3, warmup_steps=5),
        progress=False,
        on_step=lambda step, loss: losses.append(loss),
    )
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_resume_matches_uninterrupted_training(tmp_path: Path, demos: Path):
    kw = dict(
        steps=20,
        device="cpu",
        expert_config=tiny_config(),
        train_config=TrainConfig(batch_size=16, lr=2e-3, warmup_steps=5, checkpoint_every=100),
        progress=False,
    )
    full = load_checkpoint(train("cue_reach", demos, out_dir=tmp_path / "full", **kw))
    # "interrupted" after 8 steps (a checkpoint is written), then resumed to 20
    part = train("cue_reach", demos, out_dir=tmp_path / "part", on_step=lambda s, _: s == 8, **kw)
    assert load_checkpoint(part)["step"] == 8
    resumed = load_checkpoint(
        train("cue_reach", demos, out_dir=tmp_path / "part", resume=True, **kw)
    )
    assert resumed["step"] == full["step"] == 20
    np.testing.assert_allclose(resumed["loss_history"], full["loss_history"], rtol=1e-5)
    for name, value in full["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, atol=1e-5, rtol=1e-4)
    # the checkpoint carries what a policy needs, normalisation included
    assert set(full["normalization"]) == {"action_min", "action_max", "state_mean", "state_std"}
    assert full["config"]["state_dim"] == 5 and full["config"]["action_dim"] == 3
    assert "optimizer" in full and full["task"] == "cue_reach"


def test_cli_trains_with_minilm_instructions_and_resumes(tmp_path: Path, capsys):
    """Real path: instruction text embedded by MiniLM, default network size, progress bar."""
    data = write_episodes(tmp_path / "reach", reach_episode, 4)
    for f in data.glob("*.npz"):  # drop the stored embeddings: MiniLM must embed the text
        with np.load(f) as z:
            fields = {k: z[k] for k in z.files if k != "instruction_embedding"}
        np.savez(f, **fields)
    out = tmp_path / "ckpt"
    args = ["train", "--task", "reach", "--data", str(tmp_path), "--out", str(out)]
    assert engram([*args, "--steps", "2", "--batch-size", "4"]) == 0
    captured = capsys.readouterr()
    assert "checkpoint:" in captured.out
    assert "train reach" in captured.err  # the tqdm bar
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 2 and ckpt["config"]["instruction_dim"] == 384
    assert ckpt["config"]["token_dim"] == ActionExpertConfig().token_dim
    assert engram([*args, "--steps", "3", "--resume", "--no-progress"]) == 0
    assert load_checkpoint(out)["step"] == 3
    policy = ActionExpertPolicy.load(out, device="cpu")
    chunk = policy.act({"state": np.zeros(4, np.float32)}, instruction_embedding=np.ones(384))
    assert chunk.actions.shape == (8, 2) and chunk.action_space == "test"

    assert engram(["train", "--task", "reach", "--data", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().out


def test_trains_on_sim_collect_output_and_acts_on_env_observations(tmp_path: Path):
    """The real pipeline: `engram sim collect` demos (a LeRobotDataset v3 with camera
    images) -> train -> act on the environment's own observation dict."""
    from engram.planners.policies.diffusion.features import FEATURES, STATE_DIM
    from engram.sim.collect import collect, load_episode
    from engram.sim.envs import make

    collect("cups", 3, tmp_path / "cups", progress=False, images=True, width_px=64, height_px=48)
    eps = load_episodes(tmp_path, "cups", image_size_px=16)
    ep = eps[0]
    assert ep.features == FEATURES and ep.task == "cups"
    raw = load_episode(tmp_path / "cups", 0)
    np.testing.assert_array_equal(ep.target, raw["observation.phase"] == 1)
    np.testing.assert_array_equal(ep.actions, raw["action"])
    assert ep.state.shape == (len(ep), STATE_DIM)
    assert ep.images.shape == (len(ep), 16, 16, 3) and ep.images.dtype == np.uint8
    assert ep.action_space == "arm_ee_delta" and ep.dt_s == pytest.approx(0.1)
    assert ep.instructions and "cup" in ep.instructions[0]
    assert not ep.target.all() and ep.target.any()  # show phase observed, not cloned

    ckpt = train(
        "cups",
        tmp_path,
        out_dir=tmp_path / "ckpt",
        steps=3,
        device="cpu",
        expert_config=tiny_config(image_size_px=16),
        text_embedder=lambda texts: np.ones((len(texts), 384), np.float32),
        progress=False,
    )
    assert (tmp_path / "ckpt" / "loss.png").stat().st_size > 1000  # the loss curve
    policy = ActionExpertPolicy.load(ckpt, device="cpu")
    assert policy.config.features == FEATURES and policy.config.tasks == ("cups",)
    assert policy.config.object_names["cups"][:3] == ["cup_0", "cup_1", "cup_2"]
    env = make("cups", obs_images=True, width_px=64, height_px=48)
    try:
        obs, _ = env.reset(seed=123)
        emb = np.ones(384, np.float32)
        policy.reset()
        policy.observe(obs, instruction_embedding=emb)  # a show-phase step
        chunk = policy.act(obs, instruction_embedding=emb)
        assert chunk.actions.shape == (4, 5) and chunk.action_space == "arm_ee_delta"
        assert int(policy.expert.module.memory.count[0]) == 2
        obs, *_ = env.step(chunk.actions[0])  # the env accepts the expert's action
        bad = {k: v for k, v in obs.items() if k != "objects"}
        with pytest.raises(ValueError, match="missing \\['objects'\\]"):
            policy.act(bad, instruction_embedding=emb)
    finally:
        env.close()


def test_training_validates_in_closed_loop(tmp_path: Path):
    """Periodic closed-loop validation: end-to-end episodes per task, in the checkpoint."""
    from engram.sim.collect import collect

    collect("count", 2, tmp_path / "count", progress=False)
    ckpt = train(
        "all",
        tmp_path,
        out_dir=tmp_path / "ckpt",
        device="cpu",
        expert_config=tiny_config(),
        train_config=TrainConfig(steps=2, validate_every=2, validate_episodes=1),
        text_embedder=lambda texts: np.ones((len(texts), 384), np.float32),
        progress=False,
    )
    (entry,) = load_checkpoint(ckpt)["validation"]
    assert entry["step"] == 2 and set(entry["success_rate"]) == {"count"}


def test_damaged_or_foreign_checkpoints_are_named(tmp_path: Path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # a zip header, then nothing
    with pytest.raises(ValueError, match=r"cut\.pt: cannot read this action-expert checkpoint"):
        load_checkpoint(cut)
    import torch

    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not an Engram action-expert checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no action-expert checkpoint"):
        load_checkpoint(tmp_path / "empty_dir_or_missing")
