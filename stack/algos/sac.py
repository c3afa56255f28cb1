"""Soft actor-critic (Haarnoja et al. 2018, "SAC: algorithms and applications"), as CleanRL's sac_continuous_action.

* Actor: ``policies.GaussianPolicy(squash="tanh", state_dependent_std=True)``: a = tanh(u), u ~ N(μ(s), σ(s)),
  log π(a|s) with the tanh change of variables; actions live in [−1, 1] and ``stack.rollout.ActionScaler`` maps them
  to the env's bounds (the same convention as PPO, saved with the checkpoint).
* Critic: twin Q (``policies.QNet``) with Polyak-averaged target copies; the TD target uses the smaller target Q
  (clipped double-Q) minus α·log π of the next action, and bootstraps through time-limit truncations (only
  ``terminated`` cuts it; with same-step autoreset the stored next state is ``infos["final_obs"]``).
* Temperature: ``log α`` learned so that the policy's entropy tracks −act_dim (eq. 18 of the paper).
* Actor updates are delayed: every ``policy_frequency`` Q steps, ``policy_frequency`` actor steps (CleanRL/TD3).

``SAC`` owns acting and updating; ``ReplayBuffer`` owns storage; ``run_sac`` is the off-policy loop (collect one
vector step → ``replay_ratio`` gradient steps per transition), reporting through a callback so the caller
(``stack.train``) owns logging and files.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stack.config import SACConfig
from stack.rollout import ActionScaler


class ReplayBuffer:
    """A ring buffer of transitions (s, a, r, s', terminated) in numpy, sampled uniformly."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0):
        self.capacity = int(capacity)
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.actions = np.zeros((self.capacity, act_dim), np.float32)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.terminated = np.zeros(self.capacity, np.float32)
        self.size = 0
        self._next = 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Add a batch of N transitions (one vector-env step)."""
        n = len(rewards)
        idx = (self._next + np.arange(n)) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.terminated[idx] = next_obs, terminated
        self._next = int((self._next + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return {k: torch.from_numpy(getattr(self, k)[idx]).to(device)
                for k in ("obs", "actions", "rewards", "next_obs", "terminated")}


class SAC:
    """Twin-Q SAC with a tanh-squashed Gaussian actor and automatic entropy tuning."""

    def __init__(self, actor: nn.Module, qnet: nn.Module, cfg: SACConfig, device: str | torch.device = "cpu",
                 seed: int = 0):
        if getattr(actor, "squash", None) != "tanh":
            raise ValueError("SAC expects a GaussianPolicy with squash='tanh'")
        self.cfg = cfg
        self.device = torch.device(device)
        self.actor = actor.to(self.device)
        self.qnet = qnet.to(self.device)
        self.qnet_target = copy.deepcopy(qnet).requires_grad_(False)
        self.act_dim = actor.act_dim
        self.target_entropy = -float(self.act_dim)
        self.log_alpha = torch.tensor(math.log(cfg.alpha), device=self.device, requires_grad=cfg.autotune)
        self.q_optimizer = torch.optim.Adam(self.qnet.parameters(), lr=cfg.q_lr, foreach=True)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.policy_lr, foreach=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.policy_lr) if cfg.autotune else None
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.updates = 0

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def _sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(obs.shape[0], self.act_dim, generator=self.generator, device=self.device)
        action, log_prob = self.actor.sample(obs, noise)
        return action[:, 0], log_prob

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Stochastic action in (−1, 1), [N, act_dim]."""
        return self._sample(obs)[0]

    @torch.no_grad()
    def act_deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.act(obs, deterministic=True)[:, 0]

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One Q step (and, every ``policy_frequency`` steps, that many actor/temperature steps). Returns detached
        scalar tensors (no device sync)."""
        cfg = self.cfg
        obs, actions, rewards = batch["obs"], batch["actions"], batch["rewards"]
        with torch.no_grad():
            next_actions, next_log_probs = self._sample(batch["next_obs"])
            q1_next, q2_next = self.qnet_target(batch["next_obs"], next_actions)
            soft_next = torch.minimum(q1_next, q2_next) - self.log_alpha.exp() * next_log_probs
            target = rewards + cfg.gamma * (1.0 - batch["terminated"]) * soft_next
        q1, q2 = self.qnet(obs, actions)
        q_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.q_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_optimizer.step()
        out = {"q_loss": q_loss.detach(), "q_mean": q1.detach().mean()}

        if self.updates % cfg.policy_frequency == 0:
            for _ in range(cfg.policy_frequency):
                new_actions, log_probs = self._sample(obs)
                q_new = self.qnet.min_q(obs, new_actions)
                actor_loss = (self.log_alpha.exp().detach() * log_probs - q_new).mean()
                self.actor_optimizer.zero_grad(set_to_none=True)
                actor_loss.backward()
                self.actor_optimizer.step()
                if self.alpha_optimizer is not None:
                    alpha_loss = (-self.log_alpha.exp() * (log_probs.detach() + self.target_entropy)).mean()
                    self.alpha_optimizer.zero_grad(set_to_none=True)
                    alpha_loss.backward()
                    self.alpha_optimizer.step()
            out["actor_loss"] = actor_loss.detach()
            out["entropy"] = -log_probs.detach().mean()
        with torch.no_grad():
            for p, tp in zip(self.qnet.parameters(), self.qnet_target.parameters()):
                tp.lerp_(p, cfg.tau)
        self.updates += 1
        return out

    def state_dict(self) -> dict:
        return {"qnet_target": self.qnet_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "q_optimizer": self.q_optimizer.state_dict(), "actor_optimizer": self.actor_optimizer.state_dict(),
                "alpha_optimizer": None if self.alpha_optimizer is None else self.alpha_optimizer.state_dict(),
                "generator": self.generator.get_state(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.qnet_target.load_state_dict(state["qnet_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.q_optimizer.load_state_dict(state["q_optimizer"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        if self.alpha_optimizer is not None and state["alpha_optimizer"] is not None:
            self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])


def run_sac(envs, sac: SAC, buffer: ReplayBuffer, total_steps: int, action_scaler: ActionScaler,
            seed: int = 0, log_every: int = 1_000,
            on_log: Callable[[int, dict], None] | None = None) -> dict:
    """The off-policy loop on a same-step-autoreset vector env: uniform random actions for ``learning_starts``
    steps, then the actor's samples; ``replay_ratio`` gradient steps per transition once learning has started.

    ``on_log(env_steps, row)`` receives a metrics row every ``log_every`` env steps (train_return, losses, alpha,
    steps_per_s). Returns the last row.
    """
    cfg = sac.cfg
    n = envs.num_envs
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    ep_return, ep_length = np.zeros(n), np.zeros(n, np.int64)
    returns: list[float] = []
    successes: list[bool] = []
    stats: list[dict[str, torch.Tensor]] = []
    env_steps, owed, next_log = 0, 0.0, log_every
    t_last, steps_last = time.perf_counter(), 0
    row: dict = {}
    while env_steps < total_steps:
        if env_steps < cfg.learning_starts:
            actions = rng.uniform(-1.0, 1.0, size=(n, sac.act_dim)).astype(np.float32)
        else:
            actions = sac.act(torch.from_numpy(obs.astype(np.float32)).to(sac.device)).cpu().numpy()
        next_obs, reward, terminated, truncated, infos = envs.step(action_scaler.to_env(actions))
        end = np.logical_or(terminated, truncated)
        real_next = next_obs.copy()
        if end.any():
            for i in np.flatnonzero(end):
                real_next[i] = infos["final_obs"][i]
        buffer.add(obs, actions, reward, real_next, terminated)
        ep_return += reward
        ep_length += 1
        if end.any():
            returns += ep_return[end].tolist()
            final = infos.get("final_info")
            if isinstance(final, dict) and "success" in final:
                successes += [bool(final["success"][i]) for i in np.flatnonzero(end) if final["_success"][i]]
            ep_return[end] = 0.0
            ep_length[end] = 0
        obs = next_obs
        env_steps += n
        if env_steps >= cfg.learning_starts:
            owed += cfg.replay_ratio * n
            while owed >= 1.0:
                stats.append(sac.update(buffer.sample(cfg.batch_size, sac.device)))
                owed -= 1.0
        if env_steps >= next_log or env_steps >= total_steps:
            now = time.perf_counter()
            row = {"steps_per_s": (env_steps - steps_last) / (now - t_last), "alpha": sac.alpha,
                   "updates": sac.updates}
            if returns:
                row["train_return"] = float(np.mean(returns))
                row["episodes"] = len(returns)
            if successes:
                row["train_success"] = float(np.mean(successes))
            for key in ("q_loss", "q_mean", "actor_loss", "entropy"):
                vals = [s[key] for s in stats if key in s]
                if vals:
                    row[key] = float(torch.stack(vals).mean())
            if on_log is not None:
                on_log(env_steps, row)
            returns, successes, stats = [], [], []
            t_last, steps_last = now, env_steps
            next_log += log_every
    return row
