"""Critics: state value V(s), twin Q(s, a), and HABC's viability/efficiency heads.

Inputs are normalised observations; any trailing dims are flattened, so a critic built with
obs_dim = obs_steps·obs_dim (or act_dim = H·act_dim for chunk-level Q) takes [B, obs_steps, obs_dim] / [B, H, A].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from policies.common import ResidualMLP, make_activation, mlp, register


def _flat(name: str, x: torch.Tensor, dim: int) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] != dim:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; critic expects (B, {dim}) (trailing dims flattened)")
    return flat


@register
class ValueNet(nn.Module):
    """V(s) → [B]. residual=True gives DPPO's critic (residual MLP 256×3, Mish); False a plain MLP (PPO: tanh)."""

    kind = "value"

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (256, 256, 256), activation: str = "mish",
                 residual: bool = False):
        super().__init__()
        self.config = dict(obs_dim=obs_dim, hidden=tuple(hidden), activation=activation, residual=residual)
        self.obs_dim = obs_dim
        self.net = ResidualMLP(obs_dim, hidden, 1, activation) if residual else mlp(obs_dim, hidden, 1, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(_flat("obs", obs, self.obs_dim)).squeeze(-1)


@register
class QNet(nn.Module):
    """Twin Q(s, a) (TD3/SAC clipped double-Q): forward → (q1 [B], q2 [B])."""

    kind = "q"

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "relu"):
        super().__init__()
        self.config = dict(obs_dim=obs_dim, act_dim=act_dim, hidden=tuple(hidden), activation=activation)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.q1 = mlp(obs_dim + act_dim, hidden, 1, activation)
        self.q2 = mlp(obs_dim + act_dim, hidden, 1, activation)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([_flat("obs", obs, self.obs_dim), _flat("action", action, self.act_dim)], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def min_q(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.minimum(*self(obs, action))


@register
class ViabilityEfficiencyCritic(nn.Module):
    """HABC's critic: shared encoder φ, heads z_v (viability logit, p_v = sigmoid(z_v) ≈ P(success | s)) and V_e
    (efficiency ≈ −steps to success). forward → (z_v [B], V_e [B]).

    HABC conditions both heads on the state only (act_dim=0, the default); act_dim > 0 concatenates an action to
    the encoder input for a Q-style variant.
    """

    kind = "viability_efficiency"

    def __init__(self, obs_dim: int, act_dim: int = 0, hidden: Sequence[int] = (256, 256), activation: str = "relu"):
        super().__init__()
        hidden = tuple(hidden)
        self.config = dict(obs_dim=obs_dim, act_dim=act_dim, hidden=hidden, activation=activation)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        layers: list[nn.Module] = []
        last = obs_dim + act_dim
        for width in hidden:
            layers += [nn.Linear(last, width), make_activation(activation)]
            last = width
        self.encoder = nn.Sequential(*layers)
        self.viability_head = nn.Linear(last, 1)
        self.efficiency_head = nn.Linear(last, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = _flat("obs", obs, self.obs_dim)
        if self.act_dim:
            if action is None:
                raise ValueError(f"this critic was built with act_dim={self.act_dim}: pass an action")
            x = torch.cat([x, _flat("action", action, self.act_dim)], dim=-1)
        elif action is not None:
            raise ValueError("this critic is state-only (act_dim=0): do not pass an action")
        h = self.encoder(x)
        return self.viability_head(h).squeeze(-1), self.efficiency_head(h).squeeze(-1)

    def viability(self, obs: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
        """p_v = sigmoid(z_v) → [B]."""
        return torch.sigmoid(self(obs, action)[0])
