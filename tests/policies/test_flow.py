"""FlowPolicy: Euler sampling by hand, zero-sampling, the CFM loss in both modes and N_mc shapes, learning."""

import pytest
import torch

from policies import FlowPolicy

torch.set_num_threads(1)

OBS_DIM, ACT_DIM, H = 3, 2, 4


def small_policy(**kw) -> FlowPolicy:
    torch.manual_seed(0)
    return FlowPolicy(OBS_DIM, ACT_DIM, **(dict(horizon=H, act_steps=2, hidden=(32, 32)) | kw))


def v_by_hand(p: FlowPolicy, x, tau: float, obs):
    return p.net(x, torch.full((x.shape[0],), tau), obs.reshape(obs.shape[0], -1))


@torch.no_grad()
def test_zero_noise_sampling_is_deterministic():
    p = small_policy()
    obs = torch.randn(3, 1, OBS_DIM)
    torch.manual_seed(1)
    a1 = p.act(obs, zero_noise=True)
    torch.manual_seed(2)
    a2 = p.act(obs, zero_noise=True)
    assert torch.equal(a1, a2)
    assert torch.equal(a1, p.act(obs, noise=torch.zeros(p.noise_shape(3))))
    assert not torch.allclose(p.act(obs), p.act(obs))  # random ε otherwise


@torch.no_grad()
def test_one_euler_step_is_noise_minus_velocity_then_clipped():
    p = small_policy()
    obs = torch.randn(4, 1, OBS_DIM)
    eps = 3 * torch.randn(4, H, ACT_DIM)  # large enough that some entries leave [-1, 1]
    pre = eps - v_by_hand(p, eps, 1.0, obs)
    action, presquash = p.sample(obs, noise=eps, steps=1, return_presquash=True)
    assert torch.allclose(presquash, pre, atol=1e-6)
    assert (pre.abs() > 1).any()
    assert torch.allclose(action, pre.clamp(-1, 1), atol=1e-6)
    assert torch.equal(p.act(obs, noise=eps, steps=1), action)


@torch.no_grad()
def test_two_euler_steps_use_the_tau_grid_1_then_half():
    p = small_policy()
    obs, eps = torch.randn(2, 1, OBS_DIM), torch.randn(2, H, ACT_DIM)
    x = eps - 0.5 * v_by_hand(p, eps, 1.0, obs)
    x = x - 0.5 * v_by_hand(p, x, 0.5, obs)
    _, pre = p.sample(obs, noise=eps, steps=2, return_presquash=True)
    assert torch.allclose(pre, x, atol=1e-6)


@torch.no_grad()
def test_any_number_of_steps_at_inference():
    p = small_policy(euler_steps=10)
    obs = torch.randn(2, 1, OBS_DIM)
    for k in (1, 3, 64):
        a = p.act(obs, steps=k, zero_noise=True)
        assert a.shape == (2, H, ACT_DIM) and torch.isfinite(a).all() and a.abs().max() <= 1
    with pytest.raises(ValueError, match="steps=0"):
        p.act(obs, steps=0)


@torch.no_grad()
def test_cfm_loss_velocity_and_epsilon_modes_by_hand():
    p = small_policy()
    obs, a = torch.randn(3, 1, OBS_DIM), torch.rand(3, H, ACT_DIM) * 2 - 1
    tau, eps = torch.rand(3), torch.randn(3, H, ACT_DIM)
    tt = tau.reshape(3, 1, 1)
    x_tau = tt * eps + (1 - tt) * a
    v = p.net(x_tau, tau, obs.reshape(3, -1))
    velocity = ((v - (eps - a)) ** 2).sum(dim=(-1, -2))
    assert torch.allclose(p.cfm_loss(obs, a, tau, eps, mode="velocity"), velocity, atol=1e-5)
    epsilon = ((x_tau + (1 - tt) * v - eps) ** 2).sum(dim=(-1, -2))
    got = p.cfm_loss(obs, a, tau, eps, mode="epsilon")
    assert torch.allclose(got, epsilon, atol=1e-5)
    assert torch.allclose(got, (1 - tau) ** 2 * velocity, atol=1e-5)  # ε̂ − ε = (1 − τ)(v − (ε − a))
    assert torch.allclose(p.cfm_loss(obs, a, tau, eps), velocity, atol=1e-5)  # default mode is "velocity"


@torch.no_grad()
def test_cfm_loss_with_n_mc_pairs_matches_one_pair_at_a_time():
    p = small_policy()
    b, n = 3, 5
    obs, a = torch.randn(b, 1, OBS_DIM), torch.rand(b, H, ACT_DIM) * 2 - 1
    tau, eps = torch.rand(b, n), torch.randn(b, n, H, ACT_DIM)
    for mode in ("velocity", "epsilon"):
        loss = p.cfm_loss(obs, a, tau, eps, mode=mode)
        assert loss.shape == (b, n)
        for i in range(n):
            assert torch.allclose(loss[:, i], p.cfm_loss(obs, a, tau[:, i], eps[:, i], mode=mode), atol=1e-5)
    with pytest.raises(ValueError, match=r"eps has shape \(3, 5, 4\); expected \(3, 5, 4, 2\)"):
        p.cfm_loss(obs, a, tau, eps[..., 0])


def test_training_reduces_the_cfm_loss_on_fixed_pairs():
    p = small_policy()
    torch.manual_seed(3)
    obs = torch.randn(64, 1, OBS_DIM)
    a = torch.tanh(obs[:, :, :ACT_DIM].expand(64, H, ACT_DIM))
    tau, eps = torch.rand(64, 4), torch.randn(64, 4, H, ACT_DIM)  # stored (τ, ε) pairs, as FPO keeps them
    before = p.cfm_loss(obs, a, tau, eps).mean().item()
    opt = torch.optim.Adam(p.parameters(), lr=3e-3)
    for _ in range(60):
        loss = p.bc_loss(obs, a).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = p.cfm_loss(obs, a, tau, eps).mean().item()
    assert after < 0.6 * before, (before, after)
