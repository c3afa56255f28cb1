"""The arbitrated off-policy runner: SAC beside the task's hand-written baseline controller.

* ``agency`` (``stack.algos.agency``): each vector step the algorithm arbitrates per env between the learner's
  proposal and the baseline; the buffer stores the executed action and who acted (``AuthorityReplayBuffer``); at each
  episode end the schedule moves agency to the learner. The learner acts from the first step (its samples are the
  exploration; ``sac.learning_starts`` only delays the gradient steps).
* ``residual`` (residual RL, the peer): the executed action is ``clip(π₀(s) + residual_scale · π_θ(s), −1, 1)`` in
  policy units; the buffer stores the learner's residual π_θ(s) (the Q of the residual policy). Its evaluations add the
  baseline too; a checkpoint's ``policy`` alone is the residual, not a standalone controller.

The baseline is the task's own (``task.baseline(obs)``, numpy and MuJoCo kinematics) on a private task instance in
this process, mapped from env units to the policy's [−1, 1] units. The rest — the loop, checkpoints, exact resume,
evaluations, metrics — is ``stack.runners.off_policy``'s; ``train_success`` is the goal-reaching rate of the training
episodes (the executed, arbitrated behaviour), ``eval_success`` the learner's alone (agency).
"""

from __future__ import annotations

import numpy as np

from stack.config import TrainConfig
from stack.replay import AuthorityReplayBuffer, ReplayBuffer
from stack.runners.base import task_kwargs_of
from stack.runners.off_policy import OffPolicyRunner


class PolicyUnitBaseline:
    """The task's baseline on a batch of observations, in the policy's [−1, 1] action units."""

    def __init__(self, task: str, task_kwargs: dict, low: np.ndarray, high: np.ndarray):
        from sim.pool import resolve_task

        self.task = resolve_task(task)(**task_kwargs)
        if not getattr(self.task, "has_baseline", False):
            raise ValueError(f"env.task={task!r} has no baseline controller; agency and residual need one")
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.calls = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        env_actions = np.stack([self.task.baseline(o) for o in np.asarray(obs, np.float64)])
        half = (self.high - self.low) / 2.0
        return np.clip((env_actions - (self.high + self.low) / 2.0) / half, -1.0, 1.0)


class ResidualController:
    """A residual learner's controller plus the baseline: env action = to_env(clip(a₀ + scale · a_θ, −1, 1))."""

    def __init__(self, controller, baseline: PolicyUnitBaseline, scale: float):
        self.controller, self.baseline, self.scale = controller, baseline, float(scale)

    def reset(self) -> None:
        self.controller.reset()

    def act_batch(self, obs: np.ndarray, env_indices) -> np.ndarray:
        residual = self.controller.act_batch(obs, env_indices)  # env units
        b = self.baseline
        half, center = (b.high - b.low) / 2.0, (b.high + b.low) / 2.0
        composed = np.clip(b(obs) + self.scale * (np.asarray(residual) - center) / half, -1.0, 1.0)
        return center + composed * half


class ArbitratedRunner(OffPolicyRunner):
    algos = ("agency", "residual")

    def __init__(self, cfg: TrainConfig):
        if cfg.env.num_envs < 1:
            raise ValueError(f"env.num_envs: expected >= 1, got {cfg.env.num_envs!r}")
        self.buffer_class = AuthorityReplayBuffer if cfg.algo == "agency" else ReplayBuffer
        super().__init__(cfg)
        space = self.envs.single_action_space
        self.baseline = PolicyUnitBaseline(cfg.env.task, task_kwargs_of(cfg), space.low, space.high)
        self._learner_steps = 0
        self._decisions = 0
        self._seen_calls = {"certified": 0, "decisions": 0}

    def make_algo(self):
        if self.cfg.algo == "agency":
            from stack.algos.agency import make_algo
        else:
            from stack.algos.sac import make_algo
        return make_algo(self.cfg, self.obs_dim, self.act_dim, self.device)

    def _learner_actions(self) -> np.ndarray:
        import torch

        return self.algo.act(torch.from_numpy(self.obs.astype(np.float32)).to(self.device)).cpu().numpy()

    def step_actions(self) -> tuple[np.ndarray, np.ndarray, dict]:
        n = self.envs.num_envs
        self._decisions += n
        if self.cfg.algo == "agency":
            executed, authority = self.algo.act(self.obs, self.baseline, self.steps)
            self._learner_steps += int(authority.sum())
            return (self.action_scaler.to_env(executed), executed.astype(np.float32),
                    {"authority": authority.astype(np.float32)})
        residual = self._learner_actions()
        executed = np.clip(self.baseline(self.obs) + self.cfg.agency.residual_scale * residual, -1.0, 1.0)
        return self.action_scaler.to_env(executed), residual, {}

    def episodes_ended(self, end: np.ndarray, lengths: np.ndarray, infos: dict) -> None:
        if self.cfg.algo == "agency":
            self.algo.end_episodes(end, lengths, self.steps)

    def extra_metrics(self) -> dict:
        row = {}
        if self._decisions:
            row["learner_share"] = self._learner_steps / self._decisions if self.cfg.algo == "agency" else 1.0
        if self.cfg.algo == "agency":
            s, calls = self.algo.schedule, self.algo.calls
            row.update(p_ep=s.p_ep, lam=s.lam, anneal=s.f)
            decisions = calls["decisions"] - self._seen_calls["decisions"]
            if decisions:  # since the last row, as learner_share (and the on-policy runner's)
                row["certified_share"] = (calls["certified"] - self._seen_calls["certified"]) / decisions
            self._seen_calls = dict(calls)
        self._learner_steps = self._decisions = 0
        return row

    def after_checkpoint(self) -> None:
        super().after_checkpoint()
        if self.cfg.algo == "agency":
            self.algo.restart_all()

    def restore(self, ckpt) -> None:
        # The checkpoint holds the arbitration of the episodes it cut short; a resumed run starts new ones (as
        # after_checkpoint does right after saving), so it restarts them as the uninterrupted run did.
        super().restore(ckpt)
        if self.cfg.algo == "agency":
            self.algo.restart_all()
            self._seen_calls = dict(self.algo.calls)

    def controller(self, seed: int):
        base = super().controller(seed)
        if self.cfg.algo == "residual":
            return ResidualController(base, self.baseline, self.cfg.agency.residual_scale)
        return base


__all__ = ["ArbitratedRunner", "PolicyUnitBaseline", "ResidualController"]
