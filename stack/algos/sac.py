"""Soft actor-critic (Haarnoja et al. 2018, "SAC: algorithms and applications"), as CleanRL's sac_continuous_action.

* Actor: ``policies.GaussianPolicy(squash="tanh", state_dependent_std=True)``: a = tanh(u), u ~ N(μ(s), σ(s)),
  log π(a|s) with the tanh change of variables; actions live in [−1, 1] and ``stack.rollout.ActionScaler`` maps them
  to the env's bounds (the same convention as PPO, saved with the checkpoint).
* Critic: twin Q (``policies.QNet``) with Polyak-averaged target copies; the TD target uses the smaller target Q
  (clipped double-Q) minus α·log π of the next action, and bootstraps through time-limit truncations (only
  ``terminated`` cuts it; with same-step autoreset the stored next state is ``infos["final_obs"]``).
* Temperature: ``log α`` learned so that the policy's entropy tracks −act_dim (eq. 18 of the paper).
* Actor updates are delayed: every ``policy_frequency`` Q steps, ``policy_frequency`` actor steps (CleanRL/TD3).
* ``actor_update="wpo"`` replaces the reparameterised actor loss by Wasserstein policy optimisation's update
  (Pfau et al. 2025) with the entropy term at the same temperature α (``stack.algos.wpo``); critic and α unchanged.

``SAC`` owns acting and updating (and nothing else); ``stack.replay.ReplayBuffer`` owns storage; the off-policy loop
(collect one vector step → ``replay_ratio`` gradient steps per transition) is ``stack.runners.off_policy``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from stack.algos.wpo import soft_transport_velocity, wpo_surrogate
from stack.config import SACConfig


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

    def policy_modules(self) -> dict[str, nn.Module]:
        """The networks the runner checkpoints (the target copies travel in ``state_dict``)."""
        return {"policy": self.actor, "critic": self.qnet}

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

    def _actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actor loss, log π of the sampled actions [B]). SAC: E[α log π(a|s) − Q(s, a)] through the reparameterised
        sample. WPO: the surrogate whose gradient is the Fisher-preconditioned Wasserstein step (stack.algos.wpo)."""
        if self.cfg.actor_update == "wpo":
            return self._wpo_actor_loss(obs)
        new_actions, log_probs = self._sample(obs)
        q_new = self.qnet.min_q(obs, new_actions)
        return (self.log_alpha.exp().detach() * log_probs - q_new).mean(), log_probs

    def _wpo_actor_loss(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pfau et al.'s update in the pre-squash space u: the samples u are held fixed (no reparameterisation), the
        velocity ∇_u Q(s, tanh u) − α ∇_u log π_a(tanh u|s) comes from the twin Q's minimum by autograd on u alone."""
        dist = self.actor.distribution(obs)
        noise = torch.randn(obs.shape[0], self.act_dim, generator=self.generator, device=self.device)
        u = (dist.loc + dist.scale * noise).detach().requires_grad_(True)
        action = torch.tanh(u)
        (grad_q_u,) = torch.autograd.grad(self.qnet.min_q(obs, action).sum(), u)
        velocity = soft_transport_velocity(grad_q_u, noise, dist.scale.detach(), self.log_alpha.exp().detach(),
                                           squashed_action=action.detach())
        loss = wpo_surrogate(dist.loc, dist.scale.log(), u, velocity)
        with torch.no_grad():  # the same draw's exact log π (for the temperature and the logged entropy)
            _, log_probs = self.actor.sample(obs, noise)
        return loss, log_probs

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
                actor_loss, log_probs = self._actor_loss(obs)
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


def make_algo(cfg, obs_dim: int, act_dim: int, device: str | torch.device = "cpu") -> SAC:
    """SAC for the off-policy runner (``cfg`` a TrainConfig: its ``sac`` section and ``seed``): CleanRL's networks, a
    tanh-squashed Gaussian actor with a state-dependent std and a twin Q net, ReLU MLPs."""
    from policies import GaussianPolicy, QNet

    s = cfg.sac
    actor = GaussianPolicy(obs_dim, act_dim, hidden=s.hidden, activation="relu", log_std_init=0.0,
                           state_dependent_std=True, squash="tanh")
    qnet = QNet(obs_dim, act_dim, hidden=s.hidden, activation="relu")
    return SAC(actor, qnet, s, device, seed=cfg.seed)
