"""Agency transfer on an on-policy backbone (agency_ppo, agency_fpo): the task's baseline controller embedded in the
rollouts of PPO (a Gaussian learner) or FPO (a flow learner) by per-step arbitration, agency handed to the learner by
the same episode-end schedule as on SAC (``stack.algos.agency.AgencySchedule``).

The on-policy rules (``shared/methods/agency_transfer.md``):

* **Certificate on V(s)** (the CALF wrapper's, arXiv 2505.12354): an on-policy critic values states, not actions, so
  the learner's step at s_t is certified when V(s_t) > V* + Δ, V* the episode's best certified value (−inf at its
  start); V(s_t) is the value the backbone computes for the rollout anyway. Relax: U < p, one draw per decision;
  p ← λp (``policies.arbitrated.Arbitrator``). From the anneal fraction on, p = λ = 1: the baseline is never called.
* **Storage**: the executed action in the policy's raw units (the baseline's, mapped to [−1, 1], where it acted) and
  an ``authority`` extra (1 learner, 0 baseline). Baseline steps have no log-probability under π_θ's sampling: the
  backbone's update masks them out of the actor's terms (``stack.algos.ppo``, ``stack.algos.fpo``); they still train
  the critic (GAE and value targets over every step). The backbone's own extras of a baseline row (PPO's
  ``log_probs``, FPO's ``x0``/τ/ε pairs) are the unexecuted proposal's and are never read.
* The backbone must execute one action per decision (``act_steps`` 1: PPO; FPO with horizon 1); DPPO's chunks are
  not arbitrated.

The learner (``policy``) is what a checkpoint's ``policy`` module holds and what ``r2s export`` writes. The runner
(``stack.runners.arbitrated_on_policy``) binds the baseline (a callable on raw observation rows, policy units out)
and the raw observations before each rollout and reports each decision's episode ends (``after_decision``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import numpy as np
import torch

from policies.arbitrated import Arbitrator, arbitrate
from stack.algos.agency import ARBITRATION_SEED_OFFSET, AgencySchedule


class OnPolicyAgency:
    """An on-policy algorithm (PPO, FPO) with per-step arbitration against a baseline. The collector's Agent protocol
    (``act``, ``value``) and the on-policy runner's interface, delegated to the backbone where nothing changes."""

    act_steps = 1

    def __init__(self, backbone, schedule: AgencySchedule, num_envs: int, delta: float = 0.01, seed: int = 0):
        if getattr(backbone, "act_steps", 1) != 1:
            raise NotImplementedError(f"agency transfer arbitrates single actions; the backbone executes chunks of "
                                      f"act_steps={backbone.act_steps}")
        self.backbone = backbone
        self.schedule = schedule
        self.arbitrator = Arbitrator(num_envs, delta, seed=seed + ARBITRATION_SEED_OFFSET)
        self.arbitrator.start_episodes(slice(None), schedule.p_ep)
        self.lengths = np.zeros(num_envs, np.int64)
        """Env steps of each env's current episode (the schedule's L̄ comes from the finished ones)."""
        self.env_steps = 0
        """Env steps of training so far (the runner sets it before a rollout; ``after_decision`` advances it)."""
        self.calls = {"baseline_rows": 0, "certified": 0, "decisions": 0}
        self._baseline: Callable[[np.ndarray], np.ndarray] | None = None
        self._raw_obs: Callable[[], np.ndarray] | None = None

    # ---- the runner's interface, the backbone's ------------------------------------------------------------------
    @property
    def policy(self) -> torch.nn.Module:
        return self.backbone.policy

    @property
    def critic(self) -> torch.nn.Module:
        return self.backbone.critic

    @property
    def learning_rate(self) -> float:
        return self.backbone.learning_rate

    def set_learning_rate(self, lr: float, fraction: float | None = None) -> None:
        self.backbone.set_learning_rate(lr, fraction)

    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        return {**self.backbone.extras_spec(), "authority": ()}

    def policy_modules(self) -> dict[str, torch.nn.Module]:
        return self.backbone.policy_modules()

    def eval_sampling(self) -> dict:
        return self.backbone.eval_sampling()

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.backbone.value(obs)

    def compute_returns(self, storage) -> None:
        self.backbone.compute_returns(storage)

    def update(self, storage) -> dict[str, float]:
        return self.backbone.update(storage)

    # ---- arbitration ---------------------------------------------------------------------------------------------
    def bind(self, baseline: Callable[[np.ndarray], np.ndarray], raw_obs: Callable[[], np.ndarray]) -> None:
        """What ``act`` arbitrates with: the baseline (raw observation rows → actions in policy units) and the raw
        observations [N, obs_dim] the next decision acts on."""
        self._baseline, self._raw_obs = baseline, raw_obs

    def annealed(self, env_steps: int) -> bool:
        """The learner alone acts (f = 1; also inside episodes that began before the anneal fraction)."""
        return self.schedule.annealed or self.schedule.fraction(env_steps) >= 1.0

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The collector's ``act``: the backbone's proposal, arbitrated against the bound baseline."""
        if self._baseline is None or self._raw_obs is None:
            raise RuntimeError("OnPolicyAgency.act: bind(baseline, raw_obs) first")
        return self.act_arbitrated(obs, self._raw_obs(), self._baseline, self.env_steps)

    @torch.no_grad()
    def act_arbitrated(self, obs: torch.Tensor, raw_obs: np.ndarray, baseline: Callable[[np.ndarray], np.ndarray],
                       env_steps: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(executed chunk [N, 1, act_dim] in policy units, extras with ``authority`` [N] (1 learner), V(obs) [N]).
        ``baseline`` is called on the rows it acts on only, and never from the anneal fraction on."""
        chunk, extras, values = self.backbone.act(obs)
        n = chunk.shape[0]
        self.calls["decisions"] += n
        if self.annealed(env_steps):  # p = λ = 1: every draw would grant the learner; no draw, no baseline
            authority = np.ones(n, bool)
        else:
            v = values.reshape(-1).cpu().numpy().astype(np.float64)
            authority, certified = self.arbitrator.decide(v, self.schedule.lam)
            self.calls["certified"] += int(certified.sum())
            self.calls["baseline_rows"] += int((~authority).sum())
            if not authority.all():
                executed = arbitrate(raw_obs, chunk[:, 0].cpu().numpy(), authority, baseline)
                chunk = chunk.clone()
                chunk[:, 0] = torch.as_tensor(executed, dtype=chunk.dtype, device=chunk.device)
        extras = {**extras, "authority": torch.as_tensor(authority, dtype=torch.float32, device=chunk.device)}
        return chunk, extras, values

    def after_decision(self, ended: np.ndarray, executed: np.ndarray) -> None:
        """A decision took ``executed`` [N] env steps and ended the episodes where ``ended`` [N] (bool): advance the
        step count; for each ended episode update the schedule and restart that env's arbitration (Q* = −inf)."""
        executed = np.asarray(executed, np.int64)
        ended = np.asarray(ended, bool)
        self.env_steps += int(executed.sum())
        self.lengths += executed
        if ended.any():
            p_ep, _ = self.schedule.update(self.env_steps, self.lengths[ended])
            self.arbitrator.start_episodes(ended, p_ep)
            self.lengths[ended] = 0

    def restart_all(self) -> None:
        """Every env starts a new episode (after a checkpoint's reset)."""
        self.arbitrator.start_episodes(slice(None), self.schedule.p_ep)
        self.lengths[:] = 0

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"backbone": self.backbone.state_dict(), "schedule": self.schedule.state_dict(),
                "arbitrator": self.arbitrator.state_dict(), "calls": dict(self.calls),
                "lengths": self.lengths.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.backbone.load_state_dict(state["backbone"])
        self.schedule.load_state_dict(state["schedule"])
        self.arbitrator.load_state_dict(state["arbitrator"])
        self.calls = {k: int(v) for k, v in state["calls"].items()}
        self.lengths[:] = state["lengths"]


def make_algo(cfg, obs_dim: int, act_dim: int, device: str | torch.device = "cpu",
              pretrained: torch.nn.Module | None = None) -> OnPolicyAgency:
    """Agency transfer on ``cfg.on_policy_algo`` (agency_ppo → PPO, the ``ppo`` section; agency_fpo → FPO, ``fpo``),
    ``cfg.agency`` the arbitration."""
    a = cfg.agency
    if not math.isfinite(a.delta) or a.delta < 0:
        raise ValueError(f"agency.delta: expected a finite margin >= 0, got {a.delta!r}")
    backbone = importlib.import_module(f"stack.algos.{cfg.on_policy_algo}").make_algo(cfg, obs_dim, act_dim, device,
                                                                                     pretrained)
    schedule = AgencySchedule(cfg.total_env_steps, a.p0, a.lam0, a.anneal_fraction, a.window)
    return OnPolicyAgency(backbone, schedule, cfg.env.num_envs, a.delta, cfg.seed)


__all__ = ["ARBITRATION_SEED_OFFSET", "OnPolicyAgency", "make_algo"]
