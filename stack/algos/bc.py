"""Behaviour cloning (DPPO's pretraining stage, Ren et al. 2024 §5 and appendix; irom-princeton/dppo
``agent/pretrain``): only what the method adds — the loss, the optimiser schedule and the EMA of the weights.

* loss: the policy's own ``bc_loss`` (ε-MSE for diffusion, conditional flow matching for flow, −log π or MSE of the
  mean for Gaussian) on (observation window, action chunk) minibatches the runner draws uniformly;
* AdamW, learning rate ``lr`` → ``lr_final`` (cosine or linear, after an optional linear warm-up) over the run;
* an EMA of the weights (decay 0.995, updated every step: DPPO's fix of its too-infrequent EMA; warmed up,
  ``ema_decay_at``) for the generative policies — the EMA copy is what is evaluated and saved.

The data (windows of a LeRobot dataset, normalisation from its statistics, action scaling), the loop, evaluation and
checkpoints are the offline runner's (``stack.runners.offline``).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from stack.config import BCConfig


def build_policy(cfg: BCConfig, kind: str, obs_dim: int, act_dim: int) -> nn.Module:
    """A fresh policy of ``kind`` ('gaussian', 'diffusion', 'flow') with the section's chunking and kwargs."""
    from policies import make_policy

    if kind == "gaussian":
        if cfg.obs_steps != 1:  # horizon and act_steps do not apply: one action per step
            raise ValueError(f"policy 'gaussian' acts on one observation; got bc.obs_steps={cfg.obs_steps}")
        return make_policy("gaussian", obs_dim, act_dim, **cfg.policy_kwargs)
    return make_policy(kind, obs_dim, act_dim, horizon=cfg.horizon, act_steps=cfg.act_steps,
                       obs_steps=cfg.obs_steps, **cfg.policy_kwargs)


def sampling_options(cfg: BCConfig, kind: str) -> dict:
    """How the policy samples in evaluation (saved in meta.json, read by ``stack.controller``)."""
    if kind == "diffusion":
        opts = {"sampler": cfg.eval_sampler}
        if cfg.eval_sampler == "ddim":
            opts.update(ddim_steps=cfg.eval_ddim_steps, eta=0.0)
        return opts
    if kind == "flow":
        return {"zero_noise": cfg.eval_zero_noise, "steps": cfg.eval_flow_steps}
    return {"deterministic": True}


def lr_at(cfg: BCConfig, step: int, total: int) -> float:
    """Learning rate of gradient step ``step`` (0-based) of ``total``: warm-up, then lr → lr_final."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps - 1)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.lr_schedule == "cosine":
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1.0 + math.cos(math.pi * frac))
    if cfg.lr_schedule == "linear":
        return cfg.lr + (cfg.lr_final - cfg.lr) * frac
    return cfg.lr


def ema_decay_at(decay: float, step: int) -> float:
    """min(decay, (1 + step)/(10 + step)): the EMA forgets the random initialisation within its first steps instead
    of carrying it for ~1/(1 − decay) steps (the num_updates warm-up of TensorFlow's ExponentialMovingAverage; DPPO
    copies the weights until its EMA starts, to the same end)."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """θ_ema ← decay·θ_ema + (1 − decay)·θ (parameters; buffers are copied)."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


class BC:
    """The policy (+ EMA copy) and its optimiser; ``train_step(obs, actions)`` is one gradient step."""

    def __init__(self, policy: nn.Module, cfg: BCConfig, total_steps: int, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.kind = getattr(policy, "kind", "gaussian")
        self.policy = policy.to(device).train()
        self.total_steps = int(total_steps)
        self.use_ema = cfg.ema if cfg.ema is not None else self.kind != "gaussian"
        self.ema = copy.deepcopy(self.policy).eval() if self.use_ema else None
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0

    def per_sample_loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The policy's own BC loss of each (obs [B, obs_steps, obs_dim], actions [B, horizon, act_dim]) → [B]."""
        if self.kind == "gaussian":
            return self.policy.bc_loss(obs, actions, objective=self.cfg.gaussian_objective)
        return self.policy.bc_loss(obs, actions)

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean BC loss in policy space; with ``weights`` [B] (HABC's), the mean of the weighted per-sample losses."""
        per_sample = self.per_sample_loss(obs, actions)
        if weights is None:
            return per_sample.mean()
        if weights.shape != per_sample.shape:
            raise ValueError(f"weights have shape {tuple(weights.shape)}; expected {tuple(per_sample.shape)}")
        return (weights.detach() * per_sample).mean()

    @property
    def learning_rate(self) -> float:
        return lr_at(self.cfg, self.step, self.total_steps)

    def train_step(self, obs: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor | None = None) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate
        loss = self.loss(obs, actions, weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            ema_update(self.ema, self.policy, ema_decay_at(self.cfg.ema_decay, self.step))
        self.step += 1
        return float(loss.detach())

    @property
    def eval_policy(self) -> nn.Module:
        """The weights that are evaluated and saved: the EMA copy where EMA is on."""
        return self.ema if self.ema is not None else self.policy

    def policy_modules(self) -> dict[str, nn.Module]:
        return {"policy": self.eval_policy}

    def state_dict(self) -> dict:
        """The raw (non-EMA) weights, the optimiser and the step (the EMA copy is the checkpoint's policy/)."""
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


__all__ = ["BC", "build_policy", "ema_decay_at", "ema_update", "lr_at", "sampling_options"]
