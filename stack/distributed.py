"""Several learner processes (``r2s train --nproc N``, or an outer ``torchrun``): the few collectives r2s needs.

Every function is a no-op (or the local value) in a single process, so an algorithm calls them unconditionally and a
one-process run computes exactly what it did before this module existed.

**Why an explicit gradient all-reduce and not ``DistributedDataParallel``.** The on-policy algorithms update several
modules (actor, critic, PPO's action-dependent baseline, SAC-style temperature) through methods other than
``forward`` (``policy.distribution(obs)``, ``policy.sample``), with one optimiser over parameter lists. DDP only
reduces the gradients of a module called through its wrapper's ``forward``, so it would need the algorithms rebuilt
around one wrapper module; and the update needs more than gradients to agree anyway (advantage normalisation, the
early-stopping KL, the metrics). For networks of this size (10⁴–10⁶ parameters) DDP's bucketing would send one or
two buckets per step; ``all_reduce_gradients`` sends one flat buffer per step, after ``backward`` and before the
global norm clip, so the clip sees the gradient of the whole minibatch.

**The rule that makes N processes one learner**: each rank holds an equal shard of every batch (its own envs), each
loss is a mean over the rank's shard, and gradients are averaged — so a step equals one process's step on the
concatenated minibatch (tested, gloo, 2 CPU processes). Statistics a loss depends on (advantage mean and std, the KL
that stops the epochs) are computed over all ranks (``mean_std``, ``all_mean``).

**Normaliser statistics** (``ShardedRunningMeanStd``): each rank updates its running mean/variance with its own
observations as they come (it normalises with them during the rollout) and also keeps the moments of what it saw
since the last merge; ``sync`` all-gathers those moments and combines them with the merged state in rank order
(Chan et al.'s parallel update), so after a merge every rank holds the statistics of all ranks' data — the same
numbers, to float rounding, as one process that saw it all.

Process group: ``init_from_env`` reads torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` /
``MASTER_PORT``; backend gloo on CPU, NCCL on CUDA (rank ``LOCAL_RANK``'s GPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as dist

from stack.normalize import ObsNormalizer, RewardScaler, RunningMeanStd


# ---- the process group ----------------------------------------------------------------------------------------------
def world_size() -> int:
    """Processes of the learner (1 without an initialised process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes the run directory (config, metrics, checkpoints, plots, videos)."""
    return rank() == 0


def launched_world_size() -> int:
    """The world size a launcher (torchrun) set in the environment; 1 when none did."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str = "cpu") -> str:
    """Join the process group torchrun describes in the environment (once); returns the device name this rank trains
    on (``cuda:LOCAL_RANK`` for a CUDA run, else ``device`` as given)."""
    if launched_world_size() <= 1:
        return device
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        # CUDA: NCCL for the device tensors, gloo for the few host ones (counts, the normaliser moments)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---- collectives --------------------------------------------------------------------------------------------------
def all_reduce_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``parameters`` over the ranks, in place: one all-reduce of one flat buffer. Parameters
    without a gradient are skipped (every rank runs the same code, so the same ones have none)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(modules: Iterable[torch.nn.Module]) -> None:
    """Rank 0's parameters and buffers into every rank's modules (identical starts whatever each rank built)."""
    if world_size() == 1:
        return
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            with torch.no_grad():
                dist.broadcast(t.data, src=0)


def all_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor of the same shape on each (a new tensor; ``x`` itself when alone)."""
    if world_size() == 1:
        return x
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def all_max(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def all_sum_int(n: int) -> int:
    if world_size() == 1:
        return int(n)
    t = torch.tensor([int(n)], dtype=torch.int64)
    dist.all_reduce(t)
    return int(t.item())


def all_gather_objects(obj) -> list:
    """Every rank's (small, picklable) ``obj`` in rank order: a rollout's step count and finished episodes."""
    if world_size() == 1:
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (a run directory's path)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_std(x: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased standard deviation of ``x`` over all ranks' elements (weighted by ``weights`` ∈ {0, 1} where
    given: the masked rows only), as ``Tensor.mean`` / ``Tensor.std`` of the concatenation would give them. One
    all-reduce of (count, Σx, Σx²) in float64."""
    xd = x.detach().double().reshape(-1)
    w = torch.ones_like(xd) if weights is None else weights.detach().double().reshape(-1)
    sums = torch.stack([w.sum(), (w * xd).sum(), (w * xd * xd).sum()])
    if world_size() > 1:
        dist.all_reduce(sums)
    count, sx, sxx = sums[0], sums[1], sums[2]
    mean = sx / count.clamp(min=1.0)
    var = ((sxx - count * mean * mean) / (count - 1.0).clamp(min=1.0)).clamp(min=0.0)
    return mean.to(x.dtype), var.sqrt().to(x.dtype)


# ---- normaliser statistics ------------------------------------------------------------------------------------------
def _combine(mean_a, var_a, n_a, mean_b, var_b, n_b):
    """Chan et al.'s merge of two sets of moments (as ``RunningMeanStd.update``)."""
    total = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / total)
    m2 = var_a * n_a + var_b * n_b + delta**2 * (n_a * n_b / total)
    return mean, m2 / total, total


class ShardedRunningMeanStd(RunningMeanStd):
    """A ``RunningMeanStd`` of one rank's data that ``sync`` merges with every other rank's (see the module note).

    ``sync_every_update``: merge inside every ``update`` (a statistic updated once per rollout whose value is used
    right away: the per-rollout reward scaler); otherwise the caller merges (``sync``) at a point every rank reaches.
    """

    def __init__(self, rms: RunningMeanStd, sync_every_update: bool = False):
        super().__init__(rms.mean.shape)
        self.sync_every_update = bool(sync_every_update)
        self.load_state_dict(rms.state_dict())

    def _mark_synced(self) -> None:
        self._synced = (self.mean.copy(), self.var.copy(), float(self.count))
        self._local = RunningMeanStd(self.mean.shape, epsilon=0.0)  # count 0: the moments of new data only

    def update(self, x: np.ndarray) -> None:
        super().update(x)
        self._local.update(x)
        if self.sync_every_update:
            self.sync()

    def sync(self) -> None:
        """Every rank's moments since the last merge, combined in rank order with the merged state (a collective:
        every rank calls it at the same point)."""
        if world_size() == 1:
            self._mark_synced()
            return
        d = self.mean.size
        local = self._local
        mine = torch.from_numpy(np.concatenate([[local.count], local.mean.reshape(-1), local.var.reshape(-1)]))
        parts = [torch.empty_like(mine) for _ in range(world_size())]
        dist.all_gather(parts, mine)
        mean, var, count = self._synced
        for p in parts:
            n = float(p[0])
            if n > 0:
                pm = p[1:1 + d].numpy().reshape(mean.shape)
                pv = p[1 + d:].numpy().reshape(mean.shape)
                mean, var, count = _combine(mean, var, count, pm, pv, n)
        self.mean, self.var, self.count = np.asarray(mean, np.float64), np.asarray(var, np.float64), float(count)
        self._mark_synced()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._mark_synced()


def shard_normalizers(obs_normalizer: ObsNormalizer, reward_scaler: RewardScaler) -> None:
    """Give a run's observation normaliser and reward scaler statistics that merge across ranks (in place; nothing
    changes in a single process). The per-rollout reward scaler merges inside its one update per rollout."""
    if world_size() == 1:
        return
    if not isinstance(obs_normalizer.rms, ShardedRunningMeanStd):
        obs_normalizer.rms = ShardedRunningMeanStd(obs_normalizer.rms)
    if not isinstance(reward_scaler.rms, ShardedRunningMeanStd):
        reward_scaler.rms = ShardedRunningMeanStd(reward_scaler.rms, sync_every_update=reward_scaler.per_rollout)


def sync_normalizers(obs_normalizer: ObsNormalizer, reward_scaler: RewardScaler) -> None:
    """Merge the statistics of ``shard_normalizers``' objects across ranks (once per rollout, on every rank)."""
    if world_size() == 1:
        return
    obs_normalizer.rms.sync()
    obs_normalizer.refresh()
    if not reward_scaler.rms.sync_every_update:
        reward_scaler.rms.sync()


def offset_generators(generators: dict[str, torch.Generator], seed: int, steps: int) -> None:
    """Rank r > 0 draws its own actions: each generator reseeded from (seed, rank, steps). Rank 0 keeps its state
    (the one saved with checkpoints). The runner calls it at the start and after every checkpoint, so a run resumed
    from a checkpoint reseeds ranks r > 0 exactly as the uninterrupted run did there."""
    r = rank()
    if r == 0:
        return
    for i, g in enumerate(generators.values()):
        g.manual_seed(int(np.random.SeedSequence([seed, r, steps, i]).generate_state(1)[0]))


__all__ = ["ShardedRunningMeanStd", "all_gather_objects", "all_max", "all_mean", "all_reduce_gradients", "all_sum_int",
           "broadcast_object", "broadcast_parameters", "init_from_env", "is_main", "launched_world_size", "mean_std",
           "offset_generators", "rank", "shard_normalizers", "shutdown", "sync_normalizers", "world_size"]
