"""Wasserstein policy optimisation (``stack.algos.wpo``, the SAC option ``actor_update="wpo"``).

The bandit: one state, Q(a) = −(a − m)²/(2c), temperature α, so the soft-optimal (Gibbs) policy π* ∝ exp(Q/α) is
N(m, αc). Exact WPG on N(μ, σ²) is Δμ = (m − μ)/c, Δσ = α/σ − σ/c: the mean error shrinks by (1 − η/c) a step and
σ by ≈ (1 − 2η/c) near σ*, so KL(π‖π*) falls geometrically; the Monte-Carlo steps here use the real surrogate and
its natural-gradient adaptor on a batch of samples, whose error vanishes at π* (for a quadratic Q the velocity is 0
there for every sample: WPO's zero-variance property), so the only floor is float32 round-off, far below what the
test runs into.
"""

import csv
import math

import pytest
import torch

from stack.algos.wpo import natural_gaussian_parameters, soft_transport_velocity, wpo_surrogate

M, C, ALPHA = 1.0, 1.0, 0.5  # Gibbs policy N(1, 0.5)


def _kl_to_gibbs(mean: float, std: float) -> float:
    target_std = math.sqrt(ALPHA * C)
    if std == 0.0:  # a collapsed policy (the flipped update's fate)
        return math.inf
    return math.log(target_std / std) + (std**2 + (mean - M) ** 2) / (2 * target_std**2) - 0.5


def _wpg_iterates(steps: int, lr: float = 0.1, sign: float = 1.0, samples: int = 256) -> list[float]:
    """KL to the Gibbs policy after each SGD step on ``sign`` × the WPO surrogate of a 1-D Gaussian (μ, log σ)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([[-2.0]], requires_grad=True)
    log_std = torch.tensor([[math.log(0.2)]], requires_grad=True)
    kls = [_kl_to_gibbs(float(mean.detach()), float(log_std.detach().exp()))]
    for _ in range(steps):
        std = log_std.exp().expand(samples, 1)
        noise = torch.randn(samples, 1, generator=g)
        u = (mean + std * noise).detach()
        grad_q = -(u - M) / C
        velocity = soft_transport_velocity(grad_q, noise, std.detach(), ALPHA)
        loss = sign * wpo_surrogate(mean.expand(samples, 1), log_std.expand(samples, 1), u, velocity)
        mean.grad = log_std.grad = None
        loss.backward()
        with torch.no_grad():  # plain SGD (torch.optim's first call costs seconds of imports)
            mean -= lr * mean.grad
            log_std -= lr * log_std.grad
        kls.append(_kl_to_gibbs(float(mean.detach()), float(log_std.detach().exp())))
        if not math.isfinite(kls[-1]):
            break
    return kls


def test_natural_gradient_adaptor_keeps_values_and_scales_gradients_by_the_inverse_fisher():
    mean = torch.tensor([0.3], requires_grad=True)
    log_std = torch.tensor([math.log(2.0)], requires_grad=True)
    nat_mean, nat_log_std = natural_gaussian_parameters(mean, log_std)
    assert float(nat_mean.detach()) == pytest.approx(0.3)
    assert float(nat_log_std.detach()) == pytest.approx(math.log(2.0))
    (nat_mean + nat_log_std).sum().backward()
    assert float(mean.grad) == pytest.approx(4.0)  # σ² = 4: the inverse Fisher of μ
    assert float(log_std.grad) == pytest.approx(0.5)  # the Fisher of log σ is 2


def test_velocity_is_the_action_gradient_of_q_minus_alpha_log_pi_through_the_tanh():
    # v(u) = ∇_u [Q(tanh u) − α log π_a(tanh u)] with log π_a(tanh u) = log N(u; μ, σ) − log(1 − tanh² u), μ, σ fixed
    g = torch.Generator().manual_seed(2)
    f64 = dict(dtype=torch.float64, generator=g)
    mean, std, noise = torch.randn(5, 2, **f64), torch.rand(5, 2, **f64) + 0.3, torch.randn(5, 2, **f64)
    alpha = 0.7
    u = (mean + std * noise).requires_grad_(True)
    a = torch.tanh(u)
    q = -(a - 0.3).pow(2).sum(-1) / 0.2
    log_pi_a = (torch.distributions.Normal(mean, std).log_prob(u) - torch.log(1 - a.pow(2))).sum(-1)
    (expected,) = torch.autograd.grad((q - alpha * log_pi_a).sum(), u, retain_graph=True)
    (grad_q_u,) = torch.autograd.grad(q.sum(), u)
    velocity = soft_transport_velocity(grad_q_u, noise, std, alpha, squashed_action=a.detach())
    torch.testing.assert_close(velocity, expected)


def test_wpo_step_on_a_gaussian_is_the_bures_wasserstein_flow():
    # Δμ = E[v] and Δσ = E[ε v]; with many samples at μ = −2, σ = 0.2: Δμ = (m − μ)/c = 3, Δσ = α/σ − σ/c = 2.3.
    n = 200_000
    g = torch.Generator().manual_seed(1)
    mean = torch.full((n, 1), -2.0, requires_grad=True)
    log_std = torch.full((n, 1), math.log(0.2), requires_grad=True)
    noise = torch.randn(n, 1, generator=g)
    u = (mean + 0.2 * noise).detach()
    velocity = soft_transport_velocity(-(u - M) / C, noise, torch.full((n, 1), 0.2), ALPHA)
    wpo_surrogate(mean, log_std, u, velocity).backward()
    delta_mean, delta_log_std = -float(mean.grad.sum()), -float(log_std.grad.sum())
    assert delta_mean == pytest.approx(3.0, rel=1e-2)
    assert delta_log_std * 0.2 == pytest.approx(2.3, rel=1e-2)  # Δσ = σ Δlog σ


def test_wpg_contracts_geometrically_to_the_gibbs_policy():
    kls = _wpg_iterates(steps=80)
    assert kls[0] > 5.0  # μ = −2, σ = 0.2 against N(1, 0.5): KL ≈ 9.8
    # Exact WPG with step η = 0.1, c = 1: the mean's error shrinks by 0.9 a step, its KL term by 0.81, σ's faster;
    # so every 10 steps the KL falls by ≈ 0.9²⁰ ≈ 0.12 (measured 0.111 then 0.122 in every window to 1e-8).
    ratios = [kls[k + 10] / kls[k] for k in range(0, len(kls) - 10, 10)]
    assert len(ratios) == 8
    assert all(0.09 < r < 0.14 for r in ratios), ratios
    assert kls[-1] < 1e-6 * kls[0]


def test_wpg_with_the_sign_flipped_diverges():
    kls = _wpg_iterates(steps=60, sign=-1.0)
    assert not math.isfinite(kls[-1]) or kls[-1] > 100 * kls[0]


def test_sac_trains_end_to_end_with_the_wpo_actor(tmp_path):
    from stack.config import EnvConfig, SACConfig, TrainConfig
    from stack.train import train

    cfg = TrainConfig(algo="sac", env=EnvConfig(task="point_mass", num_envs=2, backend="sync"),
                      sac=SACConfig(learning_starts=100, replay_ratio=0.5, batch_size=32, hidden=(32, 32),
                                    log_every=100, actor_update="wpo"),
                      total_env_steps=400, eval_every=0, eval_episodes=2, name="wpo", runs_dir=str(tmp_path),
                      progress=False, seed=0)
    run = train(cfg)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert rows and all(math.isfinite(float(r["actor_loss"])) for r in rows if r.get("actor_loss"))
    assert (run / "checkpoints/latest/policy/model.safetensors").exists()


class _QuadraticQ(torch.nn.Module):
    """A fixed critic Q(s, a) = −|a − 0.5|²/(2c) (twin heads equal), so the actor's soft optimum is known."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c
        self.unused = torch.nn.Parameter(torch.zeros(()))  # SAC's Q optimiser needs a parameter

    def forward(self, obs, action):
        q = -(action - 0.5).pow(2).sum(-1) / (2 * self.c) + 0.0 * self.unused
        return q, q

    def min_q(self, obs, action):
        return self(obs, action)[0]


@pytest.mark.parametrize("actor_update, steps", [("wpo", 300), pytest.param("sac", 1200, marks=pytest.mark.slow)])
def test_sac_actor_step_reaches_the_gibbs_policy_of_a_fixed_critic(actor_update, steps):
    # α = 0.05, c = 0.1: π* ∝ exp(Q/α) = N(0.5, αc = 0.005), σ* ≈ 0.071, well inside tanh's linear range. Measured
    # (batch 256, Adam 1e-2): WPO's action mean/std 0.510/0.085 after 200 steps, 0.498/0.071 after 400; SAC's
    # reparameterised step 0.533/0.148 and 0.508/0.108, reaching 0.501/0.072 only after ~1200.
    from policies import GaussianPolicy
    from stack.algos.sac import SAC
    from stack.config import SACConfig

    torch.manual_seed(0)
    actor = GaussianPolicy(2, 1, hidden=(16,), activation="relu", state_dependent_std=True, squash="tanh")
    cfg = SACConfig(alpha=0.05, autotune=False, policy_lr=1e-2, q_lr=0.0, policy_frequency=1,
                    actor_update=actor_update)
    sac = SAC(actor, _QuadraticQ(0.1), cfg, seed=0)
    obs = torch.zeros(256, 2)
    batch = {"obs": obs, "actions": torch.zeros(256, 1), "rewards": torch.zeros(256), "next_obs": obs,
             "terminated": torch.zeros(256)}
    for _ in range(steps):
        sac.update(batch)
    with torch.no_grad():
        actions = torch.cat([sac.act(obs) for _ in range(20)])
    assert float(actions.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(actions.std()) == pytest.approx(math.sqrt(0.005), rel=0.2)
