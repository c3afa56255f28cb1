"""Wasserstein policy optimisation's actor update (Pfau et al., ICML 2025, "Wasserstein Policy Optimization"), with
the entropy regularisation of entropy-regularised Wasserstein policy gradient (WPG), for a Gaussian policy; the SAC
option ``SACConfig.actor_update="wpo"`` (``stack.algos.sac``) uses it in place of the reparameterised SAC loss.

Theory. The entropy-regularised objective J[π] = E_{a~π}[Q(s, a)] + α H(π(·|s)) has first variation Q − α(log π + 1);
its Wasserstein-2 gradient flow moves every action along the velocity field
    v(a) = ∇_a Q(s, a) − α ∇_a log π(a|s)                    (transport up Q, plus the Langevin/diffusion term),
i.e. ∂π/∂t = −∇_a·(π v); its fixed point is the Gibbs policy π* ∝ exp(Q/α). WPO projects the flow onto the policy's
parameters by the Δθ that best matches it in KL, which integrates by parts into

    Δθ = F(θ)⁻¹ E_{a~π}[ ∇_θ ∇_a log π_θ(a|s)ᵀ v(a) ]       (Pfau et al.'s update; F the Fisher matrix of π_θ)

with the samples a held fixed (no reparameterisation) and v evaluated at the current policy. For a Gaussian
N(μ, σ²) per dimension, ∇_a log π = −(a − μ)/σ² and F = diag(1/σ², 2/σ²) in (μ, σ), so with a = μ + σ ε
    Δμ = E[v],   Δσ = E[ε v]                                   (the Bures–Wasserstein flow of the Gaussian);
a quadratic Q = −(a − m)²/(2c) gives Δμ = (m − μ)/c and Δσ = α/σ − σ/c, contracting to N(m, αc) = π*.

Implementation. The Fisher preconditioning is applied at the distribution's parameters, as DeepMind's Acme WPO
does (its ``natural_gradient_adaptor``): a forward pass that leaves μ and log σ unchanged while their gradients are
scaled by σ² and ½ (the inverse Fisher diagonal in (μ, log σ)); the network maps the rest by the chain rule. The
surrogate −Σ_d ∇_{u_d} log π(u) · v_d, differentiated, is then −Δθ. For SAC's tanh-squashed policy a = tanh(u) the
flow is taken in the pre-squash space u (where the policy is Gaussian): the objective E_u[Q(s, tanh u)] + α H(a)
equals E_u[Q(s, tanh u) − α log π_a(tanh u)], so v(u) = ∇_u Q(s, tanh u) − α ∇_u log π_u(u) − 2α tanh(u), the last
term the gradient of the change-of-variables log(1 − tanh² u).
"""

from __future__ import annotations

import torch


def soft_transport_velocity(grad_q_u: torch.Tensor, noise: torch.Tensor, std: torch.Tensor, alpha: float | torch.Tensor,
                            squashed_action: torch.Tensor | None = None) -> torch.Tensor:
    """The entropy-regularised WPG velocity v(u) = ∇_u Q(s, a(u)) − α ∇_u log π_a(a(u)|s) at the sample
    u = μ + σ·noise, the policy's density held fixed. ``grad_q_u`` is ∇_u Q(s, a(u)) (the tanh's Jacobian already
    applied when squashed); −α ∇_u log N(u; μ, σ) = α·noise/σ; for a = tanh(u) (``squashed_action``) the log-det term
    adds −2α·a. All inputs [B, act_dim]; returns [B, act_dim], detached."""
    velocity = grad_q_u + alpha * noise / std
    if squashed_action is not None:
        velocity = velocity - 2.0 * alpha * squashed_action
    return velocity.detach()


def natural_gaussian_parameters(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, log σ) with their values unchanged and their gradients scaled by the inverse Fisher diagonal, σ² for μ and
    ½ for log σ, so plain gradient descent on a loss of them is natural-gradient descent in the Gaussian's geometry."""
    var = (2.0 * log_std).exp().detach()
    natural_mean = var * mean + ((1.0 - var) * mean).detach()
    natural_log_std = 0.5 * log_std + (0.5 * log_std).detach()
    return natural_mean, natural_log_std


def wpo_surrogate(mean: torch.Tensor, log_std: torch.Tensor, u: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """Loss whose gradient is −F⁻¹ E[∇_θ ∇_u log π(u)ᵀ v] (minus Pfau et al.'s update), the mean over the batch:
    −Σ_d ∇_{u_d} log N(u; μ̃, σ̃) · v_d with u and v held fixed and (μ̃, σ̃) the natural-gradient parameters."""
    natural_mean, natural_log_std = natural_gaussian_parameters(mean, log_std)
    score_u = -(u.detach() - natural_mean) * (-2.0 * natural_log_std).exp()  # ∇_u log N(u; μ, σ²) = −(u − μ)/σ²
    return -(score_u * velocity.detach()).sum(-1).mean()
