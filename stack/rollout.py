"""On-policy rollout storage ``[T, N, ...]`` and the collector that fills it from a same-step-autoreset vector env.

One row of the storage is one **decision** (the outer step of DPPO's two-layer MDP): the algorithm's ``act`` returns
an action chunk ``[N, H, act_dim]`` and the collector executes its first ``act_steps`` actions one env step at a time
(Gaussian PPO is the case H = act_steps = 1). If an env's episode ends inside the chunk, the rest of that env's chunk
is not executed: the env idles (``envs.step(actions, active=mask)``, see ``sim.pool``) until the others have finished
theirs, and the decision ends there for it (``storage.executed`` counts the env steps each decision really took).

Conventions (stated once, used by every on-policy algorithm of r2s):

* **Actions.** The policy acts in a normalised space. ``ActionScaler`` maps a policy action to the env:
  ``mode="minmax"`` (finite bounds): ``low + (clip(a, −1, 1) + 1) / 2 · (high − low)``, so ``[−1, 1]`` covers the
  bounds exactly (for locomotion, whose bounds are ±1, this is just the clip); ``mode="raw"`` (unbounded spaces):
  the action is passed as is. The policy's **raw** Gaussian sample is what the storage keeps and what its
  log-probability is computed for; only the env receives the clipped, scaled copy (CleanRL's convention: the
  clip is part of the environment, not of the policy's distribution). The scaler's mode and bounds are saved with
  every checkpoint.
* **Observations** are normalised (``stack.normalize.ObsNormalizer``) before the policy sees them; the storage keeps
  the normalised observation the policy acted on. The statistics are updated with every observation the env returns
  (except when frozen: fine-tuning keeps the statistics the pretrained policy was trained with).
* **Rewards**: a decision's reward is the sum of the raw rewards of the env steps it executed, scaled by
  ``stack.normalize.RewardScaler`` (whose discounted return runs per decision, as GAE's γ does; DPPO scales its
  chunk-summed rewards the same way). For act_steps = 1 this is PPO's per-step scaling. With the scaler's
  ``per_rollout`` mode (fine-tuning) the raw rewards of the whole rollout are scaled at its end by one std
  (``RewardScaler.scale_rollout``). Episode returns for logging are the raw, undiscounted sums.
* **Bootstrapping.** With same-step autoreset the observation returned at an episode's end is the next episode's
  first; the collector evaluates the critic on ``infos["final_obs"]`` instead, so ``next_values[t]`` is always the
  value of the state decision t really reached (see ``stack.algos.gae``; γ and λ apply per decision).
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
    """Preallocated tensors ``[T, N, ...]`` of one rollout (T decisions × N envs), plus the algorithm's ``extras``
    (per-decision tensors it asked for: log-probs, stored (τ, ε) pairs, denoising chains, …) and the advantages and
    returns computed from it."""

    FIELDS = ("obs", "actions", "rewards", "values", "terminated", "truncated", "episode_end", "next_values",
              "executed", "advantages", "returns")

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, act_dim: int, device: str | torch.device = "cpu",
                 horizon: int = 1, extras_spec: dict[str, tuple[int, ...]] | None = None):
        self.num_steps, self.num_envs = int(num_steps), int(num_envs)
        self.horizon, self.act_dim = int(horizon), int(act_dim)
        self.device = torch.device(device)
        T, N = self.num_steps, self.num_envs

        def z(*shape, dtype=torch.float32):
            return torch.zeros(T, N, *shape, dtype=dtype, device=self.device)

        self.obs = z(obs_dim)
        """Normalised observation the policy acted on."""
        self.actions = z(horizon, act_dim)
        """The chunk ``act`` returned, in policy space (raw sample: before clipping/scaling to the env's bounds)."""
        self.rewards = z()
        """Scaled sum of the rewards of the env steps the decision executed."""
        self.values = z()
        self.terminated = z(dtype=torch.bool)
        """The episode reached a terminal state during the decision (no bootstrap)."""
        self.truncated = z(dtype=torch.bool)
        """The episode hit its time limit during the decision."""
        self.episode_end = z(dtype=torch.bool)
        """terminated | truncated."""
        self.next_values = z()
        """V of the state the decision reached: V(final_obs) at an episode end, else V(next obs)."""
        self.executed = z(dtype=torch.int64)
        """Env steps the decision executed (act_steps, fewer where the episode ended inside the chunk)."""
        self.advantages = z()
        self.returns = z()
        self.extras: dict[str, torch.Tensor] = {}
        for name, shape in (extras_spec or {}).items():
            self.extras[name] = z(*shape)

    @property
    def batch_size(self) -> int:
        """Decisions in the rollout (T·N)."""
        return self.num_steps * self.num_envs

    def put_extras(self, t: int, extras: dict[str, torch.Tensor]) -> None:
        """Store row ``t`` of each extra (allocated at its first appearance if the spec did not name it)."""
        for name, value in extras.items():
            if name not in self.extras:
                self.extras[name] = torch.zeros(self.num_steps, self.num_envs, *value.shape[1:], dtype=value.dtype,
                                                device=self.device)
            self.extras[name][t] = value

    def flat(self) -> dict[str, torch.Tensor]:
        """Every field and extra reshaped to ``[T·N, ...]`` (views, no copy)."""
        out = {k: getattr(self, k) for k in self.FIELDS}
        out.update(self.extras)
        return {k: v.reshape(self.batch_size, *v.shape[2:]) for k, v in out.items()}


# ---- the collector --------------------------------------------------------------------------------------------------
class Agent(Protocol):
    """What the collector needs of an algorithm: batched, gradient-free inference on normalised observations."""

    act_steps: int

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(chunk [N, H ≥ act_steps, act_dim] in policy space, extras {name: [N, ...]}, values [N])."""

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs) [N]."""


@dataclass
class RolloutStats:
    """What one rollout saw of finished episodes (raw rewards)."""

    steps: int = 0
    """Env steps executed (every env, every decision)."""
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    """Success flag of each finished episode, as the task reported it on the episode's last step."""
    env_s: float = 0.0
    """Seconds spent inside ``envs.step`` (the rest of the rollout is inference, normalisation and storage)."""


class RolloutCollector:
    """Steps a vector env (same-step autoreset) with an ``Agent`` and fills a ``RolloutStorage``.

    ``update_obs_stats=False`` freezes the observation normaliser (fine-tuning a pretrained policy).
    """

    def __init__(self, envs, obs_normalizer: ObsNormalizer, reward_scaler: RewardScaler, action_scaler: ActionScaler,
                 device: str | torch.device = "cpu", update_obs_stats: bool = True):
        self.envs = envs
        self.num_envs = envs.num_envs
        self.obs_normalizer = obs_normalizer
        self.reward_scaler = reward_scaler
        self.action_scaler = action_scaler
        self.device = torch.device(device)
        self.link = DeviceLink(self.device)
        self.update_obs_stats = update_obs_stats
        self._obs: np.ndarray | None = None
        self._obs_dev: torch.Tensor | None = None
        """``_obs`` normalised, on the device (kept from one rollout to the next: no upload at a rollout's start)."""
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, np.int64)

    @property
    def current_obs(self) -> np.ndarray | None:
        """The raw (unnormalised) observations [N, obs_dim] the next decision acts on (None before ``reset``): what
        a baseline controller beside the policy reads."""
        return self._obs

    def reset(self, seed: int | None = None) -> None:
        """Start new episodes in every env (and forget the reward scaler's running returns)."""
        obs, _ = self.envs.reset(seed=seed)
        self._update_stats(obs)
        self._obs = obs
        self._obs_dev = self.link.to_device(self._normalized(obs))
        self.reward_scaler.reset()
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0

    def _update_stats(self, obs: np.ndarray) -> None:
        if self.update_obs_stats:
            self.obs_normalizer.update(obs)

    def _normalized(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.obs_normalizer(obs), np.float32)

    @torch.no_grad()
    def collect(self, agent: Agent, storage: RolloutStorage,
                on_step: Callable[[int, _Decision], None] | None = None) -> RolloutStats:
        """Fill ``storage`` with one rollout. Per decision exactly one device→host transfer (the actions to execute)
        and one host→device transfer: one array holding the next observations, the decision's rewards and flags
        and, where an episode ended, its final observation (whose value bootstraps the decision); ``self.link``
        counts them. ``on_step(t, decision)`` sees each decision's host-side outcome."""
        if self._obs is None:
            raise RuntimeError("RolloutCollector.collect: call reset() first")
        if storage.num_envs != self.num_envs:
            raise ValueError(f"storage has {storage.num_envs} envs; the vector env has {self.num_envs}")
        act_steps = int(getattr(agent, "act_steps", 1))
        stats = RolloutStats()
        n, T = self.num_envs, storage.num_steps
        obs_dim = self._obs.shape[-1]
        obs_t = self._obs_dev
        raw_rewards = np.zeros((T, n))
        ends = np.zeros((T, n), bool)
        env_s, executed = 0.0, 0
        for t in range(T):
            chunk, extras, values = agent.act(obs_t)
            if chunk.dim() != 3 or chunk.shape[1] < act_steps:
                raise ValueError(f"act returned a chunk of shape {tuple(chunk.shape)}; expected (N, H ≥ {act_steps}, "
                                 "act_dim) [horizon, act_dim]")
            storage.obs[t] = obs_t
            storage.actions[t] = chunk
            storage.values[t] = values
            storage.put_extras(t, extras)
            step = self._execute(self.action_scaler.to_env(self.link.to_host(chunk[:, :act_steps])), stats)
            env_s, executed = env_s + step.env_s, executed + int(step.executed.sum())
            raw_rewards[t], ends[t] = step.reward, step.end
            reward = step.reward if self.reward_scaler.per_rollout else self.reward_scaler(step.reward, step.end)
            # rows [:n]: next observations | reward, terminated, truncated, executed; rows [n:] (an episode ended):
            # the next observations with the ended envs' final ones in their place (the other rows' values are
            # masked out at the rollout's end)
            ended = step.final_idx.size > 0
            rows = np.zeros((2 * n if ended else n, obs_dim + len(_STEP_FIELDS)), np.float32)
            rows[:n, :obs_dim] = self._normalized(self._obs)
            rows[:n, obs_dim:] = np.stack([reward, step.terminated, step.truncated, step.executed], axis=1)
            if ended:
                rows[n:, :obs_dim] = rows[:n, :obs_dim]
                rows[n + step.final_idx, :obs_dim] = self._normalized(step.final_obs)
            dev = self.link.to_device(rows)
            obs_t, fields = dev[:n, :obs_dim], dev[:n, obs_dim:]
            storage.rewards[t] = fields[:, 0]
            storage.terminated[t] = fields[:, 1] > 0
            storage.truncated[t] = fields[:, 2] > 0
            storage.executed[t] = fields[:, 3].round().long()
            if ended:
                storage.next_values[t] = agent.value(dev[n:, :obs_dim])
            if on_step is not None:
                on_step(t, step)
        self._obs_dev = obs_t
        if self.reward_scaler.per_rollout and self.reward_scaler.enabled:
            std = self.reward_scaler.rollout_std(raw_rewards, ends)  # a host float: no transfer
            storage.rewards.copy_((storage.rewards / std).clamp(-self.reward_scaler.clip, self.reward_scaler.clip))
        end_t = storage.terminated | storage.truncated
        storage.episode_end.copy_(end_t)
        # Where the episode went on, the state reached is the next row's observation (its value is already known);
        # the last row bootstraps from the observation the rollout stops at.
        following = torch.cat([storage.values[1:], agent.value(obs_t).unsqueeze(0)])
        storage.next_values.copy_(torch.where(end_t, storage.next_values, following))
        stats.steps = executed
        stats.env_s = env_s
        return stats

    def _execute(self, env_chunk: np.ndarray, stats: RolloutStats) -> _Decision:
        """Execute ``env_chunk [N, act_steps, act_dim]`` (env units) one env step at a time; an env whose episode ends
        idles for the rest of the chunk. Leaves the observation the next decision starts from in ``self._obs``."""
        n, steps = env_chunk.shape[:2]
        d = _Decision(n)
        active = np.ones(n, bool)
        final_obs: dict[int, np.ndarray] = {}
        for k in range(steps):
            t_env = time.perf_counter()
            if active.all():
                next_obs, reward, terminated, truncated, infos = self.envs.step(env_chunk[:, k])
            else:
                next_obs, reward, terminated, truncated, infos = self.envs.step(env_chunk[:, k], active=active)
            d.env_s += time.perf_counter() - t_env
            self._update_stats(next_obs if active.all() else next_obs[active])
            terminated = np.asarray(terminated, bool) & active
            truncated = np.asarray(truncated, bool) & active
            end = terminated | truncated
            d.reward += np.where(active, reward, 0.0)
            d.executed += active
            d.terminated |= terminated
            d.truncated |= truncated
            self._ep_return += np.where(active, reward, 0.0)
            self._ep_length += active
            if end.any():
                idx = np.flatnonzero(end)
                for i in idx:
                    final_obs[int(i)] = np.asarray(infos["final_obs"][i])  # also Gymnasium's object arrays
                stats.episode_returns += self._ep_return[idx].tolist()
                stats.episode_lengths += self._ep_length[idx].tolist()
                stats.successes += _final_success(infos, idx)
                self._ep_return[idx] = 0.0
                self._ep_length[idx] = 0
                active &= ~end
            self._obs = next_obs
            if not active.any():
                break
        d.end = d.terminated | d.truncated
        if final_obs:
            d.final_idx = np.array(sorted(final_obs))
            d.final_obs = np.stack([final_obs[i] for i in d.final_idx])
        return d


_STEP_FIELDS = ("reward", "terminated", "truncated", "executed")
"""The columns each decision's upload carries after the observation."""


class DeviceLink:
    """The collector's only way between host (numpy) and the training device; it counts the transfers of each
    direction, so a test can hold the rollout to one each way per decision on any device."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.host_to_device = 0
        self.device_to_host = 0

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        self.host_to_device += 1
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=False)

    def to_host(self, tensor: torch.Tensor) -> np.ndarray:
        self.device_to_host += 1
        return tensor.detach().cpu().numpy()


class _Decision:
    """What executing one chunk in every env gave (numpy [N] arrays)."""

    def __init__(self, n: int):
        self.reward = np.zeros(n)
        self.executed = np.zeros(n, np.int64)
        self.terminated = np.zeros(n, bool)
        self.truncated = np.zeros(n, bool)
        self.end = np.zeros(n, bool)
        self.final_idx = np.zeros(0, np.int64)
        self.final_obs = np.zeros((0, 0))
        self.env_s = 0.0


def _final_success(infos: dict, idx: np.ndarray) -> list[bool]:
    """Success of the episodes that ended at ``idx``, where the task reported one (the r2s pool's and Gymnasium's
    ``final_info`` layouts)."""
    final = infos.get("final_info")
    if not isinstance(final, dict) or "success" not in final:
        return []
    succ = np.asarray(final["success"], bool)
    mask = np.asarray(final.get("_success", np.ones_like(succ)), bool)
    return [bool(succ[i]) for i in idx if mask[i]]
