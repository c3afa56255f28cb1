"""What every policy shares: attributes, act/bc_loss shapes, noise shapes, save/load, and fitting a tiny dataset."""

import json

import pytest
import torch

from policies import (
    CheckpointError,
    DiffusionPolicy,
    GaussianPolicy,
    QNet,
    ValueNet,
    ViabilityEfficiencyCritic,
    load_policy,
    make_policy,
    save_policy,
)

torch.set_num_threads(1)

KINDS = ["gaussian", "diffusion", "flow"]
SMALL = {
    "gaussian": dict(hidden=(32, 32)),
    "diffusion": dict(horizon=3, act_steps=2, obs_steps=2, denoising_steps=8, hidden=(32, 32, 32)),
    "flow": dict(horizon=3, act_steps=2, obs_steps=2, euler_steps=4, hidden=(32, 32)),
}


def build(kind: str, obs_dim: int = 5, act_dim: int = 2, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return make_policy(kind, obs_dim, act_dim, **(SMALL[kind] | kw))


def explicit_noise(p, batch: int) -> torch.Tensor:
    return torch.randn(p.noise_shape(batch), generator=torch.Generator().manual_seed(42))


@pytest.mark.parametrize("kind", KINDS)
def test_uniform_interface(kind):
    p = build(kind)
    assert p.kind == kind and p.obs_dim == 5 and p.act_dim == 2
    assert 1 <= p.act_steps <= p.horizon
    obs = torch.randn(4, p.obs_steps, 5)
    with torch.no_grad():
        a = p.act(obs, noise=explicit_noise(p, 4))
    assert a.shape == (4, p.horizon, 2)
    actions = torch.rand(4, p.horizon, 2) * 1.8 - 0.9
    loss = p.bc_loss(obs, actions)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(q.grad is not None for q in p.parameters() if q.requires_grad)
    with pytest.raises(ValueError, match=rf"obs has shape \(4, 7\); policy expects \(B, {p.obs_steps}, 5\)"):
        p.act(torch.zeros(4, 7))


def test_make_policy_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'transformer' is unknown"):
        make_policy("transformer", 3, 2)


# ---- checkpoints ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_actions(kind, tmp_path):
    p = build(kind, seed=1)
    save_policy(p, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["class"] == type(p).__name__ and config["kwargs"]["obs_dim"] == 5
    torch.manual_seed(999)  # the rebuilt module's random init must be fully overwritten
    q = load_policy(tmp_path / "ckpt")
    assert type(q) is type(p) and q.config == p.config
    obs = torch.randn(3, p.obs_steps, 5)
    noise = explicit_noise(p, 3)
    with torch.no_grad():
        assert torch.equal(p.act(obs, noise=noise), q.act(obs, noise=noise))


@pytest.mark.parametrize("critic", [ValueNet(6, hidden=(16, 16, 16), residual=True), QNet(6, 4, hidden=(16,)),
                                    ViabilityEfficiencyCritic(6, hidden=(16,))], ids=lambda c: type(c).__name__)
def test_critic_round_trip(critic, tmp_path):
    save_policy(critic, tmp_path)
    loaded = load_policy(tmp_path)
    args = (torch.randn(3, 6),) + ((torch.randn(3, 4),) if isinstance(critic, QNet) else ())
    with torch.no_grad():
        out, back = critic(*args), loaded(*args)
    for x, y in zip(out if isinstance(out, tuple) else (out,), back if isinstance(back, tuple) else (back,)):
        assert torch.equal(x, y)


def test_loading_into_a_mismatched_shape_names_the_tensor(tmp_path):
    save_policy(GaussianPolicy(17, 3, hidden=(256, 256)), tmp_path)
    expected = r"trunk\.0\.weight: checkpoint has \(256, 17\), policy expects \(256, 11\)"
    with pytest.raises(CheckpointError, match=expected):
        load_policy(tmp_path, policy=GaussianPolicy(11, 3, hidden=(256, 256)))


def test_loading_reports_missing_and_unexpected_tensors_and_wrong_class(tmp_path):
    save_policy(GaussianPolicy(4, 2, hidden=(8,)), tmp_path / "g")
    expected = r"missing from checkpoint: \['log_std_head\.weight'.*not in GaussianPolicy: \['log_std'\]"
    with pytest.raises(CheckpointError, match=expected):
        load_policy(tmp_path / "g", policy=GaussianPolicy(4, 2, hidden=(8,), state_dependent_std=True))
    with pytest.raises(CheckpointError, match="holds a GaussianPolicy; cannot load it into a DiffusionPolicy"):
        load_policy(tmp_path / "g", policy=DiffusionPolicy(4, 2, hidden=(8, 8, 8)))
    d = DiffusionPolicy(4, 2, horizon=4, hidden=(8, 8, 8))
    save_policy(d, tmp_path / "d")
    expected = r"net\.trunk\.output\.weight: checkpoint has \(8, 8\), policy expects \(6, 8\)"
    with pytest.raises(CheckpointError, match=expected):
        load_policy(tmp_path / "d", policy=DiffusionPolicy(4, 2, horizon=3, act_steps=3, hidden=(8, 8, 8)))


# ---- behaviour cloning smoke test -------------------------------------------------------------------------------
def linear_demos(n: int, horizon: int, obs_steps: int, seed: int = 0):
    """2-D observations → a chunk whose every row is 0.6·W·obs (+ a per-row offset), inside [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, obs_steps, 2, generator=g) * 2 - 1
    w = torch.tensor([[0.8, -0.5], [0.3, 0.9]])
    base = 0.6 * obs[:, -1] @ w.T
    rows = torch.stack([base + 0.05 * h for h in range(horizon)], dim=1)
    return obs, rows.clamp(-1, 1)


def deterministic_act(p, obs):
    if p.kind == "gaussian":
        return p.act(obs, deterministic=True)
    if p.kind == "flow":
        return p.act(obs, zero_noise=True)
    return p.act(obs, noise=torch.zeros(p.noise_shape(obs.shape[0], "deterministic")), deterministic=True)


@pytest.mark.parametrize("kind", KINDS)
def test_bc_fits_a_tiny_linear_dataset(kind):
    cfg = {
        "gaussian": dict(hidden=(64, 64)),
        "diffusion": dict(horizon=2, act_steps=2, denoising_steps=10, hidden=(64, 64, 64)),
        "flow": dict(horizon=2, act_steps=2, euler_steps=5, hidden=(64, 64)),
    }[kind]
    torch.manual_seed(0)
    p = make_policy(kind, 2, 2, **cfg)
    obs, actions = linear_demos(512, p.horizon, p.obs_steps)
    test_obs, test_actions = linear_demos(128, p.horizon, p.obs_steps, seed=1)
    with torch.no_grad():
        err_before = (deterministic_act(p, test_obs) - test_actions).pow(2).mean().item()
    opt = torch.optim.Adam(p.parameters(), lr=2e-3)
    losses = []
    for step in range(300):
        idx = torch.randint(0, 512, (64,), generator=torch.Generator().manual_seed(step))
        loss = p.bc_loss(obs[idx], actions[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    with torch.no_grad():
        err_after = (deterministic_act(p, test_obs) - test_actions).pow(2).mean().item()
    assert last < first - 0.1 * abs(first), (first, last)
    assert err_after < 0.25 * err_before and err_after < 0.02, (err_before, err_after)
