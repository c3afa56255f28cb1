"""r2s policies: torch modules only (no training loops, nothing else of ours imported).

All policies share one interface, in normalised spaces (obs already normalised, actions in [-1, 1]):
``act(obs [B, obs_steps, obs_dim], noise=None, ...) -> [B, horizon, act_dim]``, ``bc_loss(obs, actions) -> [B]``,
``noise_shape(batch, mode)``, and the attributes ``obs_dim act_dim horizon act_steps obs_steps kind``.
"""

from __future__ import annotations

from torch import nn

from policies.common import CheckpointError, check_state_dict, load_policy, save_policy
from policies.critics import QNet, ValueNet, ViabilityEfficiencyCritic
from policies.diffusion import DiffusionPolicy, FinetunedDiffusionPolicy, cosine_beta_schedule
from policies.flow import FlowPolicy
from policies.gaussian import GaussianPolicy

POLICY_KINDS: dict[str, type[nn.Module]] = {
    "gaussian": GaussianPolicy,
    "diffusion": DiffusionPolicy,
    "flow": FlowPolicy,
}


def make_policy(kind: str, obs_dim: int, act_dim: int, **kwargs) -> nn.Module:
    """Build a policy by family name; ``kwargs`` go to its constructor."""
    try:
        cls = POLICY_KINDS[kind]
    except KeyError:
        raise ValueError(f"policy kind {kind!r} is unknown; choose one of {sorted(POLICY_KINDS)}") from None
    return cls(obs_dim, act_dim, **kwargs)


__all__ = [
    "CheckpointError", "DiffusionPolicy", "FinetunedDiffusionPolicy", "FlowPolicy", "GaussianPolicy", "POLICY_KINDS",
    "QNet", "ValueNet", "ViabilityEfficiencyCritic", "check_state_dict", "cosine_beta_schedule", "load_policy",
    "make_policy", "save_policy",
]
