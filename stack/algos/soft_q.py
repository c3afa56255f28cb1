"""Policy gradients ⇔ soft Q-learning (Schulman, Chen & Abbeel 2017, "Equivalence Between Policy Gradients and Soft
Q-Learning"), in closed form on a small discrete MDP (a contextual bandit is the case γ = 0).

A Q-function Q_θ(s, a) with temperature τ defines
    V_θ(s) = τ log Σ_a exp(Q_θ(s, a)/τ)                 (the soft value, a log-sum-exp)
    π_θ(a|s) = exp((Q_θ(s, a) − V_θ(s))/τ)              (the Boltzmann policy),  i.e.  Q_θ = V_θ + τ log π_θ.
Differentiating that last line, ∇_θ Q_θ(s, a) = τ ∇_θ log π_θ(a|s) + ∇_θ V_θ(s), so for any target y(s, a) held
fixed the soft Q-learning step on ½(Q_θ − y)² splits, with Q_θ − y = (V_θ + τ log π_θ) − y, into

    −∇_θ ½(Q_θ − y)² = τ · ∇_θ log π_θ(a|s) · (y − τ log π_θ(a|s) − V_θ(s))     the entropy-regularised PG with
                                                                              baseline V_θ(s)
                     − ∇_θ ½(V_θ(s) − ŷ)²,   ŷ = y − τ log π_θ(a|s) held fixed   a value regression to the soft target

(the paper's section 3; its baseline is V_θ itself, and the PG term is scaled by τ). Weighting both sides by the
on-policy state-action distribution d^π(s) π(a|s) and taking y = Q^π_soft, the exact soft Q of the current policy,
the PG term is τ times the true gradient of the entropy-regularised return η(θ) = E_ρ0[V^π_soft(s0)] (the soft policy
gradient theorem: the baseline and the derivative of −τ log π both vanish in expectation). This file holds those
pieces; ``tests/stack/test_soft_q_equivalence.py`` checks

    ∇_θ L_Q(θ) = −τ ∇_θ η(θ) + ∇_θ L_V(θ)                                                                 (identity)

with L_Q = ½ Σ_{s,a} w(s,a) (Q_θ(s,a) − y(s,a))², L_V = ½ Σ_{s,a} w(s,a) (V_θ(s) − ŷ(s,a))², w = d^π(s) π(a|s) and
y = Q^π_soft held fixed, every term by torch autograd in float64, and that breaking the entropy term of η (dropping
it, or flipping its sign) breaks the identity.
"""

from __future__ import annotations

import torch


def soft_value(q: torch.Tensor, tau: float) -> torch.Tensor:
    """V(s) = τ log Σ_a exp(Q(s, a)/τ), over the last axis: [..., A] → [...]."""
    return tau * torch.logsumexp(q / tau, dim=-1)


def boltzmann_log_policy(q: torch.Tensor, tau: float) -> torch.Tensor:
    """log π(a|s) = (Q(s, a) − V(s))/τ, [..., A] (a log-softmax of Q/τ)."""
    return (q - soft_value(q, tau)[..., None]) / tau


def soft_policy_evaluation(log_pi: torch.Tensor, rewards: torch.Tensor, transitions: torch.Tensor, gamma: float,
                           entropy_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact soft values of a policy: V(s) = Σ_a π(a|s) [r(s,a) − c log π(a|s) + γ Σ_s' P(s'|s,a) V(s')] solved as
    the linear system (I − γ P_π) V = r_π − c Σ_a π log π, and Q(s,a) = r(s,a) + γ Σ_s' P(s'|s,a) V(s').

    log_pi [S, A], rewards [S, A], transitions P [S, A, S'] (rows sum to 1), entropy coefficient c (τ for the soft
    objective; 0 drops the entropy term). Differentiable in log_pi. Returns (V [S], Q [S, A])."""
    pi = log_pi.exp()
    p_pi = torch.einsum("sa,sat->st", pi, transitions)
    r_pi = (pi * (rewards - entropy_coef * log_pi)).sum(-1)
    eye = torch.eye(p_pi.shape[0], dtype=p_pi.dtype)
    v = torch.linalg.solve(eye - gamma * p_pi, r_pi)
    return v, rewards + gamma * transitions @ v


def discounted_visitation(log_pi: torch.Tensor, transitions: torch.Tensor, rho0: torch.Tensor,
                          gamma: float) -> torch.Tensor:
    """d^π(s) = Σ_t γ^t Pr(s_t = s) from s_0 ~ ρ0 (unnormalised, sums to 1/(1 − γ)): (I − γ P_πᵀ) d = ρ0."""
    p_pi = torch.einsum("sa,sat->st", log_pi.exp(), transitions)
    eye = torch.eye(p_pi.shape[0], dtype=p_pi.dtype)
    return torch.linalg.solve(eye - gamma * p_pi.T, rho0)


def entropy_regularised_return(log_pi: torch.Tensor, rewards: torch.Tensor, transitions: torch.Tensor,
                               rho0: torch.Tensor, gamma: float, entropy_coef: float) -> torch.Tensor:
    """η = E_{s0 ~ ρ0}[V^π_soft(s0)] = E[Σ_t γ^t (r_t − c log π(a_t|s_t))], the objective the PG side ascends."""
    v, _ = soft_policy_evaluation(log_pi, rewards, transitions, gamma, entropy_coef)
    return rho0 @ v


def soft_q_loss(q: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Soft Q-learning's regression ½ Σ w (Q_θ(s,a) − y(s,a))², the target y and the weights w held fixed."""
    return 0.5 * (weights.detach() * (q - target.detach()).pow(2)).sum()


def value_regression_loss(q: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, tau: float) -> torch.Tensor:
    """½ Σ w (V_θ(s) − ŷ(s,a))² with V_θ = τ logsumexp(Q_θ/τ) and ŷ = y − τ log π_θ(a|s) held fixed: the value half
    of the soft Q step."""
    soft_target = (target - tau * boltzmann_log_policy(q, tau)).detach()
    return 0.5 * (weights.detach() * (soft_value(q, tau)[:, None] - soft_target).pow(2)).sum()


def soft_policy_gradient_surrogate(log_pi: torch.Tensor, q_soft: torch.Tensor, baseline: torch.Tensor,
                                   weights: torch.Tensor, tau: float) -> torch.Tensor:
    """Σ w log π(a|s) · (Q_soft(s,a) − τ log π(a|s) − b(s)), the advantage held fixed: its gradient is the
    entropy-regularised policy gradient estimator with baseline b (the likelihood-ratio form)."""
    advantage = (q_soft - tau * log_pi - baseline[:, None]).detach()
    return (weights.detach() * log_pi * advantage).sum()
