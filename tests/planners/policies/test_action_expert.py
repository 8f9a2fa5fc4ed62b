"""Action expert: diffusion schedule, shapes, sampling, memory ablation, persistence, BC."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engram.planners.policies.diffusion.action_expert import ActionExpert, ActionExpertConfig  # noqa: E402
from engram.planners.policies.diffusion.data import load_episodes  # noqa: E402
from engram.planners.policies.diffusion.noise import (  # noqa: E402
    NoiseSchedule,
    NoiseScheduleConfig,
    cosine_alpha_bar,
)
from engram.planners.policies.diffusion.policy import ActionExpertPolicy  # noqa: E402
from engram.planners.policies.diffusion.train import TrainConfig, train  # noqa: E402
from engram.runtime.messages import ActionChunk  # noqa: E402

from .._synthetic import (  # noqa: E402
    INSTRUCTION_DIM,
    cue_reach_episode,
    tiny_config,
    write_episodes,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Small nets on a shared 2-core machine: one intra-op thread (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- diffusion


def test_cosine_schedule_is_monotone_and_ends_near_pure_noise():
    sched = NoiseSchedule(NoiseScheduleConfig(train_steps=100))
    ab = sched.alpha_bar.numpy()
    assert ab.shape == (100,)
    assert np.all(np.diff(ab) < 0)
    assert ab[0] > 0.99 and ab[-1] < 1e-3
    raw = cosine_alpha_bar(100)
    assert math.isclose(raw[0], 1.0, rel_tol=1e-3) and raw[-1] < 1e-8
    assert sched.ddim_timesteps(10) == [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]
    with pytest.raises(ValueError, match="ddim steps"):
        sched.ddim_timesteps(101)


def test_samplers_recover_a_known_point_with_the_exact_denoiser():
    """With the true epsilon for a point mass at x0, DDIM returns x0 and DDPM gets close."""
    sched = NoiseSchedule(NoiseScheduleConfig(train_steps=100))
    x0 = torch.tensor([[[0.3, -0.7], [0.9, 0.0]]])  # (1, H=2, A=2)

    def oracle(x_t, t):
        ab = sched.alpha_bar[t].float().view(-1, 1, 1)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    ddim = sched.ddim_sample(oracle, x0.shape, num_steps=8, noise=noise)
    torch.testing.assert_close(ddim, x0, atol=1e-4, rtol=0)
    ddpm = sched.ddpm_sample(oracle, x0.shape, noise=noise, generator=torch.Generator())
    torch.testing.assert_close(ddpm, x0, atol=1e-3, rtol=0)
    # add_noise at the last step is almost pure noise
    x_t = sched.add_noise(x0, noise, torch.tensor([99]))
    assert torch.allclose(x_t, noise, atol=0.05)


# ----------------------------------------------------------------------------- model


def _batch(cfg: ActionExpertConfig, b: int = 6, m: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "state": torch.randn(b, cfg.state_dim, generator=g),
        "instruction": torch.randn(b, INSTRUCTION_DIM, generator=g),
        "actions": torch.rand(b, cfg.horizon, cfg.action_dim, generator=g) * 2 - 1,
        "step": torch.full((b,), m, dtype=torch.long),
        "mem_state": torch.randn(b, m, cfg.state_dim, generator=g),
        "mem_step": torch.arange(m).repeat(b, 1),
        "mem_mask": torch.ones(b, m, dtype=torch.bool),
    }
    if cfg.image_size_px:
        px = cfg.image_size_px
        batch["image"] = torch.randint(0, 256, (b, px, px, 3), dtype=torch.uint8, generator=g)
        batch["mem_image"] = torch.randint(
            0, 256, (b, m, px, px, 3), dtype=torch.uint8, generator=g
        )
    return batch


@pytest.mark.parametrize("image_size_px", [0, 16])
def test_shapes_through_the_whole_model(image_size_px):
    cfg = tiny_config(image_size_px=image_size_px)
    ex = ActionExpert(cfg, device="cpu")
    batch = _batch(cfg)
    p, c = ex.encode(batch["state"], batch.get("image"), batch["instruction"])
    np_tokens = 1 + (4 if image_size_px else 0)
    assert p.shape == (6, np_tokens, 32) and c.shape == (6, 1, 32)
    cond = ex.module.condition(p, c)
    assert cond.shape == (6, np_tokens + 1, 32)
    eps = ex.module.denoise(torch.randn(6, 4, 3), torch.randint(0, 50, (6,)), cond)
    assert eps.shape == (6, 4, 3)
    loss = ex.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    # the memory path is trained end to end
    assert ex.module.memory.p_gate.weight.grad.abs().sum() > 0
    assert ex.sample(cond).shape == (6, 4, 3)


def test_bad_inputs_name_the_field():
    ex = ActionExpert(tiny_config(), device="cpu")
    with pytest.raises(ValueError, match="state must be"):
        ex.encode(torch.zeros(2, 4), None, torch.zeros(2, INSTRUCTION_DIM))
    with pytest.raises(ValueError, match="instruction embedding"):
        ex.encode(torch.zeros(2, 5), None, torch.zeros(2, 10))
    with pytest.raises(ValueError, match="token_dim"):
        tiny_config(token_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="sampler"):
        ex.sample(torch.zeros(1, 2, 32), sampler="euler")


def test_ddim_sampling_is_deterministic_given_the_seed():
    cfg = tiny_config()
    ex = ActionExpert(cfg, device="cpu").eval()
    cond = ex.module.condition(*ex.encode(torch.randn(2, 5), None, torch.randn(2, INSTRUCTION_DIM)))
    with torch.inference_mode():
        a = ex.sample(cond, generator=torch.Generator().manual_seed(3))
        b = ex.sample(cond, generator=torch.Generator().manual_seed(3))
        c = ex.sample(cond, generator=torch.Generator().manual_seed(4))
        full = ex.sample(cond, sampler="ddpm", generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 4, 3) and full.shape == (2, 4, 3)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # outputs are in raw action units, inside the normalisation range
    assert a.abs().max() <= 1.0 + 1e-6


def _policy(cfg: ActionExpertConfig, seed: int = 0) -> ActionExpertPolicy:
    torch.manual_seed(seed)
    ex = ActionExpert(cfg, device="cpu")
    # Give the bank's retrieval and gates weight, so memory visibly matters when present.
    if cfg.use_memory:
        with torch.no_grad():
            ex.module.memory.p_gate.bias.fill_(2.0)
            ex.module.memory.c_gate.bias.fill_(2.0)
    return ActionExpertPolicy(ex)


def _run(policy: ActionExpertPolicy, states: np.ndarray, emb: np.ndarray, *, observe=True):
    """A history of steps (observed, or acted on), then one chunk for the last step."""
    policy.reset(seed=1)
    for t, s in enumerate(states[:-1]):
        step = policy.observe if observe else policy.act
        step({"state": s, "step": t}, instruction_embedding=emb)
    return policy.act({"state": states[-1]}, instruction_embedding=emb).actions


def test_memory_switch_removes_the_memory_path():
    """Same last observation, different earlier history: only the memory variant differs."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(INSTRUCTION_DIM).astype(np.float32)
    last = rng.standard_normal(5).astype(np.float32)
    hist_a = np.vstack([rng.standard_normal((3, 5)), last]).astype(np.float32)
    hist_b = np.vstack([rng.standard_normal((3, 5)) * 3, last]).astype(np.float32)

    without = _policy(tiny_config(use_memory=False))
    assert not hasattr(without.expert.module, "memory")
    assert not any("memory" in k for k in without.expert.state_dict())
    np.testing.assert_array_equal(_run(without, hist_a, emb), _run(without, hist_b, emb))

    with_mem = _policy(tiny_config(use_memory=True))
    a, b = _run(with_mem, hist_a, emb), _run(with_mem, hist_b, emb)
    assert np.abs(a - b).max() > 1e-4
    # the episode wrote its 4 steps into the bank; reset empties it
    assert int(with_mem.expert.module.memory.count[0]) == 4
    with_mem.reset()
    assert int(with_mem.expert.module.memory.count[0]) == 0

    # act() writes the same memory entries as observe(), and both count steps
    bank = with_mem.expert.module.memory
    _run(with_mem, hist_a, emb, observe=True)
    observed = bank.bank_p.clone()
    _run(with_mem, hist_a, emb, observe=False)
    torch.testing.assert_close(bank.bank_p, observed)
    assert with_mem._next_step == 4


def test_external_bank_is_read_and_written():
    from engram.memory.working import PerceptualCognitiveBank

    pol = _policy(tiny_config())
    bank = PerceptualCognitiveBank(pol.expert.module.memory.config)
    emb = np.ones(INSTRUCTION_DIM, np.float32) / math.sqrt(INSTRUCTION_DIM)
    pol.reset()
    for t in range(3):
        pol.act(
            {"state": np.full(5, t, np.float32), "step": t}, instruction_embedding=emb, memory=bank
        )
    assert int(bank.count[0]) == 3
    assert int(pol.expert.module.memory.count[0]) == 0  # its own bank untouched
    bad = PerceptualCognitiveBank(type(bank.config)(dim=32, perceptual_tokens=3, heads=2))
    with pytest.raises(ValueError, match="PerceptualCognitiveBank"):
        pol.act({"state": np.zeros(5, np.float32)}, instruction_embedding=emb, memory=bad)


def test_act_returns_an_action_chunk_and_rejects_bad_observations():
    pol = _policy(tiny_config())
    emb = np.zeros(INSTRUCTION_DIM, np.float32)
    chunk = pol.act({"state": np.zeros(5), "stamp_ns": 123}, instruction_embedding=emb)
    assert isinstance(chunk, ActionChunk)
    assert chunk.actions.shape == (4, 3) and chunk.actions.dtype == np.float32
    assert chunk.stamp_ns == 123
    with pytest.raises(ValueError, match="state must have 5"):
        pol.act({"state": np.zeros(4)}, instruction_embedding=emb)
    with pytest.raises(ValueError, match="'state'"):
        pol.act({"image": np.zeros(4)}, instruction_embedding=emb)
    with pytest.raises(ValueError, match="instruction_embedding"):
        pol.act({"state": np.zeros(5)})


def test_checkpoint_save_load_gives_identical_outputs(tmp_path: Path):
    cfg = tiny_config(image_size_px=16)
    pol = _policy(cfg, seed=5)
    pol.expert.set_normalization(
        action_min=[-2, 0, 0],
        action_max=[2, 1, 3],
        state_mean=np.ones(5),
        state_std=np.full(5, 2.0),
    )
    path = pol.save(tmp_path / "ckpt")
    assert path.name == "checkpoint.pt"
    loaded = ActionExpertPolicy.load(tmp_path / "ckpt", device="cpu")
    assert loaded.config == cfg
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(INSTRUCTION_DIM).astype(np.float32)
    for p in (pol, loaded):
        p.reset(seed=7)
    for t in range(3):
        obs = {
            "state": rng.standard_normal(5).astype(np.float32),
            "image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
            "step": t,
        }
        a = pol.act(obs, instruction_embedding=emb).actions
        b = loaded.act(obs, instruction_embedding=emb).actions
        np.testing.assert_array_equal(a, b)
    assert np.all(a >= np.array([-2, 0, 0]) - 1e-6) and np.all(a <= np.array([2, 1, 3]) + 1e-6)
    with pytest.raises(FileNotFoundError):
        ActionExpertPolicy.load(tmp_path / "missing")


# ----------------------------------------------------------------------------- behaviour cloning


def _evaluate(policy: ActionExpertPolicy, episodes, *, skip: int) -> np.ndarray:
    """Mean |first predicted action - demonstrated action| per dim over steps >= skip."""
    errs = []
    for ep in episodes:
        policy.reset(seed=0)
        for t in range(len(ep)):
            chunk = policy.act(
                {"state": ep.state[t], "step": t},
                instruction_embedding=ep.instruction_embeddings[ep.instruction_index[t]],
            )
            if t >= skip:
                errs.append(np.abs(chunk.actions[0] - ep.actions[t]))
    return np.mean(errs, axis=0)


@pytest.fixture(scope="module")
def cue_reach(tmp_path_factory):
    root = tmp_path_factory.mktemp("cue_reach")
    train_dir = write_episodes(root / "train", cue_reach_episode, 64, seed=0)
    test_eps = load_episodes(write_episodes(root / "test", cue_reach_episode, 8, seed=99))
    actions = np.concatenate([ep.actions for ep in load_episodes(train_dir)])
    # no-learning baseline: always the mean training action
    baseline = np.mean(
        [np.abs(actions.mean(0) - ep.actions[t]) for ep in test_eps for t in range(4, len(ep))],
        axis=0,
    )
    return root, train_dir, test_eps, baseline


def _fit(root: Path, train_dir: Path, *, use_memory: bool, steps: int) -> ActionExpertPolicy:
    ckpt = train(
        "cue_reach",
        train_dir,
        out_dir=root / f"ckpt_{use_memory}",
        steps=steps,
        device="cpu",
        expert_config=tiny_config(use_memory=use_memory),
        train_config=TrainConfig(batch_size=32, lr=3e-3, warmup_steps=20),
        progress=False,
    )
    return ActionExpertPolicy.load(ckpt, device="cpu")


def test_bc_memory_variant_learns_state_function_and_remembered_cue(cue_reach):
    """a[:2] depends on the current state, a[2] on a cue shown only in the first 4 steps."""
    root, train_dir, test_eps, baseline = cue_reach
    err = _evaluate(_fit(root, train_dir, use_memory=True, steps=200), test_eps, skip=4)
    assert err[:2].mean() < 0.6 * baseline[:2].mean(), (err, baseline)
    assert err[2] < 0.4 * baseline[2], (err, baseline)


def test_bc_without_memory_cannot_recall_the_cue(cue_reach):
    root, train_dir, test_eps, baseline = cue_reach
    err = _evaluate(_fit(root, train_dir, use_memory=False, steps=200), test_eps, skip=4)
    assert err[:2].mean() < 0.75 * baseline[:2].mean(), (err, baseline)
    assert err[2] > 0.7 * baseline[2], (err, baseline)
