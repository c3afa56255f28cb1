"""Action-dependent factorized baselines (stack.algos.action_baseline) on a contextual bandit with a known gradient.

Bandit: s ~ N(0, I_k), a ~ π = N(W s + c, diag σ²) (a linear GaussianPolicy: hidden=()), reward
r(s, a) = −‖a − A s‖² (Q̂ = r exactly). J(θ) = E_s[−‖(W − A)s + c‖²] − Σ_i σ_i², so in closed form

    ∇_W J = −2 (W − A)      ∇_c J = −2 c      ∇_{log σ_i} J = −2 σ_i²

The reward is a sum over dimensions: the state baseline leaves in dimension i's term the noise of the other five
dimensions' squared errors, which b_i(s, a_{−i}) can explain — Wu et al.'s favourable case, where the variance must
drop. A baseline that also sees a_i can explain Q̂'s dependence on a_i itself and cancels the signal: biased.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from policies import GaussianPolicy
from policies.common import mlp
from stack.algos.action_baseline import (FitBudget, GradientStats, MaskedActionBaseline, action_baseline_gradient,
                                         agreement, fit_baseline, state_baseline_gradient)

OBS_DIM, ACT_DIM = 2, 6
BATCHES, BATCH_SIZE = 300, 32
BUDGET = FitBudget(steps=300, batch_size=256, lr=1e-2)


class V(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp(OBS_DIM, (64, 64), 1, "tanh")

    def forward(self, obs):
        return self.net(obs).squeeze(-1)


def bandit(seed=0):
    gen = torch.Generator().manual_seed(seed)
    policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(), log_std_init=-0.7)
    target = torch.randn(ACT_DIM, OBS_DIM, generator=gen)
    with torch.no_grad():
        policy.mean.weight.copy_(target + 0.3 * torch.randn(ACT_DIM, OBS_DIM, generator=gen))
        policy.mean.bias.copy_(0.3 * torch.randn(ACT_DIM, generator=gen))
        policy.log_std.copy_(-0.7 + 0.2 * torch.randn(ACT_DIM, generator=gen))
    return policy, target


def draw(policy, target, n, gen):
    obs = torch.randn(n, OBS_DIM, generator=gen)
    with torch.no_grad():
        noise = torch.randn(n, ACT_DIM, generator=gen)
        actions = policy.sample(obs, noise)[0][:, 0]
    reward = -(actions - obs @ target.T).pow(2).sum(-1)
    return obs, actions, reward


def exact_gradient(policy, target):
    """∇J in the order of ``policy.parameters()`` (the estimators' flat layout)."""
    with torch.no_grad():
        by_name = {"log_std": -2.0 * policy.log_std.exp().pow(2), "mean.weight": -2.0 * (policy.mean.weight - target),
                   "mean.bias": -2.0 * policy.mean.bias}
        return torch.cat([by_name[name].reshape(-1) for name, _ in policy.named_parameters()])


def gradients(policy, target, baseline, seed=1):
    """[BATCHES, P] gradients of the estimator with ``baseline`` (V, or a MaskedActionBaseline) on fresh batches."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(BATCHES):
        obs, actions, q_hat = draw(policy, target, BATCH_SIZE, gen)
        if isinstance(baseline, MaskedActionBaseline):
            with torch.no_grad():
                b = baseline(obs, actions)
            out.append(action_baseline_gradient(policy, obs, actions, q_hat, b))
        else:
            with torch.no_grad():
                v = baseline(obs)
            out.append(state_baseline_gradient(policy, obs, actions, q_hat, v))
    return torch.stack(out)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    policy, target = bandit()
    gen = torch.Generator().manual_seed(123)
    fit_obs, fit_actions, fit_q = draw(policy, target, 4096, gen)  # fitting data, apart from the measured batches
    v = V()
    masked = MaskedActionBaseline(OBS_DIM, ACT_DIM)
    unmasked = MaskedActionBaseline(OBS_DIM, ACT_DIM, mask_own_action=False)
    for net in (v, masked, unmasked):
        fit_baseline(net, fit_obs, fit_actions, fit_q, BUDGET)
    grads = {name: gradients(policy, target, net) for name, net in
             (("state", v), ("action", masked), ("unmasked", unmasked))}
    return exact_gradient(policy, target), grads


def test_the_action_dependent_estimator_is_unbiased_and_has_lower_variance(setup):
    exact, grads = setup
    state, action = GradientStats.of(grads["state"]), GradientStats.of(grads["action"])
    # each estimator's mean within 4 standard errors of the closed-form gradient, coordinate by coordinate
    for stats in (state, action):
        z = (stats.mean - exact) / (stats.var / BATCHES).sqrt()
        assert z.abs().max() < 4.0, z
    assert agreement(grads["action"], grads["state"])["unbiased"]
    # Wu et al.'s favourable case: the other dimensions' noise is partly explained away (measured ratio 0.53)
    assert action.total_variance < 0.75 * state.total_variance, (action.total_variance, state.total_variance)


def test_a_baseline_that_sees_its_own_dimension_is_detected_as_biased(setup):
    exact, grads = setup
    check = agreement(grads["unmasked"], grads["state"])
    assert not check["unbiased"], check
    unmasked = GradientStats.of(grads["unmasked"])
    z = (unmasked.mean - exact) / (unmasked.var / BATCHES).sqrt()
    assert z.abs().max() > 10.0, z
