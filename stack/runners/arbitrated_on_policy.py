"""The arbitrated on-policy runner: agency transfer on PPO or FPO (``agency_ppo``, ``agency_fpo``;
``stack.algos.agency_on_policy``).

Everything is the on-policy runner's (``stack.runners.on_policy``: rollouts, GAE, updates, evaluations, checkpoints,
exact resume) except that each decision of a rollout is arbitrated between the learner and the task's baseline
controller (``PolicyUnitBaseline`` of ``stack.runners.arbitrated``: the task's own ``baseline(obs)`` on a private
task instance, in the policy's [−1, 1] units), and each decision's episode ends drive the schedule.
``train_success`` is the goal-reaching rate of the training episodes (the executed, arbitrated behaviour),
``eval_success`` the learner's alone.
"""

from __future__ import annotations

from stack.config import AGENCY_ON_POLICY, TrainConfig
from stack.rollout import RolloutStats
from stack.runners.arbitrated import PolicyUnitBaseline
from stack.runners.base import task_kwargs_of
from stack.runners.on_policy import OnPolicyRunner


class ArbitratedOnPolicyRunner(OnPolicyRunner):
    algos = tuple(AGENCY_ON_POLICY)

    def __init__(self, cfg: TrainConfig):
        if cfg.algo not in self.algos:
            raise ValueError(f"algo={cfg.algo!r}: the {type(self).__name__} drives {self.algos}")
        super().__init__(cfg)
        if self.action_scaler.mode != "minmax":
            raise ValueError(f"env.task={cfg.env.task!r}: agency transfer maps the baseline's actions to the policy's "
                             f"[-1, 1] units and needs finite action bounds (action scaling is "
                             f"{self.action_scaler.mode!r})")
        space = self.envs.single_action_space
        self.baseline = PolicyUnitBaseline(cfg.env.task, task_kwargs_of(cfg), space.low, space.high)
        self._seen = dict(self.algo.calls)
        """The algorithm's counters at the last metrics row (a row reports the shares since)."""

    def make_algo(self, pretrained):
        from stack.algos.agency_on_policy import make_algo

        return make_algo(self.cfg, self.obs_dim, self.act_dim, self.device, pretrained)

    def collect_rollout(self) -> RolloutStats:
        algo, storage = self.algo, self.storage
        algo.env_steps = self.steps
        algo.bind(lambda obs: self.baseline(obs), lambda: self.collector.current_obs)

        def after_decision(t: int, step) -> None:
            algo.after_decision(step.end, step.executed)

        return self.collector.collect(algo, storage, on_step=after_decision)

    def extra_metrics(self) -> dict:
        calls = self.algo.calls
        decisions = calls["decisions"] - self._seen["decisions"]
        s = self.algo.schedule
        row = {"p_ep": s.p_ep, "lam": s.lam, "anneal": s.f}
        if decisions:
            row["learner_share"] = 1.0 - (calls["baseline_rows"] - self._seen["baseline_rows"]) / decisions
            row["certified_share"] = (calls["certified"] - self._seen["certified"]) / decisions
        self._seen = dict(calls)
        return row

    def after_checkpoint(self) -> None:
        super().after_checkpoint()
        self.algo.restart_all()

    def restore(self, ckpt) -> None:
        # The checkpoint holds the arbitration of the episodes it cut short; a resumed run starts new ones (the same
        # reset as after_checkpoint's), so it restarts them as the uninterrupted run did right after saving.
        super().restore(ckpt)
        self.algo.restart_all()


__all__ = ["ArbitratedOnPolicyRunner"]
