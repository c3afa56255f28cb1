"""Observation normalisation and reward scaling as data: numpy statistics saved with every checkpoint.

The statistics live outside the policy network (STYLE: "normalisation as data"), so the exporter can bake exactly these
numbers into the ONNX graph and a reader can see them in ``checkpoints/latest/normalization.json``.

* ``RunningMeanStd``: Chan et al.'s parallel mean/variance update over batches (what Gymnasium's
  ``NormalizeObservation`` and CleanRL use), float64.
* ``ObsNormalizer``: ``clip((obs - mean) / sqrt(var + eps), ±clip)``.
* ``RewardScaler``: Gymnasium's ``NormalizeReward`` semantics as CleanRL uses them — a per-env discounted return
  ``G ← γ·G + r`` feeds a ``RunningMeanStd``; the reward is divided by its std (not centred) and clipped; ``G`` is
  zeroed at every episode end (termination or truncation), so returns of two episodes never mix.
  ``mode="per_step"`` (CleanRL's convention, PPO from scratch) updates the std at every step and scales that step's
  reward with it; ``mode="per_rollout"`` (DPPO's ``RunningRewardScaler`` usage, irom-lab/dppo
  ``agent/finetune/train_ppo_diffusion_agent.py``) takes a whole rollout's rewards, updates the std once from all its
  discounted returns, then scales the whole rollout with that one std (``scale_rollout``) — per step, the first
  decisions of a run are divided by a std estimated from a handful of returns (~24× smaller than at the rollout's end
  on Hopper), which weights them far above the rest.
"""

from __future__ import annotations

import numpy as np


class RunningMeanStd:
    """Running mean and variance of a stream of batches ``[B, *shape]``."""

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        # A tiny pseudo-count (as Gymnasium does) so the first update is not divided by zero.
        self.count = float(epsilon)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        batch_mean = x.mean(axis=0)
        batch_var = x.var(axis=0)
        n = x.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * (n / total)
        m2 = self.var * self.count + batch_var * n + delta**2 * (self.count * n / total)
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean = np.asarray(state["mean"], np.float64).reshape(self.mean.shape)
        self.var = np.asarray(state["var"], np.float64).reshape(self.var.shape)
        self.count = float(state["count"])


class ObsNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with running statistics; ``enabled=False``: identity."""

    def __init__(self, obs_dim: int, clip: float = 10.0, epsilon: float = 1e-8, enabled: bool = True):
        self.rms = RunningMeanStd((obs_dim,))
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.enabled = bool(enabled)
        self._refresh()

    def refresh(self) -> None:
        """Recompute the cached scale after the statistics changed outside ``update`` (a merge across ranks)."""
        self._refresh()

    def _refresh(self) -> None:
        # Cached float32 scale/shift: the collector calls this every env step.
        self._mean = self.rms.mean.astype(np.float32)
        self._inv_std = (1.0 / np.sqrt(self.rms.var + self.epsilon)).astype(np.float32)

    def update(self, obs: np.ndarray) -> None:
        if self.enabled:
            self.rms.update(obs)
            self._refresh()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Normalise (float32) without updating the statistics."""
        obs = np.asarray(obs, np.float32)
        if not self.enabled:
            return obs
        return np.clip((obs - self._mean) * self._inv_std, -self.clip, self.clip)

    @property
    def mean(self) -> np.ndarray:
        return self.rms.mean

    @property
    def std(self) -> np.ndarray:
        """The divisor actually used: ``sqrt(var + eps)``."""
        return np.sqrt(self.rms.var + self.epsilon)

    def state_dict(self) -> dict:
        return {"enabled": self.enabled, "clip": self.clip, "epsilon": self.epsilon, **self.rms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.enabled = bool(state["enabled"])
        self.clip = float(state["clip"])
        self.epsilon = float(state["epsilon"])
        self.rms.load_state_dict(state)
        self._refresh()


REWARD_SCALING_MODES = ("per_step", "per_rollout")


class RewardScaler:
    """Divide rewards by the running std of the per-env discounted return, then clip; ``enabled=False``: identity.
    ``mode``: "per_step" (``__call__`` each step) or "per_rollout" (``scale_rollout`` once per rollout)."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8, enabled: bool = True,
                 mode: str = "per_step"):
        if mode not in REWARD_SCALING_MODES:
            raise ValueError(f"reward scaling mode {mode!r}; expected one of {REWARD_SCALING_MODES}")
        self.mode = mode
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, np.float64)
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.enabled = bool(enabled)

    def __call__(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """Scale one step's rewards ``[N]``; ``episode_end`` [N] marks envs whose episode ended on this step."""
        rewards = np.asarray(rewards, np.float64)
        if not self.enabled:
            return rewards.astype(np.float32)
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns)
        scaled = np.clip(rewards / np.sqrt(self.rms.var + self.epsilon), -self.clip, self.clip)
        self.returns[np.asarray(episode_end, bool)] = 0.0
        return scaled.astype(np.float32)

    @property
    def per_rollout(self) -> bool:
        return self.mode == "per_rollout"

    def scale_rollout(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """Scale a whole rollout ``[T, N]`` (``episode_end[t]``: the episode ended at row t): the discounted returns of
        every row (continuing the running ones) update the statistics once, then every reward is divided by the one
        resulting std and clipped."""
        rewards = np.asarray(rewards, np.float64)
        if not self.enabled:
            return rewards.astype(np.float32)
        return np.clip(rewards / self.rollout_std(rewards, episode_end), -self.clip, self.clip).astype(np.float32)

    def rollout_std(self, rewards: np.ndarray, episode_end: np.ndarray) -> float:
        """``scale_rollout``'s divisor: update the statistics with the rollout's discounted returns, return the std
        (the rollout collector divides the rewards on the training device by it)."""
        rewards = np.asarray(rewards, np.float64)
        end = np.asarray(episode_end, bool)
        returns = np.empty_like(rewards)
        for t in range(rewards.shape[0]):
            self.returns = self.returns * self.gamma + rewards[t]
            returns[t] = self.returns
            self.returns[end[t]] = 0.0
        self.rms.update(returns.reshape(-1))
        return float(np.sqrt(self.rms.var + self.epsilon))

    def reset(self) -> None:
        """Forget the running returns (all envs start new episodes); the statistics stay."""
        self.returns[:] = 0.0

    def state_dict(self) -> dict:
        return {"enabled": self.enabled, "mode": self.mode, "gamma": self.gamma, "clip": self.clip,
                "epsilon": self.epsilon, "returns": self.returns.tolist(), **self.rms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.enabled = bool(state["enabled"])
        self.mode = state.get("mode", "per_step")  # checkpoints before the option scaled per step
        self.gamma = float(state["gamma"])
        self.clip = float(state["clip"])
        self.epsilon = float(state["epsilon"])
        returns = np.asarray(state["returns"], np.float64)
        # A run resumed with another number of envs starts its running returns afresh (they reset per episode anyway).
        self.returns = returns if returns.shape == self.returns.shape else np.zeros_like(self.returns)
        self.rms.load_state_dict(state)
