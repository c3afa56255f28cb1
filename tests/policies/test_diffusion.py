"""DiffusionPolicy: the cosine schedule, one denoising step's density, the chain's noise layout, DDIM determinism."""

import copy
import math

import pytest
import torch
from torch.distributions import Normal

from policies import DiffusionPolicy, cosine_beta_schedule

torch.set_num_threads(1)

OBS_DIM, ACT_DIM, H, T = 3, 2, 4, 6


def small_policy(**kw) -> DiffusionPolicy:
    torch.manual_seed(0)
    kw = dict(horizon=H, act_steps=3, denoising_steps=T, hidden=(32, 32, 32)) | kw
    return DiffusionPolicy(OBS_DIM, ACT_DIM, **kw)


def hand_alphas_cumprod(steps: int, s: float = 0.008) -> list[float]:
    """ᾱ_t for t = 1..T from the closed form, with the β ≤ 0.999 clip applied as a product of (1 − β)."""
    f = [math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2 for t in range(steps + 1)]
    out, prod = [], 1.0
    for t in range(1, steps + 1):
        prod *= 1 - min(1 - f[t] / f[t - 1], 0.999)
        out.append(prod)
    return out


# ---- schedule --------------------------------------------------------------------------------------------------
def test_cosine_schedule_matches_hand_computed_values():
    # T = 3, s = 0.008: f(t) = cos²((t/3 + s)/(1 + s)·π/2); ᾱ1 = 0.742884, ᾱ2 = 0.246448, ᾱ3 ≈ 0 → β3 = 1, clipped.
    betas = cosine_beta_schedule(3)
    assert betas.tolist() == pytest.approx([0.2571164, 0.6682547, 0.999], abs=1e-6)


def test_alphas_cumprod_monotone_and_in_unit_interval():
    p = DiffusionPolicy(OBS_DIM, ACT_DIM, denoising_steps=20, hidden=(16, 16, 16))
    ac = p.alphas_cumprod
    assert torch.all(ac[1:] < ac[:-1])
    assert 0 < ac[-1] < 1e-3 and ac[0] < 1
    assert p.betas.max() <= 0.999 + 1e-7
    assert ac.tolist() == pytest.approx(hand_alphas_cumprod(20), rel=1e-5, abs=1e-9)


def test_chain_timesteps_ddpm_and_ddim():
    p = small_policy()
    assert p.chain_timesteps("ddpm").tolist() == [5, 4, 3, 2, 1, 0]
    assert p.chain_timesteps("ddim", 3).tolist() == [4, 2, 0]  # ⌊6/3⌋ = 2
    with pytest.raises(ValueError, match="ddim_steps"):
        p.chain_timesteps("ddim", 7)
    with pytest.raises(ValueError, match="sampler='ddpm'"):
        p.chain_timesteps("ddpm", 3)
    assert p.num_steps() == T and p.num_steps(ddim_steps=2) == 2  # ddim_steps alone selects DDIM
    assert p.noise_shape(1, ddim_steps=2) == (1, H, ACT_DIM)  # … with the policy's η = 0: deterministic
    assert p.act(torch.zeros(1, 1, OBS_DIM), noise=torch.zeros(1, H, ACT_DIM), ddim_steps=2).shape == (1, H, ACT_DIM)
    q = small_policy(sampler="ddim", ddim_steps=3)
    assert q.num_steps() == 3 and q.num_steps("ddim") == 3 and q.num_steps("ddpm") == T


# ---- one step's distribution and density -------------------------------------------------------------------------
def hand_ddpm_step(p: DiffusionPolicy, x, t: int, obs):
    """Posterior q(x_{t-1} | x_t, x̂0) of Ho et al. eq. 6–7, computed from the closed-form schedule."""
    ac = [1.0] + hand_alphas_cumprod(T)  # ac[t + 1] = ᾱ at diffusion index t (0-based); ac[0] = ᾱ_prev of t = 0
    a_bar, a_bar_prev = ac[t + 1], ac[t]
    beta = 1 - a_bar / a_bar_prev
    eps = p.net(x, torch.full((x.shape[0],), t), obs.reshape(obs.shape[0], -1))
    x0 = ((x - math.sqrt(1 - a_bar) * eps) / math.sqrt(a_bar)).clamp(-1, 1)
    mean = beta * math.sqrt(a_bar_prev) / (1 - a_bar) * x0 + (1 - a_bar_prev) * math.sqrt(1 - beta) / (1 - a_bar) * x
    var = beta * (1 - a_bar_prev) / (1 - a_bar)
    return mean, math.sqrt(var)


@torch.no_grad()
def test_ddpm_step_log_prob_equals_hand_computed_gaussian_density():
    p = small_policy()
    torch.manual_seed(1)
    obs, x_k, x_prev = torch.randn(5, 1, OBS_DIM), torch.randn(5, H, ACT_DIM), torch.randn(5, H, ACT_DIM)
    i = 2  # chain position 2 of DDPM runs at diffusion step t = T − 1 − 2 = 3
    mean, std = hand_ddpm_step(p, x_k, 3, obs)

    got_mean, got_std = p.step_distribution(x_k, i, obs)
    assert torch.allclose(got_mean, mean, atol=1e-5)
    assert torch.allclose(got_std, torch.full_like(got_std, std), atol=1e-6)

    exact = Normal(mean, std).log_prob(x_prev).sum(dim=(-1, -2))
    assert torch.allclose(p.log_prob(obs, x_k, x_prev, i), exact, atol=1e-4)

    # DPPO's form: std floored at 0.1, each element clamped to [−5, 2], mean over the executed rows only.
    x_far = x_prev * 4  # some elements fall below −5 so the clamp matters
    elem = Normal(mean, max(std, 0.1)).log_prob(x_far)
    assert (elem < -5).any()
    dppo = elem.clamp(-5, 2)[:, :3].mean(dim=(-1, -2))
    got = p.log_prob(obs, x_k, x_far, i, min_std=0.1, clamp=(-5, 2), steps=3, reduce="mean")
    assert torch.allclose(got, dppo, atol=1e-5)


@torch.no_grad()
def test_per_sample_step_indices_match_scalar_indices():
    p = small_policy()
    obs, x_k, x_prev = torch.randn(4, 1, OBS_DIM), torch.randn(4, H, ACT_DIM), torch.randn(4, H, ACT_DIM)
    idx = torch.tensor([0, 3, 1, 5])
    batched = p.log_prob(obs, x_k, x_prev, idx, min_std=0.1)
    one_by_one = torch.stack([p.log_prob(obs[j:j + 1], x_k[j:j + 1], x_prev[j:j + 1], int(idx[j]), min_std=0.1)[0]
                              for j in range(4)])
    assert torch.allclose(batched, one_by_one, atol=1e-5)


@torch.no_grad()
def test_ddim_step_matches_hand_formula():
    p = small_policy()
    obs, x_k = torch.randn(3, 1, OBS_DIM), torch.randn(3, H, ACT_DIM)
    ac = [1.0] + hand_alphas_cumprod(T)
    # DDIM with K = 3 on T = 6: timesteps [4, 2, 0]; position 1 runs t = 2 and steps to ᾱ_prev = ᾱ at t = 0.
    a, a_prev = ac[3], ac[1]
    eta = 1.0
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    eps = p.net(x_k, torch.full((3,), 2), obs.reshape(3, -1))
    x0 = ((x_k - math.sqrt(1 - a) * eps) / math.sqrt(a)).clamp(-1, 1)
    eps = (x_k - math.sqrt(a) * x0) / math.sqrt(1 - a)
    mean = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
    got_mean, got_std = p.step_distribution(x_k, 1, obs, sampler="ddim", ddim_steps=3, eta=eta)
    assert torch.allclose(got_mean, mean, atol=1e-5)
    assert torch.allclose(got_std, torch.full_like(got_std, sigma), atol=1e-6)
    _, std0 = p.step_distribution(x_k, 1, obs, sampler="ddim", ddim_steps=3, eta=0.0)
    assert torch.all(std0 == 0)


# ---- chains and explicit noise -------------------------------------------------------------------------------------
@torch.no_grad()
def test_chain_follows_step_distribution_with_explicit_noise():
    """noise[:, 0] is x^K and noise[:, i+1] is step i's draw; each chain state is mean + max(std, min_std)·draw."""
    p = small_policy()
    obs = torch.randn(2, 1, OBS_DIM)
    noise = torch.randn(p.noise_shape(2, "stochastic"))
    assert noise.shape == (2, T + 1, H, ACT_DIM)
    chain = p.sample_chain(obs, noise=noise, min_std=0.1, randn_clip=1.5)
    assert chain.shape == (2, T + 1, H, ACT_DIM)
    assert torch.equal(chain[:, 0], noise[:, 0])
    for i in range(T):
        mean, std = p.step_distribution(chain[:, i], i, obs)
        expected = mean + std.clamp(min=0.1) * noise[:, i + 1].clamp(-1.5, 1.5)
        if i == T - 1:
            expected = expected.clamp(-1, 1)
        assert torch.allclose(chain[:, i + 1], expected, atol=1e-6), f"chain position {i}"
    assert chain[:, -1].abs().max() <= 1


@torch.no_grad()
def test_stored_transition_log_prob_equals_density_of_its_draw():
    p = small_policy()
    obs = torch.randn(3, 1, OBS_DIM)
    noise = torch.randn(3, T + 1, H, ACT_DIM)
    chain = p.sample_chain(obs, noise=noise, min_std=0.1)
    for i in range(T - 1):  # the last step is clamped to ±1, so its draw is not recoverable
        _, std = p.step_distribution(chain[:, i], i, obs)
        s = std.clamp(min=0.1)
        n = noise[:, i + 1]
        expected = (-0.5 * n**2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(dim=(-1, -2))
        got = p.log_prob(obs, chain[:, i], chain[:, i + 1], i, min_std=0.1)
        assert torch.allclose(got, expected, atol=1e-3), f"chain position {i}"


@torch.no_grad()
def test_same_noise_same_action_different_noise_different_action():
    p = small_policy()
    obs = torch.randn(2, 1, OBS_DIM)
    noise = torch.randn(p.noise_shape(2))
    torch.manual_seed(10)
    a1 = p.act(obs, noise=noise)
    torch.manual_seed(11)  # the global RNG must not matter once noise is explicit
    a2 = p.act(obs, noise=noise)
    assert torch.equal(a1, a2)
    other = noise.clone()
    other[:, 1:] = torch.randn_like(other[:, 1:])  # same x^K, different per-step draws
    assert not torch.allclose(p.act(obs, noise=other), a1)
    assert a1.shape == (2, H, ACT_DIM) and a1.abs().max() <= 1


@torch.no_grad()
def test_ddim_eta0_is_deterministic_given_initial_noise():
    p = small_policy(sampler="ddim", ddim_steps=3, eta=0.0)
    obs = torch.randn(2, 1, OBS_DIM)
    assert p.noise_shape(2) == (2, H, ACT_DIM)
    x_k = torch.randn(2, H, ACT_DIM)
    torch.manual_seed(1)
    a1 = p.act(obs, noise=x_k)
    torch.manual_seed(2)
    a2 = p.act(obs, noise=x_k)
    assert torch.equal(a1, a2)
    assert not torch.allclose(p.act(obs, noise=torch.randn(2, H, ACT_DIM)), a1)
    # η > 0 or a std floor makes the same sampler stochastic, and then it needs per-step draws
    assert p.noise_shape(2, eta=1.0) == (2, 4, H, ACT_DIM)
    assert p.noise_shape(2, min_std=0.1) == (2, 4, H, ACT_DIM)
    with pytest.raises(ValueError, match=r"noise has shape \(2, 4, 2\); a stochastic ddim chain, K=3 expects"):
        p.act(obs, noise=x_k, eta=1.0)


@torch.no_grad()
def test_deterministic_ddpm_takes_initial_noise_only():
    p = small_policy()
    obs = torch.randn(2, 1, OBS_DIM)
    x_k = torch.randn(p.noise_shape(2, "deterministic"))
    chain = p.sample_chain(obs, noise=x_k, deterministic=True)
    for i in range(T - 1):
        assert torch.allclose(chain[:, i + 1], p.step_distribution(chain[:, i], i, obs)[0], atol=1e-6)
    with pytest.raises(ValueError, match="deterministic ddpm chain expects"):
        p.act(obs, noise=torch.randn(2, T + 1, H, ACT_DIM), deterministic=True)


@torch.no_grad()
def test_fine_tuned_copy_used_only_where_asked():
    """DPPO runs a deep-copied net for the last K′ steps: earlier chain states must not change."""
    p = small_policy()
    ft = copy.deepcopy(p.net)
    for param in ft.parameters():
        param.add_(0.5)
    obs, noise = torch.randn(2, 1, OBS_DIM), torch.randn(2, T + 1, H, ACT_DIM)
    base = p.sample_chain(obs, noise=noise, min_std=0.1)
    k_ft = 2
    mixed = p.sample_chain(obs, noise=noise, min_std=0.1, net_for_step=lambda i: ft if i >= T - k_ft else p.net)
    assert torch.equal(mixed[:, : T - k_ft + 1], base[:, : T - k_ft + 1])
    assert not torch.allclose(mixed[:, -1], base[:, -1])
    mean_ft, _ = p.step_distribution(mixed[:, T - 1], T - 1, obs, net=ft)
    assert torch.allclose(mixed[:, -1], (mean_ft + 0.1 * noise[:, -1]).clamp(-1, 1), atol=1e-6)


def test_bc_loss_is_epsilon_mse_at_given_t():
    p = small_policy()
    obs, a = torch.randn(3, 1, OBS_DIM), torch.rand(3, H, ACT_DIM) * 2 - 1
    t, eps = torch.tensor([0, 2, 5]), torch.randn(3, H, ACT_DIM)
    ac = torch.tensor(hand_alphas_cumprod(T), dtype=torch.float32)[t].reshape(3, 1, 1)
    x_t = ac.sqrt() * a + (1 - ac).sqrt() * eps
    expected = ((p.net(x_t, t, obs.reshape(3, -1)) - eps) ** 2).mean(dim=(-1, -2))
    assert torch.allclose(p.bc_loss(obs, a, t=t, eps=eps), expected, atol=1e-5)
    assert p.bc_loss(obs, a).shape == (3,)
