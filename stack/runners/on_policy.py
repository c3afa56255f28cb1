"""The on-policy runner: PPO, FPO and DPPO (``stack.algos.{ppo,fpo,dppo}``, built by their ``make_algo``).

One iteration::

    rollout (T decisions × N envs: each decision an action chunk whose first act_steps actions are executed, same-step
    autoreset, V(final_obs) bootstraps) → GAE over decisions → epochs of minibatch updates → metrics row
    → [evaluation] → [checkpoint]

Gaussian PPO is the case act_steps = 1. The algorithm's interface is listed in ``stack.algos.on_policy``.

``init_from`` (a BC run directory) fine-tunes its policy: the weights, the observation normaliser and the action
scaling come from its latest checkpoint, and the normaliser stays frozen (the policy was trained on those statistics).

Resume (``cfg.resume=<run dir>``) continues from the latest checkpoint with the config given now (so a larger
``total_env_steps`` extends a run). Every checkpoint is also an episode boundary: right after saving, the runner resets
all envs with seed ``cfg.seed + env_steps`` (and a resumed run starts with that same reset), so a resumed run
continues exactly as the uninterrupted one would have — same actions, same minibatches, same metrics (tested).
The episodes cut short there are treated as truncations (the rollout's last row bootstraps from V).

Several learner processes (``nproc``, ``stack.distributed``; PPO, FPO, DPPO): rank r steps envs r·n … r·n + n − 1 of
the run's ``env.num_envs`` (n = num_envs / nproc, seeded as those envs of one pool), the normaliser statistics are
merged after every rollout, each gradient step averages the ranks' gradients, and rank 0 alone evaluates, logs and
checkpoints.
"""

from __future__ import annotations

import importlib
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from stack import checkpoint, distributed
from stack.config import AGENCY_ON_POLICY, ON_POLICY, TrainConfig
from stack.controller import PolicyController
from stack.normalize import ObsNormalizer, RewardScaler
from stack.rollout import ActionScaler, RolloutCollector, RolloutStats, RolloutStorage
from stack.runners.base import Runner, make_envs


DISTRIBUTED_ALGOS = ("ppo", "fpo", "dppo")
"""The algorithms whose updates reduce over learner processes (``stack.distributed``); the agency runners' not yet
(a masked mean over each rank's learner steps is not the mean over all ranks' when their counts differ)."""


def make_algo(cfg: TrainConfig, obs_dim: int, act_dim: int, device: torch.device,
              pretrained: torch.nn.Module | None = None):
    """The algorithm object of ``cfg.algo`` (its module imported only when used: dppo/fpo pull in more code); for an
    agency algo its backbone's (the arbitrated runner wraps it)."""
    if cfg.algo not in ON_POLICY + tuple(AGENCY_ON_POLICY):
        raise ValueError(f"algo={cfg.algo!r}: the on-policy runner drives {ON_POLICY + tuple(AGENCY_ON_POLICY)}")
    module = importlib.import_module(f"stack.algos.{cfg.on_policy_algo}")
    return module.make_algo(cfg, obs_dim, act_dim, device, pretrained)


def load_pretrained(run_dir: str | Path, device: str | torch.device = "cpu"):
    """A BC run (or checkpoint folder) to fine-tune: (policy module in train mode, ObsNormalizer, ActionScaler)."""
    ckpt = checkpoint.load(run_dir)
    return ckpt.module("policy", device=device).train(), ckpt.obs_normalizer(), ckpt.action_scaler()


def reward_scaling_mode(cfg: TrainConfig) -> str:
    """The reward scaler's mode: ``reward_scaling`` as set, or for "auto" per_rollout when fine-tuning (init_from:
    DPPO's convention) and per_step from scratch (CleanRL's, which PPO's golden metrics record)."""
    mode = cfg.on_policy.reward_scaling
    if mode != "auto":
        return mode
    return "per_rollout" if cfg.init_from else "per_step"


class OnPolicyRunner(Runner):
    supports_distributed = True

    def __init__(self, cfg: TrainConfig):
        world = distributed.world_size()
        if world > 1 and cfg.algo not in DISTRIBUTED_ALGOS:
            raise NotImplementedError(f"nproc={world}: algo {cfg.algo!r} trains in one process; several learner "
                                      f"processes run {DISTRIBUTED_ALGOS}")
        if cfg.env.num_envs % world:
            raise ValueError(f"env.num_envs={cfg.env.num_envs}: with nproc={world} learner processes each steps "
                             f"num_envs / nproc envs; expected a multiple of {world}")
        super().__init__(cfg, (cfg.algo, cfg.env.task))
        torch.manual_seed(cfg.seed)  # the same networks on every rank (rank 0's are broadcast below all the same)
        self.num_envs = cfg.env.num_envs // world
        """This process's envs: its share of env.num_envs."""
        self.env_seed_offset = distributed.rank() * self.num_envs
        """Rank r's env i is env r·num_envs + i of one pool of env.num_envs: ranks never share an env seed."""
        self.envs = make_envs(cfg, self.num_envs, self.env_seed_offset)
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        self.obs_dim, self.act_dim = int(np.prod(obs_space.shape)), int(act_space.shape[0])
        p = cfg.on_policy
        pretrained = None
        if cfg.init_from:
            pretrained, self.obs_normalizer, self.action_scaler = load_pretrained(cfg.init_from, self.device)
            if (pretrained.obs_dim, pretrained.act_dim) != (self.obs_dim, self.act_dim):
                raise ValueError(f"init_from {cfg.init_from}: the policy has obs_dim={pretrained.obs_dim}, act_dim="
                                 f"{pretrained.act_dim}; task {cfg.env.task} has {self.obs_dim}, {self.act_dim}")
            if getattr(pretrained, "obs_steps", 1) != 1:
                raise ValueError(f"init_from {cfg.init_from}: the runner conditions on one observation; the policy "
                                 f"has obs_steps={pretrained.obs_steps}")
        else:
            self.obs_normalizer = ObsNormalizer(self.obs_dim, clip=p.clip_obs, enabled=p.norm_obs)
            self.action_scaler = ActionScaler.for_space(act_space)
        self.algo = self.make_algo(pretrained)
        self.base_lr = self.algo.learning_rate
        """The configured learning rate (anneal_lr scales it down linearly)."""
        self.reward_scaler = RewardScaler(self.num_envs, p.gamma, clip=p.clip_reward, enabled=p.norm_reward,
                                          mode=reward_scaling_mode(cfg))
        distributed.shard_normalizers(self.obs_normalizer, self.reward_scaler)  # merged across ranks per rollout
        # Fine-tuning keeps the pretrained policy's observation statistics: it was trained on them.
        self.collector = RolloutCollector(self.envs, self.obs_normalizer, self.reward_scaler, self.action_scaler,
                                          self.device, update_obs_stats=not cfg.init_from)
        self.storage = RolloutStorage(p.rollout_steps, self.num_envs, self.obs_dim, self.act_dim, self.device,
                                      horizon=self.algo.act_steps, extras_spec=self.algo.extras_spec())
        self.iteration = 0
        self.recent_returns: deque[float] = deque(maxlen=20)
        if self.resume_from is not None:
            self.restore(checkpoint.load(cfg.resume, require=tuple(self.algo.policy_modules())))
        if world > 1:
            distributed.broadcast_parameters(self.algo.policy_modules().values())
            distributed.offset_generators(self.algo.generators, cfg.seed, self.steps)  # each rank its own noise

    def make_algo(self, pretrained: torch.nn.Module | None):
        """The algorithm this runner drives (the arbitrated runner wraps its backbone)."""
        return make_algo(self.cfg, self.obs_dim, self.act_dim, self.device, pretrained)

    @property
    def policy(self) -> torch.nn.Module:
        return self.algo.policy_modules()["policy"]

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def checkpoint_parts(self) -> dict:
        policy = self.policy
        meta = {"iteration": self.iteration, "policy": getattr(policy, "kind", self.cfg.policy),
                "obs_dim": self.obs_dim, "act_dim": self.act_dim, "act_steps": self.algo.act_steps,
                "horizon": getattr(policy, "horizon", self.algo.act_steps), "obs_steps": 1,
                "sampling": self.algo.eval_sampling(), "init_from": self.cfg.init_from}
        normalization = {"obs": self.obs_normalizer.state_dict(), "action": self.action_scaler.state_dict(),
                         "reward": self.reward_scaler.state_dict()}
        trainer = {"algo": self.algo.state_dict(), "iteration": self.iteration, "env_steps": self.steps,
                   "recent_returns": list(self.recent_returns), "torch_rng": torch.get_rng_state()}
        return {"modules": self.algo.policy_modules(), "normalization": normalization, "meta": meta,
                "trainer_state": trainer}

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        self.restore_modules(ckpt, task=self.cfg.env.task, obs_dim=self.obs_dim, act_dim=self.act_dim)
        self.obs_normalizer.load_state_dict(ckpt.normalization["obs"])
        self.reward_scaler.load_state_dict(ckpt.normalization["reward"])
        saved_scaler = ckpt.action_scaler()
        if saved_scaler.state_dict() != self.action_scaler.state_dict():
            raise checkpoint.CheckpointError(
                f"{ckpt.path / checkpoint.NORMALIZATION_FILE}: field 'action' is {saved_scaler.state_dict()}; the "
                f"task's action scaling is {self.action_scaler.state_dict()}")
        state = ckpt.trainer_state()
        self.algo.load_state_dict(state["algo"])
        self.iteration = int(state["iteration"])
        self.steps = int(state["env_steps"])
        self.recent_returns.extend(state["recent_returns"])
        torch.set_rng_state(state["torch_rng"])

    def after_checkpoint(self) -> None:
        self.collector.reset(seed=self.env_seed(self.steps))  # a checkpoint is an episode boundary
        if distributed.world_size() > 1:
            # only rank 0's generators are saved: the others are reseeded from (seed, rank, steps) here, as a run
            # resumed from this checkpoint reseeds them, so it continues exactly as this one
            distributed.offset_generators(self.algo.generators, self.cfg.seed, self.steps)

    def env_seed(self, steps: int) -> int:
        """The seed of this process's first env at a reset after ``steps`` env steps (env i: + i)."""
        return self.cfg.seed + steps + self.env_seed_offset

    # ---- evaluation -----------------------------------------------------------------------------------------------
    def controller(self, seed: int) -> PolicyController:
        return PolicyController(self.policy, self.obs_normalizer, self.action_scaler, self.algo.eval_sampling(),
                                self.algo.act_steps, self.device, seed)

    # ---- the loop -------------------------------------------------------------------------------------------------
    def collect_rollout(self) -> RolloutStats:
        """One rollout into ``self.storage`` (the arbitrated runner arbitrates inside it)."""
        return self.collector.collect(self.algo, self.storage)

    def merge_rollouts(self, stats: RolloutStats) -> RolloutStats:
        """Every rank's rollout as one (several learner processes): normaliser statistics merged, env steps summed,
        finished episodes listed in rank order; the timings stay this process's."""
        if distributed.world_size() == 1:
            return stats
        distributed.sync_normalizers(self.obs_normalizer, self.reward_scaler)
        parts = distributed.all_gather_objects((stats.steps, stats.episode_returns, stats.episode_lengths,
                                                stats.successes))
        return RolloutStats(steps=sum(p[0] for p in parts), episode_returns=[x for p in parts for x in p[1]],
                            episode_lengths=[x for p in parts for x in p[2]],
                            successes=[x for p in parts for x in p[3]], env_s=stats.env_s)

    def extra_metrics(self) -> dict:
        """Further columns of an iteration's metrics row (none here)."""
        return {}

    def learn(self) -> Path:
        cfg, p = self.cfg, self.cfg.on_policy
        total = cfg.total_env_steps
        self.collector.reset(seed=self.env_seed(self.steps))
        bar = self.progress_bar(f"{cfg.algo} {cfg.env.task}")
        t_start = time.perf_counter()
        try:
            while self.steps < total:
                if p.anneal_lr:
                    frac = max(0.0, 1.0 - self.steps / total)
                    self.algo.set_learning_rate(self.base_lr * frac, frac)
                lr = self.algo.learning_rate
                t0 = time.perf_counter()
                stats = self.merge_rollouts(self.collect_rollout())
                t1 = time.perf_counter()
                self.algo.compute_returns(self.storage)
                info = self.algo.update(self.storage)
                t2 = time.perf_counter()
                before = self.steps
                self.steps += stats.steps
                self.iteration += 1
                self.recent_returns.extend(stats.episode_returns)
                row = {"iteration": self.iteration, "lr": lr, **info, **self.extra_metrics(),
                       "steps_per_s": stats.steps / (t2 - t0), "rollout_s": t1 - t0, "env_s": stats.env_s,
                       "update_s": t2 - t1}
                if stats.episode_returns:
                    row["train_return"] = float(np.mean(stats.episode_returns))
                    row["train_length"] = float(np.mean(stats.episode_lengths))
                    row["episodes"] = len(stats.episode_returns)
                if stats.successes:
                    row["train_success"] = float(np.mean(stats.successes))
                row["time_s"] = time.perf_counter() - t_start
                self.log_row(before, row)
                recent = f"{np.mean(self.recent_returns):.1f}" if self.recent_returns else "-"
                bar.set_postfix_str(f"{row['steps_per_s']:.0f} steps/s  return {recent}", refresh=False)
                bar.update(min(self.steps, total) - min(before, total))
        finally:
            bar.close()
            self.envs.close()
        return self.finish(f"{cfg.algo} {cfg.env.task} (seed {cfg.seed})")


__all__ = ["DISTRIBUTED_ALGOS", "OnPolicyRunner", "load_pretrained", "make_algo", "reward_scaling_mode"]
