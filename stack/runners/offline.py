"""The offline runner: behaviour cloning of an episode dataset (``stack.algos.bc``); later HABC's rounds.

Data, as DPPO's pretraining reads it (Ren et al. 2024; irom-princeton/dppo ``agent/pretrain``):

* every frame of the dataset is one sample — ``obs`` the last ``obs_steps`` observations (the episode's first
  repeated before its start), ``actions`` the next ``horizon`` actions of column ``bc.action_key``,
  ``stack.data.window_indices``; minibatches skip the frames whose chunk would run past the episode's end (DPPO's
  dataset does; ``window_indices`` pads them with the last action, and ``batch`` still indexes every frame);
* observations normalised with the dataset's mean/std (``meta/stats.json``; std floored at ``obs_std_floor`` so a
  dimension that never moved in the demos does not blow up at evaluation), clipped to ±``obs_clip``;
* actions scaled to [−1, 1] by min–max bounds — the task's action space, or the dataset's min/max where the task has
  none — because the generative policies work in [−1, 1] (DDPM clamps x̂0 to ±1, flow clips its sample);
* minibatches of ``batch_size`` frames drawn uniformly with the runner's own seeded generator.

The step axis is gradient steps (metrics.csv's ``grad_steps``); evaluation in simulation (``stack.controller``: each
env executes ``act_steps`` of every predicted chunk, then re-plans) on the dataset's task unless ``bc.task`` says
otherwise. Resume is exact (raw and EMA weights, optimiser, step, minibatch generator and torch RNG are saved).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from stack import checkpoint
from stack.algos.bc import BC, build_policy, sampling_options
from stack.config import TrainConfig
from stack.controller import PolicyController
from stack.data import EpisodeDataset, window_indices
from stack.normalize import ObsNormalizer
from stack.rollout import ActionScaler
from stack.runners.base import Runner


# ---- normalisation from the dataset ---------------------------------------------------------------------------------
def obs_normalizer_from_stats(stats: dict, count: int, clip: float, std_floor: float) -> ObsNormalizer:
    """An ``ObsNormalizer`` whose mean/var are the dataset's (var = max(std, std_floor)²)."""
    mean = np.asarray(stats["mean"], np.float64)
    std = np.maximum(np.asarray(stats["std"], np.float64), std_floor)
    norm = ObsNormalizer(len(mean), clip=clip)
    norm.load_state_dict({"enabled": True, "clip": clip, "epsilon": norm.epsilon, "mean": mean.tolist(),
                          "var": (std**2).tolist(), "count": float(count)})
    return norm


def action_scaler_for(dataset: EpisodeDataset, env, source: str) -> ActionScaler:
    """Min–max action scaling: the task's bounds where finite (source 'task'), else the dataset's min/max."""
    if source not in ("task", "dataset"):
        raise ValueError(f"bc.action_bounds: expected 'task' or 'dataset', got {source!r}")
    if source == "task":
        space = getattr(env, "action_space", None)
        for low, high in ((getattr(space, "low", None), getattr(space, "high", None)),
                          (dataset.info.get("action_low"), dataset.info.get("action_high"))):
            if low is not None and np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
                return ActionScaler(low, high, "minmax")
    low, high = dataset.stats["action"]["min"].copy(), dataset.stats["action"]["max"].copy()
    flat = high - low < 1e-6  # a dimension that never moved: give it a unit range around its value
    low[flat] -= 0.5
    high[flat] += 0.5
    return ActionScaler(low, high, "minmax")


def to_policy_space(scaler: ActionScaler, actions: np.ndarray) -> np.ndarray:
    """Env actions → [−1, 1] (the inverse of ``ActionScaler.to_env``, clipped)."""
    a = np.asarray(actions, np.float64)
    if scaler.mode == "raw":
        return a
    center, half = (scaler.high + scaler.low) / 2.0, (scaler.high - scaler.low) / 2.0
    return np.clip((a - center) / np.where(half > 0, half, 1.0), -1.0, 1.0)


def _probe_env(task: str, task_kwargs: dict):
    from sim.pool import resolve_task

    try:
        return resolve_task(task)(**task_kwargs)
    except KeyError:  # a dataset from a robot with no simulated task: no bounds from a task, no evaluation
        return None


class OfflineRunner(Runner):
    step_key = "grad_steps"

    def __init__(self, cfg: TrainConfig):
        if cfg.algo != "bc":
            raise ValueError(f"algo={cfg.algo!r}: the offline runner drives 'bc'")
        if not cfg.dataset:
            raise ValueError("bc: no dataset given (--dataset PATH, e.g. written by `r2s demos`)")
        torch.manual_seed(cfg.seed)
        self.dataset = ds = EpisodeDataset(cfg.dataset)
        b = cfg.bc
        task = b.task or ds.info["task"]
        task_kwargs = dict(b.task_kwargs or ds.info.get("task_kwargs") or {})
        cfg = dataclasses.replace(cfg, bc=dataclasses.replace(b, task=task, task_kwargs=task_kwargs))
        self.task, self.task_kwargs = task, task_kwargs  # before the base, whose eval_task needs them
        super().__init__(cfg, ("bc", cfg.policy, task))
        env = _probe_env(task, task_kwargs)
        self.has_task = env is not None
        self.obs_normalizer = obs_normalizer_from_stats(ds.stats["observation.state"], len(ds), b.obs_clip,
                                                        b.obs_std_floor)
        self.action_scaler = action_scaler_for(ds, env, b.action_bounds)
        if env is not None:
            env.close()
        total = b.grad_steps if b.grad_steps is not None else max(1, b.epochs * math.ceil(len(ds) / b.batch_size))
        policy = build_policy(b, cfg.policy, ds.obs_dim, ds.act_dim)
        self.algo = BC(policy, b, total, self.device)
        # All frames on the device once; a minibatch gathers its windows by index.
        cols = ds.frames(["observation.state", b.action_key])
        self.obs = torch.from_numpy(self.obs_normalizer(cols["observation.state"])).to(self.device)
        actions = to_policy_space(self.action_scaler, cols[b.action_key]).astype(np.float32)
        self.actions = torch.from_numpy(actions).to(self.device)
        obs_idx, act_idx = window_indices(ds.episode_lengths, policy.obs_steps, getattr(policy, "horizon", 1))
        self.obs_idx = torch.from_numpy(obs_idx).to(self.device)
        self.act_idx = torch.from_numpy(act_idx).to(self.device)
        # Training draws only frames whose whole action chunk lies inside the episode: a window padded with the last
        # action teaches the chunk policy to stop moving at an episode's end (DPPO's pretraining dataset skips them:
        # irom-lab/dppo agent/dataset/sequence.py make_indices). Episodes shorter than the chunk keep their frames.
        horizon = act_idx.shape[1]
        complete = act_idx[:, -1] - act_idx[:, 0] == horizon - 1
        if not complete.any():
            complete[:] = True
        self.train_frames = torch.from_numpy(np.flatnonzero(complete)).to(self.device)
        """Frames the minibatches are drawn from (windows that run past an episode's end are skipped)."""
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        """Draws the minibatches."""
        if self.resume_from is not None:
            self.restore(checkpoint.load(cfg.resume))

    @property
    def total_steps(self) -> int:
        return self.algo.total_steps

    @property
    def eval_task(self) -> tuple[str, dict]:
        return self.task, self.task_kwargs

    @property
    def can_evaluate(self) -> bool:
        return self.has_task

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def checkpoint_parts(self) -> dict:
        p = self.algo.policy
        meta = {"policy": self.algo.kind, "dataset": str(self.cfg.dataset), "obs_dim": p.obs_dim,
                "act_dim": p.act_dim, "horizon": getattr(p, "horizon", 1), "act_steps": getattr(p, "act_steps", 1),
                "obs_steps": p.obs_steps, "sampling": sampling_options(self.cfg.bc, self.algo.kind),
                "ema": self.algo.use_ema, "grad_steps": self.steps}
        normalization = {"obs": self.obs_normalizer.state_dict(), "action": self.action_scaler.state_dict()}
        trainer = {"algo": self.algo.state_dict(), "generator": self.generator.get_state(),
                   "torch_rng": torch.get_rng_state()}
        return {"modules": self.algo.policy_modules(), "normalization": normalization, "meta": meta,
                "trainer_state": trainer}

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        ckpt.check_matches(dataset=str(self.cfg.dataset), policy=self.algo.kind)
        ckpt.module("policy", into=self.algo.eval_policy, device=self.device)
        state = ckpt.trainer_state()
        self.algo.load_state_dict(state["algo"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.steps = self.algo.step

    # ---- evaluation -----------------------------------------------------------------------------------------------
    def controller(self, seed: int) -> PolicyController:
        return PolicyController(self.algo.eval_policy, self.obs_normalizer, self.action_scaler,
                                sampling_options(self.cfg.bc, self.algo.kind), device=self.device, seed=seed)

    # ---- the loop -------------------------------------------------------------------------------------------------
    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(obs [B, obs_steps, obs_dim], actions [B, horizon, act_dim]) of the windows of frames ``idx``."""
        return self.obs[self.obs_idx[idx]], self.actions[self.act_idx[idx]]

    def learn(self) -> Path:
        cfg, b = self.cfg, self.cfg.bc
        total = self.total_steps
        bar = self.progress_bar(f"bc {cfg.policy} {self.task}")
        losses: list[float] = []
        t0 = time.perf_counter()
        try:
            while self.steps < total:
                lr = self.algo.learning_rate
                idx = self.train_frames[torch.randint(0, len(self.train_frames), (b.batch_size,),
                                                      generator=self.generator, device=self.device)]
                losses.append(self.algo.train_step(*self.batch(idx)))
                self.steps = self.algo.step
                bar.update(1)
                before = self.steps - 1
                if self.steps % b.log_every == 0 or self.steps == total or \
                        any(every > 0 and self.steps % every == 0 for every in (cfg.eval_every, cfg.checkpoint_every)):
                    row = {"bc_loss": float(np.mean(losses)), "lr": lr, "time_s": time.perf_counter() - t0}
                    losses = []
                    row = self.log_row(before, row)
                    post = f"loss {row['bc_loss']:.4f}"
                    if "eval_return" in row:
                        post += f"  eval {row['eval_return']:.1f}"
                    bar.set_postfix_str(post, refresh=False)
        finally:
            bar.close()
        return self.finish(f"BC {cfg.policy} on {self.task} ({Path(cfg.dataset).name})")


__all__ = ["OfflineRunner", "action_scaler_for", "obs_normalizer_from_stats", "to_policy_space"]
