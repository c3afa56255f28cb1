"""Schulman, Chen & Abbeel 2017 on a random 4-state, 3-action MDP (and its γ = 0 contextual bandit), float64, every
gradient by autograd through ``stack.algos.soft_q``: the soft Q-learning gradient of a linear Q_θ equals −τ times the
entropy-regularised policy gradient of the Boltzmann policy plus a value-regression gradient (the identity in the
module's docstring); a wrong entropy term in the PG objective breaks it."""

import pytest
import torch

from stack.algos import soft_q

S, A, K = 4, 3, 5  # K < S·A features, so Q_θ = φ θ is not a table (∇_θ V_θ couples the actions)


def _mdp(seed: int, gamma: float):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    transitions = torch.softmax(2.0 * torch.randn(S, A, S, **f64), dim=-1)
    rewards = (1.0 - gamma) * torch.randn(S, A, **f64)  # returns of order 1 whatever γ, as Q_θ's
    rho0 = torch.softmax(torch.randn(S, **f64), dim=0)
    features = torch.randn(S, A, K, **f64)
    theta = torch.randn(K, **f64).requires_grad_(True)
    return transitions, rewards, rho0, features, theta


def _grad(value: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(value, theta, retain_graph=True)[0]


def _three_gradients(seed: int, tau: float, gamma: float, pg_entropy_coef: float):
    """(∇L_Q, ∇η, ∇L_V, ∇ of the PG surrogate with baseline V_θ) at θ, all for the Boltzmann policy of Q_θ = φθ."""
    transitions, rewards, rho0, features, theta = _mdp(seed, gamma)
    q = features @ theta
    log_pi = soft_q.boltzmann_log_policy(q, tau)
    # Soft Q-learning's data and target: on-policy weights d^π(s)·π(a|s) and y = Q^π_soft of the current policy.
    d = soft_q.discounted_visitation(log_pi, transitions, rho0, gamma)
    weights = (d[:, None] * log_pi.exp()).detach()
    _, q_soft = soft_q.soft_policy_evaluation(log_pi, rewards, transitions, gamma, tau)
    y = q_soft.detach()
    grad_q = _grad(soft_q.soft_q_loss(q, y, weights), theta)
    grad_v = _grad(soft_q.value_regression_loss(q, y, weights, tau), theta)
    eta = soft_q.entropy_regularised_return(log_pi, rewards, transitions, rho0, gamma, pg_entropy_coef)
    grad_eta = _grad(eta, theta)
    surrogate = soft_q.soft_policy_gradient_surrogate(log_pi, y, soft_q.soft_value(q, tau).detach(), weights, tau)
    return grad_q, grad_eta, grad_v, _grad(surrogate, theta)


@pytest.mark.parametrize("gamma", [0.0, 0.9], ids=["bandit", "mdp"])
@pytest.mark.parametrize("tau", [0.3, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_soft_q_gradient_is_tau_times_the_entropy_regularised_pg_plus_value_regression(seed, tau, gamma):
    grad_q, grad_eta, grad_v, grad_surrogate = _three_gradients(seed, tau, gamma, pg_entropy_coef=tau)
    # the likelihood-ratio estimator with baseline V_θ is the exact gradient of η (soft policy gradient theorem)
    torch.testing.assert_close(grad_surrogate, grad_eta, rtol=1e-9, atol=1e-11)
    # the equivalence: ∇L_Q = −τ ∇η + ∇L_V, to float64 precision
    torch.testing.assert_close(grad_q, -tau * grad_eta + grad_v, rtol=1e-9, atol=1e-11)
    # and the PG half is not negligible: the value regression alone misses the soft-Q step by far more than precision
    assert float((grad_q - grad_v).norm()) > 1e-2 * float(grad_q.norm())


@pytest.mark.parametrize("broken", ["dropped", "flipped"])
@pytest.mark.parametrize("tau", [0.3, 2.0])
def test_a_wrong_entropy_term_breaks_the_equivalence(tau, broken):
    entropy_coef = 0.0 if broken == "dropped" else -tau
    grad_q, grad_eta, grad_v, _ = _three_gradients(0, tau, 0.9, pg_entropy_coef=entropy_coef)
    residual = (grad_q - (-tau * grad_eta + grad_v)).norm()
    # far outside the 1e-9 the true identity holds to, and a sizeable part of the PG term itself
    assert float(residual) > 1e-3 * float(grad_q.norm())
    assert float(residual) > 0.5 * float((tau * grad_eta).norm())


def test_boltzmann_policy_is_exp_of_q_minus_v_over_tau():
    q = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    tau = 0.5
    v = soft_q.soft_value(q, tau)  # 0.5·log(e² + e⁴ + e⁸) = 4 + 0.5·log(1 + e⁻⁴ + e⁻⁶) = 4 + 0.5·0.0205812
    assert float(v) == pytest.approx(4.0102906, abs=1e-7)
    log_pi = soft_q.boltzmann_log_policy(q, tau)
    torch.testing.assert_close(log_pi.exp().sum(-1), torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(q, v[:, None] + tau * log_pi)  # Q = V + τ log π
    # τ → small: greedy; τ large: near uniform
    assert float(soft_q.boltzmann_log_policy(q, 0.01).exp()[0, 2]) > 0.999
    assert float(soft_q.boltzmann_log_policy(q, 1e3).exp().min()) > 0.33
