"""Generalised advantage estimation (Schulman et al. 2016), truncation-aware.

For a rollout ``[T, N]`` collected from a vector env with same-step autoreset::

    δ_t = r_t + γ · (1 − terminated_t) · V(s'_t) − V(s_t)
    A_t = δ_t + γλ · (1 − episode_end_t) · A_{t+1}          (A_T = 0)
    R_t = A_t + V(s_t)                                        (the critic's regression target)

``s'_t`` is the state the step *actually* reached: the next observation when the episode goes on, and the episode's
last observation (``infos["final_obs"]``) when it ended — never the first observation of the next episode, which the
env already returned in its place. Hence the caller passes ``next_values`` with ``V(final_obs)`` substituted where an
episode ended:

* termination (the MDP ended: the hopper fell): no bootstrap, ``(1 − terminated) = 0``;
* truncation (a time limit, or the end of the rollout for the last row): bootstrap with ``V(s'_t)``;
* either way the trace is cut at the episode's end (``episode_end = terminated | truncated``), so an advantage never
  reaches across into the next episode.

CleanRL's script bootstraps 0 at truncations as well (it folds them into ``done``); here a time limit keeps its value.
"""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_end: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``[T, N]``.

    rewards: ``r_t``. values: ``V(s_t)``. next_values: ``V(s'_t)`` — ``V(final_obs)`` where the episode ended on step
    t, ``V(next obs)`` otherwise (so row T−1 holds the bootstrap of the rollout's last state). terminated: the
    episode ended in a terminal state at step t. episode_end: the episode ended at step t for any reason
    (terminated or truncated); ``terminated`` implies ``episode_end``.
    """
    shapes = {k: tuple(v.shape) for k, v in (("rewards", rewards), ("values", values), ("next_values", next_values),
                                             ("terminated", terminated), ("episode_end", episode_end))}
    if len(set(shapes.values())) != 1 or rewards.dim() != 2:
        raise ValueError(f"compute_gae: every input must be [T, N] and share one shape; got {shapes}")
    not_terminal = 1.0 - terminated.to(values.dtype)
    not_end = 1.0 - episode_end.to(values.dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    carry = gamma * lam * not_end
    advantages = torch.empty_like(values)
    last = torch.zeros_like(values[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        last = deltas[t] + carry[t] * last
        advantages[t] = last
    return advantages, advantages + values
