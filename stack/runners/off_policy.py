"""The off-policy runner: SAC (``stack.algos.sac``) on a same-step-autoreset vector env with a replay buffer.

Loop: uniform random actions for ``sac.learning_starts`` env steps, then the actor's samples; after each vector step
the transitions (s, a, r, s' = the state really reached, terminated) go into ``stack.replay.ReplayBuffer`` and, once
learning has started, ``replay_ratio`` gradient steps are owed per transition. A metrics row every ``sac.log_every``
env steps; evaluations and checkpoints are due on those rows.

Resume is exact: the checkpoint holds the actor, the twin Q net, SAC's optimisers, temperature, target networks and
generator, the replay buffer with its sampling generator, the random-action generator and the owed gradient steps;
every checkpoint is an episode boundary (all envs reset with ``seed + env_steps``, as the on-policy runner does).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from stack import checkpoint
from stack.config import TrainConfig
from stack.controller import PolicyController
from stack.normalize import ObsNormalizer
from stack.replay import ReplayBuffer
from stack.rollout import ActionScaler
from stack.runners.base import Runner, make_envs


class OffPolicyRunner(Runner):
    algos: tuple[str, ...] = ("sac",)
    """The algorithms this runner drives (a subclass adds its own: ``stack.runners.arbitrated``)."""

    def __init__(self, cfg: TrainConfig):
        if cfg.algo not in self.algos:
            raise ValueError(f"algo={cfg.algo!r}: the {type(self).__name__} drives {self.algos}")
        super().__init__(cfg, (cfg.algo, cfg.env.task))
        torch.manual_seed(cfg.seed)
        self.envs = make_envs(cfg)
        self.obs_dim = int(np.prod(self.envs.single_observation_space.shape))
        self.act_dim = int(self.envs.single_action_space.shape[0])
        s = cfg.sac
        self.algo = self.make_algo()
        self.buffer = self.buffer_class(min(s.buffer_size, cfg.total_env_steps + cfg.env.num_envs), self.obs_dim,
                                        self.act_dim, seed=cfg.seed)
        self.action_scaler = ActionScaler.for_space(self.envs.single_action_space)
        self.obs_normalizer = ObsNormalizer(self.obs_dim, enabled=False)  # SAC acts on raw observations
        self.rng = np.random.default_rng(cfg.seed)
        """Draws the uniform random actions before learning starts."""
        self.owed = 0.0
        """Gradient steps owed (replay_ratio per transition, carried across vector steps)."""
        self.next_log = s.log_every
        if self.resume_from is not None:
            self.restore(checkpoint.load(cfg.resume, require=("policy", "critic")))

    buffer_class = ReplayBuffer

    def make_algo(self):
        from stack.algos.sac import make_algo

        return make_algo(self.cfg, self.obs_dim, self.act_dim, self.device)

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def checkpoint_parts(self) -> dict:
        meta = {"policy": "gaussian", "obs_dim": self.obs_dim, "act_dim": self.act_dim, "act_steps": 1,
                "horizon": 1, "obs_steps": 1, "sampling": {"deterministic": True}}
        normalization = {"obs": self.obs_normalizer.state_dict(), "action": self.action_scaler.state_dict()}
        trainer = {"algo": self.algo.state_dict(), "buffer": self.buffer.state_dict(), "env_steps": self.steps,
                   "rng": json.dumps(self.rng.bit_generator.state), "owed": self.owed, "next_log": self.next_log,
                   "torch_rng": torch.get_rng_state()}
        return {"modules": self.algo.policy_modules(), "normalization": normalization, "meta": meta,
                "trainer_state": trainer}

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        self.restore_modules(ckpt, task=self.cfg.env.task, obs_dim=self.obs_dim, act_dim=self.act_dim)
        state = ckpt.trainer_state()
        self.algo.load_state_dict(state["algo"])
        self.buffer.load_state_dict(state["buffer"])
        self.steps = int(state["env_steps"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.owed, self.next_log = float(state["owed"]), int(state["next_log"])
        torch.set_rng_state(state["torch_rng"])

    def after_checkpoint(self) -> None:
        self._reset_envs()

    def controller(self, seed: int) -> PolicyController:
        return PolicyController(self.algo.actor, self.obs_normalizer, self.action_scaler, {"deterministic": True},
                                1, self.device, seed)

    # ---- the loop -------------------------------------------------------------------------------------------------
    def _reset_envs(self) -> None:
        n = self.envs.num_envs
        self.obs, _ = self.envs.reset(seed=self.cfg.seed + self.steps)
        self.ep_return, self.ep_length = np.zeros(n), np.zeros(n, np.int64)

    def _actions(self) -> np.ndarray:
        if self.steps < self.cfg.sac.learning_starts:
            return self.rng.uniform(-1.0, 1.0, size=(self.envs.num_envs, self.act_dim)).astype(np.float32)
        return self.algo.act(torch.from_numpy(self.obs.astype(np.float32)).to(self.device)).cpu().numpy()

    def step_actions(self) -> tuple[np.ndarray, np.ndarray, dict]:
        """(env actions to execute, the actions the buffer stores, extra buffer fields) of one vector step."""
        actions = self._actions()
        return self.action_scaler.to_env(actions), actions, {}

    def episodes_ended(self, end: np.ndarray, lengths: np.ndarray, infos: dict) -> None:
        """Hook: the episodes of the envs in mask ``end`` just ended with ``lengths`` (before the counters reset)."""

    def extra_metrics(self) -> dict:
        """Hook: more columns for the metrics row being logged."""
        return {}

    def learn(self) -> Path:
        cfg, s = self.cfg, self.cfg.sac
        n = self.envs.num_envs
        total = cfg.total_env_steps
        self._reset_envs()
        returns: list[float] = []
        successes: list[bool] = []
        stats: list[dict[str, torch.Tensor]] = []
        logged, t_last, steps_last = self.steps, time.perf_counter(), self.steps
        bar = self.progress_bar(f"{cfg.algo} {cfg.env.task}")
        try:
            while self.steps < total:
                env_actions, actions, extras = self.step_actions()
                next_obs, reward, terminated, truncated, infos = self.envs.step(env_actions)
                end = np.logical_or(terminated, truncated)
                real_next = next_obs.copy()
                for i in np.flatnonzero(end):
                    real_next[i] = infos["final_obs"][i]
                self.buffer.add(self.obs, actions, reward, real_next, terminated, **extras)
                self.ep_return += reward
                self.ep_length += 1
                if end.any():
                    self.episodes_ended(end, self.ep_length[end].copy(), infos)
                    returns += self.ep_return[end].tolist()
                    final = infos.get("final_info")
                    if isinstance(final, dict) and "success" in final:
                        successes += [bool(final["success"][i]) for i in np.flatnonzero(end) if final["_success"][i]]
                    self.ep_return[end] = 0.0
                    self.ep_length[end] = 0
                self.obs = next_obs
                self.steps += n
                if self.steps >= s.learning_starts:
                    self.owed += s.replay_ratio * n
                    while self.owed >= 1.0:
                        stats.append(self.algo.update(self.buffer.sample(s.batch_size, self.algo.device)))
                        self.owed -= 1.0
                if self.steps >= self.next_log or self.steps >= total:
                    now = time.perf_counter()
                    row = {"steps_per_s": (self.steps - steps_last) / (now - t_last), "alpha": self.algo.alpha,
                           "updates": self.algo.updates}
                    if returns:
                        row["train_return"] = float(np.mean(returns))
                        row["episodes"] = len(returns)
                    if successes:
                        row["train_success"] = float(np.mean(successes))
                    for key in ("q_loss", "q_mean", "actor_loss", "entropy"):
                        vals = [st[key] for st in stats if key in st]
                        if vals:
                            row[key] = float(torch.stack(vals).mean())
                    row.update(self.extra_metrics())
                    returns, successes, stats = [], [], []
                    self.next_log += s.log_every
                    self.log_row(logged, row)  # may checkpoint (then the envs restart: an episode boundary)
                    bar.set_postfix_str(f"{row['steps_per_s']:.0f} steps/s  return "
                                        f"{row.get('train_return', float('nan')):.1f}", refresh=False)
                    bar.update(min(self.steps, total) - min(logged, total))
                    logged, t_last, steps_last = self.steps, time.perf_counter(), self.steps
        finally:
            bar.close()
            self.envs.close()
        return self.finish(f"{cfg.algo} {cfg.env.task} (seed {cfg.seed})")


__all__ = ["OffPolicyRunner"]
