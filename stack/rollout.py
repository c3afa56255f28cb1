"""On-policy rollout storage ``[T, N, ...]`` and the collector that fills it from a same-step-autoreset vector env.

Conventions (stated once, used by every on-policy algorithm of r2s):

* **Actions.** The policy acts in a normalised space. ``ActionScaler`` maps a policy action to the env:
  ``mode="minmax"`` (finite bounds): ``low + (clip(a, −1, 1) + 1) / 2 · (high − low)``, so ``[−1, 1]`` covers the
  bounds exactly (for locomotion, whose bounds are ±1, this is just the clip); ``mode="raw"`` (unbounded spaces):
  the action is passed as is. The policy's **raw** Gaussian sample is what the storage keeps and what its
  log-probability is computed for; only the env receives the clipped, scaled copy (CleanRL's convention: the
  clip is part of the environment, not of the policy's distribution). The scaler's mode and bounds are saved with
  every checkpoint.
* **Observations** are normalised (``stack.normalize.ObsNormalizer``) before the policy sees them; the storage keeps
  the normalised observation the policy acted on. The statistics are updated with every observation the env returns.
* **Rewards** are scaled (``stack.normalize.RewardScaler``) before storage; episode returns for logging are the raw,
  undiscounted sums.
* **Bootstrapping.** With same-step autoreset the observation returned at an episode's end is the next episode's
  first; the collector evaluates the critic on ``infos["final_obs"]`` instead, so ``next_values[t]`` is always the
  value of the state step t really reached (see ``stack.algos.gae``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from stack.normalize import ObsNormalizer, RewardScaler


# ---- actions --------------------------------------------------------------------------------------------------------
class ActionScaler:
    """Policy space ``[−1, 1]^d`` → env action bounds (``"minmax"``), or the identity (``"raw"``)."""

    def __init__(self, low, high, mode: str = "auto"):
        self.low = np.asarray(low, np.float64).reshape(-1)
        self.high = np.asarray(high, np.float64).reshape(-1)
        finite = bool(np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high)))
        if mode == "auto":
            mode = "minmax" if finite else "raw"
        if mode not in ("minmax", "raw"):
            raise ValueError(f"action scaling mode: expected 'minmax', 'raw' or 'auto', got {mode!r}")
        if mode == "minmax" and not finite:
            raise ValueError(f"action scaling 'minmax' needs finite bounds; got low={self.low}, high={self.high}")
        self.mode = mode
        if mode == "minmax":
            self._center = (self.high + self.low) / 2.0
            self._half = (self.high - self.low) / 2.0

    @classmethod
    def for_space(cls, space, mode: str = "auto") -> ActionScaler:
        return cls(space.low, space.high, mode)

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """Policy action(s) ``[..., d]`` → env action(s) (float64)."""
        a = np.asarray(action, np.float64)
        if self.mode == "raw":
            return a
        return self._center + np.clip(a, -1.0, 1.0) * self._half

    def state_dict(self) -> dict:
        return {"mode": self.mode, "low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict) -> ActionScaler:
        return cls(state["low"], state["high"], state["mode"])


# ---- storage --------------------------------------------------------------------------------------------------------
class RolloutStorage:
    """Preallocated tensors ``[T, N, ...]`` of one rollout, plus the advantages/returns computed from it."""

    FIELDS = ("obs", "actions", "log_probs", "rewards", "values", "terminated", "episode_end", "next_values",
              "advantages", "returns")

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, act_dim: int, device: str | torch.device = "cpu"):
        self.num_steps, self.num_envs = int(num_steps), int(num_envs)
        self.device = torch.device(device)
        T, N = self.num_steps, self.num_envs

        def z(*shape, dtype=torch.float32):
            return torch.zeros(T, N, *shape, dtype=dtype, device=self.device)

        self.obs = z(obs_dim)
        """Normalised observation the policy acted on."""
        self.actions = z(act_dim)
        """Raw policy sample (before clipping/scaling to the env's bounds)."""
        self.log_probs = z()
        self.rewards = z()
        """Scaled reward."""
        self.values = z()
        self.terminated = z(dtype=torch.bool)
        self.episode_end = z(dtype=torch.bool)
        self.next_values = z()
        """V of the state each step reached: V(final_obs) at an episode end, else V(next obs)."""
        self.advantages = z()
        self.returns = z()

    @property
    def batch_size(self) -> int:
        return self.num_steps * self.num_envs

    def flat(self) -> dict[str, torch.Tensor]:
        """Every field reshaped to ``[T·N, ...]`` (views, no copy)."""
        return {k: getattr(self, k).reshape(self.batch_size, *getattr(self, k).shape[2:]) for k in self.FIELDS}


# ---- the collector --------------------------------------------------------------------------------------------------
class Agent(Protocol):
    """What the collector needs of an algorithm: batched, gradient-free inference on normalised observations."""

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(raw actions [N, act_dim], log-probs [N], values [N])."""

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs) [N]."""


@dataclass
class RolloutStats:
    """What one rollout saw of finished episodes (raw rewards)."""

    steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    """Success flag of each finished episode, as the task reported it on the episode's last step."""
    env_s: float = 0.0
    """Seconds spent inside ``envs.step`` (the rest of the rollout is inference, normalisation and storage)."""


class RolloutCollector:
    """Steps a vector env (same-step autoreset) with an ``Agent`` and fills a ``RolloutStorage``."""

    def __init__(self, envs, obs_normalizer: ObsNormalizer, reward_scaler: RewardScaler, action_scaler: ActionScaler,
                 device: str | torch.device = "cpu"):
        self.envs = envs
        self.num_envs = envs.num_envs
        self.obs_normalizer = obs_normalizer
        self.reward_scaler = reward_scaler
        self.action_scaler = action_scaler
        self.device = torch.device(device)
        self._obs: np.ndarray | None = None
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, np.int64)

    def reset(self, seed: int | None = None) -> None:
        """Start new episodes in every env (and forget the reward scaler's running returns)."""
        obs, _ = self.envs.reset(seed=seed)
        self.obs_normalizer.update(obs)
        self._obs = obs
        self.reward_scaler.reset()
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0

    def _to_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.obs_normalizer(obs)).to(self.device)

    @torch.no_grad()
    def collect(self, agent: Agent, storage: RolloutStorage,
                on_step: Callable[[int], None] | None = None) -> RolloutStats:
        if self._obs is None:
            raise RuntimeError("RolloutCollector.collect: call reset() first")
        if storage.num_envs != self.num_envs:
            raise ValueError(f"storage has {storage.num_envs} envs; the vector env has {self.num_envs}")
        stats = RolloutStats()
        envs, scaler, norm = self.envs, self.action_scaler, self.obs_normalizer
        obs_t = self._to_tensor(self._obs)
        end_np = np.zeros((storage.num_steps, self.num_envs), bool)
        clock, env_s = time.perf_counter, 0.0
        for t in range(storage.num_steps):
            actions, log_probs, values = agent.act(obs_t)
            storage.obs[t] = obs_t
            storage.actions[t] = actions
            storage.log_probs[t] = log_probs
            storage.values[t] = values
            env_actions = scaler.to_env(actions.cpu().numpy())
            t_env = clock()
            next_obs, reward, terminated, truncated, infos = envs.step(env_actions)
            env_s += clock() - t_env
            end = np.logical_or(terminated, truncated)
            end_np[t] = end
            norm.update(next_obs)
            storage.rewards[t] = torch.from_numpy(self.reward_scaler(reward, end))
            storage.terminated[t] = torch.from_numpy(np.asarray(terminated, bool))
            self._ep_return += reward
            self._ep_length += 1
            if end.any():
                idx = np.flatnonzero(end)
                final_obs = np.stack([infos["final_obs"][i] for i in idx])  # also Gymnasium's object arrays
                storage.next_values[t, torch.from_numpy(idx)] = agent.value(self._to_tensor(final_obs))
                stats.episode_returns += self._ep_return[idx].tolist()
                stats.episode_lengths += self._ep_length[idx].tolist()
                stats.successes += _final_success(infos, idx)
                self._ep_return[idx] = 0.0
                self._ep_length[idx] = 0
            obs_t = self._to_tensor(next_obs)
            self._obs = next_obs
            if on_step is not None:
                on_step(t)
        end_t = torch.from_numpy(end_np).to(storage.device)
        storage.episode_end.copy_(end_t)
        # Where the episode went on, the state reached is the next row's observation (its value is already known);
        # the last row bootstraps from the observation the rollout stops at.
        following = torch.cat([storage.values[1:], agent.value(obs_t).unsqueeze(0)])
        storage.next_values.copy_(torch.where(end_t, storage.next_values, following))
        stats.steps = storage.batch_size
        stats.env_s = env_s
        return stats


def _final_success(infos: dict, idx: np.ndarray) -> list[bool]:
    """Success of the episodes that ended at ``idx``, where the task reported one (the r2s pool's and Gymnasium's
    ``final_info`` layouts)."""
    final = infos.get("final_info")
    if not isinstance(final, dict) or "success" not in final:
        return []
    succ = np.asarray(final["success"], bool)
    mask = np.asarray(final.get("_success", np.ones_like(succ)), bool)
    return [bool(succ[i]) for i in idx if mask[i]]
