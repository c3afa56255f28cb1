"""Gaussian MLP policy (PPO, SAC-style squashing optional).

Observations are already normalised and actions live in [-1, 1]; normalisation belongs to the trainer.

Squashing — what ``act`` returns and what ``log_prob`` measures:
- ``squash="clip"`` (PPO's usual choice): ``act`` returns the **raw** Gaussian sample u = μ + σ·n, which may leave
  [-1, 1]. ``log_prob`` is the plain Gaussian density of that raw sample; the environment (or runtime) clips it to
  [-1, 1]. Store the raw sample in the rollout, not the clipped one, or the ratio is wrong.
- ``squash="tanh"``: ``act`` returns a = tanh(u) ∈ (-1, 1) and ``log_prob`` includes the change of variables,
  log π(a) = Σ_i [log N(u_i; μ_i, σ_i) − log(1 − tanh(u_i)²)]. ``sample`` returns the log-prob computed from u itself,
  which stays exact where tanh(u) rounds to ±1; ``log_prob(obs, a)`` recovers u = atanh(a) (a clamped to ±(1 − 1e-6)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from policies.common import flatten_obs, make_activation, register

_LOG_2PI = math.log(2.0 * math.pi)
_ATANH_LIMIT = 1.0 - 1e-6


def _tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u)), without cancellation for large |u|."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


@register
class GaussianPolicy(nn.Module):
    """π(a|s) = N(μ_θ(s), σ²), σ a learned state-independent vector by default (σ(s) with state_dependent_std)."""

    kind = "gaussian"

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "tanh",
                 log_std_init: float = -0.5, state_dependent_std: bool = False, squash: str = "clip",
                 log_std_bounds: Sequence[float] = (-5.0, 2.0)):
        super().__init__()
        if squash not in ("clip", "tanh"):
            raise ValueError(f"squash={squash!r}; expected 'clip' or 'tanh'")
        self.config = dict(obs_dim=obs_dim, act_dim=act_dim, hidden=tuple(hidden), activation=activation,
                           log_std_init=log_std_init, state_dependent_std=state_dependent_std, squash=squash,
                           log_std_bounds=tuple(log_std_bounds))
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.horizon = self.act_steps = self.obs_steps = 1
        self.squash = squash
        self.state_dependent_std = state_dependent_std
        self.log_std_bounds = tuple(log_std_bounds)

        layers: list[nn.Module] = []
        last = obs_dim
        for width in hidden:
            layers += [nn.Linear(last, width), make_activation(activation)]
            last = width
        self.trunk = nn.Sequential(*layers)
        self.mean = nn.Linear(last, act_dim)
        # CleanRL/rsl_rl init: orthogonal √2 on hidden layers, 0.01 on the mean so the initial policy is ~N(0, σ²).
        for layer in self.trunk:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, math.sqrt(2.0))
                nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(self.mean.weight, 0.01)
        nn.init.zeros_(self.mean.bias)
        if state_dependent_std:
            self.log_std_head = nn.Linear(last, act_dim)
            nn.init.zeros_(self.log_std_head.weight)
            nn.init.constant_(self.log_std_head.bias, log_std_init)
        else:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    # ---- the raw (pre-squash) Gaussian ---------------------------------------------------------------------------
    def _mean_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(flatten_obs(obs, 1, self.obs_dim))
        mean = self.mean(h)
        if self.state_dependent_std:
            log_std = self.log_std_head(h).clamp(*self.log_std_bounds)
        else:
            log_std = self.log_std.expand_as(mean)
        return mean, log_std

    def distribution(self, obs: torch.Tensor) -> Normal:
        """The raw Gaussian N(μ(s), σ) over u, batch shape [B, act_dim] (before any squashing)."""
        mean, log_std = self._mean_log_std(obs)
        return Normal(mean, log_std.exp())

    def _as_flat_action(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 2 or x.shape[1] != self.act_dim:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; "
                             f"policy expects (B, {self.act_dim}) or (B, 1, {self.act_dim})")
        return x

    # ---- acting -------------------------------------------------------------------------------------------------
    def noise_shape(self, batch: int, mode: str | None = None) -> tuple[int, ...]:
        """Shape of ``act``'s noise: (B, 1, act_dim), a standard-normal draw ((B, act_dim) is accepted too)."""
        return (batch, 1, self.act_dim)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor | None = None,
               deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (action [B, 1, act_dim], log_prob [B]); the action is what ``log_prob`` is defined for."""
        mean, log_std = self._mean_log_std(obs)
        if deterministic:
            n = torch.zeros_like(mean)
        elif noise is None:
            n = torch.randn_like(mean)
        else:
            n = self._as_flat_action("noise", noise).to(mean)
        u = mean + log_std.exp() * n
        log_prob = (-0.5 * n.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)
        if self.squash == "tanh":
            log_prob = log_prob - _tanh_log_det(u).sum(-1)
            u = torch.tanh(u)
        return u[:, None, :], log_prob

    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None, deterministic: bool = False) -> torch.Tensor:
        """[B, obs_dim] or [B, 1, obs_dim] → [B, 1, act_dim]. Deterministic: μ (clip) or tanh(μ) (tanh).

        With squash="clip" the result is the raw sample and may lie outside [-1, 1] (the env clips it).
        """
        return self.sample(obs, noise, deterministic)[0]

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log π(action | obs) → [B], action as returned by ``act`` ([B, act_dim] or [B, 1, act_dim])."""
        action = self._as_flat_action("action", action)
        dist = self.distribution(obs)
        if self.squash == "clip":
            return dist.log_prob(action).sum(-1)
        u = torch.atanh(action.clamp(-_ATANH_LIMIT, _ATANH_LIMIT))
        return (dist.log_prob(u) - _tanh_log_det(u)).sum(-1)

    def entropy(self, obs: torch.Tensor) -> torch.Tensor:
        """Entropy of the raw Gaussian, summed over action dims → [B].

        For squash="tanh" this is the pre-squash entropy (the squashed one has no closed form); use −log_prob of
        samples for a Monte-Carlo estimate if that matters.
        """
        return self.distribution(obs).entropy().sum(-1)

    def bc_loss(self, obs: torch.Tensor, actions: torch.Tensor, objective: str = "nll") -> torch.Tensor:
        """Per-sample behaviour-cloning loss → [B].

        ``objective="nll"`` (default): −log π(a|s) (std learned too); ``"mse"``: Σ_i (squash(μ_i) − a_i)² of the mean.
        """
        if objective == "nll":
            return -self.log_prob(obs, actions)
        if objective == "mse":
            actions = self._as_flat_action("actions", actions)
            mean, _ = self._mean_log_std(obs)
            pred = torch.tanh(mean) if self.squash == "tanh" else mean
            return (pred - actions).pow(2).sum(-1)
        raise ValueError(f"objective={objective!r}; expected 'nll' or 'mse'")
