"""What every on-policy algorithm of r2s shares (PPO, FPO, DPPO): written once, used by each.

* ``ppo_clip_objective`` / ``ppo_clip_loss``: the clipped surrogate (Schulman et al. 2017, eq. 7) as a loss, which
  FPO's ratio and DPPO's per-denoising-step ratio plug into;
* ``value_loss``: ½(V − R)², optionally clipped around the rollout's value;
* ``normalize_advantages``, ``explained_variance``, ``masked_mean`` (a loss over some rows: agency transfer's learner
  steps);
* ``OnPolicyAlgorithm``: GAE over the rollout's decisions (``compute_returns``), the learning-rate schedule with a
  fixed ratio per optimiser parameter group (an actor and a critic rate move together), epoch minibatches, and the
  checkpointable state (optimisers and generators by name).

The runner (``stack.runners.on_policy``) drives an algorithm through::

    act_steps; extras_spec(); act(obs); value(obs); compute_returns(storage); update(storage) -> metrics;
    policy_modules(); eval_sampling(); state_dict(); load_state_dict(); learning_rate; set_learning_rate(lr)

Evaluation is not the algorithm's: the runner drives ``policy_modules()["policy"]`` through a
``stack.controller.PolicyController`` sampling as ``eval_sampling()`` says.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from stack import distributed
from stack.algos.gae import compute_gae
from stack.config import OnPolicyConfig


# ---- losses (called directly by the tests) --------------------------------------------------------------------------
def ppo_clip_objective(ratio: torch.Tensor, advantages: torch.Tensor, clip: float | torch.Tensor) -> torch.Tensor:
    """Elementwise ``max(−Â·r, −Â·clip(r, 1−ε, 1+ε))`` (ε a number or a tensor broadcast against ``ratio``).

    Its gradient w.r.t. r is zero where clipping makes the objective pessimistic (r > 1+ε with Â > 0, r < 1−ε with
    Â < 0) and −Â elsewhere."""
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return torch.max(unclipped, clipped)


def ppo_clip_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip: float | torch.Tensor) -> torch.Tensor:
    """The clipped surrogate as a loss to minimise: the mean of ``ppo_clip_objective``."""
    return ppo_clip_objective(ratio, advantages, clip).mean()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip: float | None) -> torch.Tensor:
    """½·mean((V − R)²), or with ``clip``: ½·mean(max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²))."""
    unclipped = (values - returns).pow(2)
    if clip is None:
        return 0.5 * unclipped.mean()
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.max(unclipped, (v_clipped - returns).pow(2)).mean()


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``values`` over the rows where ``mask`` (bool) holds, 0 where none does; the plain mean when
    ``mask`` is None. Agency transfer masks the baseline's steps out of the policy loss this way."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def normalize_advantages(advantages: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(Â − mean) / (std + 1e-8) over the minibatch, or with ``mask`` over its masked rows only (the statistics of the
    steps the policy loss sees; the other rows are left unnormalised, as the loss ignores them). With several learner
    processes, the statistics of every rank's minibatch together (``stack.distributed.mean_std``)."""
    if distributed.world_size() > 1:
        mean, std = distributed.mean_std(advantages, mask)
        normalized = (advantages - mean) / (std + 1e-8)
        return normalized if mask is None else torch.where(mask, normalized, advantages)
    if mask is None:
        return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    weights = mask.to(advantages.dtype)
    count = weights.sum()
    mean = (advantages * weights).sum() / count.clamp(min=1.0)
    var = ((advantages - mean).pow(2) * weights).sum() / (count - 1.0).clamp(min=1.0)  # unbiased, as Tensor.std
    return torch.where(mask, (advantages - mean) / (var.sqrt() + 1e-8), advantages)


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 − Var[R − V] / Var[R] (NaN when the returns do not vary): how much of the return the critic predicts (over
    every rank's batch with several learner processes)."""
    if distributed.world_size() > 1:
        var_ret = distributed.mean_std(returns)[1] ** 2
        return float(1.0 - distributed.mean_std(returns - values)[1] ** 2 / var_ret) if var_ret > 0 else math.nan
    var_ret = returns.var()
    return float(1.0 - (returns - values).var() / var_ret) if var_ret > 0 else math.nan


# ---- the shared base ------------------------------------------------------------------------------------------------
class OnPolicyAlgorithm:
    """Base of PPO, FPO and DPPO: GAE, the learning-rate schedule, epoch minibatches, named checkpoint state.

    A subclass calls ``_setup(optimizers, generators)`` once its optimisers exist: every parameter group keeps its
    ratio to the first group's rate (``set_learning_rate(lr)`` gives the first group ``lr`` and each other group
    ``lr · ratio``)."""

    act_steps: int = 1
    cfg: OnPolicyConfig

    def _setup(self, optimizers: dict[str, torch.optim.Optimizer], generators: dict[str, torch.Generator]) -> None:
        self.optimizers = optimizers
        self.generators = generators
        groups = [g for opt in optimizers.values() for g in opt.param_groups]
        # Each group anneals in proportion to the first: its ratio to the first group's rate. A first rate of 0 (a
        # fine-tune that must not move the actor) leaves the other groups at their own rates, annealed the same way.
        base = groups[0]["lr"]
        self._lr_groups = [(g, g["lr"] / base if base else g["lr"]) for g in groups]
        self._base_lr_zero = base == 0

    # ---- learning-rate schedule -------------------------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        return float(self._lr_groups[0][0]["lr"])

    def set_learning_rate(self, lr: float, fraction: float | None = None) -> None:
        """The first group's rate ← ``lr``, the others keep their ratio to it; where the first rate was 0, the others
        get ``fraction`` (of the run left, the runner's anneal factor) × their own initial rate."""
        for i, (group, ratio) in enumerate(self._lr_groups):
            if self._base_lr_zero:
                group["lr"] = 0.0 if i == 0 else ratio * (1.0 if fraction is None else fraction)
            else:
                group["lr"] = lr if ratio == 1.0 else lr * ratio

    # ---- returns ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def compute_returns(self, storage) -> None:
        """Fill ``storage.advantages`` and ``storage.returns``: truncation-aware GAE over decisions (``next_values`` is
        V of the state each decision really reached; γ and λ apply per decision)."""
        adv, ret = compute_gae(self.gae_rewards(storage), storage.values, storage.next_values, storage.terminated,
                               storage.episode_end, self.cfg.gamma, self.cfg.gae_lambda)
        storage.advantages.copy_(adv)
        storage.returns.copy_(ret)

    def gae_rewards(self, storage) -> torch.Tensor:
        """The per-decision rewards GAE discounts: the storage's (scaled task rewards); a subclass may add terms."""
        return storage.rewards

    # ---- minibatches ------------------------------------------------------------------------------------------------
    def epoch_minibatches(self, fields: dict[str, torch.Tensor], num_minibatches: int) -> Iterator[dict]:
        """One epoch: a permutation from the shuffle generator, one gather per field, then ``num_minibatches``
        contiguous slices (views) of ``batch // num_minibatches`` rows (the remainder is skipped)."""
        batch = next(iter(fields.values())).shape[0]
        size = batch // num_minibatches
        if size < 1:
            raise ValueError(f"num_minibatches={num_minibatches} exceeds the batch of {batch} samples")
        device = next(iter(fields.values())).device
        perm = torch.randperm(batch, generator=self.generators["shuffle_generator"]).to(device)
        shuffled = {k: v[perm] for k, v in fields.items()}
        for start in range(0, size * num_minibatches, size):
            yield {k: v[start:start + size] for k, v in shuffled.items()}

    # ---- the runner's interface -------------------------------------------------------------------------------------
    def eval_sampling(self) -> dict:
        """How a loaded checkpoint samples at evaluation (``meta.json`` → ``stack.controller.PolicyController``)."""
        return {}

    def state_dict(self) -> dict:
        """Optimiser and generator states by name (the networks are saved by the runner: ``policy_modules``)."""
        return {**{k: opt.state_dict() for k, opt in self.optimizers.items()},
                **{k: g.get_state() for k, g in self.generators.items()}}

    def load_state_dict(self, state: dict) -> None:
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state[k])
        for k, g in self.generators.items():
            g.set_state(state[k])


__all__ = ["OnPolicyAlgorithm", "explained_variance", "masked_mean", "normalize_advantages", "ppo_clip_loss",
           "ppo_clip_objective", "value_loss"]
