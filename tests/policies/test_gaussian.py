"""GaussianPolicy: log-probs against torch's Normal and the tanh change of variables; what each squash mode returns."""

import math

import pytest
import torch
from torch.distributions import Normal

from policies import GaussianPolicy

torch.set_num_threads(1)

OBS_DIM, ACT_DIM = 4, 3


def policy(**kw) -> GaussianPolicy:
    torch.manual_seed(0)
    p = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16, 16), **kw)
    with torch.no_grad():  # move the mean and std off their initial values so mistakes show
        p.mean.bias.copy_(torch.tensor([0.3, -0.2, 0.5]))
        p.mean.weight.mul_(50)
        if not p.state_dependent_std:
            p.log_std.copy_(torch.tensor([-0.5, 0.1, -1.0]))
    return p


@torch.no_grad()
def test_clip_log_prob_is_the_summed_normal_density_of_the_raw_sample():
    p = policy()
    obs = torch.randn(5, OBS_DIM)
    mean = p.mean(p.trunk(obs))
    std = p.log_std.exp()
    noise = 3 * torch.randn(5, ACT_DIM)
    action = p.act(obs, noise=noise)
    assert action.shape == (5, 1, ACT_DIM)
    assert torch.allclose(action[:, 0], mean + std * noise, atol=1e-6)  # raw: not clipped
    assert (action.abs() > 1).any()
    expected = Normal(mean, std).log_prob(action[:, 0]).sum(-1)
    assert torch.allclose(p.log_prob(obs, action), expected, atol=1e-5)
    assert torch.allclose(p.sample(obs, noise=noise)[1], expected, atol=1e-5)
    assert torch.allclose(p.entropy(obs), Normal(mean, std).entropy().sum(-1), atol=1e-6)


@torch.no_grad()
def test_tanh_log_prob_includes_the_change_of_variables():
    p = policy(squash="tanh")
    obs = torch.randn(5, 1, OBS_DIM)
    mean = p.mean(p.trunk(obs[:, 0]))
    std = p.log_std.exp()
    noise = torch.randn(5, ACT_DIM)
    u = mean + std * noise
    action = p.act(obs, noise=noise)
    assert torch.allclose(action[:, 0], torch.tanh(u), atol=1e-6)
    assert action.abs().max() < 1
    # log π(a) = Σ [log N(u; μ, σ) − log(1 − tanh(u)²)]
    expected = (Normal(mean, std).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)
    assert torch.allclose(p.sample(obs, noise=noise)[1], expected, atol=1e-4)
    assert torch.allclose(p.log_prob(obs, action), expected, atol=1e-3)
    gaussian_only = Normal(mean, std).log_prob(u).sum(-1)
    assert not torch.allclose(p.log_prob(obs, action), gaussian_only, atol=1e-2)


@torch.no_grad()
def test_tanh_sample_log_prob_stays_exact_when_tanh_saturates():
    p = policy(squash="tanh")
    obs = torch.randn(2, OBS_DIM)
    mean = p.mean(p.trunk(obs))
    std = p.log_std.exp()
    noise = torch.full((2, ACT_DIM), 30.0)
    u = mean + std * noise
    action, logp = p.sample(obs, noise=noise)
    assert torch.all(action.abs() <= 1)
    # log(1 − tanh²u) = log 4 − 2|u| − 2·log(1 + e^{−2|u|}) in closed form, finite where tanh(u) rounds to 1
    log_det = math.log(4.0) - 2 * u.abs() - 2 * torch.log1p(torch.exp(-2 * u.abs()))
    expected = (Normal(mean, std).log_prob(u) - log_det).sum(-1)
    assert torch.isfinite(logp).all()
    assert torch.allclose(logp, expected, rtol=1e-5)


@torch.no_grad()
def test_deterministic_act_is_the_mean_squashed_per_mode():
    obs = torch.randn(3, OBS_DIM)
    p = policy()
    mean = p.mean(p.trunk(obs))
    assert torch.equal(p.act(obs, deterministic=True)[:, 0], mean)
    q = policy(squash="tanh")
    assert torch.allclose(q.act(obs, deterministic=True)[:, 0], torch.tanh(q.mean(q.trunk(obs))))


@torch.no_grad()
def test_state_dependent_std_is_bounded():
    p = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16,), state_dependent_std=True, log_std_bounds=(-2.0, 1.0))
    with torch.no_grad():
        p.log_std_head.weight.fill_(10.0)
    obs = torch.randn(8, OBS_DIM) * 5
    std = p.distribution(obs).stddev
    assert std.min() >= math.exp(-2.0) - 1e-6 and std.max() <= math.exp(1.0) + 1e-5
    assert not torch.allclose(std[0], std[1])


def test_bc_loss_objectives():
    p = policy()
    obs, a = torch.randn(4, 1, OBS_DIM), torch.rand(4, 1, ACT_DIM) * 2 - 1
    assert torch.allclose(p.bc_loss(obs, a), -p.log_prob(obs, a))
    mean = p.mean(p.trunk(obs[:, 0]))
    assert torch.allclose(p.bc_loss(obs, a, objective="mse"), ((mean - a[:, 0]) ** 2).sum(-1))
    with pytest.raises(ValueError, match="objective"):
        p.bc_loss(obs, a, objective="l1")


def test_shape_errors_name_the_expected_shape():
    p = policy()
    with pytest.raises(ValueError, match=r"obs has shape \(2, 5\); policy expects \(B, 1, 4\)"):
        p.act(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"action has shape \(2, 2\); policy expects \(B, 3\)"):
        p.log_prob(torch.zeros(2, OBS_DIM), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="squash"):
        GaussianPolicy(OBS_DIM, ACT_DIM, squash="sigmoid")
