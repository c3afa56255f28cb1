"""Action-dependent factorized baselines (Wu et al., ICLR 2018, "Variance Reduction for Policy Gradient with
Action-Dependent Factorized Baselines"), beside the state-only baseline they are measured against.

For a factorised policy π(a|s) = Π_i π_i(a_i|s) (the Gaussian MLP: independent dimensions given s) the score splits,
∇_θ log π(a|s) = Σ_i ∇_θ log π_i(a_i|s), and each term may carry its own baseline b_i as long as b_i does not depend
on a_i: E_{a_i ~ π_i}[∇_θ log π_i(a_i|s) · b_i(s, a_{−i})] = b_i · ∇_θ ∫ π_i = 0 (Wu et al., eq. 6–7). So::

    state-only baseline        g = E[ ∇_θ log π(a|s) · (Q̂ − V(s)) ]
    action-dependent baseline  g = E[ Σ_i ∇_θ log π_i(a_i|s) · (Q̂ − b_i(s, a_{−i})) ]

are the same gradient; the second removes from dimension i's term the part of Q̂ explained by the other dimensions'
actions (largest when the return is a sum over many action dimensions, Wu et al.'s case for high-dimensional actions).
Tucker et al. (ICML 2018, "The Mirage of Action-Dependent Baselines") found the gain negligible on MuJoCo once the
implementations were matched: with Q̂ a noisy Monte-Carlo/GAE return, the variance from the return itself dwarfs what
any baseline can remove. ``stack.bench.variance`` measures the ratio on r2s's tasks.

``MaskedActionBaseline`` is Wu et al.'s one network for every i: input [s, a with a_i zeroed, one-hot(i)] → b_i
(``mask_own_action=False`` feeds a_i too: a biased baseline, kept for the test that detects it). Both baselines are
regressed onto the same target Q̂ with the same budget (``fit_baseline``: minibatch steps of ½(b − Q̂)²), as PPO
fits its critic. The estimators return the flat gradient vector over the policy's parameters (the ascent direction
of J; no advantage normalisation, which would differ between the two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from policies.common import mlp
from stack import distributed


class MaskedActionBaseline(nn.Module):
    """b(s, a, i): b_i(s, a_{−i}) for every dimension i at once → [B, act_dim].

    ``mask_own_action=False``: b_i(s, a) sees its own dimension's action (biased: it may cancel the score's signal)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh",
                 mask_own_action: bool = True):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.mask_own_action = mask_own_action
        self.net = mlp(obs_dim + 2 * act_dim, hidden, 1, activation)

    def inputs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[B, d, obs_dim + 2d]: row (b, i) is [s_b, a_b with a_bi zeroed (if masking), one-hot(i)]."""
        batch, d = actions.shape
        eye = torch.eye(d, dtype=actions.dtype, device=actions.device)
        acts = actions[:, None, :].expand(batch, d, d)
        if self.mask_own_action:
            acts = acts * (1.0 - eye)
        return torch.cat([obs[:, None, :].expand(batch, d, obs.shape[-1]), acts, eye.expand(batch, d, d)], dim=-1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.net(self.inputs(obs, actions)).squeeze(-1)


@dataclass(frozen=True)
class FitBudget:
    """The regression budget each baseline gets (the same for both: the comparison is at equal critic effort)."""

    steps: int = 500
    """Adam steps."""
    batch_size: int = 256
    lr: float = 1e-3


def fit_baseline(baseline: nn.Module, obs: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor,
                 budget: FitBudget = FitBudget(), seed: int = 0) -> float:
    """Regress ``baseline`` onto Q̂ (``targets`` [N]) with ½(b − Q̂)² for ``budget.steps`` minibatch steps.

    A ``MaskedActionBaseline`` is called as b(s, a) → [B, d] (every b_i fitted to the same Q̂); any other module as
    V(s) → [B]. Returns the final mean squared error over the whole fitting set."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(baseline.parameters(), lr=budget.lr)
    action_dependent = isinstance(baseline, MaskedActionBaseline)
    n = obs.shape[0]
    for _ in range(budget.steps):
        idx = torch.randint(n, (min(budget.batch_size, n),), generator=gen)
        pred = baseline(obs[idx], actions[idx]) if action_dependent else baseline(obs[idx])
        target = targets[idx, None] if action_dependent else targets[idx]
        loss = 0.5 * (pred - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = baseline(obs, actions) if action_dependent else baseline(obs)
        target = targets[:, None] if action_dependent else targets
        return float((pred - target).pow(2).mean())


def _flat_grad(objective: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(objective, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def per_dim_log_probs(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log π_i(a_i|s) → [B, d] of a factorised Gaussian (``policy.distribution(obs)``: independent dimensions)."""
    return policy.distribution(obs).log_prob(actions)


def state_baseline_gradient(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, q_hat: torch.Tensor,
                            values: torch.Tensor) -> torch.Tensor:
    """g = mean_b ∇_θ log π(a_b|s_b) · (Q̂_b − V(s_b)), flat over ``policy.parameters()``."""
    params = [p for p in policy.parameters() if p.requires_grad]
    advantage = (q_hat - values).detach()
    return _flat_grad((per_dim_log_probs(policy, obs, actions).sum(-1) * advantage).mean(), params)


def action_baseline_gradient(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, q_hat: torch.Tensor,
                             baselines: torch.Tensor) -> torch.Tensor:
    """g = mean_b Σ_i ∇_θ log π_i(a_bi|s_b) · (Q̂_b − b_i(s_b, a_b,−i)) (``baselines`` [B, d]), flat."""
    params = [p for p in policy.parameters() if p.requires_grad]
    advantages = (q_hat[:, None] - baselines).detach()
    return _flat_grad((per_dim_log_probs(policy, obs, actions) * advantages).sum(-1).mean(), params)


@dataclass
class GradientStats:
    """Per-parameter statistics of a gradient estimator over independent batches."""

    mean: torch.Tensor
    """[P] mean gradient across batches."""
    var: torch.Tensor
    """[P] unbiased variance across batches."""

    @property
    def total_variance(self) -> float:
        """Σ_k Var(g_k): the trace of the estimator's covariance (Wu et al.'s and Tucker et al.'s measure)."""
        return float(self.var.sum())

    @classmethod
    def of(cls, grads: torch.Tensor) -> GradientStats:
        """From [batches, P] gradients."""
        return cls(grads.mean(0), grads.var(0, unbiased=True))


def agreement(grads_a: torch.Tensor, grads_b: torch.Tensor, z_max: float = 3.0) -> dict:
    """Do two estimators have the same mean? Paired over batches (same data, two baselines): the per-coordinate mean
    of g_a − g_b over its standard error.

    ``unbiased`` when the norm of the mean difference is within ``z_max`` of its noise level √(Σ_k SE_k²) (the root
    of E‖d̄‖² under equal means; no independence of the coordinates assumed) and at most 1 % of the coordinates exceed
    ``z_max`` SE (0.27 % expected under equal means)."""
    diff = grads_a - grads_b
    n = diff.shape[0]
    mean = diff.mean(0)
    se2 = diff.var(0, unbiased=True) / n
    z = mean / se2.clamp_min(1e-30).sqrt()
    norm, noise = float(mean.norm()), math.sqrt(float(se2.sum()))
    frac = float((z.abs() > z_max).float().mean())
    return {"frac_beyond_se": frac, "max_abs_z": float(z.abs().max()), "mean_diff_norm": norm, "noise_norm": noise,
            "norm_z": norm / max(noise, 1e-30), "unbiased": bool(norm <= z_max * noise and frac <= 0.01)}


# ---- PPO with per-dimension advantages (PPOConfig.action_baseline; stack.algos.ppo) ----------------------------------
# Wu et al.'s reference code (cathywu/rllab, sandbox/rocky/tf/algos/npo_action.py) builds a TRPO surrogate
# Σ_k r_k · Â_k of per-dimension likelihood ratios r_k = π_k(a_k|s) / π_old,k(a_k|s), one advantage per dimension,
# under a KL constraint. PPO's version here: the same per-dimension ratios, each clipped as PPO clips its one ratio,
# summed over dimensions (at r = 1 its gradient is exactly ``action_baseline_gradient``). Their Â_k is a GAE whose
# TD residuals use b_k in place of V (rllab/sampler/base.py, process_baselines); r2s keeps PPO's λ-return R (the
# critic's target, from GAE with V) as Q̂ and subtracts b_k from it: Â_k = R − b_k(s, a_−k), the critic's own
# advantage plus V(s) − b_k(s, a_−k).
def per_dimension_advantages(baseline: MaskedActionBaseline, obs: torch.Tensor, actions: torch.Tensor,
                             returns: torch.Tensor) -> torch.Tensor:
    """Â_i = R − b_i(s, a_−i) → [B, d] (no gradient: computed once per update with the baseline before it)."""
    with torch.no_grad():
        return returns[:, None] - baseline(obs, actions)


def normalize_per_dimension(advantages: torch.Tensor) -> torch.Tensor:
    """PPO's advantage normalisation for [B, d] advantages: each dimension's minibatch mean removed (a constant
    baseline per dimension), one standard deviation over all entries, so the dimensions keep their relative weight
    (with several learner processes: over every rank's minibatch)."""
    if distributed.world_size() > 1:
        return (advantages - distributed.all_mean(advantages.mean(0))) / (distributed.mean_std(advantages)[1] + 1e-8)
    return (advantages - advantages.mean(0)) / (advantages.std() + 1e-8)


def per_dimension_clip_loss(new_log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                            clip: float) -> torch.Tensor:
    """mean_b Σ_i max(−Â_i r_i, −Â_i clip(r_i, 1 ± ε)) with r_i = π_i(a_i|s) / π_old,i(a_i|s); all [B, d]."""
    from stack.algos.on_policy import ppo_clip_objective

    ratio = (new_log_probs - old_log_probs).exp()
    return ppo_clip_objective(ratio, advantages, clip).sum(-1).mean()


def baseline_loss(baseline: MaskedActionBaseline, obs: torch.Tensor, actions: torch.Tensor,
                  returns: torch.Tensor) -> torch.Tensor:
    """½ mean_{b,i} (b_i(s, a_−i) − R)²: every b_i regressed onto the critic's target, as the critic is."""
    return 0.5 * (baseline(obs, actions) - returns[:, None]).pow(2).mean()


__all__ = ["FitBudget", "GradientStats", "MaskedActionBaseline", "action_baseline_gradient", "agreement",
           "baseline_loss", "fit_baseline", "normalize_per_dimension", "per_dim_log_probs", "per_dimension_advantages",
           "per_dimension_clip_loss", "state_baseline_gradient"]
